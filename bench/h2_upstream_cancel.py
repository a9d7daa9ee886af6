#!/usr/bin/env python3
"""bench/h2_upstream_cancel.py - client FIN -> RST_STREAM at an HTTP/2 upstream.

    bench/h2_upstream_cancel.py [--fanoutd PATH] [--trials N] [--max-seconds S]

fanoutd (1 worker) proxies to an h2c upstream (http2 = prior-knowledge; the
integration tests' h2upstream.py, which timestamps every frame it reads).
Each trial holds a request at the upstream and closes the client; the
latency is the upstream's time of the RST_STREAM minus the client's time
just before close(), both CLOCK_MONOTONIC in this process.

Two cases, in alternating trials:
  shared  another stream stays open on the same connection, which must stay
          up: the figure the goal is about (a RST_STREAM within 2 ms);
  alone   the cancelled stream was the connection's only one: libcurl 8.14
          sends its RST_STREAM only with the connection's next write, so
          fanoutd shuts the connection down; the figure is the close.
Also printed: the direct floor (this process closing a plain TCP socket to
a peer thread and that thread seeing EOF), and whether the shared
connection ever had to be replaced.  Loopback only; fanoutd is stopped by
PID.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

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
                "[route \"r\"]\nmatch = /\nupstreams = h2\ndeadline = 60s\n"
                % (port, admin, up.url))
    err = open(os.path.join(tmp, "stderr"), "w")
    p = subprocess.Popen([a.fanoutd, "-c", conf], stdout=err, stderr=err)
    shared, alone, replaced = [], [], 0
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

        def warm(i):
            # a first answer on the connection, so that it multiplexes
            w = Client(port)
            w.get("/warm%d" % i)
            up.wait_for(lambda: any(s.path == "/warm%d" % i and s.answered
                                    for s in up.streams), 5, "warm")
            w.close()

        while n < a.trials and time.monotonic() < end:
            case = "shared" if n % 2 == 0 else "alone"
            if case == "shared":
                warm(n)
                keeper = Client(port)
                keeper.get("/hold/keep%d" % n)
                ks = up.wait_stream("keep%d" % n)
            tag = "t%d" % n
            c = Client(port)
            c.get("/hold/" + tag)
            s = up.wait_stream(tag)
            if case == "alone":
                warm(n)     # the same connection; then nothing else on it
            t0 = c.close()
            t1 = up.wait_stopped(s)
            if case == "shared":
                shared.append(t1 - t0)
                if s.conn is not ks.conn or s.conn.closed:
                    replaced += 1
                up.release(ks.tag)
                up.wait_for(lambda: ks.answered, 5, "keeper answered")
                keeper.close()
            else:
                alone.append(t1 - t0)
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
    print(summary("shared", shared) + "   (RST_STREAM, connection kept)")
    print(summary("alone", alone) + "   (connection shut)")
    print(summary("floor", fl) + "   (loopback close -> EOF, same process)")
    print("shared connection replaced or closed: %d of %d" % (replaced, len(shared)))


if __name__ == "__main__":
    main()
