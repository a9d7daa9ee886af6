"""Keep-alive and pipelining: requests on one connection stay separate."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from harness import build_request


class KeepaliveTest(harness.SharedDaemonTest):
    FAKES = ("up",)

    @classmethod
    def config(cls, f):
        cls.up = f["up"]
        return dict(
            upstreams={"up": cls.up},
            routes={
                "r": {"match": "/", "upstreams": "up", "deadline": "10s"},
                "dl": {"match": "/dl", "upstreams": "up", "deadline": "300ms"},
            },
            server={"keepalive_timeout": "500ms"})

    def test_three_sequential_requests(self):
        with self.fd.client() as c:
            ids = []
            for i in range(3):
                c.request("GET", "/seq?body=r%d&tag=seq%d" % (i, i))
                r = c.read_response(timeout=5)
                self.assertEqual((r.status, r.body), (200, b"r%d" % i), r)
                self.assertFalse(r.conn_close, "connection not kept alive: %r" % r)
                ids.append(r.header("x-request-id"))
            self.assertEqual(len(set(ids)), 3, ids)
            self.assertFalse(c.eof)
        m = self.fd.metrics()
        self.assertIn(("fanoutd_connections_active", frozenset()), m)

    def test_pipelined_responses_in_order(self):
        # the first is the slowest: the answers must still come back in order
        reqs = [build_request("GET", "/pipe?delay=%d&body=p%d&tag=pipe%d" % (d, i, i))
                for i, d in enumerate((400, 100, 0))]
        with self.fd.client() as c:
            c.send(b"".join(reqs))
            bodies = [c.read_response(timeout=5) for _ in range(3)]
        self.assertEqual([(r.status, r.body) for r in bodies],
                         [(200, b"p0"), (200, b"p1"), (200, b"p2")], bodies)
        for i in range(3):
            self.up.wait_for_tag("pipe%d" % i, timeout=1)

    def test_deadline_does_not_bleed_into_next_request(self):
        m0 = self.fd.metrics()
        with self.fd.client() as c:
            c.request("GET", "/dl/a?delay=5000&tag=bleed1")
            first = self.up.wait_for_tag("bleed1")
            r1 = c.read_response(timeout=5)
            self.assertErrorJSON(r1, 504)
            self.up.wait_closed(first, 2)
            self.assertFalse(r1.conn_close and c.eof, "504 closed the connection")
            c.request("GET", "/ok?delay=400&body=second&tag=bleed2")
            second = self.up.wait_for_tag("bleed2")
            r2 = c.read_response(timeout=5)
        self.assertEqual((r2.status, r2.body), (200, b"second"), r2)
        self.assertNotEqual(r1.header("x-request-id"), r2.header("x-request-id"))
        self.assertIsNotNone(second.responded)
        if second.conn.closed is not None:
            self.assertGreaterEqual(second.conn.closed, second.responded)
        self.assertEqual(
            self.fd.metrics().get("fanoutd_cancellations_total", reason="deadline"),
            m0.get("fanoutd_cancellations_total", reason="deadline") + 1)

    def test_pipelined_deadline_then_success(self):
        with self.fd.client() as c:
            c.send(build_request("GET", "/dl/b?delay=5000&tag=pbleed1") +
                   build_request("GET", "/ok?body=after&tag=pbleed2"))
            r1 = c.read_response(timeout=5)
            r2 = c.read_response(timeout=5)
        self.assertEqual(r1.status, 504, r1)
        self.assertEqual((r2.status, r2.body), (200, b"after"), r2)

    def test_client_close_on_one_request_then_new_connection(self):
        # a cancelled request on one connection leaves other connections alone
        with self.fd.client() as keep:
            r = keep.get("/k?body=k1")
            self.assertEqual(r.status, 200)
            c = self.fd.client()
            c.request("GET", "/k?delay=5000&tag=kc1")
            req = self.up.wait_for_tag("kc1")
            c.close()
            self.up.wait_closed(req, 2)
            r = keep.get("/k?body=k2")
            self.assertEqual((r.status, r.body), (200, b"k2"), r)

    def test_idle_connection_closed_after_keepalive_timeout(self):
        with self.fd.client() as c:
            r = c.get("/idle?body=x")
            self.assertEqual(r.status, 200)
            t0 = r.received
            t1 = c.wait_eof(timeout=5)
        idle = t1 - t0
        self.assertGreater(idle, 0.35, "closed after only %.0f ms" % (idle * 1000))
        self.assertLess(idle, 1.5, "idle connection kept %.0f ms (timeout 500ms)"
                        % (idle * 1000))

    def test_connection_close_request_is_honoured(self):
        with self.fd.client() as c:
            c.request("GET", "/cc?body=bye", [("Connection", "close")])
            r = c.read_response(timeout=5)
            self.assertEqual((r.status, r.body), (200, b"bye"))
            self.assertTrue(r.conn_close, r)
            c.wait_eof(timeout=2)

    def test_http10_closes(self):
        with self.fd.client() as c:
            c.send(b"GET /h10?body=old HTTP/1.0\r\nHost: x\r\n\r\n")
            r = c.read_response(timeout=5)
            self.assertEqual((r.status, r.body), (200, b"old"), r)
            c.wait_eof(timeout=2)


if __name__ == "__main__":
    harness.main()
