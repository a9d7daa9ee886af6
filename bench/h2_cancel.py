#!/usr/bin/env python3
"""bench/h2_cancel.py - HTTP/2 RST_STREAM -> upstream connection closed, through fanoutd.

    python3 bench/h2_cancel.py [--fanoutd PATH] [-n 200] [-k 4] [--tls] [--gap-ms 20]
                               [--floor 50] [--workers 2] [--timeout 5] [--keep]

Starts a slow in-process HTTP/1.1 upstream (a selector thread that reads every connection
all the time and stamps, on CLOCK_MONOTONIC, when each request's head arrives and when its
connection is closed by the peer: the approach of the integration tests' fake upstream
used by bench/cancel_latency.py, written again here) and fanoutd in front of it (a config
of its own in a temp dir: `listen` h2c, plus a `tls` address with a throwaway self-signed
certificate made by the openssl CLI when --tls, `http2 = on`, one proxy route `/` to the
upstream, workers = 2, access_log = off).  Then, over ONE HTTP/2 connection (h2c with prior
knowledge, or TLS with ALPN h2 when --tls), each trial:

  1. opens K streams (default 4) at once: GET /hold?id=T.k, which the upstream holds;
  2. waits (bounded, --timeout) until the upstream has all K requests;
  3. t0 = monotonic() just before sending RST_STREAM (CANCEL) on one of them (the victim
     rotates over the K positions);
  4. waits (bounded) until the upstream sees the victim's connection closed: the latency is
     that upstream timestamp minus t0;
  5. checks that, at the moment the victim's upstream connection was seen closed, the K-1
     other requests' upstream connections were all still open (the upstream thread takes
     that snapshot itself, in the same callback);
  6. releases the K-1 others (the upstream answers them) and reads their answers: each
     must end (END_STREAM) with :status 200 and its own body, and no RST_STREAM.
A trial where 5 or 6 fails counts as "disturbed" (goal: 0).  Trials are --gap-ms apart, so
the RST_STREAM rate (1 per trial) stays far below fanoutd's rapid-reset limit.

Before the trials, --floor N direct trials (an HTTP/1.1 client straight to the upstream
closes its connection; same stamps) give the measurement floor: the upstream thread's
wake-up time, which every figure includes.

Prints median / p90 / p99 / max in ms (nearest rank; with n=200 the p99 is the 198th
value), the disturbed count, fanoutd's relevant counters from /metrics, and one
`h2 cancel summary:` line.  Exit 1 if a trial failed outright or fanoutd died.
Standard library only; a minimal HTTP/2 frame writer/reader and HPACK literal encoder
of its own (it does not import tests/).  Everything binds 127.0.0.1 and is bounded:
every wait has a timeout, fanoutd is started here and killed by pid at exit.
"""

import argparse
import math
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
mono = time.monotonic

# ---------------------------------------------------------------------------------------
# the slow upstream


class UpConn:
    def __init__(self, cid, sock):
        self.id = cid
        self.sock = sock
        self.buf = bytearray()
        self.closed = None          # monotonic time the peer's FIN/RST was seen
        self.close_kind = None
        self.open_at_close = None   # ids of the connections still open at that moment
        self.requests = []


class UpReq:
    def __init__(self, rid, conn, target):
        self.id = rid
        self.conn = conn
        self.target = target
        self.arrived = mono()
        self.answered = None


