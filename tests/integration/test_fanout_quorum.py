"""Mode quorum: an envelope as soon as K legs succeeded (the rest
superseded and closed at their upstreams); 502 as soon as K can no longer
be reached, without waiting for the slow legs; the default K is a
majority.

A slow leg never answers (hang=1): if fanoutd waited for it, the test would
wait for ever (PATIENCE), and its upstream connection must be closed,
unanswered.  "Not before the K-th success" is made by holding that leg
(hold=1) until fanoutd has counted the others, then releasing it: its
success must be in the envelope, not superseded."""


import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

NAMES = ["a", "b", "c"]
DEADLINE = 0.4          # route "qdl"

class QuorumTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c", "d")

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={n: f[n] for n in cls.FAKES},
            routes={
                "q": {"match": "/q", "mode": "quorum", "upstreams": NAMES},  # 2 of 3
                "q1": {"match": "/q1", "mode": "quorum", "upstreams": NAMES,
                       "quorum": "1"},
                "q3": {"match": "/q3", "mode": "quorum", "upstreams": NAMES,
                       "quorum": "3"},
                "q4": {"match": "/q4", "mode": "quorum",
                       "upstreams": ["a", "b", "c", "d"]},  # 3 of 4
                "qdl": {"match": "/qdl", "mode": "quorum", "upstreams": NAMES,
                        "deadline": "%dms" % (DEADLINE * 1000)},
            })

    WARM = ("/qdl/warm?body=warm",)

    def send(self, target, rid=None):
        """A request left in flight: returns its client."""
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", target, [("X-Request-Id", rid)] if rid else [])
        return c

    # ------------------------------------------------------------------
    def test_quorum_reached_answers_and_supersedes_the_rest(self):
        m0 = self.fd.metrics()
        t = self.tag("ok")
        rid = "quorum-" + t
        # a succeeds at once; b is held until fanoutd has counted a's
        # success and c is at its upstream; c never answers
        c = self.send("/q/x?tag=%s&a.body=A&b.hold=1&b.body=B&c.hang=1" % t, rid)
        self.fd.wait_outcome(m0, "a", "ok")
        creq = self.f["c"].wait_for_tag(t)
        self.f["b"].release(t)
        r = c.read_response()
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "A")
        # one success was not enough: b's is in the envelope
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertLegError(env, "c", "cancelled", "superseded")
        self.assertCancelled(self.f["c"], creq, "superseded leg c")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 200, e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual((ups["c"].get("error"), ups["c"].get("reason")),
                         ("cancelled", "superseded"), e)
        self.fd.wait_outcome(m0, "c", "cancelled")
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
        m0 = self.fd.metrics()
        t = self.tag("mix")
        # c, the second success, is held until fanoutd has counted a's
        # failure
        c = self.send("/q/x?tag=%s&a.status=503&a.body=no&b.body=B&c.hold=1"
                      "&c.body=C" % t)
        self.fd.wait_outcome(m0, "a", "status")
        self.f["c"].release(t)
        r = c.read_response()
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 503)
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertEqual(self.assertLegOK(env, "c").get("body"), "C")

    def test_unreachable_quorum_502_without_waiting(self):
        m0 = self.fd.metrics()
        t = self.tag("un")
        rid = "quorum-" + t
        # two failures (b's once c is at its upstream): 2 of 3 can no
        # longer succeed; c never answers
        r, _ = self.call("/q/x?tag=%s&a.status=500&b.close=1&b.wait=c&c.hang=1" % t,
                         rid=rid)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)
        self.assertIn(env["b"].get("error"), ("reset", "protocol"), env)
        self.assertLegError(env, "c", "cancelled", "superseded")
        self.assertCancelled(self.f["c"], self.f["c"].wait_for_tag(t), "slow leg c")
        self.fd.wait_outcome(m0, "c", "cancelled")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 502, e)

    def test_quorum_of_all_fails_on_the_first_failure(self):
        t = self.tag("q3")
        # a fails once b and c are at their upstreams; they never answer
        r, _ = self.call("/q3/x?tag=%s&a.status=500&hang=1&a.hang=0&a.wait=b,c" % t)
        env = self.assertEnvelope(r, 502, NAMES)
        for n in ("b", "c"):
            self.assertLegError(env, n, "cancelled", "superseded")
            self.assertCancelled(self.f[n], self.f[n].wait_for_tag(t), "leg %s" % n)

    def test_quorum_of_all_needs_every_leg(self):
        m0 = self.fd.metrics()
        t = self.tag("q3ok")
        # c is held until fanoutd has counted a's and b's successes: two of
        # three must not answer
        c = self.send("/q3/x?tag=%s&body=v&c.hold=1" % t)
        self.fd.wait_outcome(m0, "a", "ok")
        self.fd.wait_outcome(m0, "b", "ok")
        self.f["c"].release(t)
        r = c.read_response()
        env = self.assertEnvelope(r, 200, NAMES)
        for n in NAMES:
            self.assertLegOK(env, n)

    def test_quorum_one(self):
        t = self.tag("q1")
        # b answers once a and c are at their upstreams; they never answer
        r, _ = self.call("/q1/x?tag=%s&hang=1&b.hang=0&b.body=one&b.wait=a,c" % t)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "one")
        for n in ("a", "c"):
            self.assertLegError(env, n, "cancelled", "superseded")
            self.assertCancelled(self.f[n], self.f[n].wait_for_tag(t), "leg %s" % n)

    def test_default_quorum_is_a_majority_of_four(self):
        m0 = self.fd.metrics()
        t = self.tag("q4")
        # a and b at once; c held until fanoutd has counted both and d is
        # at its upstream; d never answers: 3 of 4 needed
        c = self.send("/q4/x?tag=%s&body=v&c.hold=1&d.hang=1" % t)
        self.fd.wait_outcome(m0, "a", "ok")
        self.fd.wait_outcome(m0, "b", "ok")
        dreq = self.f["d"].wait_for_tag(t)
        self.f["c"].release(t)
        r = c.read_response()
        env = self.assertEnvelope(r, 200, ["a", "b", "c", "d"])
        # two of four were not enough: c's success is in the envelope
        for n in ("a", "b", "c"):
            self.assertLegOK(env, n)
        self.assertLegError(env, "d", "cancelled", "superseded")
        self.assertCancelled(self.f["d"], dreq, "leg d")

    def test_deadline_504(self):
        t = self.tag("dl")
        rid = "quorum-" + t
        # a succeeds at once, b and c never answer: 2 of 3 never come
        r, t0 = self.call("/qdl/x?tag=%s&hang=1&a.hang=0&a.body=A" % t, rid=rid)
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the deadline
        self.assertNotBefore(r, t0, DEADLINE, "504")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
        ups = {u["name"]: u for u in e["upstreams"]}
        for n in ("b", "c"):
            self.assertEqual((ups[n].get("error"), ups[n].get("reason")),
                             ("cancelled", "deadline"), e)
            # normally at their upstreams long before the deadline (the
            # route was warmed); whatever got there is closed
            for q in self.f[n].requests_tagged(t):
                self.assertCancelled(self.f[n], q, "leg %s" % n)

    def test_client_hangup_closes_every_leg(self):
        t = self.tag("h")
        rid = "quorum-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/q/x?hang=1&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        c.abort("rst")
        for n in NAMES:
            self.assertCancelled(self.f[n], reqs[n], "leg %s" % n)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


if __name__ == "__main__":
    harness.main()
