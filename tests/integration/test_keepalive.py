"""Keep-alive and pipelining: requests on one connection stay separate."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from harness import build_request  # noqa: E402

DEADLINE = 0.3          # route "dl": a deadline that fires
KEEPALIVE = 0.5         # KeepaliveTimeoutTest's keepalive_timeout
SHORT_HEAD = 0.3        # ConnTimerTest's header_timeout, under ...
LONG_IDLE = 1.2         # ... its keepalive_timeout

class KeepaliveTest(harness.SharedDaemonTest):
    """Keep-alive with the harness's 10-minute keepalive_timeout: whatever
    closes a connection here, it is not that."""
    FAKES = ("up",)

    @classmethod
    def config(cls, f):
        cls.up = f["up"]
        return dict(
            upstreams={"up": cls.up},
            routes={
                "r": {"match": "/", "upstreams": "up"},
                "dl": {"match": "/dl", "upstreams": "up",
                       "deadline": "%dms" % (DEADLINE * 1000)},
            })

    def test_three_sequential_requests(self):
        with self.fd.client() as c:
            ids = []
            for i in range(3):
                c.request("GET", "/seq?body=r%d&tag=seq%d" % (i, i))
                r = c.read_response()
                self.assertEqual((r.status, r.body), (200, b"r%d" % i), r)
                self.assertFalse(r.conn_close, "connection not kept alive: %r" % r)
                ids.append(r.header("x-request-id"))
            self.assertEqual(len(set(ids)), 3, ids)
            self.assertFalse(c.eof)
        m = self.fd.metrics()
        self.assertIn(("fanoutd_connections_active", frozenset()), m)

    def test_pipelined_responses_in_order(self):
        # The first is the slowest: held at the upstream until the test lets
        # it go; the other two are answered the moment they arrive.  The
        # answers must still come back in order.
        self.up.release("pipe1")
        self.up.release("pipe2")
        reqs = [build_request("GET", "/pipe?%sbody=p%d&tag=pipe%d"
                              % ("hold=1&" if i < 2 else "", i, i))
                for i in range(3)]
        with self.fd.client() as c:
            c.send(b"".join(reqs))
            self.up.wait_for_tag("pipe0")
            self.up.release("pipe0")
            bodies = [c.read_response() for _ in range(3)]
        self.assertEqual([(r.status, r.body) for r in bodies],
                         [(200, b"p0"), (200, b"p1"), (200, b"p2")], bodies)
        for i in range(3):
            self.up.wait_for_tag("pipe%d" % i)

    def test_deadline_does_not_bleed_into_next_request(self):
        m0 = self.fd.metrics()
        with self.fd.client() as c:
            c.request("GET", "/dl/a?hang=1&tag=bleed1")
            r1 = c.read_response()
            self.assertErrorJSON(r1, 504)
            # (when the request got to the upstream before its deadline, as
            # it normally does, the upstream's connection was given up)
            for first in self.up.requests_tagged("bleed1"):
                self.assertCancelled(self.up, first, "upstream connection after the deadline")
            self.assertFalse(r1.conn_close and c.eof, "504 closed the connection")
            # The second request, on route "r" (10 minutes), is held at the
            # upstream past the moment the first's deadline would cut it if
            # it carried over to the connection's next request.
            t1 = time.monotonic()
            c.request("GET", "/ok?hold=1&body=second&tag=bleed2")
            second = self.up.wait_for_tag("bleed2")
            # what it was sent with is route r's deadline, not dl's
            left = int(second.header("x-request-deadline-ms"))
            self.assertGreater(left, DEADLINE * 1000, "the second request was "
                               "sent upstream with %d ms left" % left)
            self.assertNoAnswer(c, t1 + DEADLINE + 0.2)
            self.up.release("bleed2")
            r2 = c.read_response()
        self.assertEqual((r2.status, r2.body), (200, b"second"), r2)
        self.assertNotEqual(r1.header("x-request-id"), r2.header("x-request-id"))
        self.assertIsNotNone(second.responded)
        if second.conn.closed is not None:
            self.assertGreaterEqual(second.conn.closed, second.responded)
        self.assertEqual(
            self.fd.metrics().get("fanoutd_cancellations_total", reason="deadline"),
            m0.get("fanoutd_cancellations_total", reason="deadline") + 1)

    def assertNoAnswer(self, c, until):
        """Nothing arrives on C before UNTIL (a monotonic time): a bounded
        observation window for a negative assertion."""
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            r = c.read_response(timeout=left)
        except harness.ResponseTimeout:
            return
        self.fail("answered while the upstream held the request: %r" % r)

    def test_pipelined_deadline_then_success(self):
        with self.fd.client() as c:
            c.send(build_request("GET", "/dl/b?hang=1&tag=pbleed1") +
                   build_request("GET", "/ok?body=after&tag=pbleed2"))
            r1 = c.read_response()
            r2 = c.read_response()
        self.assertEqual(r1.status, 504, r1)
        self.assertEqual((r2.status, r2.body), (200, b"after"), r2)

    def test_client_close_on_one_request_then_new_connection(self):
        # a cancelled request on one connection leaves other connections alone
        with self.fd.client() as keep:
            r = keep.get("/k?body=k1")
            self.assertEqual(r.status, 200)
            c = self.fd.client()
            self.addCleanup(c.__exit__)
            c.request("GET", "/k?hang=1&tag=kc1")
            req = self.up.wait_for_tag("kc1")
            c.close()
            self.assertCancelled(self.up, req, "upstream connection after the client's close")
            r = keep.get("/k?body=k2")
            self.assertEqual((r.status, r.body), (200, b"k2"), r)

    def test_connection_close_request_is_honoured(self):
        # the keep-alive timeout is 10 minutes: the close is the request's
        with self.fd.client() as c:
            c.request("GET", "/cc?body=bye", [("Connection", "close")])
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"bye"))
            self.assertTrue(r.conn_close, r)
            c.wait_eof()

    def test_http10_closes(self):
        # the keep-alive timeout is 10 minutes: the close is HTTP/1.0's
        with self.fd.client() as c:
            c.send(b"GET /h10?body=old HTTP/1.0\r\nHost: x\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"old"), r)
            c.wait_eof()


def proxy_daemon(test, server):
    """A daemon proxying / to a fake upstream, with SERVER's keys."""
    return test.daemon(upstreams={"up": test.fake("up")},
                       routes={"r": {"match": "/", "upstreams": "up"}},
                       server=server)


