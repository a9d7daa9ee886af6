"""Route deadlines and per-upstream timeouts.

The deadline (route "dl") and the upstream timeout (upstream "short") are
what these tests are about, so they are short; the upstream never answers
(hang=1), and what is checked is that the 504 does not come before them,
measured from the client's send.  How late it comes is not checked.

Both start when the request's head is in, and a test of them needs the
request at the upstream before they fire: nothing but speed orders that.
So each comes in three lengths, and a test that finds its request did not
reach the upstream before the 504 runs again with the next (10 times
longer) one.  Normally the first one does.
"""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

LIMITS = (0.3, 3, 30)   # route deadlines and upstream timeouts, in turn
HEADER_ROUTE_MS = 7 * 60 * 1000     # route "hdr": 7m, unlike any default

def ms(limit):
    return "%dms" % (limit * 1000)


class DeadlineTest(harness.SharedDaemonTest):
    FAKES = ("slow",)

    @classmethod
    def config(cls, f):
        cls.up = f["slow"]
        upstreams = {"slow": cls.up}
        routes = {
            "hdr": {"match": "/hdr", "upstreams": "slow",
                    "deadline": "%dms" % HEADER_ROUTE_MS},
            "other": {"match": "/other", "upstreams": "slow"},
        }
        for limit in LIMITS:
            routes["dl-" + ms(limit)] = {"match": "/dl-%s/" % ms(limit),
                                         "upstreams": "slow", "deadline": ms(limit)}
            upstreams["short-" + ms(limit)] = {"url": cls.up, "timeout": ms(limit)}
            routes["to-" + ms(limit)] = {"match": "/to-%s/" % ms(limit),
                                         "upstreams": "short-" + ms(limit)}
        return dict(upstreams=upstreams, routes=routes)

    # Under valgrind the first request took 465 ms from send to upstream
    # once: each route is used once first, so the shortest deadline and
    # timeout then do.
    WARM = tuple(p + "?body=warm" for p in (
        "/other/w", "/to-%s/w" % ms(LIMITS[0]), "/dl-%s/w" % ms(LIMITS[0]), "/hdr/w"))

    def expire(self, kind):
        """A request on the KIND ("dl": route deadline, "to": upstream
        timeout) routes that the upstream never answers, until one reached
        the upstream before its 504.  Returns (response, t_sent, request at
        the upstream, limit, request id)."""
        for limit in LIMITS:
            tag = self.tag(kind)
            rid = "deadline-" + tag
            with self.fd.client() as c:
                t0 = time.monotonic()
                c.request("GET", "/%s-%s/x?hang=1&tag=%s" % (kind, ms(limit), tag),
                          [("X-Request-Id", rid)])
                r = c.read_response()
            reqs = self.up.requests_tagged(tag)
            if reqs:
                return r, t0, reqs[0], limit, rid
            sys.stderr.write("%s %s: the 504 came before the request reached the "
                             "upstream; again with a longer one\n" % (kind, ms(limit)))
        self.fail("%s: every 504 came before the request reached the upstream" % kind)

    def test_route_deadline_504_and_upstream_closed(self):
        m0 = self.fd.metrics()
        r, t0, req, limit, rid = self.expire("dl")
        self.assertErrorJSON(r, 504)
        self.assertEqual(r.header("x-request-id"), rid)
        # the lower bound is the test: no 504 before the deadline
        self.assertNotBefore(r, t0, limit, "route deadline")
        self.assertCancelled(self.up, req, "upstream connection after the deadline")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="deadline") + 1,
                            reason="deadline")
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

    def test_deadline_header_reflects_route_deadline(self):
        # what is left of the route's deadline when the leg starts: at most
        # the deadline, and less by no more than the time from the client's
        # send to the upstream's receipt (fanoutd keeps a margin of a few
        # ms for itself: 1 s is allowed for it)
        with self.fd.client() as c:
            t0 = time.monotonic()
            c.request("GET", "/hdr/x?tag=dlh")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        req = self.up.wait_for_tag("dlh")
        left = int(req.header("x-request-deadline-ms"))
        spent_ms = (req.arrived - t0) * 1000
        self.assertLessEqual(left, HEADER_ROUTE_MS)
        self.assertGreaterEqual(left, HEADER_ROUTE_MS - spent_ms - 1000,
                                "%d ms left of a %d ms deadline after %.0f ms"
                                % (left, HEADER_ROUTE_MS, spent_ms))

    def test_upstream_timeout_504_closes_only_that_transfer(self):
        m0 = self.fd.metrics()
        # a concurrent request on another route, held at the upstream until
        # the timeout has come and gone: it must not be touched
        other = self.fd.client()
        self.addCleanup(other.__exit__)
        other.request("GET", "/other/x?hold=1&body=fine&tag=to-other")
        oreq = self.up.wait_for_tag("to-other")
        r, t0, req, limit, rid = self.expire("to")
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the upstream's timeout
        self.assertNotBefore(r, t0, limit, "upstream timeout")
        self.assertCancelled(self.up, req, "upstream connection after its timeout")
        self.assertIsNone(oreq.conn.closed, "the other request's upstream connection "
                          "was closed by this request's timeout")
        self.up.release("to-other")
        ro = other.read_response()
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

    def test_deadline_leaves_other_requests_alone(self):
        # a deadline that fires must not cancel another request in flight:
        # that one is at the upstream first, and held there until the
        # deadline has fired
        with self.fd.client() as other:
            other.request("GET", "/other/x?hold=1&body=ok&tag=cc-other")
            oreq = self.up.wait_for_tag("cc-other")
            rs, _, sreq, _, _ = self.expire("dl")
            self.assertErrorJSON(rs, 504)
            self.assertCancelled(self.up, sreq, "upstream connection after the deadline")
            self.assertIsNone(oreq.conn.closed, "the other request's upstream "
                              "connection was closed by this request's deadline")
            self.up.release("cc-other")
            ro = other.read_response()
        self.assertEqual((ro.status, ro.body), (200, b"ok"), ro)
        self.assertIsNotNone(oreq.responded)


if __name__ == "__main__":
    harness.main()
