"""A scriptable HTTP/1.1 upstream for fanoutd's integration tests.

One selector loop in a background thread serves every connection, so a
connection that is holding back a response (``?delay=``, ``?hang=1``) is
still read all the time: the moment fanoutd closes or resets it, the close is
seen and its time recorded.  That is what lets a test assert that a
cancellation really reached the upstream, and how fast.

Behaviour is chosen by the query string of each request:

  delay=MS     hold the response for MS milliseconds
  status=N     answer with status N (default 200)
  body=TEXT    answer with TEXT as the body
  size=N       answer with N bytes ("x" * N)
  hang=1       never answer (the connection stays open until the peer leaves)
  close=1      close the connection without answering
  echo=1       answer with a JSON echo of the request (see Request.echo())
  hdr=N:V      add response header N: V (repeatable)
  ctype=T      Content-Type of the answer (default text/plain, echo: JSON)
  chunked=1    send the body chunked instead of with Content-Length
  bodyhex=HEX  answer with these bytes (binary bodies: NUL, invalid UTF-8)
  partial=N    send the head and only the first N body bytes, then hold the
               rest back forever (a response cut mid-body by the peer)
  reset=headers  send half of the response head, then reset the connection
               (RST: SO_LINGER 0 and close)
  reset=body   send the head and half of the body, then reset the connection
  garbage=1    answer with bytes that are not HTTP, then hold the connection
               open (the peer must notice on its own)
  after=close  answer as usual (keep-alive), then close the connection once
               the answer is written: the peer finds it closed while idle
  after=junk   answer as usual, then send bytes that are not HTTP on the idle
               connection (req.after_sent records when)
  hold=1       hold the answer until the test calls release(TAG) (or
               release_all()); then it is answered as the other options say.
               A release may come before the request: it is answered at once.
               The order of events a test needs ("answer only once the
               SIGTERM was taken in") is made this way, never with delay=
  wait=N1,N2   hold the answer (before hold=, delay=, close=, hang=) until
               the fake upstreams named N1, N2 (in this process) have each
               received a request with the same tag=.  In fan-out this
               orders the legs by construction: "a.wait=b,c" answers leg a
               only once legs b and c are at their upstreams.  A wait= that
               has not happened after PATIENCE seconds is a failure of the
               test: the connection is closed unanswered and the failure is
               recorded in .failures (the harness fails the test with it)
  tag=...      ignored by the server; lets a test find its own request

In fan-out every leg gets the same path and query, so an option can be
scoped to one upstream: ``NAME.OPT=V`` (NAME is the FakeUpstream's name)
applies only on that upstream and wins over a plain ``OPT=V``; e.g.
``?a.delay=300&b.status=503&body=hi``.  A FakeUpstream may also carry
defaults (``FakeUpstream("a", defaults="delay=300")`` or a dict) used when
the request names neither.  Precedence: handler spec, NAME.OPT, OPT,
defaults.  ``set_defaults(opts, path=None)`` changes them while it runs;
with PATH they apply only to requests for that path and win over the plain
defaults (``up.set_defaults("status=503", path="/health")`` makes an active
health check fail from its next request on; ``up.set_defaults({},
path="/health")`` ends that).  ``requests_to(PATH)`` lists the requests for
a path; ``Request.status`` is the status a request was answered with.

``FakeUpstream("a", idle_close_ms=200)`` closes a keep-alive connection
that has been idle (its answers written, nothing asked since) for that long,
as a server's keep-alive timeout does: with a FIN, or with an RST when
``idle_reset=True``.  Its close_kind is then "idle".

Everything seen is recorded: every connection (opened, closed, how it ended)
and every request on it (arrival time, method, target, headers, body).  Tests
wait on what was recorded with the bounded ``wait_*`` methods, never with
sleeps.  All times are ``time.monotonic()``.
"""

import hashlib
import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import threading
import time
import urllib.parse

__all__ = ["FakeUpstream", "RefusedPort", "Connection", "Request", "HeaderLookup"]