class Upstream:
    """HTTP/1.1 on 127.0.0.1:0 in a thread.  GET /hold?id=X is held until release(X)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1024)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.cond = threading.Condition()
        self.conns = {}             # id -> UpConn, every one ever accepted
        self.open = set()           # ids of the open ones
        self.reqs = {}              # request id -> UpReq
        self.cmds = []              # ids to release (main thread -> loop)
        self.sel = selectors.DefaultSelector()
        self.wr, self.ww = os.pipe()
        os.set_blocking(self.wr, False)
        os.set_blocking(self.ww, False)
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.sel.register(self.wr, selectors.EVENT_READ, "wake")
        self.stopping = False
        self.next_id = 1
        self.error = None
        self.thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self.thread.start()

    # -- main-thread side
    def wait(self, pred, timeout):
        end = mono() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = end - mono()
                if left <= 0 or self.error:
                    return None
                self.cond.wait(left)

    def release(self, rids):
        with self.cond:
            self.cmds.extend(rids)
        os.write(self.ww, b"x")

    def stop(self):
        self.stopping = True
        try:
            os.write(self.ww, b"x")
        except OSError:
            pass
        self.thread.join(5)

    # -- loop thread
    def _run(self):
        try:
            while not self.stopping:
                for key, _ in self.sel.select(1.0):
                    if key.data == "wake":
                        try:
                            os.read(self.wr, 4096)
                        except BlockingIOError:
                            pass
                        self._do_cmds()
                    elif key.data is None:
                        self._accept()
                    else:
                        self._readable(key.data)
        except Exception as e:          # noqa: BLE001 - report, never hang the main thread
            self.error = repr(e)
            with self.cond:
                self.cond.notify_all()
        finally:
            for c in list(self.conns.values()):
                if c.closed is None:
                    try:
                        c.sock.close()
                    except OSError:
                        pass
            self.lsock.close()
            self.sel.close()
            os.close(self.wr)
            os.close(self.ww)

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except BlockingIOError:
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = UpConn(self.next_id, s)
            self.next_id += 1
            with self.cond:
                self.conns[c.id] = c
                self.open.add(c.id)
            self.sel.register(s, selectors.EVENT_READ, c)

    def _closed(self, c, kind):
        t = mono()
        with self.cond:
            c.closed = t
            c.close_kind = kind
            self.open.discard(c.id)
            c.open_at_close = frozenset(self.open)
            self.cond.notify_all()
        self.sel.unregister(c.sock)
        c.sock.close()

    def _readable(self, c):
        try:
            data = c.sock.recv(65536)
        except ConnectionResetError:
            self._closed(c, "reset")
            return
        except BlockingIOError:
            return
        if not data:
            self._closed(c, "eof")
            return
        c.buf += data
        new = []
        while True:
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(c.buf[:end]).decode("latin-1")
            del c.buf[:end + 4]
            line = head.split("\r\n", 1)[0].split(" ")
            target = line[1] if len(line) > 1 else "/"
            m = re.search(r"[?&]id=([^&]+)", target)
            rid = m.group(1) if m else "anon.%d" % c.id
            r = UpReq(rid, c, target)
            c.requests.append(r)
            new.append(r)
        if new:
            with self.cond:
                for r in new:
                    self.reqs[r.id] = r
                self.cond.notify_all()

    def _do_cmds(self):
        with self.cond:
            rids, self.cmds = self.cmds, []
        for rid in rids:
            r = self.reqs.get(rid)
            if r is None or r.answered is not None or r.conn.closed is not None:
                continue
            body = ("held ok %s\n" % rid).encode()
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % len(body)) + body
            try:
                r.conn.sock.send(resp)          # small: fits the socket buffer
            except OSError:
                pass
            r.answered = mono()


# ---------------------------------------------------------------------------------------
# a minimal HTTP/2 client: frames, HPACK literals without indexing (no Huffman)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL = 0x8
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def frame(ftype, flags, sid, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def decode_status(block):
    """:status from the first field of a response header block, when it is an indexed
    static entry (what nghttp2's encoder sends for 200) or a literal with an indexed
    static :status name and a plain (non-Huffman) value.  None when it cannot tell."""
    if not block:
        return None
    b0 = block[0]
    if b0 & 0x80:
        return STATIC_STATUS.get(b0 & 0x7F)
    for mask, prefix in ((0xC0, 0x40), (0xF0, 0x00), (0xF0, 0x10)):
        if b0 & mask == prefix:
            idx = b0 & (0x3F if prefix == 0x40 else 0x0F)
            if idx in STATIC_STATUS and len(block) >= 2 and not block[1] & 0x80:
                ln = block[1] & 0x7F
                try:
                    return int(block[2:2 + ln].decode())
                except ValueError:
                    return None
    return None


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.block = bytearray()
        self.status = None
        self.data = bytearray()
        self.ended = False
        self.reset = None       # error code of a RST_STREAM from the server


class H2Error(Exception):
    pass


class H2Client:
    def __init__(self, port, tls, cafile, timeout):
        self.timeout = timeout
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.check_hostname = False      # the throwaway certificate is for CN=localhost
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            if self.sock.selected_alpn_protocol() != "h2":
                raise H2Error("TLS ALPN gave %r, not h2" % self.sock.selected_alpn_protocol())
            self.tls_info = "%s %s" % (self.sock.version(), self.sock.cipher()[0])
        else:
            self.sock = raw
            self.tls_info = "h2c (prior knowledge)"
        self.scheme = "https" if tls else "http"
        self.authority = "127.0.0.1:%d" % port
        self.inbuf = bytearray()
        self.streams = {}
        self.next_sid = 1
        self.goaway = None
        self.unacked = 0
        self.eof = False
        # SETTINGS: ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 2^30; connection window + 2^30
        settings = struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, 1 << 30)
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings) +
                  frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        self.got_settings = self.settings_acked = False
        self.pump(lambda: self.got_settings and self.settings_acked, timeout, "SETTINGS exchange")

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def request_frames(self, path):
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = Stream(sid)
        block = (hpack_literal(":method", "GET") + hpack_literal(":scheme", self.scheme) +
                 hpack_literal(":authority", self.authority) + hpack_literal(":path", path) +
                 hpack_literal("user-agent", "fanoutd-bench-h2_cancel"))
        return sid, frame(HEADERS, END_STREAM | END_HEADERS, sid, block)

    def rst_frame(self, sid, code=CANCEL):
        return frame(RST_STREAM, 0, sid, struct.pack(">I", code))

    def _read_frame(self, deadline):
        while True:
            if len(self.inbuf) >= 9:
                n = (self.inbuf[0] << 16) | (self.inbuf[1] << 8) | self.inbuf[2]
                if len(self.inbuf) >= 9 + n:
                    ftype, flags = self.inbuf[3], self.inbuf[4]
                    sid = struct.unpack(">I", self.inbuf[5:9])[0] & 0x7FFFFFFF
                    payload = bytes(self.inbuf[9:9 + n])
                    del self.inbuf[:9 + n]
                    return ftype, flags, sid, payload
            left = deadline - mono()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            except (ConnectionError, ssl.SSLError) as e:
                self.eof = True
                raise H2Error("connection error: %r" % e)
            if not data:
                self.eof = True
                raise H2Error("connection closed by fanoutd (goaway=%r)" % (self.goaway,))
            self.inbuf += data

    def _handle(self, ftype, flags, sid, payload):
        if ftype in (DATA, HEADERS) and flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        st = self.streams.get(sid)
        if ftype == DATA:
            self.unacked += len(payload)
            if self.unacked > (1 << 28):
                self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
                self.unacked = 0
            if st is not None:
                st.data += payload
                if flags & END_STREAM:
                    st.ended = True
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS and flags & PRIO:
                payload = payload[5:]
            if st is not None:
                st.block += payload
                if flags & END_HEADERS and st.status is None:
                    st.status = decode_status(bytes(st.block)) or -1
                if flags & END_STREAM:
                    st.ended = True
        elif ftype == RST_STREAM:
            if st is not None:
                st.reset = struct.unpack(">I", payload[:4])[0]
        elif ftype == SETTINGS:
            if flags & ACK:
                self.settings_acked = True
            else:
                self.got_settings = True
                self.send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:200])

    def pump(self, pred, timeout, what):
        deadline = mono() + timeout
        while not pred():
            f = self._read_frame(deadline)
            if f is None:
                raise H2Error("timed out after %.1fs waiting for %s" % (timeout, what))
            self._handle(*f)


# ---------------------------------------------------------------------------------------
# fanoutd


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_up(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def make_cert(tmp):
    """A throwaway self-signed P-256 certificate in TMP (openssl CLI)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise SystemExit("openssl could not make a certificate: " + r.stderr[-500:])
    return cert, key


class Server:
    """A process started here, stopped by its pid (TERM, then KILL after 10 s)."""
    name = "server"
    proc = None
    logf = None

    def spawn(self, argv, ready_ports):
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT)
        end = mono() + 15
        while mono() < end:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited at start (status %s): %s" % (
                    self.name, self.proc.returncode, open(self.log).read()[-1000:]))
            if all(port_up(p) for p in ready_ports):
                return
            time.sleep(0.02)
        raise SystemExit("%s did not listen within 15 s (log %s)" % (self.name, self.log))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def metrics(self):
        return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.logf:
            self.logf.close()


