"""Resting upstream connections the upstream closes (issue 20).

An upstream's keep-alive timeout ends connections that rest in curl's
cache.  fanoutd sees the FIN (or RST) on the resting socket, shuts it at
once, and has curl close it soon: no CLOSE-WAIT left behind, no descriptor
held, and the connection never carries a request again.  The kernel's view
is what is checked: the socket inodes behind fanoutd's descriptors, and
/proc/net/tcp's entries for the upstream's port.
"""

import os
import shutil
import tempfile
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
import h2raw  # noqa: E402
from h2upstream import H2Upstream  # noqa: E402

# The upstream's keep-alive timeout.  Under a second, curl's prune (at
# most once a second) waits for the one the last transfer ran; IDLE_MS=1500
# shows the release at once.  IDLE_VERBOSE=1 prints how long it took (a
# measurement: the tests assert no timing).
IDLE_MS = int(os.environ.get("IDLE_MS", "200"))
N = int(os.environ.get("IDLE_CONNS", "4"))


def socket_inodes(pid):
    """The socket inodes behind pid's descriptors."""
    out = set()
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except OSError:
            continue    # closed meanwhile
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def tcp_to(port):
    """{inode: state} of the TCP sockets whose remote port is PORT."""
    out = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                out[int(fields[9])] = fields[3]
    return out


