"""Mode all: every leg at once, a JSON envelope of every result, both
partial policies with and without a deadline, one body for every leg, the
deadline budget per leg, a client hang-up closing every leg.

A leg that must not answer never does (hang=1): that its upstream
connection is closed, unanswered, is the check, not how fast.  Answers that
must come in an order are held (hold=1) and released one by one once
fanoutd has counted the one before."""

import hashlib
import os

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

NAMES = ["a", "b", "c"]
DEADLINE_FAIL = 0.4     # route "dlfail"
# route "dlallow": a and b answer at once and must be in before it; under
# valgrind a warmed route takes some tens of ms for that
DEADLINE_ALLOW = 1.0
TIMEOUT = 0.3           # upstream "a_to"
ROUTE_DEADLINE_MS = 10 * 60 * 1000      # route "all"
CLIENT_DEADLINE_MS = 100 * 1000         # a client's own, shorter budget

def partial_names(resp):
    v = resp.header("fanout-partial")
    if v is None:
        return None
    return [x.strip() for x in v.split(",") if x.strip()]


class AllTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")
    REFUSED = ("dead",)

    @classmethod
    def config(cls, f):
        abc = ["a", "b", "c"]
        return dict(
            upstreams={"a": f["a"], "b": f["b"], "c": f["c"], "dead": f["dead"],
                       "a_to": {"url": f["a"], "timeout": "%dms" % (TIMEOUT * 1000)},
                       "b_small": {"url": f["b"], "max_response_size": "1k"}},
            routes={
                # test_every_leg_gets_a_shrinking_deadline reads it back
                "all": {"match": "/all", "mode": "all", "upstreams": abc,
                        "deadline": "%dms" % ROUTE_DEADLINE_MS},
                "allow": {"match": "/allow", "mode": "all", "upstreams": abc,
                          "partial": "allow"},
                "dlfail": {"match": "/dlfail", "mode": "all", "upstreams": abc,
                           "deadline": "%dms" % (DEADLINE_FAIL * 1000),
                           "partial": "fail"},
                "dlallow": {"match": "/dlallow", "mode": "all", "upstreams": abc,
                            "deadline": "%dms" % (DEADLINE_ALLOW * 1000),
                            "partial": "allow"},
                "withdead": {"match": "/withdead", "mode": "all",
                             "upstreams": ["a", "dead"]},
                "legfail": {"match": "/legfail", "mode": "all",
                            "upstreams": ["a_to", "b_small", "c"],
                            "partial": "allow"},
            })

    WARM = ("/dlfail/warm?body=warm", "/dlallow/warm?body=warm", "/all/warm?body=warm")

    # ------------------------------------------------------------------
    def test_all_succeed_200_envelope_in_route_order_concurrently(self):
        m0 = self.fd.metrics()
        t = self.tag("ok")
        # every leg held: all three at their upstreams with none answered
        # is "all at once, not one by one"; then c answers first, a last
        # (each released once fanoutd has counted the one before), and the
        # envelope still follows route order
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/all/x?tag=%s&hold=1&a.body=from-a&b.body=from-b"
                  "&c.body=from-c" % t, [("X-Request-Id", "all-" + t)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        for n in ("c", "b", "a"):
            self.f[n].release(t)
            self.fd.wait_outcome(m0, n, "ok")
        r = c.read_response()
        env = self.assertEnvelope(r, 200, NAMES)
        for n in NAMES:
            leg = self.assertLegOK(env, n)
            self.assertEqual(leg.get("body"), "from-" + n, leg)
        self.assertIsNone(r.header("fanout-partial"), r)
        for n in NAMES:
            self.assertEqual(len(self.f[n].requests_tagged(t)), 1, n)
            self.assertEqual(reqs[n].path, "/all/x")

    def test_partial_fail_gives_502_with_every_result(self):
        m0 = self.fd.metrics()
        t = self.tag("pf")
        rid = "all-" + t
        r, _ = self.call("/all/x?tag=%s&b.status=503&b.body=down&body=fine" % t, rid=rid)
        env = self.assertEnvelope(r, 502, NAMES)
        self.assertLegOK(env, "a")
        self.assertLegOK(env, "c")
        self.assertEqual(env["a"].get("body"), "fine")
        b = self.assertLegError(env, "b", "status")
        self.assertEqual(b.get("status"), 503, b)
        if "body" in b:
            self.assertEqual(b["body"], "down", b)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 502, e)
        self.assertEqual([u.get("name") for u in e["upstreams"]], NAMES, e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual(ups["a"].get("status"), 200, e)
        self.assertEqual(ups["b"].get("status"), 503, e)
        for u in e["upstreams"]:
            self.assertIn("duration_ms", u, e)
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v >= m0.get("fanoutd_upstream_requests_total",
                                                  upstream="b", outcome="status") + 1,
                            upstream="b", outcome="status")
        m1 = self.fd.metrics()
        for n in ("a", "c"):
            self.assertEqual(
                m1.get("fanoutd_upstream_requests_total", upstream=n, outcome="ok"),
                m0.get("fanoutd_upstream_requests_total", upstream=n, outcome="ok") + 1, n)
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="b",
                                outcome="error"),
                         m0.get("fanoutd_upstream_requests_total", upstream="b",
                                outcome="error"), "a non-2xx answer counted as error")

    def test_partial_allow_gives_200_and_fanout_partial(self):
        t = self.tag("pa")
        r, _ = self.call("/allow/x?tag=%s&b.status=500&c.close=1&a.body=one" % t)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "one")
        self.assertEqual(self.assertLegError(env, "b", "status").get("status"), 500)
        c = env["c"]
        self.assertIn(c.get("error"), ("reset", "protocol"), c)
        self.assertIsInstance(c.get("reason"), str, c)
        self.assertEqual(partial_names(r), ["b", "c"], r)

    def test_partial_allow_all_ok_has_no_partial_header(self):
        r, _ = self.call("/allow/x?body=k&tag=" + self.tag("pn"))
        env = self.assertEnvelope(r, 200, NAMES)
        for n in NAMES:
            self.assertLegOK(env, n)
        self.assertIsNone(r.header("fanout-partial"), r)

    def test_connect_failure_leg(self):
        r, _ = self.call("/withdead/x?body=alive&tag=" + self.tag("cf"))
        env = self.assertEnvelope(r, 502, ["a", "dead"])
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "alive")
        self.assertLegError(env, "dead", "connect")

    def test_leg_timeout_and_too_large(self):
        # warm-up: the legs' upstream connections are pooled, so the timeout
        # below happens on a reused keep-alive connection (no connect at all)
        r, _ = self.call("/legfail/x?body=warm&tag=" + self.tag("warm"))
        self.assertEqual(r.status, 200, r)
        m0 = self.fd.metrics()
        t = self.tag("lf")
        # a_to (fake a, timeout 300ms) never answers; b_small (fake b, 1k
        # max) gets 5000 bytes
        r, t0 = self.call("/legfail/x?tag=%s&a.hang=1&b.size=5000&c.body=c" % t)
        env = self.assertEnvelope(r, 200, ["a_to", "b_small", "c"])
        self.assertLegError(env, "a_to", "timeout")
        self.assertLegError(env, "b_small", "too_large")
        self.assertEqual(self.assertLegOK(env, "c").get("body"), "c")
        self.assertEqual(partial_names(r), ["a_to", "b_small"], r)
        # the lower bound is the test: the leg's timeout runs out first
        self.assertNotBefore(r, t0, TIMEOUT, "leg's timeout")
        self.assertCancelled(self.f["a"], self.f["a"].wait_for_tag(t),
                             "timed-out leg's upstream connection")
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="a_to", outcome="timeout") + 1,
                            upstream="a_to", outcome="timeout")

    def test_deadline_partial_fail_504(self):
        m0 = self.fd.metrics()
        t = self.tag("df")
        rid = "all-" + t
        r, t0 = self.call("/dlfail/x?tag=%s&c.hang=1&body=quick" % t, rid=rid)
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the deadline
        self.assertNotBefore(r, t0, DEADLINE_FAIL, "deadline")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual((ups["c"].get("error"), ups["c"].get("reason")),
                         ("cancelled", "deadline"), e)
        # normally at its upstream long before the deadline (the route was
        # warmed); if it got there, it is closed there
        for q in self.f["c"].requests_tagged(t):
            self.assertCancelled(self.f["c"], q, "slow leg's upstream connection")
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="deadline") + 1,
                            reason="deadline")

    def test_deadline_partial_allow_200_with_what_arrived(self):
        m0 = self.fd.metrics()
        t = self.tag("da")
        rid = "all-" + t
        r, t0 = self.call("/dlallow/x?tag=%s&c.hang=1&a.body=A&b.body=B" % t,
                          rid=rid)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "A")
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertLegError(env, "c", "cancelled", "deadline")
        self.assertEqual(partial_names(r), ["c"], r)
        # the lower bound is the test: not answered before the deadline
        self.assertNotBefore(r, t0, DEADLINE_ALLOW, "deadline")
        for q in self.f["c"].requests_tagged(t):
            self.assertCancelled(self.f["c"], q, "slow leg's upstream connection")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 200, e)
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="c", outcome="cancelled") + 1,
                            upstream="c", outcome="cancelled")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_upstream_requests_total", upstream="c",
                                outcome="error"),
                         m0.get("fanoutd_upstream_requests_total", upstream="c",
                                outcome="error"), "a cancelled leg counted as error")

    def test_post_body_read_once_sent_to_every_leg(self):
        # every byte value but NUL: the echo (JSON) then embeds as JSON
        # (a JSON "\u0000" is test_envelope's business)
        body = os.urandom(20000).replace(b"\0", b"\1") + b"end"
        t = self.tag("post")
        r, _ = self.call("/all/x?echo=1&tag=" + t, method="POST", body=body,
                         headers=[("Content-Type", "application/x-bin")])
        env = self.assertEnvelope(r, 200, NAMES)
        want = hashlib.sha256(body).hexdigest()
        for n in NAMES:
            echo = self.assertLegOK(env, n).get("body")
            self.assertIsInstance(echo, dict, "echo of %s not embedded as JSON: %r"
                                  % (n, env[n]))
            self.assertEqual(echo["method"], "POST", n)
            self.assertEqual(echo["body_len"], len(body), n)
            self.assertEqual(echo["body_sha256"], want, n)
        for n in NAMES:
            self.assertEqual(self.f[n].wait_for_tag(t).body, body, n)

    def test_every_leg_gets_a_shrinking_deadline(self):
        # what is left of the deadline when a leg starts: less than the
        # deadline, and less by no more than the time from the client's send
        # to the leg's arrival (fanoutd keeps a margin of a few ms for
        # itself: 1 s is allowed for it).  First the route's, then a
        # client's own shorter budget.
        for budget, hdrs in ((ROUTE_DEADLINE_MS, []),
                             (CLIENT_DEADLINE_MS,
                              [("X-Request-Deadline-Ms", str(CLIENT_DEADLINE_MS))])):
            t = self.tag("dl")
            r, t0 = self.call("/all/x?echo=1&tag=" + t, hdrs)
            self.assertEqual(r.status, 200, r)
            for n in NAMES:
                q = self.f[n].wait_for_tag(t)
                v = q.header("x-request-deadline-ms")
                self.assertIsNotNone(v, "leg %s has no X-Request-Deadline-Ms" % n)
                self.assertRegex(v, r"^\d+$")
                spent = (q.arrived - t0) * 1000
                self.assertLess(int(v), budget, "leg %s: not less than the budget "
                                "of %d" % (n, budget))
                self.assertGreaterEqual(int(v), budget - spent - 1000,
                                        "leg %s: %s ms left of %d after %.0f ms"
                                        % (n, v, budget, spent))

    def _hangup(self, how):
        m0 = self.fd.metrics()
        t = self.tag("hu")
        rid = "all-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/all/x?hang=1&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        c.abort(how)
        for n in NAMES:
            self.assertCancelled(self.f[n], reqs[n],
                                 "leg %s's upstream connection after client %s"
                                 % (n, how))
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        self.assertEqual([u.get("name") for u in e["upstreams"]], NAMES, e)
        for u in e["upstreams"]:
            self.assertEqual((u.get("error"), u.get("reason")),
                             ("cancelled", "client_closed"), e)
        for n in NAMES:
            self.fd.wait_metric("fanoutd_upstream_requests_total",
                                lambda v, n=n: v == m0.get(
                                    "fanoutd_upstream_requests_total", upstream=n,
                                    outcome="cancelled") + 1,
                                upstream=n, outcome="cancelled")
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="client_closed") + 1,
                            reason="client_closed")
        self.fd.wait_metric("fanoutd_cancel_latency_seconds_count",
                            lambda v: v >= m0.sum("fanoutd_cancel_latency_seconds_count") + 1)
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)
        m1 = self.fd.metrics()
        for n in NAMES:
            self.assertEqual(
                m1.get("fanoutd_upstream_requests_total", upstream=n, outcome="error"),
                m0.get("fanoutd_upstream_requests_total", upstream=n, outcome="error"),
                "a cancelled leg of %s counted as error" % n)
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="superseded"),
                         m0.get("fanoutd_cancellations_total", reason="superseded"))

    def test_client_close_closes_every_leg(self):
        self._hangup("close")

    def test_client_reset_closes_every_leg(self):
        self._hangup("rst")


if __name__ == "__main__":
    harness.main()
