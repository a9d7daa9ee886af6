"""Harness for fanoutd's integration tests: start the real binary, talk to it
over raw sockets, read its metrics and access log.

Every fanoutd started here is registered with atexit and killed by pid
(SIGTERM, then SIGKILL) and reaped, whatever happens to the test.  Nothing
here synchronises with sleeps: waits poll an observable condition with a
bounded timeout and fail with a message naming what was awaited.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fakeupstream import (FakeUpstream, HeaderLookup, RefusedPort,  # noqa: E402,F401
                          PATIENCE)

SKIP = 77

FANOUTD = os.environ.get("FANOUTD", "/work/main/fanoutd")
SRCDIR = os.environ.get("FANOUTD_SRCDIR",
                        os.path.dirname(os.path.dirname(HERE)))

_live = {}          # pid -> Popen, everything not yet reaped


def _kill_all():
    for pid, proc in list(_live.items()):
        _terminate(proc)


atexit.register(_kill_all)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: AddressSanitizer")


def _terminate(proc, grace=3.0):
    """SIGTERM, then SIGKILL after GRACE seconds; always reap."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
    _live.pop(proc.pid, None)
    return proc.returncode


def is_asan_build(path):
    """True for a binary built with AddressSanitizer (--enable-sanitizers):
    valgrind cannot run it, and its RSS includes ASan's quarantine."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"libasan" in data


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(fn, timeout=PATIENCE, what="condition", interval=0.01):
    """Poll fn() until it returns something true; return it.  Raises
    AssertionError after TIMEOUT seconds (the last exception fn raised, if
    any, is named in the message)."""
    end = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last_exc = None
        except Exception as e:   # e.g. a connection refused while starting
            last_exc = e
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


# ----------------------------------------------------------------------
# HTTP on raw sockets

class Response(HeaderLookup):
    def __init__(self, status, reason, version, headers, body, raw_head=b""):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers          # list of (name, value)
        self.body = body
        self.trailers = []              # a chunked body's trailer fields
        self.raw_head = raw_head
        self.received = time.monotonic()

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def conn_close(self):
        return "close" in (self.header("connection") or "").lower()

    def __repr__(self):
        return "<Response %d %r headers=%r body=%r>" % (
            self.status, self.reason, self.headers, self.body[:300])


class ClosedError(AssertionError):
    """The peer closed before a whole response arrived."""


class ResponseTimeout(AssertionError):
    """No whole response arrived in time."""


def build_request(method, target, headers=None, body=None, host="fanoutd.test",
                  chunks=None):
    """A raw HTTP/1.1 request.  HEADERS: list of (name, value) or dict.
    CHUNKS: a list of byte strings sent with Transfer-Encoding: chunked."""
    if headers is None:
        headers = []
    elif isinstance(headers, dict):
        headers = list(headers.items())
    names = {k.lower() for k, _ in headers}
    lines = ["%s %s HTTP/1.1" % (method, target)]
    if "host" not in names and host is not None:
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % (k, v) for k, v in headers]
    payload = b""
    if chunks is not None:
        if "transfer-encoding" not in names:
            lines.append("Transfer-Encoding: chunked")
        for c in chunks:
            payload += b"%x\r\n" % len(c) + c + b"\r\n"
        payload += b"0\r\n\r\n"
    elif body is not None:
        if isinstance(body, str):
            body = body.encode()
        if "content-length" not in names:
            lines.append("Content-Length: %d" % len(body))
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class Client:
    """One client connection to fanoutd on a raw socket."""

    def __init__(self, port, host="127.0.0.1", timeout=PATIENCE):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.reset_seen = False
        self.closed_at = None

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, **kw):
        self.send(build_request(method, target, headers, body, **kw))

    def get(self, target, headers=None, timeout=PATIENCE, **kw):
        self.request("GET", target, headers, **kw)
        return self.read_response(timeout=timeout)

    # aborts ------------------------------------------------------------
    def close(self):
        """An orderly close (FIN); returns the time it was done."""
        t = time.monotonic()
        self.sock.close()
        self.closed_at = t
        return t

    def half_close(self):
        """shutdown(SHUT_WR): FIN, but the socket can still read."""
        t = time.monotonic()
        self.sock.shutdown(socket.SHUT_WR)
        return t

    def reset(self):
        """An abortive close: SO_LINGER {1, 0} then close() sends RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        t = time.monotonic()
        self.sock.close()
        self.closed_at = t
        return t

    def abort(self, how):
        return {"close": self.close, "half": self.half_close,
                "half_close": self.half_close, "rst": self.reset,
                "reset": self.reset}[how]()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.sock.close()
        except OSError:
            pass

    # reading -----------------------------------------------------------
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResponseTimeout("nothing complete from fanoutd in time (have %r)"
                                  % bytes(self.buf[:200]))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise ResponseTimeout("nothing complete from fanoutd in time (have %r)"
                                  % bytes(self.buf[:200])) from None
        except ConnectionResetError:
            self.reset_seen = True
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, timeout=PATIENCE, head_only=False, method="GET"):
        """Read one response (skipping 1xx); bounded by TIMEOUT seconds.
        Raises ClosedError if the connection ends first, ResponseTimeout if
        nothing complete arrives in time (both are AssertionErrors)."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if self.eof or not self._fill(deadline):
                    raise ClosedError("connection closed before a response head "
                                      "(got %r)" % bytes(self.buf[:200]))
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            lines = head.split("\r\n")
            m = re.match(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
            if not m:
                raise AssertionError("bad status line %r" % lines[0])
            version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
            resp = Response(status, reason, version, headers, b"", head.encode("latin-1"))
            if 100 <= status < 200:
                continue
            break
        if head_only or method == "HEAD" or status in (204, 304):
            resp.received = time.monotonic()
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            resp.body, resp.trailers = self._read_chunked(deadline)
        elif cl is not None:
            n = int(cl)
            while len(self.buf) < n:
                if self.eof or not self._fill(deadline):
                    raise ClosedError("connection closed after %d of %d body bytes"
                                      % (len(self.buf), n))
            resp.body = bytes(self.buf[:n])
            del self.buf[:n]
        else:
            while not self.eof and self._fill(deadline):
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        resp.received = time.monotonic()
        return resp

    def _read_chunked(self, deadline):
        """(body, trailers): trailers is the trailer section's fields, a
        list of (name, value)."""
        body = bytearray()
        while True:
            while b"\r\n" not in self.buf:
                if self.eof or not self._fill(deadline):
                    raise ClosedError("connection closed in a chunk size line")
            eol = self.buf.find(b"\r\n")
            size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
            if size == 0:
                while True:
                    # trailer section ends with an empty line
                    if self.buf[eol:eol + 4] == b"\r\n\r\n":
                        del self.buf[:eol + 4]
                        return bytes(body), []
                    idx = self.buf.find(b"\r\n\r\n", eol)
                    if idx >= 0:
                        section = bytes(self.buf[eol + 2:idx]).decode("latin-1")
                        del self.buf[:idx + 4]
                        trailers = []
                        for line in section.split("\r\n"):
                            k, _, v = line.partition(":")
                            trailers.append((k.strip(), v.strip()))
                        return bytes(body), trailers
                    if self.eof or not self._fill(deadline):
                        raise ClosedError("connection closed in trailers")
            while len(self.buf) < eol + 2 + size + 2:
                if self.eof or not self._fill(deadline):
                    raise ClosedError("connection closed in a chunk")
            body += self.buf[eol + 2:eol + 2 + size]
            del self.buf[:eol + 2 + size + 2]

    def wait_eof(self, timeout=PATIENCE):
        """Wait until the server closes this connection; returns the time the
        EOF (or reset) was seen.  Data arriving meanwhile is kept in buf."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except ResponseTimeout:
                raise AssertionError("server did not close the connection within %.1fs"
                                     % timeout)
        return time.monotonic()


