"""HTTP/2 upstreams (http2 = prior-knowledge) carry many transfers on one
connection, and a cancel resets only the cancelled transfer's stream: the
upstream sees RST_STREAM for it, the stream is never answered, the
connection stays up, and the other streams on it finish whole.  How fast the
reset goes out is bench/h2_upstream_cancel.py's business, not these tests':
a held stream (/hold/TAG) waits for ever, so that it is reset at all is what
is checked.  The upstream is tests/integration/
h2upstream.py, which records every stream and every reset."""

import itertools
import socket
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from h2upstream import H2Upstream  # noqa: E402

RESET_CODES = (0x5, 0x8)   # STREAM_CLOSED (libcurl), CANCEL
_tags = itertools.count(1)


def tag():
    return "t%d" % next(_tags)


class H2UpstreamTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.up = self.h2up("h2")

    def h2up(self, name):
        u = H2Upstream(name)
        self.addCleanup(u.close)
        return u

    def start(self, upstreams=None, routes=None, **upstream_kw):
        ups = upstreams or {"h2": self.up}
        # One worker: each worker has connections of its own, and these
        # tests follow streams on one connection.
        self.fd = self.daemon(
            server={"workers": "1"},
            upstreams={n: dict(upstream_kw, url=u.url, http2="prior-knowledge")
                       for n, u in ups.items()},
            routes=routes or {"r": {"match": "/", "upstreams": "h2"}})
        return self.fd

    def held(self, path_tag=None, rid=None):
        """A client whose request is held at the upstream; returns
        (client, stream, request id)."""
        t = path_tag or tag()
        rid = rid or "h2up-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/hold/" + t, [("X-Request-Id", rid)])
        return c, self.up.wait_stream(t), rid

    def assertReset(self, up, stream, what="the cancelled stream"):
        """STREAM (held at UP: it would wait for ever) was given up by
        fanoutd with a RST_STREAM, and never answered."""
        up.wait_reset(stream)
        self.assertIn(stream.reset_code, RESET_CODES, "%s: RST_STREAM code" % what)
        self.assertIsNone(stream.answered, "%s was answered: %r" % (what, stream))

    def assertStopped(self, up, stream, what="the cancelled stream"):
        """STREAM was given up: reset, or its connection closed (libcurl
        before 8.15 may close a connection it has nothing else on), and
        never answered."""
        up.wait_stopped(stream)
        self.assertIsNone(stream.answered, "%s was answered: %r" % (what, stream))

    def outcomes(self, name="h2"):
        m = self.fd.metrics()
        return {o: m.get("fanoutd_upstream_requests_total", upstream=name,
                         outcome=o)
                for o in ("ok", "status", "error", "cancelled")}

    def test_streams_share_one_connection(self):
        fd = self.start()
        for i in range(10):
            r = fd.get("/n%d" % i)
            self.assertEqual((r.status, r.body), (200, b"ok /n%d" % i), i)
        self.assertEqual(len(self.up.connections), 1,
                         "ten requests in a row took %d connections"
                         % len(self.up.connections))

    def test_a_slow_first_answer_holds_nothing_back(self):
        # The first stream on a new connection is held. libcurl shares a
        # connection only once an answer came back on it, so the next
        # request takes a connection of its own rather than wait.
        fd = self.start()
        a, sa, _ = self.held()
        r = fd.get("/b")
        self.assertEqual((r.status, r.body), (200, b"ok /b"))
        self.assertIsNone(sa.answered)
        # From its first answer on, that second connection takes them all.
        held = [self.held() for _ in range(4)]
        conns = {s.conn.id for _, s, _ in held}
        self.assertEqual(len(conns), 1, "held streams spread: %r" % held)
        self.assertNotEqual(conns, {sa.conn.id})
        for c, s, _ in held + [(a, sa, None)]:
            self.up.release(s.tag)
            self.assertEqual(c.read_response().status, 200)
        self.assertEqual(len(self.up.connections), 2)

    def test_client_close_resets_only_its_stream(self):
        self.start()
        self.assertEqual(self.fd.get("/warm").status, 200)
        before = self.outcomes()
        a, sa, rid = self.held()
        b, sb, _ = self.held()
        c, sc, _ = self.held()
        self.assertEqual({sa.conn.id, sb.conn.id, sc.conn.id}, {1})
        a.close()
        self.assertReset(self.up, sa)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # The others go on, on the same connection, and finish whole.
        self.assertIsNone(sa.conn.closed, "the upstream connection was closed")
        self.assertIsNone(sb.reset)
        self.assertIsNone(sc.reset)
        for cl, s in ((b, sb), (c, sc)):
            self.up.release(s.tag)
            r = cl.read_response()
            self.assertEqual((r.status, r.body), (200, b"ok " + s.path.encode()))
        # The next request still takes that connection.
        self.assertEqual(self.fd.get("/after").status, 200)
        self.assertEqual(len(self.up.connections), 1)
        self.assertIsNone(sa.conn.closed)
        # A client's cancel is not an upstream failure.
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == before["cancelled"] + 1,
                            upstream="h2", outcome="cancelled")
        after = self.outcomes()
        self.assertEqual(after["error"], before["error"], "counted as an error")
        self.assertEqual(after["ok"], before["ok"] + 3)

    def test_cancel_beside_a_paused_stream_leaves_it_whole(self):
        # A's client reads nothing, so fanoutd pauses A's transfer: curl
        # then wants nothing from the connection (A's window stays shut).
        # B, on the same connection, is cancelled: its stream is reset and
        # the connection must stay up for A, whose client then gets every
        # byte.
        size = 16 << 20
        fd = self.start(max_response_size="64m")
        self.assertEqual(fd.get("/warm").status, 200)
        a = socket.socket()
        self.addCleanup(a.close)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        a.settimeout(harness.PATIENCE)
        a.connect(("127.0.0.1", fd.port))
        a.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        fd.wait_metric("fanoutd_upstream_transfers_paused", lambda v: v == 1)
        sa = self.up.wait_for(lambda: [s for s in self.up.streams
                                       if s.path.startswith("/big")],
                              what="A")[0]
        b, sb, _ = self.held()
        self.assertIs(sb.conn, sa.conn)
        b.close()
        self.assertReset(self.up, sb)
        self.assertIsNone(sa.conn.closed, "the connection was shut under A")
        self.assertIsNone(sa.reset)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += a.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        got, bad = len(body), body.strip(b"x")
        while got < size and not bad:
            d = a.recv(1 << 20)
            self.assertTrue(d, "A's answer cut after %d of %d bytes" % (got, size))
            got += len(d)
            bad = d.strip(b"x")
        self.assertEqual((got, bad), (size, b""))
        fd.wait_metric("fanoutd_upstream_transfers_paused", lambda v: v == 0)

    def test_client_reset_resets_its_stream(self):
        self.start()
        self.assertEqual(self.fd.get("/warm").status, 200)
        a, sa, rid = self.held()
        b, sb, _ = self.held()
        a.reset()
        self.assertReset(self.up, sa)
        self.assertIsNone(sb.reset)
        self.up.release(sb.tag)
        self.assertEqual(b.read_response().status, 200)
        self.assertEqual(len(self.up.open_connections()), 1)

    def test_deadline_resets_the_stream_and_keeps_the_connection(self):
        # The deadline is the trigger, and it must fire once the stream is
        # open at the upstream.  300 ms is plenty on any usual machine; one
        # so slow that the deadline came before the stream went out tries
        # again with ten times that (the checks are the same, only later).
        deadlines = (0.3, 3.0, 30.0)
        routes = {"r": {"match": "/", "upstreams": "h2"}}
        for i, d in enumerate(deadlines):
            routes["dl%d" % i] = {"match": "/hold/dl%d/" % i, "upstreams": "h2",
                                  "deadline": d}
        self.start(routes=routes)
        self.assertEqual(self.fd.get("/warm").status, 200)
        b, sb, _ = self.held()
        for i, d in enumerate(deadlines):
            t = "dl%d/%s" % (i, tag())
            rid = "h2up-" + t.replace("/", "-")
            c = self.fd.client()
            self.addCleanup(c.__exit__)
            t0 = time.monotonic()
            c.request("GET", "/hold/" + t, [("X-Request-Id", rid)])
            r = c.read_response()
            self.assertEqual(r.status, 504, r)
            self.assertNotBefore(r, t0, d, "504")
            e = self.fd.wait_access_log(request_id=rid)
            self.assertEqual(e["cancel_reason"], "deadline", e)
            # Was the stream at the upstream when the deadline fired?  Then
            # the reset is checked with nothing else written on the
            # connection since (a write would flush a reset left queued).
            s = [x for x in self.up.streams if x.path == "/hold/" + t]
            if s:
                break
            # Too slow a machine: make sure the stream will not come (a
            # request after it on the same connection arrives after it, if
            # it went at all), and try a longer deadline.
            sync = self.fd.get("/sync%d" % i)
            self.assertEqual(sync.status, 200, sync)
            self.assertEqual(len(self.up.connections), 1)
        else:
            self.fail("no stream reached the upstream before even a %gs deadline"
                      % deadlines[-1])
        s = s[0]
        self.assertIs(s.conn, sb.conn)
        self.assertReset(self.up, s, "the stream past its deadline")
        self.assertIsNone(sb.reset)
        self.up.release(sb.tag)
        self.assertEqual(b.read_response().status, 200)
        self.assertEqual(self.fd.get("/next").status, 200)
        self.assertEqual(len(self.up.connections), 1)
        self.assertIsNone(s.conn.closed)

    def test_cancel_alone_on_its_connection_stops_the_upstream(self):
        # Nothing else on the connection: the upstream still learns at
        # once, by a RST_STREAM, or (libcurl before 8.15, which only sends
        # a RST_STREAM with the connection's next write) by the
        # connection's close.
        self.start()
        self.assertEqual(self.fd.get("/warm").status, 200)
        a, sa, rid = self.held()
        a.close()
        self.assertStopped(self.up, sa)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # The daemon serves on, over a new connection if it closed that one.
        self.assertEqual(self.fd.get("/next").status, 200)

    def test_fan_out_first_stops_the_loser(self):
        fast = self.up
        slow = self.h2up("slow")
        self.start(upstreams={"fast": fast, "slow": slow},
                   routes={"first": {"match": "/", "mode": "first",
                                     "upstreams": "fast, slow"}})
        # Both legs' streams are open before the fast one answers, so the
        # slow one has work to stop.
        t = tag()
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/hold/" + t)
        s = slow.wait_stream(t)
        fast.wait_stream(t)
        fast.release(t)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"ok /hold/" + t.encode()))
        self.assertStopped(slow, s, "the loser's stream")
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight",
                            lambda v: v == 0)
        m = self.fd.metrics()
        self.assertEqual(m.get("fanoutd_upstream_requests_total",
                               upstream="slow", outcome="error"), 0)

    def test_many_cancels_leave_no_stream_behind(self):
        # Twenty clients leave while their streams are held on one
        # connection: every stream is given up, none is answered, and
        # nothing stays in flight. (Those that leave in one go may find
        # the connection closed rather than each stream reset, with
        # libcurl before 8.15.)
        self.start()
        self.assertEqual(self.fd.get("/warm").status, 200)
        held = [self.held() for _ in range(20)]
        self.assertEqual({s.conn.id for _, s, _ in held}, {1})
        for c, _, _ in held:
            c.close()
        for _, s, _ in held:
            self.assertStopped(self.up, s)
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight",
                            lambda v: v == 0)
        self.assertFalse([s for _, s, _ in held if s.answered])
        self.assertEqual(self.fd.get("/next").status, 200)


if __name__ == "__main__":
    harness.main()
