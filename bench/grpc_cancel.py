#!/usr/bin/env python3
"""bench/grpc_cancel.py - a gRPC client's cancel -> the upstream's RST_STREAM.

    bench/grpc_cancel.py [--fanoutd PATH] [--trials N] [--max-seconds S]

fanoutd (1 worker, h2c in) proxies gRPC calls to an h2c upstream (http2 =
prior-knowledge; the integration tests' h2upstream.py, which timestamps every
frame it reads). Each trial opens a gRPC call (POST, content-type
application/grpc, te: trailers, one message) on the client's one HTTP/2
connection, waits until the upstream holds it, and sends RST_STREAM(CANCEL),
as a gRPC client does on cancel (a new client connection every 50 calls:
more resets a second than h2_max_streams is a rapid-reset flood to fanoutd);
the latency is the upstream's time of the
RST_STREAM for that call minus the client's time just before it sent its own,
both CLOCK_MONOTONIC in this process. A held call (the keeper) stays open on
the same upstream connection throughout, so that the reset is a stream's,
not a closed connection. Prints median, p99 and max, and the direct floor of
this machine (a loopback write to a peer thread seen readable). Loopback
only; fanoutd is stopped by PID.
"""
import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.dont_write_bytecode = True
import h2raw  # noqa: E402
from h2upstream import H2Upstream  # noqa: E402
from harness import free_port  # noqa: E402
from h2_upstream_cancel import summary  # noqa: E402  (its neighbour here)


def floor(trials):
    """A few bytes written on loopback TCP -> the peer socket readable."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    out = []
    for _ in range(trials):
        t0 = time.monotonic()
        c.sendall(b"x" * 13)
        if select.select([s], [], [], 5)[0]:
            out.append(time.monotonic() - t0)
        s.recv(64)
    c.close()
    s.close()
    ls.close()
    return out


GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
MESSAGE = struct.pack(">BI", 0, 5) + b"hello"
BATCH = 50


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--fanoutd", default=os.path.join(HERE, "..", "build", "fanoutd"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=120)
    a = ap.parse_args()
    end = time.monotonic() + a.max_seconds
    tmp = tempfile.mkdtemp(prefix="fanoutd-grpcc-")
    up = H2Upstream("bench")
    port, admin = free_port(), free_port()
    conf = os.path.join(tmp, "fanoutd.ini")
    with open(conf, "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:%d\nworkers = 1\naccess_log = off\n"
                "log_level = warn\nhttp2 = on\n[admin]\nlisten = 127.0.0.1:%d\n"
                "[upstream \"g\"]\nurl = %s\nhttp2 = prior-knowledge\ntimeout = 10m\n"
                "[route \"r\"]\nmatch = /\nupstreams = g\ndeadline = 10m\n"
                % (port, admin, up.url))
    err = open(os.path.join(tmp, "stderr"), "w")
    p = subprocess.Popen([a.fanoutd, "-c", conf], stdout=err, stderr=err)
    res, replaced = [], 0
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > end:
                    raise SystemExit("fanoutd did not start (see %s)" % tmp)
                time.sleep(0.05)    # polling for the listener, bounded above
        k = h2raw.H2Client(port, timeout=30)
        k.handshake()
        # a first answer on the upstream connection, so that it multiplexes
        sid = k.request("/warm", "POST", GRPC_HEADERS, MESSAGE)
        k.response(sid)
        k.request("/hold/keeper", "POST", GRPC_HEADERS, MESSAGE)
        keeper = up.wait_stream("keeper")
        c = None
        n = 0
        while n < a.trials and time.monotonic() < end:
            # fanoutd closes a client connection that resets more streams
            # than h2_max_streams a second (rapid reset): trials come from
            # a new client connection every BATCH calls.
            if n % BATCH == 0:
                if c is not None:
                    c.close()
                c = h2raw.H2Client(port, timeout=30)
                c.handshake()
            tag = "t%d" % n
            sid = c.request("/hold/" + tag, "POST", GRPC_HEADERS, MESSAGE)
            s = up.wait_stream(tag)
            t0 = time.monotonic()
            c.rst_stream(sid, h2raw.CANCEL)
            t1 = up.wait_stopped(s)
            res.append(t1 - t0)
            if s.conn is not keeper.conn or s.conn.closed or keeper.reset:
                replaced += 1
            n += 1
        c.close()
        k.close()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        up.close()
    codes = sorted({s.reset_code for s in up.streams if s.tag and s.tag.startswith("t")})
    print("gRPC client RST_STREAM(CANCEL) -> upstream RST_STREAM (fanoutd, h2c both "
          "sides, %s)" % subprocess.run(["curl-config", "--version"],
                                        capture_output=True, text=True).stdout.strip())
    print(summary("cancel", res) + "   (RST_STREAM codes seen upstream: %s)" % codes)
    print(summary("floor", floor(min(100, a.trials))) + "   (loopback write -> "
          "readable, same process)")
    print("calls whose upstream connection was replaced or closed: %d of %d"
          % (replaced, len(res)))


if __name__ == "__main__":
    main()