class Nginx(Server):
    """nginx as the peer: proxy_pass to the upstream with keepalive upstream connections and
    HTTP/1.1 (the choices of the shared proxies/nginx_proxy.conf), listening h2c (`listen
    ... http2`) or TLS (`listen ... ssl http2`), 2 workers, access_log off."""
    name = "nginx"

    def __init__(self, binary, tmp, upstream_port, tls, workers):
        self.tmp = tmp
        self.port, self.tls_port = free_port(), free_port()
        self.cert, key = make_cert(tmp) if tls else (None, None)
        listen = ("listen 127.0.0.1:%d ssl http2;\n        ssl_certificate %s;\n"
                  "        ssl_certificate_key %s;\n        ssl_protocols TLSv1.2 TLSv1.3;"
                  % (self.tls_port, self.cert, key)) if tls else \
            "listen 127.0.0.1:%d http2;" % self.port
        self.cfg = os.path.join(tmp, "nginx.conf")
        with open(self.cfg, "w") as f:
            f.write("""# generated by bench/h2_cancel.py
worker_processes %d;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    upstream hold {
        server 127.0.0.1:%d;
        keepalive 64;
    }
    server {
        %s
        location / {
            proxy_pass http://hold;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }
    }
}
""" % ((workers, tmp, tmp) + (tmp,) * 5 + (upstream_port, listen)))
        self.log = os.path.join(tmp, "nginx.out")
        self.binary = binary

    def start(self):
        r = subprocess.run([self.binary, "-t", "-q", "-p", self.tmp + "/", "-c", self.cfg,
                            "-e", self.tmp + "/error.log"], capture_output=True, text=True,
                           timeout=30)
        if r.returncode:
            raise SystemExit("nginx -t rejected %s: %s" % (self.cfg, r.stderr))
        self.spawn([self.binary, "-p", self.tmp + "/", "-c", self.cfg, "-e",
                    self.tmp + "/error.log"], [self.tls_port if self.cert else self.port])