def http_get(port, path, timeout=PATIENCE, host="127.0.0.1"):
    """One GET on a fresh connection; returns a Response."""
    with Client(port, host=host, timeout=timeout) as c:
        c.request("GET", path, [("Connection", "close")])
        return c.read_response(timeout=timeout)


def connect_refused(port, host="127.0.0.1", timeout=PATIENCE):
    """True when a TCP connect to PORT is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()
    return False


def tcp_queues(local, remote):
    """(tx_queue, rx_queue) of the kernel's TCP socket LOCAL -> REMOTE (both
    (ip, port) on 127.0.0.1), from /proc/net/tcp; None when there is none.
    tx_queue: bytes sent that the peer has not acknowledged; rx_queue:
    bytes received that its process has not read yet.  How a test knows
    that fanoutd has read what an upstream sent."""
    def hexaddr(a):
        return "%s:%04X" % (socket.inet_aton(a[0])[::-1].hex().upper(), a[1])
    want = (hexaddr(local), hexaddr(remote))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if (p[1], p[2]) == want:
                tx, rx = p[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None



def wait_partial_answer_read(fake, tag):
    """The request tagged TAG at FAKE, once FAKE has sent the part of its
    answer that partial= asked for and fanoutd has read every byte of it:
    nothing left to send at the fake, in flight, or unread by fanoutd
    (whose curl hands what it reads to fanoutd at once)."""
    req = fake.wait_for(
        lambda: next((q for q in fake.requests
                      if q.tag == tag and q.partial_sent), None),
        what="%s's partial answer" % fake.name)
    fake_end = tuple(req.conn.sock.getsockname()[:2])
    fd_end = tuple(req.conn.peer[:2])

    def all_read():
        mine = tcp_queues(fake_end, fd_end)
        theirs = tcp_queues(fd_end, fake_end)
        return (not req.conn._outbuf and mine is not None and
                theirs is not None and mine[0] == 0 and theirs[1] == 0)
    wait_until(all_read, what="fanoutd to read %s's partial answer" % fake.name)
    return req

# ----------------------------------------------------------------------
# metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            raise AssertionError("unparsable metrics line %r" % line)
        name, labels_s, value = m.groups()
        labels = {}
        if labels_s:
            pos = 0
            while pos < len(labels_s):
                lm = _LABEL_RE.match(labels_s, pos)
                if not lm:
                    raise AssertionError("bad labels in %r" % line)
                labels[lm.group(1)] = (lm.group(2).replace('\\"', '"')
                                       .replace("\\n", "\n").replace("\\\\", "\\"))
                pos = lm.end()
        out[(name, frozenset(labels.items()))] = float(value)
    return out


class Metrics(dict):
    def get(self, name, default=0.0, **labels):
        return dict.get(self, (name, frozenset(labels.items())), default)

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self

    def sum(self, name, **labels):
        """Sum over every series of NAME whose labels include LABELS."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= set(ls))


