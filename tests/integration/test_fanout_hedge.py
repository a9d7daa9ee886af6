"""Mode hedge: the first leg now, one more each hedge_delay (at once after a
failure), the first success wins, the rest superseded and closed at their
upstreams; legs never sent are not_sent; hedges sent and won counted."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2
NAMES = ["a", "b", "c"]


class HedgeTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")

    @classmethod
    def config(cls, f):
        ups = {"a": f["a"], "b": f["b"], "c": f["c"]}
        return dict(
            upstreams=ups,
            routes={
                "h100": {"match": "/h100", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "100ms", "deadline": "5s"},
                "h200": {"match": "/h200", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "200ms", "deadline": "5s"},
                "h400": {"match": "/h400", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "400ms", "deadline": "5s"},
                "hdef": {"match": "/hdef", "mode": "hedge", "upstreams": NAMES,
                         "deadline": "5s"},
                "hdl": {"match": "/hdl", "mode": "hedge", "upstreams": NAMES,
                        "hedge_delay": "100ms", "deadline": "500ms"},
            })

    def counters(self):
        m = self.fd.metrics()
        return m, m.get("fanoutd_hedges_sent_total"), m.get("fanoutd_hedges_won_total")

    # ------------------------------------------------------------------
    def test_second_leg_after_hedge_delay_and_hedge_wins(self):
        m0, sent0, won0 = self.counters()
        t = self.tag("w")
        rid = "hedge-" + t
        r, _ = self.call("/h100/x?tag=%s&a.delay=3000&b.body=hedged&c.body=third" % t,
                         rid=rid)
        self.assertEqual((r.status, r.body), (200, b"hedged"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        gap = b.arrived - a.arrived
        self.assertGreaterEqual(gap, 0.08, "hedge sent %.0f ms after the first leg, "
                                "before hedge_delay = 100ms" % (gap * 1000))
        self.assertLessEqual(gap, 0.4, "hedge sent %.0f ms after the first leg"
                             % (gap * 1000))
        # the slow first leg is superseded: closed at its upstream
        self.assertClosedWithin(self.f["a"], a, r.received, PROMPT, "first leg")
        self.assertIsNone(a.responded)
        # b answered at once, long before c's turn: c never sent
        self.assertNoRequest(self.f["c"], lambda q: q.tag == t, 0.3, "the third leg")
        e = self.fd.wait_access_log(request_id=rid)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual((ups["a"].get("error"), ups["a"].get("reason")),
                         ("cancelled", "superseded"), e)
        self.assertEqual(ups["b"].get("status"), 200, e)
        self.assertEqual((ups["c"].get("error"), ups["c"].get("reason")),
                         ("cancelled", "not_sent"), e)
        self.fd.wait_metric("fanoutd_hedges_won_total", lambda v: v == won0 + 1)
        m1, sent1, won1 = self.counters()
        self.assertEqual(sent1, sent0 + 1, "hedges sent")
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="a", outcome="cancelled") + 1,
                            upstream="a", outcome="cancelled")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="error"),
                         m0.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="error"))
        # a leg never sent is no upstream request at all
        self.assertEqual(m1.sum("fanoutd_upstream_requests_total", upstream="c"),
                         m0.sum("fanoutd_upstream_requests_total", upstream="c"),
                         "a not-sent leg was counted as an upstream request")
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded") + 1)

    def test_late_leg_gets_the_same_body_and_less_time(self):
        # the body was read once: a hedge sent 100ms later still carries it,
        # and its X-Request-Deadline-Ms is what is left at that moment
        body = bytes(range(1, 256)) * 40
        t = self.tag("p")
        r, _ = self.call("/h100/x?tag=%s&a.delay=3000&b.echo=1" % t, method="POST",
                         body=body)
        self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        self.assertEqual(a.body, body)
        self.assertEqual(b.body, body, "the hedge leg did not get the whole body")
        self.assertEqual((a.method, b.method), ("POST", "POST"))
        da = int(a.header("x-request-deadline-ms"))
        db = int(b.header("x-request-deadline-ms"))
        self.assertLess(da, 5000)
        self.assertLessEqual(db, da - 80, "hedge leg sent ~100ms later has budget %d, "
                             "first leg %d" % (db, da))

    def test_fast_first_leg_sends_no_hedge(self):
        m0, sent0, won0 = self.counters()
        t = self.tag("f")
        rid = "hedge-" + t
        r, _ = self.call("/h100/x?tag=%s&a.body=first&body=other" % t, rid=rid)
        self.assertEqual((r.status, r.body), (200, b"first"), r)
        self.assertEqual(r.header("fanout-upstream"), "a", r)
        # three hedge delays of silence at b and c
        for n in ("b", "c"):
            self.assertNoRequest(self.f[n], lambda q: q.tag == t, 0.35,
                                 "a hedge after a fast first answer")
        m1, sent1, won1 = self.counters()
        self.assertEqual((sent1, won1), (sent0, won0), "hedge counters moved")
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded"),
                         "a cancellation counted with nothing in flight")
        e = self.fd.wait_access_log(request_id=rid)
        ups = {u["name"]: u for u in e["upstreams"]}
        for n in ("b", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "not_sent"), e)

    def test_first_leg_wins_after_a_hedge_was_sent(self):
        m0, sent0, won0 = self.counters()
        t = self.tag("o")
        # hedge_delay 200ms: b at ~200ms (slow), a answers at ~300ms, c due at
        # ~400ms is never sent
        r, _ = self.call("/h200/x?tag=%s&a.delay=300&a.body=orig&b.delay=5000"
                         "&c.body=no" % t)
        self.assertEqual((r.status, r.body), (200, b"orig"), r)
        self.assertEqual(r.header("fanout-upstream"), "a", r)
        b = self.f["b"].wait_for_tag(t)
        self.assertClosedWithin(self.f["b"], b, r.received, PROMPT, "hedge leg b")
        self.assertNoRequest(self.f["c"], lambda q: q.tag == t, 0.4, "the third leg")
        m1, sent1, won1 = self.counters()
        self.assertEqual(sent1, sent0 + 1, "hedges sent")
        self.assertEqual(won1, won0, "the first leg's win counted as a hedge win")

    def test_failure_sends_next_leg_at_once(self):
        t = self.tag("x")
        # hedge_delay 400ms, but a fails at once: b goes out at once
        r, t0 = self.call("/h400/x?tag=%s&a.status=500&b.body=rescued" % t)
        self.assertEqual((r.status, r.body), (200, b"rescued"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        gap = b.arrived - a.responded
        self.assertLess(gap, 0.2, "next leg %.0f ms after the failure (hedge_delay "
                        "400ms)" % (gap * 1000))
        # and a dropped connection counts as a failure too
        t = self.tag("x")
        r, t0 = self.call("/h400/x?tag=%s&a.close=1&b.close=1&c.body=third" % t)
        self.assertEqual((r.status, r.body), (200, b"third"), r)
        self.assertEqual(r.header("fanout-upstream"), "c", r)
        gap = self.f["c"].wait_for_tag(t).arrived - self.f["a"].wait_for_tag(t).arrived
        self.assertLess(gap, 0.35, "third leg %.0f ms after the first: failures "
                        "waited for hedge_delay (400ms)" % (gap * 1000))

    def test_all_fail_502_envelope(self):
        t = self.tag("e")
        r, t0 = self.call("/h400/x?tag=%s&a.status=500&b.status=503&c.close=1" % t)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)
        self.assertEqual(self.assertLegError(env, "b", "status").get("status"), 503)
        self.assertIn(env["c"].get("error"), ("reset", "protocol"), env)
        gap = self.f["c"].wait_for_tag(t).arrived - self.f["a"].wait_for_tag(t).arrived
        self.assertLess(gap, 0.35, "third leg %.0f ms after the first: failures "
                        "waited for hedge_delay (400ms)" % (gap * 1000))
        self.assertIsNone(r.header("fanout-upstream"))

    def test_default_hedge_delay_50ms(self):
        t = self.tag("d")
        r, _ = self.call("/hdef/x?tag=%s&a.delay=2000&b.body=b" % t)
        self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
        gap = (self.f["b"].wait_for_tag(t).arrived - self.f["a"].wait_for_tag(t).arrived)
        self.assertGreaterEqual(gap, 0.03, "hedge after %.0f ms" % (gap * 1000))
        self.assertLessEqual(gap, 0.3, "hedge after %.0f ms (default 50ms)" % (gap * 1000))

    def test_deadline_504_closes_every_sent_leg(self):
        t = self.tag("dl")
        rid = "hedge-" + t
        r, t0 = self.call("/hdl/x?delay=5000&tag=" + t, rid=rid)
        self.assertErrorJSON(r, 504)
        self.assertLess(r.received - t0, 2.0, "the deadline did not cut the 5s legs")
        # 100ms hedges: normally all three are out before the 500ms deadline;
        # on a starved machine fewer may be.  Whatever was sent is closed.
        self.assertClosedWithin(self.f["a"], self.f["a"].wait_for_tag(t), r.received,
                                PROMPT, "leg a")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["cancel_reason"], "deadline", e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual(ups["a"].get("reason"), "deadline", e)
        for n in NAMES:
            self.assertEqual(ups[n].get("error"), "cancelled", e)
            self.assertIn(ups[n].get("reason"), ("deadline", "not_sent"), e)
            if ups[n]["reason"] == "deadline":
                # started; it may have been cut before it reached the upstream
                for q in self.f[n].requests_tagged(t):
                    self.assertClosedWithin(self.f[n], q, r.received, PROMPT,
                                            "leg %s" % n)
            else:
                self.assertEqual(self.f[n].requests_tagged(t), [],
                                 "leg %s logged not_sent but reached its upstream" % n)

    def test_client_hangup_closes_sent_legs_and_sends_no_more(self):
        t = self.tag("h")
        rid = "hedge-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/h200/x?delay=5000&tag=" + t, [("X-Request-Id", rid)])
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        t0 = c.close()
        self.assertClosedWithin(self.f["a"], a, t0, PROMPT, "leg a")
        self.assertClosedWithin(self.f["b"], b, t0, PROMPT, "leg b")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # c was due 200ms after b: a cancelled request sends no more hedges
        # (on a starved machine c may have gone out before the hang-up)
        self.assertNoRequest(self.f["c"], lambda q: q.tag == t and q.arrived > t0,
                             0.4, "a hedge after the client left")
        ups = {u["name"]: u for u in e["upstreams"]}
        if self.f["c"].requests_tagged(t):
            self.assertEqual(ups["c"].get("reason"), "client_closed", e)
        else:
            self.assertEqual(ups["c"].get("reason"), "not_sent", e)


if __name__ == "__main__":
    harness.main()