class Fanoutd(Server):
    name = "fanoutd"

    def __init__(self, binary, tmp, upstream_port, tls, workers):
        self.binary, self.tmp = binary, tmp
        self.port, self.tls_port, self.admin_port = free_port(), free_port(), free_port()
        self.cert = None
        listen = "127.0.0.1:%d" % self.port
        extra = ""
        if tls:
            self.cert, key = make_cert(tmp)
            listen += ", 127.0.0.1:%d tls" % self.tls_port
            extra = "tls_cert = %s\ntls_key = %s\n" % (self.cert, key)
        self.cfg = os.path.join(tmp, "fanoutd.ini")
        with open(self.cfg, "w") as f:
            f.write("""; generated by bench/h2_cancel.py
[server]
listen = %s
%shttp2 = on
workers = %d
access_log = off
log_level = warn
keepalive_timeout = 120s
header_timeout = 30s
drain_timeout = 2s

[admin]
listen = 127.0.0.1:%d

[upstream "hold"]
url = http://127.0.0.1:%d
timeout = 60s

[route "hold"]
match = /
mode = proxy
upstreams = hold
deadline = 60s
""" % (listen, extra, workers, self.admin_port, upstream_port))
        self.log = os.path.join(tmp, "fanoutd.log")

    def start(self):
        r = subprocess.run([self.binary, "-t", "-c", self.cfg], capture_output=True, text=True,
                           timeout=30)
        if r.returncode:
            raise SystemExit("fanoutd -t rejected %s (does this fanoutd have issue 10's "
                             "HTTP/2 / TLS front end?):\n%s%s" % (self.cfg, r.stdout, r.stderr))
        self.spawn([self.binary, "-c", self.cfg], [self.port, self.admin_port])

    def metrics(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.admin_port,
                                        timeout=5) as r:
                return r.read().decode()
        except OSError as e:
            return "# metrics unavailable: %r\n" % e


# ---------------------------------------------------------------------------------------
# trials


def nearest_rank(vals, p):
    if not vals:
        return float("nan")
    return vals[max(1, math.ceil(p / 100.0 * len(vals))) - 1]