# ----------------------------------------------------------------------
# the daemon

def duration(v):
    if isinstance(v, (int, float)):
        return "%dms" % int(v * 1000)
    return v


# Every timeout that a test is not about is one that cannot fire: a test of
# something else must not turn into a 408, a 504 or a connect error because
# the machine is slow (valgrind on a loaded 2-core box).  These are the
# defaults of every generated configuration; a test that is about one of them
# sets it (a value of None leaves the key out: fanoutd's own default).
# Where a line of fanoutd's error log starts: a UTC timestamp with
# milliseconds, or under journald (JOURNAL_STREAM names its stderr) a syslog
# priority such as "<6>".  Anchor a pattern with it: LOG_START + "info ...".
LOG_START = r"(?m)^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z |<[0-7]>)"


CALM_SERVER = {"header_timeout": "10m", "body_timeout": "10m",
               "keepalive_timeout": "10m"}
# eject_after 0, budget_min 100000: passive health and budgets are tested
# where they are meant (test_health.py); elsewhere a run of 5xx answers
# must not take an upstream out, nor a burst of hedges hit a budget.
CALM_UPSTREAM = {"connect_timeout": "10m", "timeout": "10m", "eject_after": "0"}
CALM_ROUTE = {"deadline": "10m", "budget_min": "100000"}

# stop(): how long a SIGTERM alone is given before a second one cancels
# whatever the test left in flight.  Only cleanup waits on it.
QUICK_EXIT = 2.0


