#!/usr/bin/env python3
"""bench/h2_upstream_cancel.py - client FIN -> RST_STREAM at an HTTP/2 upstream.

    bench/h2_upstream_cancel.py [--fanoutd PATH] [--trials N] [--max-seconds S]

fanoutd (1 worker) proxies to an h2c upstream (http2 = prior-knowledge; the
integration tests' h2upstream.py, which timestamps every frame it reads).
Each trial holds a request at the upstream and closes the client; the
latency is the upstream's time of the RST_STREAM minus the client's time
just before close(), both CLOCK_MONOTONIC in this process.

Three cases, in turn:
  shared  another stream stays open on the same connection, which must stay
          up: the figure the goal is about (a RST_STREAM within 2 ms);
  alone   the cancelled stream was the connection's only one: libcurl 8.14
          sends its RST_STREAM only with the connection's next write, so
          fanoutd shuts the connection down; the figure is the close;
  paused  the other stream on the connection is a 16 MiB answer to a client
          that reads nothing, so fanoutd has paused its transfer: the
          connection must stay up for it, and the reset still go out.
Also printed: the direct floor (this process closing a plain TCP socket to
a peer thread and that thread seeing EOF), and whether the shared
connection ever had to be replaced.  Loopback only; fanoutd is stopped by
PID.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.dont_write_bytecode = True
from h2upstream import H2Upstream  # noqa: E402
from harness import free_port  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1)]


def summary(name, v):
    if not v:
        return "%-7s no samples" % name
    return ("%-7s n=%d  median %.3f ms  p99 %.3f ms  max %.3f ms"
            % (name, len(v), pct(v, 50) * 1e3, pct(v, 99) * 1e3, max(v) * 1e3))


def floor(trials):
    """close() of a loopback TCP socket -> its peer readable with EOF, both
    ends in this thread: what no proxy can beat."""
    import select
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    out = []
    for _ in range(trials):
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        t0 = time.monotonic()
        c.close()
        if select.select([s], [], [], 5)[0]:
            out.append(time.monotonic() - t0)
        s.close()
    ls.close()
    return out


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)

    def get(self, path):
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: b\r\n\r\n" % path).encode())

    def close(self):
        t = time.monotonic()
        self.s.close()
        return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--fanoutd", default=os.path.join(HERE, "..", "fanoutd"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=120)
    a = ap.parse_args()
    end = time.monotonic() + a.max_seconds
    tmp = tempfile.mkdtemp(prefix="fanoutd-h2upc-")
    up = H2Upstream("bench")
    port, admin = free_port(), free_port()
    conf = os.path.join(tmp, "fanoutd.ini")
    with open(conf, "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:%d\nworkers = 1\naccess_log = off\n"
                "log_level = warn\n[admin]\nlisten = 127.0.0.1:%d\n"
                "[upstream \"h2\"]\nurl = %s\nhttp2 = prior-knowledge\ntimeout = 60s\n"
                "max_response_size = 64m\n"
                "[route \"r\"]\nmatch = /\nupstreams = h2\ndeadline = 60s\n"
                % (port, admin, up.url))
    err = open(os.path.join(tmp, "stderr"), "w")
    p = subprocess.Popen([a.fanoutd, "-c", conf], stdout=err, stderr=err)
    res = {"shared": [], "alone": [], "paused": []}
    replaced = {"shared": 0, "paused": 0}
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > end:
                    raise SystemExit("fanoutd did not start (see %s)" % tmp)
                time.sleep(0.05)    # polling for the listener, bounded above
        n = 0
        keeper = None

        def wait_paused(v):
            # polls the admin port, bounded: fanoutd says when it paused
            limit = time.monotonic() + 10
            while True:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                            % admin, timeout=5) as r:
                    m = re.search(rb"^fanoutd_upstream_transfers_paused (\d+)",
                                  r.read(), re.M)
                if m and int(m.group(1)) == v:
                    return
                if time.monotonic() > limit:
                    raise SystemExit("paused transfers never became %d" % v)
                time.sleep(0.01)

        def warm(i):
            # a first answer on the connection, so that it multiplexes
            w = Client(port)
            w.get("/warm%d" % i)
            up.wait_for(lambda: any(s.path == "/warm%d" % i and s.answered
                                    for s in up.streams), 5, "warm")
            w.close()

        while n < a.trials and time.monotonic() < end:
            case = ("shared", "alone", "paused")[n % 3]
            if case == "shared":
                warm(n)
                keeper = Client(port)
                keeper.get("/hold/keep%d" % n)
                ks = up.wait_stream("keep%d" % n)
            elif case == "paused":
                warm(n)
                keeper = socket.socket()
                keeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                keeper.connect(("127.0.0.1", port))
                keeper.sendall(b"GET /big%d?size=16777216 HTTP/1.1\r\nHost: b\r\n\r\n"
                               % n)
                wait_paused(1)
                ks = up.wait_for(lambda: [x for x in up.streams
                                          if x.path.startswith("/big%d?" % n)],
                                 5, "big")[0]
            tag = "t%d" % n
            c = Client(port)
            c.get("/hold/" + tag)
            s = up.wait_stream(tag)
            if case == "alone":
                warm(n)     # the same connection; then nothing else on it
            t0 = c.close()
            t1 = up.wait_stopped(s)
            res[case].append(t1 - t0)
            if case != "alone" and (s.conn is not ks.conn or s.conn.closed or
                                    ks.reset):
                replaced[case] += 1
            if case == "shared":
                up.release(ks.tag)
                up.wait_for(lambda: ks.answered, 5, "keeper answered")
                keeper.close()
            elif case == "paused":
                keeper.close()
                wait_paused(0)
            n += 1
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        up.close()
    fl = floor(min(100, a.trials))
    print("client FIN -> upstream stopped (fanoutd, h2c upstream, %s)"
          % subprocess.run(["curl-config", "--version"], capture_output=True,
                           text=True).stdout.strip())
    print(summary("shared", res["shared"]) + "   (RST_STREAM, connection kept)")
    print(summary("alone", res["alone"]) + "   (connection shut)")
    print(summary("paused", res["paused"]) + "   (RST_STREAM, beside a paused stream)")
    print(summary("floor", fl) + "   (loopback close -> EOF, same process)")
    for case in ("shared", "paused"):
        print("%s: the other stream's connection replaced or closed, or the "
              "stream reset: %d of %d" % (case, replaced[case], len(res[case])))


if __name__ == "__main__":
    main()
