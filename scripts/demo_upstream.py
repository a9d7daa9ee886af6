#!/usr/bin/env python3
"""Demo upstreams for scripts/demo.sh: small HTTP/1.1 servers on loopback.

    demo_upstream.py [--host 127.0.0.1] NAME=PORT [NAME=PORT ...]

Each NAME=PORT is one upstream. Every upstream answers any GET at once with a
small JSON document of its own (users, orders, recs, ...) that also shows the
headers fanoutd added (X-Request-Id, X-Request-Deadline-Ms, X-Forwarded-For).

A path that starts with /slow is answered only after --slow seconds (10 by
default). While it waits, the server watches its client connection, which is
fanoutd's upstream connection, and prints on stderr the moment that connection
is closed: the upstream's view of a cancellation.

Everything is logged on stderr, one line per event. Python standard library
only. Stops on SIGTERM or SIGINT.
"""

import argparse
import json
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = {
    "users": {"users": [{"id": 1, "name": "ada"}, {"id": 2, "name": "linus"}]},
    "orders": {"orders": [{"id": 1001, "user": 1, "total": "12.50"}]},
    "recs": {"recommendations": ["books", "tea"]},
}

START = time.monotonic()


def say(name, msg):
    sys.stderr.write("upstream %-6s +%7.3fs %s\n" % (name, time.monotonic() - START, msg))
    sys.stderr.flush()


def peer_closed(sock):
    """True when the peer has closed (FIN or RST) without blocking."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-upstream"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: we log our own lines
        pass

    def _send_json(self, status, doc):
        body = (json.dumps(doc, indent=None) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _seen(self):
        return {
            "upstream": self.server.name,
            "path": self.path,
            "x_request_id": self.headers.get("X-Request-Id"),
            "x_request_deadline_ms": self.headers.get("X-Request-Deadline-Ms"),
            "x_forwarded_for": self.headers.get("X-Forwarded-For"),
        }

    def do_GET(self):
        name = self.server.name
        rid = self.headers.get("X-Request-Id", "-")
        say(name, "%s %s request_id=%s" % (self.command, self.path, rid))
        if self.path.startswith("/slow"):
            self._slow(rid)
            return
        doc = dict(DATA.get(name, {"hello": name}))
        doc["seen"] = self._seen()
        self._send_json(200, doc)

    do_HEAD = do_GET

    def _slow(self, rid):
        name = self.server.name
        delay = self.server.slow
        start = time.monotonic()
        sock = self.connection
        say(name, "slow request request_id=%s: answering in %.0f s unless the "
            "connection closes first" % (rid, delay))
        while True:
            left = delay - (time.monotonic() - start)
            if left <= 0:
                break
            r, _, _ = select.select([sock], [], [], min(left, 0.5))
            if r and peer_closed(sock):
                say(name, "slow request request_id=%s: CONNECTION CLOSED by "
                    "fanoutd after %.3f s, work abandoned" % (rid, time.monotonic() - start))
                self.close_connection = True
                return
            if r:
                # Bytes of a pipelined request: not expected here; wait on.
                time.sleep(0.05)
        say(name, "slow request request_id=%s: answered after %.1f s" % (rid, delay))
        self._send_json(200, dict(self._seen(), slow=True, waited_s=delay))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, name, slow):
        self.name = name
        self.slow = slow
        super().__init__(addr, Handler)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--slow", type=float, default=10.0,
                    help="seconds before a /slow request is answered")
    ap.add_argument("upstreams", nargs="+", metavar="NAME=PORT")
    args = ap.parse_args()

    servers = []
    for spec in args.upstreams:
        name, _, port = spec.partition("=")
        if not name or not port.isdigit():
            ap.error("bad upstream %r, want NAME=PORT" % spec)
        try:
            srv = Server((args.host, int(port)), name, args.slow)
        except OSError as e:
            sys.exit("demo_upstream: cannot listen on %s:%s: %s" % (args.host, port, e))
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        say(name, "listening on http://%s:%s" % (args.host, port))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for srv in servers:
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    main()
