"""Mode first: every leg at once, the first success verbatim with
Fanout-Upstream, the losers cancelled (superseded) and really closed at
their upstreams; every leg failed: 502 with the envelope.

Losers never answer (hang=1): that they are closed, unanswered, is the
check, not how fast.  The winner answers only once the losers are at their
upstreams (wait=), or once fanoutd has counted what had to come first."""

import urllib.parse

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

NAMES = ["a", "b", "c"]
DEADLINE = 0.4          # route "firstdl"

class FirstTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")
    REFUSED = ("dead",)

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={"a": f["a"], "b": f["b"], "c": f["c"], "dead": f["dead"]},
            routes={
                "first": {"match": "/first", "mode": "first", "upstreams": NAMES},
                "firstdl": {"match": "/firstdl", "mode": "first", "upstreams": NAMES,
                            "deadline": "%dms" % (DEADLINE * 1000)},
                "firstdead": {"match": "/firstdead", "mode": "first",
                              "upstreams": ["a", "b", "dead"]},
            })

    WARM = ("/firstdl/warm?body=warm",)

    def snapshot_counts(self):
        m = self.fd.metrics()
        return m, {(n, o): m.get("fanoutd_upstream_requests_total", upstream=n, outcome=o)
                   for n in NAMES for o in ("ok", "status", "error", "timeout",
                                            "cancelled")}

    def wait_outcome(self, m0, name, outcome, n=1):
        return self.fd.wait_metric(
            "fanoutd_upstream_requests_total",
            lambda v: v == m0.get("fanoutd_upstream_requests_total", upstream=name,
                                  outcome=outcome) + n,
            upstream=name, outcome=outcome)

    def legs(self, rid):
        e = self.fd.wait_access_log(request_id=rid)
        return e, {u["name"]: u for u in e["upstreams"]}

    # ------------------------------------------------------------------
    def test_first_success_verbatim_and_losers_closed(self):
        m0, _ = self.snapshot_counts()
        t = self.tag("w")
        rid = "first-" + t
        # a and c never answer; b answers once both are at their upstreams
        q = urllib.parse.urlencode([
            ("tag", t), ("hang", "1"), ("b.hang", "0"), ("b.wait", "a,c"),
            ("b.status", "201"),
            ("b.body", "from-b"), ("b.ctype", "text/x-winner"),
            ("b.hdr", "X-Winner-Thing: 42")])
        r, _ = self.call("/first/x?" + q, rid=rid)
        self.assertEqual((r.status, r.body), (201, b"from-b"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        self.assertEqual(r.header("content-type"), "text/x-winner", r)
        self.assertEqual(r.header("x-winner-thing"), "42", r)
        self.assertEqual(r.header("x-upstream"), "b", r)
        self.assertEqual(r.header("x-request-id"), rid)
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        for n in ("a", "c"):
            self.assertLess(reqs[n].arrived, reqs["b"].responded,
                            "leg %s was not in flight when the winner answered" % n)
            self.assertCancelled(self.f[n], reqs[n], "loser %s's upstream connection" % n)
        e, ups = self.legs(rid)
        self.assertEqual(e["status"], 201, e)
        self.assertIsNone(e["cancel_reason"], "superseded legs are no cancellation "
                          "of the request: %r" % e)
        self.assertEqual(ups["b"].get("status"), 201, e)
        for n in ("a", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "superseded"), e)
            self.assertIn("duration_ms", ups[n], e)
        # metrics: once per request, the losers cancelled, never errors
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v >= m0.get("fanoutd_cancellations_total",
                                                  reason="superseded") + 1,
                            reason="superseded")
        self.wait_outcome(m0, "a", "cancelled")
        self.wait_outcome(m0, "c", "cancelled")
        self.wait_outcome(m0, "b", "ok")
        self.fd.wait_metric("fanoutd_cancel_latency_seconds_count",
                            lambda v: v >= m0.sum("fanoutd_cancel_latency_seconds_count") + 1)
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded") + 1,
                         "superseded counted more than once for one request")
        for n in NAMES:
            self.assertEqual(
                m1.get("fanoutd_upstream_requests_total", upstream=n, outcome="error"),
                m0.get("fanoutd_upstream_requests_total", upstream=n, outcome="error"), n)
        for reason in ("client_closed", "deadline"):
            self.assertEqual(m1.get("fanoutd_cancellations_total", reason=reason),
                             m0.get("fanoutd_cancellations_total", reason=reason), reason)

    def test_every_leg_goes_out_before_any_answer(self):
        # "At once", by cause rather than by clock: a answers as soon as it
        # is asked, yet b and c were started before fanoutd could read that
        # answer, so they are superseded, never not_sent (a one-by-one or
        # hedged start would leave them unsent).  They never answer;
        # whatever reached its upstream is closed there.
        t = self.tag("o")
        rid = "first-" + t
        r, _ = self.call("/first/x?tag=%s&hang=1&a.hang=0&a.body=quick" % t, rid=rid)
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"quick", "a"), r)
        e, ups = self.legs(rid)
        for n in ("b", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "superseded"),
                             "leg %s was not sent with a: %r" % (n, e))
            for q in self.f[n].requests_tagged(t):
                self.assertCancelled(self.f[n], q, "loser %s" % n)

    def test_winner_is_whoever_is_fastest(self):
        for fast in ("c", "a"):
            t = self.tag("f")
            # the winner answers once the losers' requests are at their
            # upstreams (one still unsent when the answer comes is never
            # sent at all, which is right but leaves nothing to see closed);
            # the losers never answer
            others = ",".join(n for n in NAMES if n != fast)
            r, _ = self.call("/first/x?tag=%s&hang=1&%s.wait=%s&%s.hang=0"
                             "&%s.body=%s" % (t, fast, others, fast, fast, fast))
            self.assertEqual((r.status, r.body), (200, fast.encode()), r)
            self.assertEqual(r.header("fanout-upstream"), fast, r)
            for n in NAMES:
                if n != fast:
                    self.assertCancelled(self.f[n], self.f[n].wait_for_tag(t),
                                         "loser %s" % n)

    def test_failures_are_skipped_for_a_later_success(self):
        m0 = self.fd.metrics()
        t = self.tag("s")
        rid = "first-" + t
        # a answers 500 at once, b drops the connection; c succeeds, held
        # until fanoutd has counted both failures
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/first/x?tag=%s&a.status=500&a.body=bad&b.close=1"
                  "&c.hold=1&c.body=good" % t, [("X-Request-Id", rid)])
        self.wait_outcome(m0, "a", "status")
        self.wait_outcome(m0, "b", "error")
        self.f["c"].release(t)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"good"), r)
        self.assertEqual(r.header("fanout-upstream"), "c", r)
        e, ups = self.legs(rid)
        self.assertEqual(ups["a"].get("status"), 500, e)
        self.assertIn(ups["b"].get("error"), ("reset", "protocol"), e)
        self.assertEqual(ups["c"].get("status"), 200, e)
        # nothing was in flight when c won: no superseded cancellation counted
        self.wait_outcome(m0, "c", "ok")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded"),
                         "a cancellation counted though no leg was in flight")
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="status"),
                         m0.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="status") + 1)

    def test_all_failed_502_envelope(self):
        t = self.tag("x")
        r, _ = self.call("/firstdead/x?tag=%s&a.status=503&b.close=1" % t)
        env = self.assertEnvelope(r, 502, ["a", "b", "dead"])
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 503)
        self.assertIn(env["b"].get("error"), ("reset", "protocol"), env)
        self.assertLegError(env, "dead", "connect")
        self.assertIsNone(r.header("fanout-upstream"), r)

    def test_discarded_bytes_of_a_loser_mid_body(self):
        m0 = self.fd.metrics()
        t = self.tag("d")
        # a sends the head and 50000 of 100000 body bytes, then stalls; b
        # wins, released once fanoutd has read all that a sent; c never
        # answers
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/first/x?tag=%s&a.size=100000&a.partial=50000"
                  "&b.hold=1&b.body=win&c.hang=1" % t)
        areq = harness.wait_partial_answer_read(self.f["a"], t)
        self.f["c"].wait_for_tag(t)
        self.f["b"].release(t)
        r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"win"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        self.assertCancelled(self.f["a"], areq, "the mid-body loser's upstream connection")
        self.assertCancelled(self.f["c"], self.f["c"].wait_for_tag(t), "loser c")
        self.assertNotIn(b"x" * 100, r.body)
        self.fd.wait_metric("fanoutd_upstream_bytes_discarded_total",
                            lambda v: v >= m0.get(
                                "fanoutd_upstream_bytes_discarded_total") + 50000)

    def test_deadline_504_closes_every_leg(self):
        t = self.tag("dl")
        rid = "first-" + t
        r, t0 = self.call("/firstdl/x?hang=1&tag=" + t, rid=rid)
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the deadline
        self.assertNotBefore(r, t0, DEADLINE, "504")
        e, ups = self.legs(rid)
        self.assertEqual(e["cancel_reason"], "deadline", e)
        for n in NAMES:
            # all three were started at once: all cut by the deadline
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "deadline"), e)
            # normally all three are at their upstreams long before the
            # deadline (the route was warmed); whatever got there is closed
            for q in self.f[n].requests_tagged(t):
                self.assertCancelled(self.f[n], q, "leg %s" % n)

    def test_client_hangup_closes_every_leg(self):
        t = self.tag("h")
        rid = "first-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/first/x?hang=1&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        c.close()
        for n in NAMES:
            self.assertCancelled(self.f[n], reqs[n], "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


if __name__ == "__main__":
    harness.main()