# The bound of every wait for something that must happen (a request
# arriving, a connection closing, a wait= condition): long enough that it
# never fires on a slow or loaded machine, valgrind included.  It bounds how
# long a broken test takes to fail, nothing else.  How fast things happen is
# the benchmarks' business, not the tests'.
PATIENCE = float(os.environ.get("FANOUTD_TEST_PATIENCE") or 60)
WAIT_LIMIT = PATIENCE           # wait=: the longest an answer is held
_live = {}                      # name -> the FakeUpstream of that name, for wait=
_live_lock = threading.Lock()

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    418: "I'm a teapot", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def wait_on(cond, predicate, timeout, failure):
    """Wait on the condition variable COND until predicate() (called under
    its lock) is true, and return its value; after TIMEOUT seconds raise
    AssertionError(failure())."""
    end = time.monotonic() + timeout
    with cond:
        while True:
            v = predicate()
            if v:
                return v
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(failure())
            cond.wait(left)


class HeaderLookup:
    """header()/header_all() over self.headers, a list of (name, value)."""

    def header(self, name, default=None):
        """The first value of header NAME (case-insensitive)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


class Request(HeaderLookup):
    """One request as the upstream received it."""

    def __init__(self, conn, index, method, target, version, headers):
        self.conn = conn
        self.index = index            # position on its connection, from 0
        self.arrived = time.monotonic()   # when its head was complete
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers        # list of (name, value), as received
        self.body = b""
        self.complete = None          # time the body was complete
        self.responded = None         # time the response was written
        self.status = None            # the status of its answer, once written
        self.partial_sent = None      # time a partial= response was cut off
        self.after_sent = None        # time after=junk bytes were sent
        parts = urllib.parse.urlsplit(target)
        self.path = parts.path
        self.query_string = parts.query
        self.query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)

    def q(self, name, default=None):
        vals = self.query.get(name)
        return vals[0] if vals else default

    @property
    def tag(self):
        return self.q("tag")

    def echo(self):
        return {
            "method": self.method,
            "target": self.target,
            "path": self.path,
            "query": self.query_string,
            "version": self.version,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.body.decode("latin-1"),
            "body_len": len(self.body),
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "conn": self.conn.id,
            "index": self.index,
        }

    def __repr__(self):
        return "<Request %s %s conn=%d>" % (self.method, self.target, self.conn.id)


class Connection:
    """One accepted connection and what happened on it."""

    def __init__(self, cid, sock, peer):
        self.id = cid
        self.sock = sock
        self.peer = peer
        self.opened = time.monotonic()
        self.closed = None            # time the close was seen / done
        self.close_kind = None        # "eof", "reset", "server"
        self.requests = []
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._pending = []            # parsed requests not yet answered
        self._busy = False            # a response is being held back
        self._close_after_write = False
        self._parse_state = None      # (Request, needed) while reading a body
        self._idle_gen = 0            # bumped by every byte read (idle_close_ms)

    @property
    def is_closed(self):
        return self.closed is not None

    def __repr__(self):
        return "<Connection %d opened=%.3f closed=%s kind=%s reqs=%d>" % (
            self.id, self.opened, self.closed, self.close_kind, len(self.requests))


class _Bad(Exception):
    pass


def _options(opts):
    """Options as a dict, from a dict, a query string or None."""
    if isinstance(opts, str):
        return {k: v for k, v in urllib.parse.parse_qsl(opts, keep_blank_values=True)}
    return dict(opts or {})


def _has_tag(name, tag):
    """Whether the live fake upstream NAME has received a request tagged TAG."""
    with _live_lock:
        f = _live.get(name)
    if f is None or tag is None:
        return False
    with f.cond:
        return any(r.tag == tag for r in f.requests)


def _poke_waiting():
    """A request was recorded: wake the fakes holding wait= answers."""
    with _live_lock:
        fakes = [f for f in _live.values() if f._parked]
    for f in fakes:
        f._wake()


class FakeUpstream:
    """An HTTP/1.1 server on 127.0.0.1 in a background thread."""

    def __init__(self, name="up", host="127.0.0.1", port=0, handler=None,
                 defaults=None, idle_close_ms=None, idle_reset=False):
        self.name = name
        self.idle_close_ms = idle_close_ms
        self.idle_reset = idle_reset
        self.handler = handler        # optional callable(req) -> dict or None
        self.defaults = _options(defaults)   # option -> value, lowest precedence
        self._path_defaults = {}      # path -> {option: value}, set_defaults()
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(512)
        self._lsock.setblocking(False)
        self.host, self.port = self._lsock.getsockname()[:2]
        self.url = "http://%s:%d" % (self.host, self.port)
        self.cond = threading.Condition()
        self.connections = []
        self.requests = []
        self._ids = itertools.count(1)
        self._timers = []
        self._parked = []             # (deadline, conn, req, spec, names): wait=
        self._held = []               # (conn, req, spec): hold=1, not released
        self._released = set()        # tags released (release()), None: all
        self.failures = []            # what went wrong on this side (wait=)
        self._seq = itertools.count()
        self._sel = selectors.DefaultSelector()
        self._wake_lock = threading.Lock()   # the pipe closes under it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._lsock, selectors.EVENT_READ, ("listen", None))
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._stopping = False
        with _live_lock:
            _live[name] = self
        self.error = None             # an exception that killed the loop
        self._thread = threading.Thread(target=self._run, name="fake-" + name,
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------
    # public, thread-safe

    def close(self):
        """Stop the loop and close every socket (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        with _live_lock:
            if _live.get(self.name) is self:
                del _live[self.name]
        self._wake()
        self._thread.join(5)
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_w = None

    def _wake(self):
        """Make the loop go round (from any thread)."""
        with self._wake_lock:
            if self._wake_w is None:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass    # full: it will go round anyway

    stop = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def snapshot(self):
        with self.cond:
            return list(self.requests)

    def requests_tagged(self, tag):
        with self.cond:
            return [r for r in self.requests if r.tag == tag]

    def requests_to(self, path):
        """The requests received for PATH (the path alone, no query)."""
        with self.cond:
            return [r for r in self.requests if r.path == path]

    def set_defaults(self, opts, path=None):
        """Replace the defaults (a dict or a query string) from now on: a
        request whose answer is decided after this call takes them.  With
        PATH, the defaults of that path only (they win over the plain
        ones); empty OPTS removes them."""
        opts = _options(opts)
        with self.cond:
            if path is None:
                self.defaults = opts
            else:
                paths = dict(self._path_defaults)
                if opts:
                    paths[path] = opts
                else:
                    paths.pop(path, None)
                self._path_defaults = paths

    def release(self, tag):
        """Answer the request held (hold=1) with tag TAG, and any that comes
        later with it."""
        with self.cond:
            self._released.add(tag)
        self._wake()

    def release_all(self):
        """Answer every held request, and any that comes later."""
        self.release(None)

    def waiting(self):
        """The requests whose wait= has not happened yet, on connections
        still open."""
        with self.cond:
            parked = list(self._parked)
        return [req for _, conn, req, _, names in parked
                if conn.closed is None and
                not all(_has_tag(n, req.tag) for n in names)]

    def held(self):
        """The requests held now (hold=1, not yet released)."""
        with self.cond:
            return [req for conn, req, _ in self._held if conn.closed is None]

    def wait_for(self, predicate, timeout=PATIENCE, what="condition"):
        """Wait until predicate() (called under the lock) is true; returns its
        value; raises AssertionError after TIMEOUT seconds."""
        return wait_on(self.cond, predicate, timeout,
                       lambda: "%s: timed out after %.1fs waiting for %s"
                       % (self.name, timeout, what))

    def wait_for_request(self, predicate=None, timeout=PATIENCE, what=None):
        """The first recorded request for which predicate(req) is true."""
        if predicate is None:
            predicate = lambda r: True

        def find():
            for r in self.requests:
                if predicate(r):
                    return r
            return None
        return self.wait_for(find, timeout, what or "a matching request")

    def wait_for_tag(self, tag, timeout=PATIENCE):
        return self.wait_for_request(lambda r: r.tag == tag, timeout,
                                     "request tag=%s" % tag)

    def wait_requests(self, n, timeout=PATIENCE):
        return self.wait_for(lambda: len(self.requests) >= n and list(self.requests),
                             timeout, "%d requests" % n)

    def wait_closed(self, obj, timeout=PATIENCE):
        """Wait until a Connection (or a Request's connection) is closed;
        returns the time the close was seen."""
        conn = obj.conn if isinstance(obj, Request) else obj
        self.wait_for(lambda: conn.closed is not None, timeout,
                      "connection %d to close" % conn.id)
        return conn.closed

    def wait_connections_closed(self, conns, timeout=PATIENCE):
        conns = list(conns)
        self.wait_for(lambda: all(c.closed is not None for c in conns), timeout,
                      "%d connections to close (open: %s)" % (
                          len(conns), [c.id for c in conns if c.closed is None]))

    def open_connections(self):
        with self.cond:
            return [c for c in self.connections if c.closed is None]

    # ------------------------------------------------------------------
    # loop thread

    def _notify(self):
        with self.cond:
            self.cond.notify_all()

    def _add_timer(self, delay, fn):
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def _run(self):
        try:
            while not self._stopping:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                if self._parked:
                    left = max(0.0, min(p[0] for p in self._parked) - time.monotonic())
                    timeout = left if timeout is None else min(timeout, left)
                for key, mask in self._sel.select(timeout):
                    kind, conn = key.data
                    if kind == "listen":
                        self._accept()
                    elif kind == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                    else:
                        if conn.closed is not None:
                            continue
                        if mask & selectors.EVENT_READ:
                            self._readable(conn)
                        if conn.closed is None and mask & selectors.EVENT_WRITE:
                            self._flush(conn)
                if self._parked:
                    self._unpark()
                if self._held:
                    self._unhold()
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fn = heapq.heappop(self._timers)
                    fn()
        except Exception as e:  # keep the failure visible to the tests
            self.error = e
            import traceback
            traceback.print_exc()
        finally:
            for c in list(self.connections):
                if c.closed is None:
                    self._close(c, "server")
            try:
                self._sel.unregister(self._lsock)
            except Exception:
                pass
            self._lsock.close()
            self._sel.close()
            self._notify()

    def _accept(self):
        while True:
            try:
                sock, peer = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(next(self._ids), sock, peer)
            with self.cond:
                self.connections.append(conn)
                self.cond.notify_all()
            self._sel.register(sock, selectors.EVENT_READ, ("conn", conn))

    def _close(self, conn, kind):
        if conn.closed is not None:
            return
        try:
            self._sel.unregister(conn.sock)
        except Exception:
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        with self.cond:
            conn.closed = time.monotonic()
            conn.close_kind = kind
            self.cond.notify_all()

    def _readable(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self._close(conn, "reset")
            return
        except OSError:
            self._close(conn, "reset")
            return
        if not data:
            # The peer's FIN.  curl never half-closes, so a FIN is a close:
            # record it now, even while a response is being held back.
            self._close(conn, "eof")
            return
        conn._inbuf += data
        conn._idle_gen += 1
        try:
            self._parse(conn)
        except _Bad:
            self._queue_raw(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n", close=True)
            return
        self._advance(conn)

    def _parse(self, conn):
        while True:
            if conn._parse_state is None:
                end = conn._inbuf.find(b"\r\n\r\n")
                if end < 0:
                    if len(conn._inbuf) > 65536:
                        raise _Bad("head too large")
                    return
                head = bytes(conn._inbuf[:end]).decode("latin-1")
                del conn._inbuf[:end + 4]
                lines = head.split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    raise _Bad("request line")
                headers = []
                for line in lines[1:]:
                    if ":" not in line:
                        raise _Bad("header line")
                    k, v = line.split(":", 1)
                    headers.append((k.strip(), v.strip()))
                req = Request(conn, len(conn.requests), method, target, version, headers)
                te = (req.header("transfer-encoding") or "").lower()
                if "chunked" in te:
                    need = "chunked"
                else:
                    cl = req.header("content-length")
                    need = int(cl) if cl else 0
                with self.cond:
                    conn.requests.append(req)
                    self.requests.append(req)
                    self.cond.notify_all()
                _poke_waiting()
                if (req.header("expect") or "").lower() == "100-continue":
                    self._queue_raw(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                conn._parse_state = (req, need)
            req, need = conn._parse_state
            if need == "chunked":
                if not self._parse_chunks(conn, req):
                    return
            else:
                take = min(need, len(conn._inbuf))
                req.body += bytes(conn._inbuf[:take])
                del conn._inbuf[:take]
                need -= take
                if need > 0:
                    conn._parse_state = (req, need)
                    return
            conn._parse_state = None
            with self.cond:
                req.complete = time.monotonic()
                self.cond.notify_all()
            conn._pending.append(req)

    def _parse_chunks(self, conn, req):
        buf = conn._inbuf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            size_s = bytes(buf[:eol]).split(b";")[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise _Bad("chunk size")
            if size == 0:
                # trailers until an empty line
                end = buf.find(b"\r\n\r\n", eol)
                if eol + 2 <= len(buf) and buf[eol:eol + 4] == b"\r\n\r\n":
                    del buf[:eol + 4]
                    return True
                if end < 0:
                    return False
                del buf[:end + 4]
                return True
            if len(buf) < eol + 2 + size + 2:
                return False
            req.body += bytes(buf[eol + 2:eol + 2 + size])
            del buf[:eol + 2 + size + 2]

    def _opt(self, req, spec, k, d=None):
        """Option K for REQ on this upstream (see the module docstring)."""
        if k in spec:
            return spec[k]
        v = req.q(self.name + "." + k)
        if v is not None:
            return v
        v = req.q(k)
        if v is not None:
            return v
        v = self._path_defaults.get(req.path, {}).get(k)
        if v is not None:
            return v
        return self.defaults.get(k, d)

    def _advance(self, conn):
        """Start answering the next pending request, in order."""
        while conn.closed is None and not conn._busy and conn._pending:
            req = conn._pending.pop(0)
            self._handle(conn, req)

    def _handle(self, conn, req):
        spec = {}
        if self.handler is not None:
            spec = self.handler(req) or {}
        names = self._opt(req, spec, "wait")
        if names:
            conn._busy = True
            self._parked.append((time.monotonic() + WAIT_LIMIT, conn, req, spec,
                                 [n for n in names.split(",") if n]))
            self._unpark()
            return
        self._answer(conn, req, spec)

    def _unpark(self):
        """Answer the parked (wait=) requests whose upstreams all have
        their tag now; fail the ones that waited WAIT_LIMIT."""
        now = time.monotonic()
        for p in list(self._parked):
            deadline, conn, req, spec, names = p
            if conn.closed is not None:
                # fanoutd gave the leg up (a deadline, a cancel): nothing
                # is waiting for this answer any more
                self._parked.remove(p)
            elif all(_has_tag(n, req.tag) for n in names):
                self._parked.remove(p)
                self._answer(conn, req, spec)
            elif now >= deadline:
                self._parked.remove(p)
                with self.cond:
                    self.failures.append(
                        "%s: %r waited %.0fs for wait=%s and it never happened"
                        % (self.name, req, WAIT_LIMIT, ",".join(names)))
                self._close(conn, "server")

    def _is_released(self, req):
        with self.cond:
            return None in self._released or req.tag in self._released

    def _unhold(self):
        """Answer the held (hold=1) requests that were released."""
        for h in list(self._held):
            conn, req, spec = h
            if conn.closed is not None:
                with self.cond:
                    self._held.remove(h)
            elif self._is_released(req):
                with self.cond:
                    self._held.remove(h)
                self._answer(conn, req, spec, held=False)

    def _answer(self, conn, req, spec, held=True):
        get = lambda k, d=None: self._opt(req, spec, k, d)
        if held and get("hold") in ("1", 1, True) and not self._is_released(req):
            conn._busy = True
            with self.cond:
                self._held.append((conn, req, spec))
                self.cond.notify_all()
            return
        if get("close") in ("1", 1, True):
            self._close(conn, "server")
            return
        if get("hang") in ("1", 1, True):
            conn._busy = True      # never answered; later requests wait forever
            return
        delay = float(get("delay", 0) or 0) / 1000.0
        if delay > 0:
            conn._busy = True
            self._add_timer(delay, lambda: self._respond(conn, req, spec))
        else:
            self._respond(conn, req, spec)

    def _respond(self, conn, req, spec):
        conn._busy = False
        if conn.closed is not None:
            return
        get = lambda k, d=None: self._opt(req, spec, k, d)
        status = int(get("status", 200))
        req.status = status
        headers = []
        if get("echo") in ("1", 1, True):
            body = json.dumps(req.echo()).encode()
            ctype = "application/json"
        elif get("bodyhex") is not None:
            body = bytes.fromhex(get("bodyhex"))
            ctype = "application/octet-stream"
        elif get("size") is not None:
            body = b"x" * int(get("size"))
            ctype = "application/octet-stream"
        else:
            body = get("body", "")
            body = body.encode() if isinstance(body, str) else bytes(body)
            ctype = "text/plain"
        ctype = get("ctype", ctype)
        headers.append(("Content-Type", ctype))
        headers.append(("X-Upstream", self.name))
        headers.append(("X-Upstream-Conn", str(conn.id)))
        hdrs = req.query.get(self.name + ".hdr") or req.query.get("hdr")
        if hdrs is None:
            hdrs = [self.defaults["hdr"]] if "hdr" in self.defaults else []
        for h in list(hdrs) + list(spec.get("headers", [])):
            if isinstance(h, str):
                k, v = h.split(":", 1)
            else:
                k, v = h
            headers.append((k.strip(), v.strip()))
        chunked = get("chunked") in ("1", 1, True)
        no_body = req.method == "HEAD" or status in (204, 304) or status < 200
        if chunked and not no_body:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(len(body))))
        close = (req.header("connection") or "").lower() == "close"
        if close:
            headers.append(("Connection", "close"))
        out = ["HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Status"))]
        out += ["%s: %s\r\n" % (k, v) for k, v in headers]
        out.append("\r\n")
        raw = "".join(out).encode("latin-1")
        head_len = len(raw)
        if not no_body:
            if chunked:
                step = max(1, len(body) // 3) if body else 1
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    raw += b"%x\r\n" % len(piece) + piece + b"\r\n"
                raw += b"0\r\n\r\n"
            else:
                raw += body
        reset = get("reset")
        garbage = get("garbage")
        if reset in ("headers", "body") or garbage in ("1", 1, True):
            if garbage in ("1", 1, True):
                out = b"SSH-2.0-not-http \x00\x01\x02\r\n\r\n"
            elif reset == "headers":
                out = raw[:head_len // 2]
            else:
                out = raw[:head_len + (len(raw) - head_len) // 2]
            with self.cond:
                req.partial_sent = time.monotonic()
                self.cond.notify_all()
            try:
                conn.sock.setblocking(True)
                conn.sock.sendall(out)
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn, "reset")
                return
            if garbage in ("1", 1, True):
                conn._busy = True
                return
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
            self._close(conn, "server")
            return
        partial = get("partial")
        if partial is not None and not no_body:
            # the rest never comes: this connection stays busy until the
            # peer leaves (req.responded stays None: it was not answered)
            self._queue_raw(conn, raw[:head_len + int(partial)])
            conn._busy = True
            with self.cond:
                req.partial_sent = time.monotonic()
                self.cond.notify_all()
            return
        with self.cond:
            req.responded = time.monotonic()
            self.cond.notify_all()
        after = get("after")
        if after == "close":
            close = True
        elif after == "junk":
            # a separate segment, after the answer has been read
            self._add_timer(0.05, lambda: self._after_junk(conn, req))
        self._queue_raw(conn, raw, close=close)
        self._advance(conn)

    def _after_junk(self, conn, req):
        if conn.closed is not None:
            return
        self._queue_raw(conn, b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 5\r\n\r\nstale")
        with self.cond:
            req.after_sent = time.monotonic()
            self.cond.notify_all()

    def _queue_raw(self, conn, raw, close=False):
        conn._outbuf += raw
        if close:
            conn._close_after_write = True
            conn._busy = True
        self._flush(conn)

    def _flush(self, conn):
        while conn._outbuf:
            try:
                n = conn.sock.send(conn._outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn, "reset")
                return
            del conn._outbuf[:n]
        if conn._outbuf:
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                             ("conn", conn))
        else:
            if conn._close_after_write:
                self._close(conn, "server")
                return
            self._sel.modify(conn.sock, selectors.EVENT_READ, ("conn", conn))
            if self.idle_close_ms is not None:
                gen = conn._idle_gen
                self._add_timer(self.idle_close_ms / 1000.0,
                                lambda: self._idle_close(conn, gen))

    def _idle_close(self, conn, gen):
        """idle_close_ms: close CONN if nothing was read or asked since."""
        if (conn.closed is not None or conn._idle_gen != gen or conn._busy or
                conn._pending or conn._outbuf or conn._inbuf):
            return
        if self.idle_reset:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        self._close(conn, "idle")


class RefusedPort:
    """A loopback port on which connect() is refused.

    The socket stays bound without listening, so the kernel answers SYNs with
    RST and no other process can take the port while we hold it."""

    def __init__(self, host="127.0.0.1"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = "http://%s:%d" % (self.host, self.port)

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    # Manual use: python3 fakeupstream.py [PORT]; prints its URL, serves until ^C.
    import sys
    up = FakeUpstream(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(up.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        up.close()