def assert_idle_close(test, server, idle):
    """An answered keep-alive connection is closed after IDLE seconds idle,
    not before: the wait is bounded by PATIENCE only (how late is not the
    test).  The keep-alive timer starts once fanoutd has written the
    answer, which is after the client sent its request and before the
    client has read the answer: measured from the send, since a client slow
    to read the answer would make the idle time seem shorter than it was."""
    fd = proxy_daemon(test, server)
    with fd.client() as c:
        t0 = time.monotonic()
        r = c.get("/idle?body=x")
        test.assertEqual(r.status, 200)
        test.assertFalse(r.conn_close, r)
        t1 = c.wait_eof()
        test.assertEqual(bytes(c.buf), b"", "an idle connection was sent something")
    test.assertNotBefore(t1, t0, idle, "closed")


class KeepaliveTimeoutTest(harness.TestCase):
    """The keep-alive timeout itself: short, and the test."""

    def test_idle_connection_closed_after_keepalive_timeout(self):
        assert_idle_close(self, {"keepalive_timeout": "%dms" % (KEEPALIVE * 1000)},
                          KEEPALIVE)


class ConnTimerTest(harness.TestCase):
    """A connection's one timer is set again on every request and only
    re-armed when it must fire sooner (conn.c): a timer armed for a short
    header_timeout that fires while the connection waits out a longer
    keep-alive must not close it; a short header_timeout after a long
    keep-alive wait must still fire on time."""

    def test_keepalive_outlasts_header_timeout(self):
        # the head comes at once: the header timer armed at the accept is
        # still armed, for SHORT_HEAD, when the keep-alive wait begins
        assert_idle_close(self, {"header_timeout": "%dms" % (SHORT_HEAD * 1000),
                                 "keepalive_timeout": "%dms" % (LONG_IDLE * 1000)},
                          LONG_IDLE)

    def test_header_timeout_after_keepalive_wait(self):
        fd = proxy_daemon(self, {"header_timeout": "%dms" % (SHORT_HEAD * 1000),
                                 "keepalive_timeout": "10m"})
        with fd.client() as c:
            # the upstream answers 2 x header_timeout after the request:
            # the timer armed at the accept has fired by the time the
            # answer is written, so the keep-alive wait arms it for ten
            # minutes ...
            r = c.get("/first?body=x&delay=%d" % (SHORT_HEAD * 2000))
            self.assertEqual(r.status, 200)
            # ... and half a head must arm it sooner: the 408 at
            # header_timeout, within the wait's patience
            t0 = time.monotonic()
            c.send(b"GET /half HTTP/1.1\r\nHost: x\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 408, r)
            self.assertNotBefore(r, t0, SHORT_HEAD, "408")
            c.wait_eof()


if __name__ == "__main__":
    harness.main()
