"""Route deadlines and per-upstream timeouts."""


import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2


class DeadlineTest(harness.SharedDaemonTest):
    FAKES = ("slow",)

    @classmethod
    def config(cls, f):
        cls.up = f["slow"]
        return dict(
            upstreams={
                "slow": cls.up,
                "short": {"url": cls.up, "timeout": "300ms"},
            },
            routes={
                "dl": {"match": "/dl", "upstreams": "slow", "deadline": "300ms"},
                "to": {"match": "/to", "upstreams": "short", "deadline": "10s"},
                "fast": {"match": "/fast", "upstreams": "slow", "deadline": "10s"},
            })

    def test_route_deadline_504_and_upstream_closed(self):
        m0 = self.fd.metrics()
        rid = "deadline-1"
        with self.fd.client() as c:
            c.request("GET", "/dl/x?delay=5000&tag=dl1", [("X-Request-Id", rid)])
            req = self.up.wait_for_tag("dl1")
            r = c.read_response(timeout=5)
        self.assertErrorJSON(r, 504)
        self.assertEqual(r.header("x-request-id"), rid)
        elapsed = r.received - req.arrived
        self.assertGreater(elapsed, 0.2, "504 came before the 300ms deadline")
        self.assertLess(elapsed, 1.0, "504 came %.0f ms after arrival" % (elapsed * 1000))
        self.assertClosedWithin(self.up, req, r.received, PROMPT)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="deadline") + 1,
                            reason="deadline")
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

    def test_deadline_header_reflects_route_deadline(self):
        with self.fd.client() as c:
            c.request("GET", "/dl/x?tag=dlh")
            r = c.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        ms = int(self.up.wait_for_tag("dlh").header("x-request-deadline-ms"))
        self.assertTrue(0 < ms <= 300, ms)

    def test_upstream_timeout_504_closes_only_that_transfer(self):
        m0 = self.fd.metrics()
        # a concurrent, slower request on another route must not be touched
        other = self.fd.client()
        self.addCleanup(other.__exit__)
        other.request("GET", "/fast/x?delay=900&body=fine&tag=to-other")
        oreq = self.up.wait_for_tag("to-other")
        rid = "timeout-1"
        with self.fd.client() as c:
            c.request("GET", "/to/x?delay=5000&tag=to1", [("X-Request-Id", rid)])
            req = self.up.wait_for_tag("to1")
            r = c.read_response(timeout=5)
        self.assertErrorJSON(r, 504)
        elapsed = r.received - req.arrived
        self.assertGreater(elapsed, 0.2)
        self.assertLess(elapsed, 1.0, "504 after %.0f ms" % (elapsed * 1000))
        self.assertClosedWithin(self.up, req, r.received, PROMPT)
        self.assertIsNone(oreq.conn.closed, "the other request's upstream connection "
                          "was closed by this request's timeout")
        ro = other.read_response(timeout=5)
        self.assertEqual((ro.status, ro.body), (200, b"fine"), ro)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 504, e)
        self.assertEqual(len(e["upstreams"]), 1, e)
        self.assertEqual(e["upstreams"][0].get("error"), "timeout", e)
        m1 = self.fd.metrics()
        # a per-upstream timeout is no cancellation of the request
        for reason in ("client_closed", "deadline", "shutdown", "superseded"):
            self.assertEqual(m1.get("fanoutd_cancellations_total", reason=reason),
                             m0.get("fanoutd_cancellations_total", reason=reason), reason)

    def test_concurrent_fast_request_during_deadline(self):
        # a deadline that fires must not cancel a request that is in flight
        with self.fd.client() as slow, self.fd.client() as fast:
            slow.request("GET", "/dl/x?delay=5000&tag=cc-slow")
            sreq = self.up.wait_for_tag("cc-slow")
            fast.request("GET", "/fast/x?delay=500&body=ok&tag=cc-fast")
            freq = self.up.wait_for_tag("cc-fast")
            rs = slow.read_response(timeout=5)
            rf = fast.read_response(timeout=5)
        self.assertEqual(rs.status, 504, rs)
        self.assertEqual((rf.status, rf.body), (200, b"ok"), rf)
        self.up.wait_closed(sreq, 2)
        if freq.conn.closed is not None:
            self.assertGreaterEqual(freq.conn.closed, freq.responded)


if __name__ == "__main__":
    harness.main()