class UpstreamIdleTest(harness.TestCase):

    def start(self, up, **upstream):
        # one worker: one cache of connections to follow
        return self.daemon(upstreams={"up": dict(upstream, url=up.url)},
                           routes={"r": {"match": "/", "upstreams": "up"}},
                           server={"workers": "1"})

    def ours(self, d, port):
        """fanoutd's sockets to PORT: {inode: TCP state}, and how many
        socket descriptors fanoutd holds."""
        mine = socket_inodes(d.pid)
        return {i: st for i, st in tcp_to(port).items() if i in mine}, mine

    def burst(self, d, tag):
        """N requests at once, so that N connections go to rest."""
        clients = [harness.Client(d.port) for _ in range(N)]
        for c in clients:
            self.addCleanup(c.close)
        for i, c in enumerate(clients):
            c.send(harness.build_request(
                "GET", "/x?hold=1&tag=%s%d" % (tag, i)))
        return clients

    def assert_all_go(self, d, port, pooled, what):
        """Every one of the POOLED inodes leaves fanoutd's descriptors, and
        no socket of fanoutd to PORT is left in any state."""
        t0 = time.monotonic()

        def gone():
            left, mine = self.ours(d, port)
            return not left and not (pooled & mine)
        harness.wait_until(gone, what="fanoutd to close its %s" % what)
        return time.monotonic() - t0

    def assert_no_upstream_error(self, d, n):
        """N upstream requests, every one ok: none met a dead connection."""
        m = d.wait_metric("fanoutd_upstream_requests_total",
                          lambda v: v >= n, upstream="up", outcome="ok")
        self.assertEqual(m, n)
        m = d.metrics()
        self.assertEqual(m.sum("fanoutd_upstream_requests_total"), n,
                         "an upstream request did not end ok")
        # a leg is counted before its request's log line is written (and
        # the client may read the answer in between): wait for the line
        harness.wait_until(
            lambda: len([e for e in d.access_log_lines() if "status" in e]) >= n,
            what="%d access log lines" % n)
        entries = [e for e in d.access_log_lines() if "status" in e]
        self.assertEqual(len(entries), n)
        self.assertEqual([e for e in entries if e["status"] != 200
                          or "error" in str(e)], [])

    def check_h1(self, reset):
        up = self.fake("up", idle_close_ms=IDLE_MS, idle_reset=reset)
        d = self.start(up)
        clients = self.burst(d, "a")
        up.wait_requests(N)
        conns = [c for c in up.connections]
        self.assertEqual(len(conns), N)
        # fanoutd's sockets, taken while each holds a request: no idle
        # close can have come yet, however slow this machine
        pooled, _ = self.ours(d, up.port)
        self.assertEqual(len(pooled), N, pooled)
        # nothing is answered before every connection is open: N rest
        up.release_all()
        for c in clients:
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        up.wait_connections_closed(conns)
        self.assertEqual({c.close_kind for c in conns}, {"idle"})
        took = self.assert_all_go(d, up.port, set(pooled),
                                  "idle connections")
        if os.environ.get("IDLE_VERBOSE"):
            sys.stderr.write("closed by fanoutd %.3f s after the upstream\n" % took)
        # afterwards: new connections, no request lost on an old one
        for i in range(3):
            r = d.get("/x?tag=after%d" % i)
            self.assertEqual(r.status, 200, r)
        for i in range(3):
            req = up.wait_for_tag("after%d" % i)
            self.assertNotIn(req.conn, conns)
        self.assert_no_upstream_error(d, N + 3)
        return took

    def test_a_shut_connection_is_never_reused(self):
        """Between the shutdown and curl's close a request must not take
        the dead connection: a POST's body is streamed, so one sent on it
        could not be sent again (502), and must arrive whole elsewhere."""
        up = self.fake("up", idle_close_ms=IDLE_MS)
        d = self.start(up)
        with d.client() as c:
            c.send(harness.build_request("GET", "/x?hold=1&tag=first"))
            conn = up.wait_for_tag("first").conn
            # taken while the request is held: not idle yet
            pooled, _ = self.ours(d, up.port)
            self.assertEqual(len(pooled), 1, pooled)
            up.release("first")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        up.wait_connections_closed([conn])
        # fanoutd shut it: the kernel socket is gone (no CLOSE-WAIT)
        harness.wait_until(lambda: not self.ours(d, up.port)[0],
                           what="fanoutd to shut the idle connection")
        body = os.urandom(3000)
        with d.client() as c:
            c.request("POST", "/x?echo=1&tag=post", body=body)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_len"], len(body))
        self.assertIsNot(up.wait_for_tag("post").conn, conn)
        self.assert_all_go(d, up.port, set(pooled), "idle connection")
        self.assert_no_upstream_error(d, 2)

    def test_fin_on_idle_http1(self):
        self.check_h1(reset=False)

    def test_rst_on_idle_http1(self):
        self.check_h1(reset=True)

    def test_goaway_and_fin_on_idle_http2(self):
        up = H2Upstream("h2", idle_close_ms=IDLE_MS)
        self.addCleanup(up.close)
        d = self.start(up, http2="prior-knowledge")
        for i in range(N):
            r = d.get("/x?n=%d" % i)
            self.assertEqual(r.status, 200, r)
        # a held stream keeps its connection busy (not idle) while
        # fanoutd's sockets are taken
        with d.client() as c:
            c.send(harness.build_request("GET", "/hold/busy"))
            up.wait_stream("busy")
            pooled, _ = self.ours(d, up.port)
            up.release("busy")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(len(pooled), 1, pooled)
        first = list(up.connections)
        up.wait_for(lambda: all(c.idle_closed for c in first),
                    what="the upstream to end its idle connections")
        self.assert_all_go(d, up.port, set(pooled), "idle HTTP/2 connections")
        for i in range(3):
            r = d.get("/x?after=%d" % i)
            self.assertEqual(r.status, 200, r)
        self.assertGreater(len(up.connections), len(first))
        self.assert_no_upstream_error(d, N + 4)

    def check_tls(self, http2):
        """A TLS upstream (a fanoutd with a tls listener, in front of a
        fake) whose keep-alive timeout ends idle connections: over HTTP/1.1
        a close_notify then a FIN, over HTTP/2 a GOAWAY too."""
        h2raw.tool("openssl")
        certdir = tempfile.mkdtemp(prefix="fanoutd-idle-")
        self.addCleanup(shutil.rmtree, certdir, True)
        cert, key = h2raw.make_cert(certdir, "up", cn="localhost")
        origin = self.fake("origin")
        tls_up = h2raw.TlsFanoutd(
            cert=cert, key=key,
            server={"http2": "on", "workers": "1",
                    "keepalive_timeout": "%dms" % max(IDLE_MS, 300)},
            upstreams={"origin": origin},
            routes={"r": {"match": "/", "upstreams": "origin"}})
        self._daemons.append(tls_up)
        self.addCleanup(tls_up.cleanup)
        tls_up.start()
        url = "https://localhost:%d" % tls_up.tls_port
        d = self.daemon(upstreams={"up": {"url": url, "ca_file": cert,
                                          "http2": http2}},
                        routes={"r": {"match": "/", "upstreams": "up"}},
                        server={"workers": "1"})
        for i in range(N):
            r = d.get("/x?body=b%d" % i)
            self.assertEqual((r.status, r.body), (200, b"b%d" % i), r)
        # a request held at the origin keeps a TLS connection busy (not
        # idle) while fanoutd's sockets are taken
        with d.client() as c:
            c.send(harness.build_request("GET", "/x?hold=1&tag=busy&body=busy"))
            origin.wait_for_tag("busy")
            pooled, _ = self.ours(d, tls_up.tls_port)
            origin.release("busy")
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"busy"), r)
        self.assertGreaterEqual(len(pooled), 1, pooled)
        self.assert_all_go(d, tls_up.tls_port, set(pooled),
                           "idle TLS connections")
        for i in range(3):
            r = d.get("/x?body=after%d" % i)
            self.assertEqual((r.status, r.body), (200, b"after%d" % i), r)
        self.assert_no_upstream_error(d, N + 4)

    def test_close_on_idle_http1_over_tls(self):
        self.check_tls("off")

    def test_goaway_and_close_on_idle_http2_over_tls(self):
        self.check_tls("on")


if __name__ == "__main__":
    harness.main()
