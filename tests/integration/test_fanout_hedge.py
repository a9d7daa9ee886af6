"""Mode hedge: the first leg now, one more each hedge_delay (at once after a
failure), the first success wins, the rest superseded and closed at their
upstreams; legs never sent are not_sent; hedges sent and won counted.

Order is made by construction: a leg that must not win never answers
(hang=1) or answers only once the hedges are at their upstreams (wait=).
"Not before hedge_delay" is measured from the client's send; "at once, not
after hedge_delay" uses a route whose hedge_delay is ten minutes."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

NAMES = ["a", "b", "c"]
ROUTE_DEADLINE_MS = 10 * 60 * 1000      # the harness's calm route deadline

class HedgeTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")

    @classmethod
    def config(cls, f):
        ups = {"a": f["a"], "b": f["b"], "c": f["c"]}
        return dict(
            upstreams=ups,
            routes={
                "h100": {"match": "/h100", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "100ms"},
                "h200": {"match": "/h200", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "200ms"},
                # hedges that are due only in ten minutes: what comes sooner
                # is not the timer's doing
                "h10m": {"match": "/h10m", "mode": "hedge", "upstreams": NAMES,
                         "hedge_delay": "10m"},
                "hdef": {"match": "/hdef", "mode": "hedge", "upstreams": NAMES},
                # the default hedge_delay against a 200 ms deadline: both
                # timers are armed in the same loop pass, so a hedge_delay
                # shorter than the deadline fires first at any speed
                "hdefdl": {"match": "/hdefdl", "mode": "hedge", "upstreams": NAMES,
                           "deadline": "200ms"},
                "hdl": {"match": "/hdl", "mode": "hedge", "upstreams": NAMES,
                        "hedge_delay": "100ms", "deadline": "500ms"},
            })

    WARM = ("/h100/warm?body=warm", "/h200/warm?body=warm", "/h10m/warm?body=warm", "/hdef/warm?body=warm", "/hdefdl/warm?body=warm", "/hdl/warm?body=warm")

    def counters(self):
        m = self.fd.metrics()
        return m, m.get("fanoutd_hedges_sent_total"), m.get("fanoutd_hedges_won_total")

    def legs(self, rid):
        e = self.fd.wait_access_log(request_id=rid)
        return e, {u["name"]: u for u in e["upstreams"]}

    def assertSentLegsCancelled(self, t, ups, reason, names=NAMES):
        """Every leg of NAMES that the access log has as sent (cancelled
        for REASON) and that reached its upstream (all hold for ever) was
        closed there unanswered; one logged not_sent never reached it."""
        for n in names:
            self.assertEqual(ups[n].get("error"), "cancelled", ups)
            self.assertIn(ups[n].get("reason"), (reason, "not_sent"), ups)
            if ups[n]["reason"] == "not_sent":
                self.assertEqual(self.f[n].requests_tagged(t), [],
                                 "leg %s logged not_sent but reached its upstream" % n)
            for q in self.f[n].requests_tagged(t):
                self.assertCancelled(self.f[n], q, "leg %s" % n)

    # ------------------------------------------------------------------
    def test_second_leg_after_hedge_delay_and_hedge_wins(self):
        m0, sent0, won0 = self.counters()
        t = self.tag("w")
        rid = "hedge-" + t
        # a never answers: only the hedge can
        r, t_sent = self.call("/h100/x?tag=%s&a.hang=1&b.body=hedged&c.hang=1" % t,
                              rid=rid)
        self.assertEqual((r.status, r.body), (200, b"hedged"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        # fanoutd cannot start its timer before the client sent
        self.assertNotBefore(b.arrived, t_sent, 0.1, "hedge b at its upstream")
        # the first leg is superseded: closed at its upstream, unanswered
        self.assertCancelled(self.f["a"], a, "first leg")
        e, ups = self.legs(rid)
        self.assertEqual((ups["a"].get("error"), ups["a"].get("reason")),
                         ("cancelled", "superseded"), e)
        self.assertEqual(ups["b"].get("status"), 200, e)
        # c was due 100 ms after b.  Normally b's answer is in long before:
        # c is never sent, and the win stopped the timer (nothing reaches c
        # until well past the moment it was due).  On a slow machine b's
        # answer may come after c was sent: then c is superseded too.
        self.assertEqual(ups["c"].get("error"), "cancelled", e)
        self.assertIn(ups["c"].get("reason"), ("not_sent", "superseded"), e)
        c_sent = ups["c"]["reason"] == "superseded"
        if not c_sent:
            self.assertNoRequest(self.f["c"], lambda q: q.tag == t,
                                 max(0.05, b.arrived + 0.2 - time.monotonic()),
                                 "the third leg, after the hedge won")
        for q in self.f["c"].requests_tagged(t):
            self.assertCancelled(self.f["c"], q, "third leg")
        self.fd.wait_metric("fanoutd_hedges_won_total", lambda v: v == won0 + 1)
        m1, sent1, won1 = self.counters()
        self.assertEqual(sent1, sent0 + (2 if c_sent else 1), "hedges sent")
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="a", outcome="cancelled") + 1,
                            upstream="a", outcome="cancelled")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="error"),
                         m0.get("fanoutd_upstream_requests_total", upstream="a",
                                outcome="error"))
        if not c_sent:
            # a leg never sent is no upstream request at all
            self.assertEqual(m1.sum("fanoutd_upstream_requests_total", upstream="c"),
                             m0.sum("fanoutd_upstream_requests_total", upstream="c"),
                             "a not-sent leg was counted as an upstream request")
        # one superseded cancellation per request, however many legs
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded") + 1)

    def test_late_leg_gets_the_same_body_and_less_time(self):
        # the body was read once: a hedge sent 200ms later still carries it,
        # and its X-Request-Deadline-Ms is what is left at that moment (a
        # POST is hedged only with an Idempotency-Key: test_health.py)
        body = bytes(range(1, 256)) * 40
        t = self.tag("p")
        r, t_sent = self.call("/h200/x?tag=%s&a.hang=1&b.echo=1&c.hang=1" % t,
                              method="POST", body=body,
                              headers={"Idempotency-Key": t})
        self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        self.assertEqual(a.body, body)
        self.assertEqual(b.body, body, "the hedge leg did not get the whole body")
        self.assertEqual((a.method, b.method), ("POST", "POST"))
        da = int(a.header("x-request-deadline-ms"))
        db = int(b.header("x-request-deadline-ms"))
        # Bounds from the client's clock only.  A leg's budget is the
        # deadline less the time since the head was in (less a margin of
        # a few ms that fanoutd keeps): no less than the deadline minus the
        # time from the send to the leg's arrival, and the head was in
        # before leg a arrived.  Leg b went out no sooner than hedge_delay
        # after the send, so it lost at least hedge_delay less a's trip.
        for name, q, d in (("a", a, da), ("b", b, db)):
            spent = (q.arrived - t_sent) * 1000
            self.assertLessEqual(d, ROUTE_DEADLINE_MS, name)
            self.assertGreaterEqual(d, ROUTE_DEADLINE_MS - spent - 1000,
                                    "leg %s: %d ms left after %.0f ms" % (name, d, spent))
        a_trip = (a.arrived - t_sent) * 1000
        self.assertLessEqual(db, ROUTE_DEADLINE_MS - 200 + a_trip + 1,
                             "hedge leg sent >= 200 ms after the send has budget %d, "
                             "first leg %d (it arrived %.1f ms after the send)"
                             % (db, da, a_trip))
        for q in self.f["c"].requests_tagged(t):
            self.assertCancelled(self.f["c"], q, "third leg")
        self.assertCancelled(self.f["a"], a, "first leg")

    def test_fast_first_leg_sends_no_hedge(self):
        # With hedge_delay = 10m a hedge before the first leg's answer is
        # wrong at any speed: the access log (written when the request
        # ended: nothing is sent for it afterwards) must show b and c never
        # sent, and nothing counted.
        m0, sent0, won0 = self.counters()
        t = self.tag("f")
        rid = "hedge-" + t
        r, _ = self.call("/h10m/x?tag=%s&a.body=first&hang=1&a.hang=0" % t, rid=rid)
        self.assertEqual((r.status, r.body), (200, b"first"), r)
        self.assertEqual(r.header("fanout-upstream"), "a", r)
        e, ups = self.legs(rid)
        for n in ("b", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "not_sent"), e)
            self.assertEqual(self.f[n].requests_tagged(t), [], n)
        m1, sent1, won1 = self.counters()
        self.assertEqual((sent1, won1), (sent0, won0), "hedge counters moved")
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded"),
                         "a cancellation counted with nothing in flight")

    def test_answer_stops_the_hedge_timer(self):
        # hedge_delay 200ms, the first leg answers at once: the timer that
        # was armed for b must die with the request.  Normally the answer
        # is in before 200 ms: b is logged not_sent and nothing reaches b
        # or c in a window that starts after the answer and reaches past
        # the moment b was due.  If the answer itself took longer than
        # hedge_delay (valgrind), b was rightly sent: then it was
        # superseded and closed, and the answer came after hedge_delay.
        t = self.tag("s")
        rid = "hedge-" + t
        r, t_sent = self.call("/h200/x?tag=%s&a.body=first&hang=1&a.hang=0" % t, rid=rid)
        self.assertEqual((r.status, r.body), (200, b"first"), r)
        e, ups = self.legs(rid)
        if ups["b"].get("reason") == "not_sent":
            self.assertEqual(ups["c"].get("reason"), "not_sent", e)
            end = t_sent + 0.2 + 0.1
            for n in ("b", "c"):
                self.assertNoRequest(self.f[n], lambda q: q.tag == t,
                                     max(0.05, end - time.monotonic()),
                                     "a hedge after the first leg answered")
        else:
            self.assertNotBefore(r.received, t_sent, 0.2,
                                 "an answer after a hedge was sent came")
            self.assertSentLegsCancelled(t, ups, "superseded", ("b", "c"))

    def test_first_leg_wins_after_the_hedges_were_sent(self):
        m0, sent0, won0 = self.counters()
        t = self.tag("o")
        rid = "hedge-" + t
        # a answers only once both hedges are at their upstreams; they
        # never answer
        r, _ = self.call("/h100/x?tag=%s&a.wait=b,c&a.body=orig&hang=1&a.hang=0" % t,
                         rid=rid)
        self.assertEqual((r.status, r.body), (200, b"orig"), r)
        self.assertEqual(r.header("fanout-upstream"), "a", r)
        for n in ("b", "c"):
            self.assertCancelled(self.f[n], self.f[n].wait_for_tag(t), "hedge leg %s" % n)
        e, ups = self.legs(rid)
        for n in ("b", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "superseded"), e)
        m1, sent1, won1 = self.counters()
        self.assertEqual(sent1, sent0 + 2, "hedges sent")
        self.assertEqual(won1, won0, "the first leg's win counted as a hedge win")
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="superseded") + 1,
                            reason="superseded")

    def test_failure_sends_next_leg_at_once(self):
        # hedge_delay 10m: the next leg comes at once after a failure, or
        # not for ten minutes
        m0, sent0, won0 = self.counters()
        t = self.tag("x")
        r, _ = self.call("/h10m/x?tag=%s&a.status=500&b.body=rescued&c.hang=1" % t)
        self.assertEqual((r.status, r.body), (200, b"rescued"), r)
        self.assertEqual(r.header("fanout-upstream"), "b", r)
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        self.assertIsNotNone(a.responded)
        self.assertGreater(b.arrived, a.responded, "the next leg went before the failure")
        self.assertEqual(self.f["c"].requests_tagged(t), [])
        # and a dropped connection counts as a failure too
        t = self.tag("x")
        r, _ = self.call("/h10m/x?tag=%s&a.close=1&b.close=1&c.body=third" % t)
        self.assertEqual((r.status, r.body), (200, b"third"), r)
        self.assertEqual(r.header("fanout-upstream"), "c", r)
        m1, sent1, won1 = self.counters()
        self.assertEqual((sent1, won1), (sent0 + 3, won0 + 2))

    def test_all_fail_502_envelope(self):
        # hedge_delay 10m: every leg sent at once after the one before failed
        t = self.tag("e")
        r, _ = self.call("/h10m/x?tag=%s&a.status=500&b.status=503&c.close=1" % t)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)
        self.assertEqual(self.assertLegError(env, "b", "status").get("status"), 503)
        self.assertIn(env["c"].get("error"), ("reset", "protocol"), env)
        self.assertIsNone(r.header("fanout-upstream"))

    def test_default_hedge_delay_50ms(self):
        # not before 50 ms after the client's send ...
        t = self.tag("d")
        r, t_sent = self.call("/hdef/x?tag=%s&a.hang=1&b.body=b&c.hang=1" % t)
        self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
        b = self.f["b"].wait_for_tag(t)
        self.assertNotBefore(b.arrived, t_sent, 0.05, "the default hedge")
        self.assertCancelled(self.f["a"], self.f["a"].wait_for_tag(t), "first leg")
        for q in self.f["c"].requests_tagged(t):
            self.assertCancelled(self.f["c"], q, "third leg")
        # ... and before a 200 ms deadline armed in the same loop pass: b
        # was started (logged cancelled for the deadline, not not_sent)
        t = self.tag("dd")
        rid = "hedge-" + t
        r, t_sent = self.call("/hdefdl/x?hang=1&tag=" + t, rid=rid)
        self.assertErrorJSON(r, 504)
        self.assertNotBefore(r.received, t_sent, 0.2, "504")
        e, ups = self.legs(rid)
        self.assertEqual((ups["a"].get("error"), ups["a"].get("reason")),
                         ("cancelled", "deadline"), e)
        self.assertEqual((ups["b"].get("error"), ups["b"].get("reason")),
                         ("cancelled", "deadline"),
                         "the default hedge_delay did not fire before a 200 ms "
                         "deadline: %r" % e)
        self.assertSentLegsCancelled(t, ups, "deadline")

    def test_deadline_504_closes_every_sent_leg(self):
        t = self.tag("dl")
        rid = "hedge-" + t
        r, t_sent = self.call("/hdl/x?hang=1&tag=" + t, rid=rid)
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the 500 ms deadline
        self.assertNotBefore(r.received, t_sent, 0.5, "504")
        e, ups = self.legs(rid)
        self.assertEqual(e["cancel_reason"], "deadline", e)
        self.assertEqual(ups["a"].get("reason"), "deadline", e)
        # 100ms hedges: normally all three are out before the deadline; on
        # a starved machine fewer may be.  Whatever was sent is closed.
        self.assertSentLegsCancelled(t, ups, "deadline")

    def test_client_hangup_closes_sent_legs_and_sends_no_more(self):
        t = self.tag("h")
        rid = "hedge-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/h200/x?hang=1&tag=" + t, [("X-Request-Id", rid)])
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        c.close()
        self.assertCancelled(self.f["a"], a, "leg a")
        self.assertCancelled(self.f["b"], b, "leg b")
        e, ups = self.legs(rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # c was due 200ms after b: a cancelled request sends no more hedges
        # (on a starved machine c may have gone out before the hang-up)
        if ups["c"].get("reason") == "not_sent":
            self.assertNoRequest(self.f["c"], lambda q: q.tag == t,
                                 max(0.05, b.arrived + 0.3 - time.monotonic()),
                                 "a hedge after the client left")
        self.assertSentLegsCancelled(t, ups, "client_closed")


if __name__ == "__main__":
    harness.main()
