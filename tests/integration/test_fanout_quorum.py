"""Mode quorum: an envelope as soon as K legs succeeded (the rest
superseded and closed at their upstreams); 502 as soon as K can no longer
be reached, without waiting for the slow legs; the default K is a
majority."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2
NAMES = ["a", "b", "c"]


class QuorumTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c", "d")

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={n: f[n] for n in cls.FAKES},
            routes={
                "q": {"match": "/q", "mode": "quorum", "upstreams": NAMES,
                      "deadline": "10s"},                     # default: 2 of 3
                "q1": {"match": "/q1", "mode": "quorum", "upstreams": NAMES,
                       "quorum": "1", "deadline": "10s"},
                "q3": {"match": "/q3", "mode": "quorum", "upstreams": NAMES,
                       "quorum": "3", "deadline": "10s"},
                "q4": {"match": "/q4", "mode": "quorum",
                       "upstreams": ["a", "b", "c", "d"], "deadline": "10s"},  # 3 of 4
                "qdl": {"match": "/qdl", "mode": "quorum", "upstreams": NAMES,
                        "deadline": "400ms"},
            })

    # ------------------------------------------------------------------
    def test_quorum_reached_answers_and_supersedes_the_rest(self):
        m0 = self.fd.metrics()
        t = self.tag("ok")
        rid = "quorum-" + t
        r, t0 = self.call("/q/x?tag=%s&a.body=A&b.delay=100&b.body=B&b.wait=c&c.delay=5000" % t,
                          rid=rid)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "A")
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertLegError(env, "c", "cancelled", "superseded")
        el = r.received - t0
        self.assertGreaterEqual(el, 0.08, "answered before the second success")
        self.assertLess(el, 2.5, "waited for the slow leg (%.0f ms)" % (el * 1000))
        c = self.f["c"].wait_for_tag(t)
        self.assertClosedWithin(self.f["c"], c, r.received, PROMPT, "superseded leg c")
        self.assertIsNone(c.responded)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 200, e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual((ups["c"].get("error"), ups["c"].get("reason")),
                         ("cancelled", "superseded"), e)
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="c", outcome="cancelled") + 1,
                            upstream="c", outcome="cancelled")
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="superseded") + 1,
                            reason="superseded")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="c",
                                outcome="error"),
                         m0.get("fanoutd_upstream_requests_total", upstream="c",
                                outcome="error"))

    def test_failed_leg_before_quorum_is_in_the_envelope(self):
        t = self.tag("mix")
        r, _ = self.call("/q/x?tag=%s&a.status=503&a.body=no&b.body=B&c.delay=150"
                         "&c.body=C" % t)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 503)
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertEqual(self.assertLegOK(env, "c").get("body"), "C")

    def test_unreachable_quorum_502_without_waiting(self):
        m0 = self.fd.metrics()
        t = self.tag("un")
        rid = "quorum-" + t
        # two fast failures: 2 of 3 can no longer succeed; c would take 5s
        r, t0 = self.call("/q/x?tag=%s&a.status=500&b.close=1&b.wait=c&c.delay=5000" % t,
                          rid=rid)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)
        self.assertIn(env["b"].get("error"), ("reset", "protocol"), env)
        self.assertLegError(env, "c", "cancelled", "superseded")
        el = r.received - t0
        self.assertLess(el, 2.5, "502 after %.0f ms: waited for the slow leg"
                        % (el * 1000))
        c = self.f["c"].wait_for_tag(t)
        self.assertClosedWithin(self.f["c"], c, r.received, PROMPT, "slow leg c")
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="c", outcome="cancelled") + 1,
                            upstream="c", outcome="cancelled")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 502, e)

    def test_quorum_of_all_fails_on_the_first_failure(self):
        t = self.tag("q3")
        r, t0 = self.call("/q3/x?tag=%s&a.status=500&delay=5000&a.delay=0&a.wait=b,c" % t)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertLess(r.received - t0, 2.5, "waited for the 5s legs")
        for n in ("b", "c"):
            self.assertLegError(env, n, "cancelled", "superseded")
            self.assertClosedWithin(self.f[n], self.f[n].wait_for_tag(t), r.received,
                                    PROMPT, "leg %s" % n)

    def test_quorum_of_all_needs_every_leg(self):
        t = self.tag("q3ok")
        r, t0 = self.call("/q3/x?tag=%s&body=v&c.delay=300" % t)
        env = self.assertEnvelope(r, 200, NAMES)
        for n in NAMES:
            self.assertLegOK(env, n)
        self.assertGreaterEqual(r.received - t0, 0.28, "did not wait for all three")

    def test_quorum_one(self):
        t = self.tag("q1")
        r, t0 = self.call("/q1/x?tag=%s&delay=5000&b.delay=0&b.body=one&b.wait=a,c" % t)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "one")
        for n in ("a", "c"):
            self.assertLegError(env, n, "cancelled", "superseded")
            self.assertClosedWithin(self.f[n], self.f[n].wait_for_tag(t), r.received,
                                    PROMPT, "leg %s" % n)

    def test_default_quorum_is_a_majority_of_four(self):
        t = self.tag("q4")
        # two at once, the third at 300ms, the fourth never: 3 of 4 needed
        r, t0 = self.call("/q4/x?tag=%s&body=v&c.delay=300&c.wait=d&d.delay=5000" % t)
        env = self.assertEnvelope(r, 200, ["a", "b", "c", "d"])
        for n in ("a", "b", "c"):
            self.assertLegOK(env, n)
        self.assertLegError(env, "d", "cancelled", "superseded")
        el = r.received - t0
        self.assertGreaterEqual(el, 0.28, "answered with 2 of 4 (%.0f ms)" % (el * 1000))
        self.assertLess(el, 2.5, "waited for the 5s leg")
        self.assertClosedWithin(self.f["d"], self.f["d"].wait_for_tag(t), r.received,
                                PROMPT, "leg d")

    def test_deadline_504(self):
        t = self.tag("dl")
        rid = "quorum-" + t
        r, t0 = self.call("/qdl/x?tag=%s&a.body=A&delay=5000&a.delay=0&a.wait=b,c" % t, rid=rid)
        self.assertErrorJSON(r, 504)
        el = r.received - t0
        self.assertGreater(el, 0.3)
        self.assertLess(el, 2.0, "the deadline did not cut the 5s legs")
        for n in ("b", "c"):
            self.assertClosedWithin(self.f[n], self.f[n].wait_for_tag(t), r.received,
                                    PROMPT, "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)

    def test_client_hangup_closes_every_leg(self):
        t = self.tag("h")
        rid = "quorum-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/q/x?delay=5000&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        t0 = c.abort("rst")
        for n in NAMES:
            self.assertClosedWithin(self.f[n], reqs[n], t0, PROMPT, "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


if __name__ == "__main__":
    harness.main()
