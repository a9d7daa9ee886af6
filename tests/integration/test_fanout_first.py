"""Mode first: every leg at once, the first success verbatim with
Fanout-Upstream, the losers cancelled (superseded) and really closed at
their upstreams; every leg failed: 502 with the envelope."""

import urllib.parse

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2
NAMES = ["a", "b", "c"]


class FirstTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")
    REFUSED = ("dead",)

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={"a": f["a"], "b": f["b"], "c": f["c"], "dead": f["dead"]},
            routes={
                "first": {"match": "/first", "mode": "first", "upstreams": NAMES,
                          "deadline": "5s"},
                "firstdl": {"match": "/firstdl", "mode": "first", "upstreams": NAMES,
                            "deadline": "400ms"},
                "firstdead": {"match": "/firstdead", "mode": "first",
                              "upstreams": ["a", "b", "dead"], "deadline": "5s"},
            })

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

    # ------------------------------------------------------------------
    def test_first_success_verbatim_and_losers_closed(self):
        m0, _ = self.snapshot_counts()
        t = self.tag("w")
        rid = "first-" + t
        q = urllib.parse.urlencode([
            ("tag", t), ("delay", "5000"), ("b.wait", "a,c"), ("b.delay", "0"),
            ("b.status", "201"),
            ("b.body", "from-b"), ("b.ctype", "text/x-winner"),
            ("b.hdr", "X-Winner-Thing: 42")])
        r, t0 = self.call("/first/x?" + q, rid=rid)
        self.assertEqual((r.status, r.body), (201, b"from-b"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        self.assertEqual(r.header("content-type"), "text/x-winner", r)
        self.assertEqual(r.header("x-winner-thing"), "42", r)
        self.assertEqual(r.header("x-upstream"), "b", r)
        self.assertEqual(r.header("x-request-id"), rid)
        self.assertLess(r.received - t0, 2.5, "waited for the 5s legs")
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        # all at once (not hedged): the three legs arrive together, and the
        # losers were in flight before the winner answered
        arr = [x.arrived for x in reqs.values()]
        self.assertLess(max(arr) - min(arr), 0.1, "legs not sent at once: spread "
                        "%.0f ms" % ((max(arr) - min(arr)) * 1000))
        for n in ("a", "c"):
            self.assertLess(reqs[n].arrived, reqs["b"].responded,
                            "leg %s was not sent at once" % n)
            self.assertClosedWithin(self.f[n], reqs[n], r.received, PROMPT,
                                    "loser %s's upstream connection" % n)
            self.assertIsNone(reqs[n].responded)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 201, e)
        self.assertIsNone(e["cancel_reason"], "superseded legs are no cancellation "
                          "of the request: %r" % e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual(ups["b"].get("status"), 201, e)
        for n in ("a", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "superseded"), e)
            self.assertIn("duration_ms", ups[n], e)
        # started together, cut together: the losers' legs lasted as long as
        # each other and at least as long as the winner's (daemon-measured,
        # so immune to the fakes' scheduling); a hedged start would not
        self.assertLess(abs(ups["a"]["duration_ms"] - ups["c"]["duration_ms"]), 10, e)
        for n in ("a", "c"):
            self.assertGreaterEqual(ups[n]["duration_ms"] + 1, ups["b"]["duration_ms"], e)
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

    def test_winner_is_whoever_is_fastest(self):
        for fast in ("c", "a"):
            t = self.tag("f")
            # the winner answers once the losers' requests are at their
            # upstreams (one still unsent when the answer comes is never
            # sent at all, which is right but leaves nothing to see closed)
            others = ",".join(n for n in NAMES if n != fast)
            r, _ = self.call("/first/x?tag=%s&delay=2000&%s.wait=%s&%s.delay=0"
                             "&%s.body=%s" % (t, fast, others, fast, fast, fast))
            self.assertEqual((r.status, r.body), (200, fast.encode()), r)
            self.assertEqual(r.header("fanout-upstream"), fast, r)
            for n in NAMES:
                if n != fast:
                    self.assertClosedWithin(self.f[n], self.f[n].wait_for_tag(t),
                                            r.received, PROMPT, "loser %s" % n)

    def test_failures_are_skipped_for_a_later_success(self):
        m0 = self.fd.metrics()
        t = self.tag("s")
        rid = "first-" + t
        # a answers 500 at once, b drops the connection, c succeeds later
        r, _ = self.call("/first/x?tag=%s&a.status=500&a.body=bad&b.close=1"
                         "&c.delay=200&c.body=good" % t, rid=rid)
        self.assertEqual((r.status, r.body), (200, b"good"), r)
        self.assertEqual(r.header("fanout-upstream"), "c", r)
        e = self.fd.wait_access_log(request_id=rid)
        ups = {u["name"]: u for u in e["upstreams"]}
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
        # a has sent 50000 of 100000 body bytes and stalls; b wins after 300 ms
        r, _ = self.call("/first/x?tag=%s&a.size=100000&a.partial=50000"
                         "&b.delay=300&b.wait=a,c&b.body=win&c.delay=5000" % t)
        self.assertEqual((r.status, r.body), (200, b"win"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        areq = self.f["a"].wait_for_tag(t)
        self.assertIsNotNone(areq.partial_sent)
        self.assertClosedWithin(self.f["a"], areq, r.received, PROMPT,
                                "the mid-body loser's upstream connection")
        self.assertNotIn(b"x" * 100, r.body)
        self.fd.wait_metric("fanoutd_upstream_bytes_discarded_total",
                            lambda v: v >= m0.get(
                                "fanoutd_upstream_bytes_discarded_total") + 25000)

    def test_deadline_504_closes_every_leg(self):
        t = self.tag("dl")
        rid = "first-" + t
        r, t0 = self.call("/firstdl/x?delay=5000&tag=" + t, rid=rid)
        self.assertErrorJSON(r, 504)
        self.assertLess(r.received - t0, 2.0, "the deadline did not cut the 5s legs")
        for n in NAMES:
            self.assertClosedWithin(self.f[n], self.f[n].wait_for_tag(t), r.received,
                                    PROMPT, "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["cancel_reason"], "deadline", e)
        for u in e["upstreams"]:
            self.assertEqual((u.get("error"), u.get("reason")),
                             ("cancelled", "deadline"), e)

    def test_client_hangup_closes_every_leg(self):
        t = self.tag("h")
        rid = "first-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/first/x?delay=5000&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        t0 = c.close()
        for n in NAMES:
            self.assertClosedWithin(self.f[n], reqs[n], t0, PROMPT, "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


if __name__ == "__main__":
    harness.main()