def stats_line(label, vals):
    vals = sorted(vals)
    if not vals:
        return "%-22s n=0" % label
    return "%-22s n=%-4d median %6.3f ms  p90 %6.3f ms  p99 %6.3f ms  max %6.3f ms" % (
        label, len(vals), statistics.median(vals), nearest_rank(vals, 90),
        nearest_rank(vals, 99), vals[-1])


def floor_trials(up, n, timeout):
    """Direct HTTP/1.1 client -> upstream, close(): the measurement floor."""
    lat = []
    for i in range(n):
        rid = "floor.%d" % i
        s = socket.create_connection(("127.0.0.1", up.port), timeout=timeout)
        s.sendall(("GET /hold?id=%s HTTP/1.1\r\nHost: x\r\n\r\n" % rid).encode())
        r = up.wait(lambda: up.reqs.get(rid), timeout)
        if r is None:
            s.close()
            continue
        t0 = mono()
        s.close()
        if up.wait(lambda: r.conn.closed, timeout):
            lat.append((r.conn.closed - t0) * 1000.0)
        time.sleep(0.005)
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanoutd", default=os.environ.get("FANOUTD",
                                                        os.path.join(HERE, "..", "fanoutd")))
    ap.add_argument("--server", choices=("fanoutd", "nginx"), default="fanoutd",
                    help="what to put in front of the upstream (nginx: the peer, same trials)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx",
                    help="nginx binary for --server nginx")
    ap.add_argument("-n", "--trials", type=int, default=200)
    ap.add_argument("-k", "--streams", type=int, default=4, help="streams per trial (one is reset)")
    ap.add_argument("--tls", action="store_true", help="TLS + ALPN h2 instead of h2c")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="pause between trials")
    ap.add_argument("--floor", type=int, default=50, help="direct trials for the floor (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0, help="bound of every wait, seconds")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop the trials after this")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, cert)")
    a = ap.parse_args()
    if not (1 <= a.trials <= 100000 and 2 <= a.streams <= 100 and 0 <= a.floor <= 10000
            and 0 <= a.gap_ms <= 10000 and 0.1 <= a.timeout <= 120):
        ap.error("out of bounds: trials 1..100000, streams 2..100, floor 0..10000, "
                 "gap-ms 0..10000, timeout 0.1..120")
    a.fanoutd = os.path.abspath(a.fanoutd)
    binary = a.fanoutd if a.server == "fanoutd" else a.nginx
    if not os.access(binary, os.X_OK):
        sys.exit("%s not found at %s (use --%s)" % (a.server, binary, a.server))

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    tmp = tempfile.mkdtemp(prefix="fanoutd-h2cancel.")
    up = Upstream()
    fd = (Fanoutd if a.server == "fanoutd" else Nginx)(binary, tmp, up.port, a.tls, a.workers)
    lat, floor = [], []
    disturbed = {"closed_with_victim": 0, "not_200": 0, "reset_by_fanoutd": 0}
    disturbed_trials = 0
    failures = []
    conns_used = 0
    tls_info = "TLS" if a.tls else "h2c"
    cli = None
    t_start = mono()
    try:
        fd.start()
        if a.floor:
            floor = floor_trials(up, a.floor, a.timeout)
        done = 0
        for i in range(a.trials):
            if mono() - t_start > a.max_seconds:
                failures.append("stopped after --max-seconds %.0f at trial %d" % (a.max_seconds, i))
                break
            if not fd.alive():
                failures.append("%s died (status %s) before trial %d" % (a.server, fd.proc.returncode, i))
                break
            if cli is None or cli.goaway is not None or cli.eof:
                if cli is not None:
                    if cli.goaway is not None:
                        failures.append("trial %d: fanoutd sent GOAWAY last=%d code=0x%x %r" % (
                            i, cli.goaway[0], cli.goaway[1], cli.goaway[2]))
                    cli.close()
                cli = H2Client(fd.tls_port if a.tls else fd.port, a.tls, fd.cert, a.timeout)
                tls_info = cli.tls_info
                conns_used += 1
            ids, sids, out = [], [], b""
            for k in range(a.streams):
                rid = "t%d.%d" % (i, k)
                sid, f = cli.request_frames("/hold?id=%s" % rid)
                ids.append(rid)
                sids.append(sid)
                out += f
            try:
                cli.send(out)
                reqs = up.wait(lambda: len([r for r in ids if r in up.reqs]) == len(ids) and
                               [up.reqs[r] for r in ids], a.timeout)
                if not reqs:
                    have = [r for r in ids if r in up.reqs]
                    failures.append("trial %d: the upstream got %d of %d requests within %.1fs" % (
                        i, len(have), len(ids), a.timeout))
                    cli.send(b"".join(cli.rst_frame(s) for s in sids))
                    up.release(have)
                    continue
                v = i % a.streams
                victim = reqs[v]
                rst = cli.rst_frame(sids[v])
                t0 = mono()
                cli.send(rst)
                if not up.wait(lambda: victim.conn.closed, a.timeout):
                    failures.append("trial %d: upstream connection of the reset stream not closed "
                                    "within %.1fs" % (i, a.timeout))
                    up.release(ids)
                    continue
                lat.append((victim.conn.closed - t0) * 1000.0)
                others = [k for k in range(a.streams) if k != v]
                bad = False
                for k in others:
                    if reqs[k].conn.id not in victim.conn.open_at_close:
                        disturbed["closed_with_victim"] += 1
                        bad = True
                up.release([ids[k] for k in others])
                streams = [cli.streams[sids[k]] for k in others]
                try:
                    cli.pump(lambda: all(s.ended or s.reset is not None for s in streams),
                             a.timeout, "the %d other streams' answers" % len(others))
                except H2Error as e:
                    failures.append("trial %d: %s" % (i, e))
                    bad = True
                for k, s in zip(others, streams):
                    if s.reset is not None:
                        disturbed["reset_by_fanoutd"] += 1
                        bad = True
                    elif s.ended and (s.status != 200 or
                                      bytes(s.data) != ("held ok %s\n" % ids[k]).encode()):
                        disturbed["not_200"] += 1
                        bad = True
                disturbed_trials += bad
                done += 1
                for s in sids:
                    cli.streams.pop(s, None)
            except H2Error as e:
                failures.append("trial %d: %s" % (i, e))
                up.release(ids)
                cli.close()
                cli = None
            if a.gap_ms:
                time.sleep(a.gap_ms / 1000.0)
        metrics = fd.metrics() if fd.alive() else ""
        alive = fd.alive()
    finally:
        if cli is not None:
            cli.close()
        fd.stop()
        up.stop()
        if a.keep:
            print("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("command: %s" % " ".join([sys.executable] + sys.argv))
    print("%s: %s, workers %d; client: %s, %d stream(s) per trial, %d connection(s) used, "
          "gap %.0f ms" % (a.server, binary, a.workers, tls_info, a.streams, conns_used, a.gap_ms))
    if a.floor:
        print(stats_line("floor (direct close)", floor))
    print(stats_line("RST_STREAM -> upstream closed", lat))
    print("disturbed trials: %d of %d (other upstream connection closed with the victim: %d, "
          "other stream not 200/own body: %d, other stream reset by the server: %d)" % (
              disturbed_trials, len(lat), disturbed["closed_with_victim"], disturbed["not_200"],
              disturbed["reset_by_fanoutd"]))
    for line in metrics.splitlines():
        if re.match(r"fanoutd_(h2_streams_reset_total|h2_floods_total|cancellations_total"
                    r"\{reason=\"client_closed\"|requests_by_proto_total|connections_by_proto_total|"
                    r"tls_handshakes_total)", line):
            print("  metrics: " + line)
    for f in failures[:20]:
        print("FAILURE: " + f)
    if len(failures) > 20:
        print("... %d more failures" % (len(failures) - 20))
    lat.sort()
    if lat:
        print("h2 cancel summary: %s %s n=%d median=%.3fms p90=%.3fms p99=%.3fms max=%.3fms "
              "disturbed=%d failures=%d floor_median=%s" % (
                  a.server, "tls" if a.tls else "h2c", len(lat), statistics.median(lat), nearest_rank(lat, 90), nearest_rank(lat, 99),
                  lat[-1], disturbed_trials, len(failures),
                  "%.3fms" % statistics.median(floor) if floor else "-"))
    else:
        print("h2 cancel summary: n=0 failures=%d" % len(failures))
    sys.exit(1 if failures or not alive else 0)


if __name__ == "__main__":
    main()