class Fanoutd:
    """One fanoutd process with a generated configuration.

    server:     extra [server] keys (listen, access_log, log_level are set)
    upstreams:  {name: url_or_FakeUpstream_or_dict}
    routes:     {name: {match, mode, upstreams, deadline, ...}}
    extra:      raw text appended to the config
    """

    def __init__(self, upstreams=None, routes=None, server=None, admin=None,
                 extra="", binary=None, env=None, port=None, admin_port=None,
                 wrapper=None, preexec_fn=None, stop_grace=PATIENCE):
        self.binary = binary or FANOUTD
        # wrapper: argv run in front of the binary (e.g. valgrind ...);
        # preexec_fn: run in the child before exec (e.g. a low RLIMIT_NOFILE);
        # stop_grace: seconds stop() waits for an exit before SIGKILL
        self.wrapper = list(wrapper or [])
        # FANOUTD_TEST_WRAPPER="valgrind -q --error-exitcode=99" runs every
        # daemon of a test file under that command (scripts/test.sh --stress).
        if not self.wrapper and os.environ.get("FANOUTD_TEST_WRAPPER"):
            self.wrapper = os.environ["FANOUTD_TEST_WRAPPER"].split()
        self.preexec_fn = preexec_fn
        self.stop_grace = stop_grace
        # env: variables added to the daemon's environment (a value of None
        # removes one).  NOTIFY_SOCKET and WATCHDOG_* are never inherited
        # from the test run: a test that wants them passes them here.
        self.env = dict(env or {})
        # port, admin_port: listen on these instead of fresh free ports (a
        # restart on the same addresses)
        self.fixed_port = port
        self.fixed_admin_port = admin_port
        self.upstreams = upstreams or {}
        self.routes = routes or {}
        self.server_opts = dict(server or {})
        self.admin_opts = dict(admin or {})
        self.extra = extra
        self.tmp = tempfile.mkdtemp(prefix="fanoutd-it-")
        self.config_path = os.path.join(self.tmp, "fanoutd.ini")
        self.access_log = os.path.join(self.tmp, "access.log")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.proc = None
        self.port = None
        self.admin_port = None
        self._live_ports = (None, None)     # the ports it listens on now
        self.returncode = None

    # config ------------------------------------------------------------
    def render_config(self):
        server = {"listen": "127.0.0.1:%d" % self.port,
                  "access_log": self.access_log,
                  "log_level": "debug"}
        server.update(CALM_SERVER)
        # FANOUTD_TEST_WORKERS=N runs every test with N event-loop threads.
        if os.environ.get("FANOUTD_TEST_WORKERS"):
            server["workers"] = os.environ["FANOUTD_TEST_WORKERS"]
        server.update(self.server_opts)
        out = ["[server]"]
        for k, v in server.items():
            if v is not None:
                out.append("%s = %s" % (k, duration(v)))
        admin = {"listen": "127.0.0.1:%d" % self.admin_port}
        admin.update(self.admin_opts)
        out += ["", "[admin]"]
        for k, v in admin.items():
            if v is not None:
                out.append("%s = %s" % (k, duration(v)))
        for name, u in self.upstreams.items():
            if isinstance(u, (FakeUpstream, RefusedPort, Fanoutd)):
                u = {"url": u.url}
            elif isinstance(u, str):
                u = {"url": u}
            out += ["", '[upstream "%s"]' % name]
            u = dict(CALM_UPSTREAM, **u)
            for k, v in u.items():
                v = v.url if isinstance(v, (FakeUpstream, RefusedPort, Fanoutd)) else v
                if v is not None:
                    out.append("%s = %s" % (k, duration(v)))
        for name, r in self.routes.items():
            out += ["", '[route "%s"]' % name]
            calm = dict(CALM_ROUTE)
            if r.get("mode", "proxy") not in ("proxy", "hedge"):
                del calm["budget_min"]      # no extra attempts to budget
            r = dict(calm, **r)
            for k, v in r.items():
                if isinstance(v, (list, tuple)):
                    v = ", ".join(v)
                if v is not None:
                    out.append("%s = %s" % (k, duration(v)))
        if self.extra:
            out += ["", self.extra]
        return "\n".join(out) + "\n"

    def write_config(self):
        # a whole new file renamed into place: a SIGHUP never reads half of it
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(self.render_config())
        os.replace(tmp, self.config_path)

    def popen_env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # life --------------------------------------------------------------
    def start(self, ready_timeout=PATIENCE, attempts=4):
        """Start and wait until /healthz says ok.  A start that fails because
        a port chosen free was taken in the meantime (EADDRINUSE, nothing
        else) is retried on new ports; any other failure fails the test."""
        if not os.access(self.binary, os.X_OK):
            raise unittest.SkipTest("fanoutd binary not found at %s" % self.binary)
        for attempt in range(attempts):
            self.port = self.fixed_port or free_port()
            self.admin_port = self.fixed_admin_port or free_port()
            if self.admin_port == self.port:
                continue
            self.write_config()
            if getattr(self, "_stderr", None) is not None:
                self._stderr.close()
            self._stderr = open(self.stderr_path, "ab")
            self._stderr_start = self._stderr.tell()
            self._checked = False
            self.proc = subprocess.Popen(self.wrapper +
                                         [self.binary, "-c", self.config_path],
                                         stdin=subprocess.DEVNULL,
                                         stdout=self._stderr, stderr=self._stderr,
                                         env=self.popen_env(),
                                         preexec_fn=self.preexec_fn)
            _live[self.proc.pid] = self.proc
            try:
                self.wait_ready(ready_timeout)
                self._live_ports = (self.port, self.admin_port)
                return self
            except _StartExit as e:
                if (e.code == 2 and attempt + 1 < attempts and
                        not self.fixed_port and not self.fixed_admin_port and
                        self._lost_port_race()):
                    continue
                raise AssertionError("fanoutd exited with %d while starting:\n%s"
                                     % (e.code, self.stderr_tail()))
            except AssertionError:
                self.stop()
                raise AssertionError("fanoutd not ready within %.1fs:\n%s"
                                     % (ready_timeout, self.stderr_tail()))
        raise AssertionError("fanoutd could not start:\n%s" % self.stderr_tail())

    def _lost_port_race(self):
        """Whether the start that just failed could not bind a port because
        another process took it (its log says "cannot listen on ADDR:
        address in use by PID (COMM)", or "... address already in use" when
        the holder could not be found)."""
        f = self._stderr
        f.flush()
        with open(self.stderr_path, "rb") as r:
            r.seek(self._stderr_start)
            text = r.read().decode("utf-8", "replace")
        return bool(re.search(r"cannot listen on .*(?:address in use by "
                              r"|address already in use)", text))

    def wait_ready(self, timeout=PATIENCE):
        end = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                _live.pop(self.proc.pid, None)
                self.returncode = rc
                raise _StartExit(rc)
            try:
                r = http_get(self.admin_port, "/healthz", timeout=PATIENCE)
                if r.status == 200 and r.body.strip() == b"ok":
                    return
            except (OSError, AssertionError):
                pass
            if time.monotonic() >= end:
                raise AssertionError("not ready")
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        """This daemon's listen address as an upstream URL (after start():
        a chain puts one fanoutd in front of another)."""
        if self.port is None:
            raise AssertionError("fanoutd not started: no URL yet")
        return "http://127.0.0.1:%d" % self.port

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def sigterm(self):
        self.signal(signal.SIGTERM)

    def sighup(self):
        self.signal(signal.SIGHUP)

    def sigusr1(self):
        self.signal(signal.SIGUSR1)

    def wait_exit(self, timeout=PATIENCE):
        """Wait for the process to exit; returns its exit code (negative for
        a signal).  Raises AssertionError if it is still running."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("fanoutd (pid %d) still running after %.1fs"
                                 % (self.proc.pid, timeout))
        _live.pop(self.proc.pid, None)
        self.returncode = rc
        return rc

    def stop(self):
        """Kill by pid (SIGTERM, then SIGKILL) and reap; idempotent.

        Fails when the daemon did not exit 0 on our SIGTERM, or when a
        sanitizer (ASan, LSan, UBSan) reported anything on its stderr."""
        running = self.proc is not None and self.proc.poll() is None
        twice = False
        if running:
            twice = self._shut()
        if self.proc is not None:
            self.returncode = _terminate(self.proc, 0)
        f = getattr(self, "_stderr", None)
        if f is not None:
            f.close()
            self._stderr = None
        if self.proc is not None and not getattr(self, "_checked", False):
            self._checked = True
            text = self.stderr_text()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    raise AssertionError("sanitizer report from fanoutd:\n%s"
                                         % self.stderr_tail(80))
            ok = (0, -signal.SIGTERM) if twice else (0,)
            if running and self.returncode not in ok:
                raise AssertionError("fanoutd exited %r on SIGTERM, not 0:\n%s"
                                     % (self.returncode, self.stderr_tail(40)))
        return self.returncode

    def _shut(self):
        """End a running daemon the way an operator would: SIGTERM (a drain).
        A test may leave requests in flight (held at a fake upstream) that
        the drain would wait for, so if the process is still there a moment
        later, a second SIGTERM cancels what is left.  Waits up to stop_grace
        for the exit.  Returns whether the second SIGTERM was sent: one
        that arrives while fanoutd is already on its way out may find the
        default action back in place."""
        proc = self.proc
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(QUICK_EXIT)
            return False
        except subprocess.TimeoutExpired:
            pass
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        try:
            proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            pass            # _terminate() kills it, and the exit code says so
        return True

    def cleanup(self):
        try:
            self.stop()
        finally:
            if not os.environ.get("FANOUTD_KEEP_TMP"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # observation -------------------------------------------------------
    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def log_contains(self, needle):
        return needle in self.stderr_text()

    def metrics(self, timeout=PATIENCE):
        r = http_get(self.admin_port, "/metrics", timeout=timeout)
        if r.status != 200:
            raise AssertionError("/metrics answered %d" % r.status)
        return Metrics(parse_metrics(r.body.decode("utf-8")))

    def metric(self, name, **labels):
        return self.metrics().get(name, **labels)

    def wait_metric(self, name, pred, timeout=PATIENCE, **labels):
        """Wait until pred(value of NAME{LABELS}) holds; returns the value."""
        box = {}

        def check():
            box["v"] = self.metrics().get(name, **labels)
            return pred(box["v"])
        try:
            wait_until(check, timeout, "%s%s" % (name, labels or ""))
        except AssertionError as e:
            raise AssertionError("%s; last value %r" % (e, box.get("v")))
        return box["v"]

    def wait_outcome(self, m0, upstream, outcome, n=1):
        """Wait until fanoutd has counted N more upstream requests of
        OUTCOME (ok, status, error, cancelled) for UPSTREAM than in the
        metrics M0: the event a test releases the next answer on."""
        want = m0.get("fanoutd_upstream_requests_total", upstream=upstream,
                      outcome=outcome) + n
        return self.wait_metric("fanoutd_upstream_requests_total",
                                lambda v: v >= want, upstream=upstream,
                                outcome=outcome)

    def healthz(self, timeout=PATIENCE):
        return http_get(self.admin_port, "/healthz", timeout=timeout)

    # reload ------------------------------------------------------------
    def reload_counts(self, admin_port=None):
        """(ok, error) of fanoutd_config_reloads_total, read on ADMIN_PORT
        (default: the current one)."""
        r = http_get(admin_port or self.admin_port, "/metrics")
        if r.status != 200:
            raise AssertionError("/metrics answered %d" % r.status)
        m = Metrics(parse_metrics(r.body.decode("utf-8")))
        return (m.get("fanoutd_config_reloads_total", result="ok"),
                m.get("fanoutd_config_reloads_total", result="error"))

    def reload(self, expect="ok", timeout=PATIENCE):
        """Write the configuration again from the current attributes
        (upstreams, routes, server_opts, admin_opts, extra, port, admin_port:
        change them first), SIGHUP, and wait until fanoutd has counted the
        reload as EXPECT ("ok" or "error") in
        fanoutd_config_reloads_total{result}.  The admin listener may move
        with the reload: the counters are read on the old and the new admin
        port, and port/admin_port are left at the ones that are live.
        Returns (ok, error) after the reload."""
        assert expect in ("ok", "error")
        old = self._live_ports
        new = (self.port, self.admin_port)
        before = self.reload_counts(old[1])
        self.write_config()
        self.sighup()
        box = {}

        def done():
            for port in dict.fromkeys((new[1], old[1])):
                try:
                    c = self.reload_counts(port)
                except (OSError, AssertionError):
                    continue
                box["c"] = c
                if c[0] > before[0] or c[1] > before[1]:
                    return c
            return None
        try:
            after = wait_until(done, timeout, "the reload to be counted")
        except AssertionError as e:
            raise AssertionError("%s (before %r, last %r):\n%s" % (
                e, before, box.get("c"), self.stderr_tail()))
        got = "ok" if after[0] > before[0] else "error"
        if got != expect:
            raise AssertionError("reload counted as %s, expected %s:\n%s"
                                 % (got, expect, self.stderr_tail()))
        self._live_ports = new if got == "ok" else old
        self.port, self.admin_port = self._live_ports
        return after

    def access_log_lines(self):
        try:
            with open(self.access_log, "rb") as f:
                data = f.read().decode("utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in data.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise AssertionError("access log line is not JSON: %r" % line)
        return out

    def wait_access_log(self, pred=None, timeout=PATIENCE, what="an access log line",
                        request_id=None):
        """The first access log entry for which pred(entry) is true."""
        if request_id is not None:
            pred = lambda e, rid=request_id: e.get("request_id") == rid
            what = "access log line for request_id %s" % request_id

        def find():
            for e in self.access_log_lines():
                if pred is None or pred(e):
                    return e
            return None
        return wait_until(find, timeout, what)

    def client(self, timeout=PATIENCE):
        return Client(self.port, timeout=timeout)

    def get(self, target, headers=None, timeout=PATIENCE):
        with self.client() as c:
            return c.get(target, headers, timeout=timeout)


class _StartExit(Exception):
    def __init__(self, code):
        Exception.__init__(self, "exited %d" % code)
        self.code = code


def run_cli(args, timeout=PATIENCE, binary=None):
    """Run fanoutd with ARGS to completion; returns CompletedProcess (text)."""
    binary = binary or FANOUTD
    if not os.access(binary, os.X_OK):
        raise unittest.SkipTest("fanoutd binary not found at %s" % binary)
    p = subprocess.Popen([binary] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _live[p.pid] = p
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _terminate(p)
        raise AssertionError("fanoutd %s did not exit within %.0fs" % (args, timeout))
    _live.pop(p.pid, None)
    return subprocess.CompletedProcess([binary] + list(args), p.returncode,
                                       out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


# ----------------------------------------------------------------------
# unittest glue

class TestCase(unittest.TestCase):
    """Base class: keeps track of daemons and fakes and dumps the daemon's
    stderr when a test fails."""

    maxDiff = None

    def setUp(self):
        self._daemons = []
        self._fake_failures = {}    # id(fake) -> failures seen before this test

    def fake(self, name="up", **kw):
        u = FakeUpstream(name, **kw)
        self.addCleanup(self.assertFakeFine, u)
        self.addCleanup(u.close)
        return u

    def assertFakeFine(self, *fakes):
        """Nothing went wrong on the fakes' side (a wait= that never
        happened); called for every fake a test made or shares."""
        for u in fakes:
            seen = self._fake_failures.get(id(u), 0)
            new = list(getattr(u, "failures", ())[seen:])
            if new:
                self.fail("fake upstream: " + "; ".join(new))
            # a wait= still pending when its test is over never happened
            # in that test: the test's ordering is wrong, say so here rather
            # than PATIENCE later in another test
            left = u.waiting() if hasattr(u, "waiting") else []
            if left:
                self.fail("fake upstream %s: the test ended with wait= never "
                          "met for %r" % (u.name, left))

    def refused(self):
        r = RefusedPort()
        self.addCleanup(r.close)
        return r

    def daemon(self, start=True, **kw):
        d = Fanoutd(**kw)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        if start:
            d.start()
        return d

    def tearDown(self):
        if self._failed():
            for d in self._daemons:
                sys.stderr.write("---- fanoutd stderr (%s), last lines ----\n%s\n"
                                 % (d.config_path, d.stderr_tail(60)))
                try:
                    sys.stderr.write("---- config ----\n%s\n" % d.render_config())
                except Exception:
                    pass

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if hasattr(outcome, "success"):
            return not outcome.success
        return False

    # assertions -------------------------------------------------------
    def assertCancelled(self, fake, req, what="upstream connection"):
        """REQ (a Request at FAKE, held there: hold=1 or hang=1) was given up
        by fanoutd: its upstream connection closes, and REQ was never
        answered.  How fast is not checked here (bench/cancel_latency.py and
        fanoutd_cancel_latency_seconds measure it); that it happens at all,
        while the upstream would have held it for ever, is.  Returns the
        time the close was seen."""
        try:
            closed = fake.wait_closed(req)
        except AssertionError:
            self.fail("%s was not closed within %.0fs: the cancel did not reach "
                      "upstream %s" % (what, PATIENCE, fake.name))
        self.assertIsNone(req.responded, "%s: %r was answered" % (what, req))
        return closed

    def assertNotBefore(self, t, t0, limit, what):
        """T (an answer's .received, a request's .arrived, ...) came no
        sooner than LIMIT seconds after T0, the client's send.  The lower
        bound of a timer is the one timing a test checks: fanoutd starts a
        timer only after the client sent, and its timers run on the precise
        monotonic clock (the tests' own), so there is no allowance.  There
        is no upper bound: a slow machine is late, never early."""
        if hasattr(t, "received"):
            t = t.received
        dt = t - t0
        self.assertGreaterEqual(dt, limit, "%s %.1f ms after the client's send, "
                                "before its %.0f ms" % (what, dt * 1000, limit * 1000))
        return dt

    def assertOpenUntil(self, fake, obj, t, what="upstream connection"):
        """OBJ's upstream connection was still open at time T (or closed
        after it)."""
        conn = obj.conn if hasattr(obj, "conn") else obj
        closed = conn.closed
        if closed is not None:
            self.assertGreaterEqual(closed, t, "%s was closed %.0f ms too early"
                                    % (what, (t - closed) * 1000))

    def assertNoRequest(self, fake, pred, within, what="a request"):
        """No request matching PRED reaches FAKE within WITHIN seconds (a
        bounded observation window for a negative assertion)."""
        try:
            r = fake.wait_for_request(pred, timeout=within)
        except AssertionError:
            return
        self.fail("%s reached upstream %s but should not have: %r"
                  % (what, fake.name, r))

    def assertEnvelope(self, resp, status, names):
        """RESP is a JSON fan-out envelope with STATUS whose members are
        exactly NAMES, in that order; returns it as a dict."""
        self.assertEqual(resp.status, status, resp)
        self.assertTrue(resp.header("x-request-id"), "no X-Request-Id: %r" % resp)
        ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
        self.assertEqual(ctype, "application/json", resp)
        try:
            pairs = json.loads(resp.body.decode("utf-8"),
                               object_pairs_hook=lambda kv: kv)
        except ValueError:
            self.fail("envelope is not JSON: %r" % resp.body[:300])
        self.assertIsInstance(pairs, list, "envelope is not an object: %r" % resp.body)
        self.assertEqual([k for k, _ in pairs], list(names),
                         "envelope members (in order): %r" % resp.body[:500])
        return resp.json()

    def assertLegOK(self, env, name, status=200):
        leg = env.get(name)
        self.assertIsInstance(leg, dict, env)
        self.assertNotIn("error", leg, "leg %s failed: %r" % (name, leg))
        self.assertEqual(leg.get("status"), status, "leg %s: %r" % (name, leg))
        return leg

    def assertLegError(self, env, name, error, reason=None):
        leg = env.get(name)
        self.assertIsInstance(leg, dict, env)
        self.assertEqual(leg.get("error"), error, "leg %s: %r" % (name, leg))
        self.assertIsInstance(leg.get("reason"), str, "leg %s: %r" % (name, leg))
        if reason is not None:
            self.assertEqual(leg.get("reason"), reason, "leg %s: %r" % (name, leg))
        return leg

    def assertErrorJSON(self, resp, status):
        self.assertEqual(resp.status, status, resp)
        rid = resp.header("x-request-id")
        self.assertTrue(rid, "no X-Request-Id on %r" % resp)
        try:
            doc = resp.json()
        except ValueError:
            self.fail("error body is not JSON: %r" % resp.body)
        self.assertIsInstance(doc, dict)
        self.assertIsInstance(doc.get("error"), str, doc)
        self.assertTrue(doc["error"], doc)
        self.assertEqual(doc.get("request_id"), rid, doc)
        return doc


def main():
    """Run the tests of __main__; exit 0 pass, 1 fail, 77 all skipped."""
    if not os.access(FANOUTD, os.X_OK):
        print("SKIP: fanoutd binary not found at %s (set FANOUTD)" % FANOUTD)
        sys.exit(SKIP)
    prog = unittest.main(module="__main__", exit=False, verbosity=2)
    r = prog.result
    _kill_all()
    if r.failures or r.errors or getattr(r, "unexpectedSuccesses", None):
        sys.exit(1)
    if r.testsRun == 0 or len(r.skipped) == r.testsRun:
        sys.exit(SKIP)
    sys.exit(0)


class SharedDaemonTest(TestCase):
    """One fanoutd and a set of named FakeUpstreams shared by a class.

    FAKES names the fakes (each is also the upstream's name in the config,
    so a query option NAME.OPT scopes to it); REFUSED names RefusedPorts.
    config(fakes) returns the Fanoutd keyword arguments."""

    FAKES = ("a", "b", "c")
    REFUSED = ()
    # Paths requested once after the start, whatever they answer: a
    # daemon's first requests are slow under valgrind (its code is
    # translated on the first pass), so a class whose routes have short
    # deadlines uses each once first.
    WARM = ()
    _tag_seq = None

    @classmethod
    def config(cls, f):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.f = {}
        cls.fd = None
        try:
            for n in cls.FAKES:
                cls.f[n] = FakeUpstream(n)
            for n in cls.REFUSED:
                cls.f[n] = RefusedPort()
            cls.fd = Fanoutd(**cls.config(cls.f))
            cls.fd.start()
            for path in cls.WARM:
                cls.fd.get(path)    # any answer: a warm-up may meet a deadline
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.fd is not None:
                cls.fd.cleanup()
        finally:
            for x in cls.f.values():
                x.close()

    def setUp(self):
        super().setUp()
        self._daemons.append(self.fd)
        fakes = [u for u in self.f.values() if hasattr(u, "failures")]
        for u in fakes:
            self._fake_failures[id(u)] = len(u.failures)
        self.addCleanup(self.assertFakeFine, *fakes)

    def tag(self, prefix="t"):
        cls = type(self)
        if cls._tag_seq is None:
            cls._tag_seq = iter(range(1, 1 << 30))
        return "%s%d" % (prefix, next(cls._tag_seq))

    def call(self, target, headers=None, method="GET", body=None, timeout=PATIENCE,
             rid=None):
        """One request on a new connection; returns (response, t_sent)."""
        headers = list((headers or {}).items()) if isinstance(headers, dict) \
            else list(headers or [])
        if rid is not None:
            headers.append(("X-Request-Id", rid))
        with self.fd.client(timeout=timeout) as c:
            t0 = time.monotonic()
            c.request(method, target, headers, body)
            r = c.read_response(timeout=timeout, method=method)
        return r, t0
