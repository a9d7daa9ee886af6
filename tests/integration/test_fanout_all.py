"""Mode all: every leg at once, a JSON envelope of every result, both
partial policies with and without a deadline, one body for every leg, the
deadline budget per leg, a client hang-up closing every leg."""

import hashlib
import os

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2        # "closed promptly"
NAMES = ["a", "b", "c"]


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
                       "a_to": {"url": f["a"], "timeout": "300ms"},
                       "b_small": {"url": f["b"], "max_response_size": "1k"}},
            routes={
                "all": {"match": "/all", "mode": "all", "upstreams": abc,
                        "deadline": "5s"},
                "allow": {"match": "/allow", "mode": "all", "upstreams": abc,
                          "deadline": "5s", "partial": "allow"},
                "dlfail": {"match": "/dlfail", "mode": "all", "upstreams": abc,
                           "deadline": "400ms", "partial": "fail"},
                "dlallow": {"match": "/dlallow", "mode": "all", "upstreams": abc,
                            "deadline": "400ms", "partial": "allow"},
                "withdead": {"match": "/withdead", "mode": "all",
                             "upstreams": ["a", "dead"], "deadline": "5s"},
                "legfail": {"match": "/legfail", "mode": "all",
                            "upstreams": ["a_to", "b_small", "c"], "deadline": "5s",
                            "partial": "allow"},
            })

    # ------------------------------------------------------------------
    def test_all_succeed_200_envelope_in_route_order_concurrently(self):
        t = self.tag("ok")
        # a answers last, c first: the envelope still follows route order,
        # and the three 300 ms legs overlap (all at once, not one by one)
        q = ("/all/x?tag=%s&a.delay=300&b.delay=250&c.delay=200"
             "&a.body=from-a&b.body=from-b&c.body=from-c" % t)
        r, t0 = self.call(q, rid="all-" + t)
        env = self.assertEnvelope(r, 200, NAMES)
        for n in NAMES:
            leg = self.assertLegOK(env, n)
            self.assertEqual(leg.get("body"), "from-" + n, leg)
        self.assertIsNone(r.header("fanout-partial"), r)
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        spread = max(x.arrived for x in reqs.values()) - min(x.arrived for x in reqs.values())
        self.assertLess(spread, 0.1, "legs were not sent at once (spread %.0f ms)"
                        % (spread * 1000))
        # every leg was in flight before the first answer was written: they
        # overlapped (timing by the fakes' own clocks, not the daemon's)
        first_answer = min(x.responded for x in reqs.values())
        for n in NAMES:
            self.assertLess(reqs[n].arrived, first_answer,
                            "leg %s sent only after another leg answered" % n)
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
        # a_to (fake a, timeout 300ms) hangs; b_small (fake b, 1k max) gets 5000 bytes
        r, t0 = self.call("/legfail/x?tag=%s&a.delay=3000&b.size=5000&c.body=c" % t)
        env = self.assertEnvelope(r, 200, ["a_to", "b_small", "c"])
        self.assertLegError(env, "a_to", "timeout")
        self.assertLegError(env, "b_small", "too_large")
        self.assertEqual(self.assertLegOK(env, "c").get("body"), "c")
        self.assertEqual(partial_names(r), ["a_to", "b_small"], r)
        self.assertLess(r.received - t0, 2.0, "a leg's 300ms timeout did not cut it")
        self.assertClosedWithin(self.f["a"], self.f["a"].wait_for_tag(t), r.received,
                                PROMPT, "timed-out leg's upstream connection")
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                                  upstream="a_to", outcome="timeout") + 1,
                            upstream="a_to", outcome="timeout")

    def test_deadline_partial_fail_504(self):
        m0 = self.fd.metrics()
        t = self.tag("df")
        rid = "all-" + t
        r, t0 = self.call("/dlfail/x?tag=%s&c.delay=5000&body=quick" % t, rid=rid)
        self.assertErrorJSON(r, 504)
        el = r.received - t0
        self.assertGreater(el, 0.3, "504 before the 400ms deadline")
        self.assertLess(el, 2.0, "504 %.0f ms after the request" % (el * 1000))
        self.assertClosedWithin(self.f["c"], self.f["c"].wait_for_tag(t), r.received,
                                PROMPT, "slow leg's upstream connection")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
        ups = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual((ups["c"].get("error"), ups["c"].get("reason")),
                         ("cancelled", "deadline"), e)
        self.fd.wait_metric("fanoutd_cancellations_total",
                            lambda v: v == m0.get("fanoutd_cancellations_total",
                                                  reason="deadline") + 1,
                            reason="deadline")

    def test_deadline_partial_allow_200_with_what_arrived(self):
        m0 = self.fd.metrics()
        t = self.tag("da")
        rid = "all-" + t
        r, t0 = self.call("/dlallow/x?tag=%s&c.delay=5000&a.body=A&b.body=B" % t,
                          rid=rid)
        env = self.assertEnvelope(r, 200, NAMES)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "A")
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "B")
        self.assertLegError(env, "c", "cancelled", "deadline")
        self.assertEqual(partial_names(r), ["c"], r)
        el = r.received - t0
        self.assertGreater(el, 0.3, "answered before the 400ms deadline")
        self.assertLess(el, 2.0, "answered %.0f ms after the request" % (el * 1000))
        self.assertClosedWithin(self.f["c"], self.f["c"].wait_for_tag(t), r.received,
                                PROMPT, "slow leg's upstream connection")
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
        t = self.tag("dl")
        r, _ = self.call("/all/x?echo=1&tag=" + t)
        self.assertEqual(r.status, 200, r)
        for n in NAMES:
            v = self.f[n].wait_for_tag(t).header("x-request-deadline-ms")
            self.assertIsNotNone(v, "leg %s has no X-Request-Deadline-Ms" % n)
            self.assertRegex(v, r"^\d+$")
            self.assertLess(int(v), 5000, "leg %s: not less than the route deadline" % n)
            self.assertGreater(int(v), 3000, "leg %s: %s" % (n, v))
        t = self.tag("dlc")
        r, _ = self.call("/all/x?echo=1&tag=" + t, [("X-Request-Deadline-Ms", "800")])
        self.assertEqual(r.status, 200, r)
        for n in NAMES:
            v = int(self.f[n].wait_for_tag(t).header("x-request-deadline-ms"))
            self.assertTrue(0 < v < 800, "leg %s: %d with a client budget of 800" % (n, v))

    def _hangup(self, how):
        m0 = self.fd.metrics()
        t = self.tag("hu")
        rid = "all-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/all/x?delay=5000&tag=" + t, [("X-Request-Id", rid)])
        reqs = {n: self.f[n].wait_for_tag(t) for n in NAMES}
        t0 = c.abort(how)
        for n in NAMES:
            self.assertClosedWithin(self.f[n], reqs[n], t0, PROMPT,
                                    "leg %s's upstream connection after client %s"
                                    % (n, how))
            self.assertIsNone(reqs[n].responded)
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
