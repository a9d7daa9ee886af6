"""Issue 21, sending a request more than once: a request not safe to repeat
(a POST without Idempotency-Key) is sent once, to the route's first
upstream, in first, hedge and quorum, unless repeat_unsafe = yes; extra
attempts (hedges after the first leg, retries) are limited per route by
budget and budget_min over a 10 s window; and the wasted-work ledger
(fanoutd_upstream_wasted_seconds_total, _bytes_total) adds what every leg
cancelled in flight cost, the figure the access log gives as wasted_ms.

The contract is ../shared/SPEC.md sections 2, 4a, 7 and the issue's design.
A leg not sent is proved so by construction where it can be (the first leg
fails: a hedge would be sent at once and would win, so the failure answered
verbatim says there was none); where it cannot, by a bounded observation
window past the moment the hedge was due.  The budget's outcome for each
request is the event the test waits for before it lets the request end:
the hedge at its upstream, or skipped_budget counted."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

EXTRA = "fanoutd_extra_attempts_total"
WASTED_S = "fanoutd_upstream_wasted_seconds_total"
WASTED_B = "fanoutd_upstream_wasted_bytes_total"
CALM_BUDGET = {"budget_min": "100000"}      # extra attempts never refused


def legs(fd, rid):
    e = fd.wait_access_log(request_id=rid)
    return e, {u["name"]: u for u in e["upstreams"]}


# ----------------------------------------------------------------------
class RepeatTest(harness.SharedDaemonTest):
    FAKES = ("a", "b")

    @classmethod
    def config(cls, f):
        def route(match, mode, **kw):
            r = {"match": match, "mode": mode, "upstreams": ["a", "b"]}
            r.update(CALM_BUDGET)
            r.update(kw)
            return r
        return dict(
            upstreams={"a": f["a"], "b": f["b"]},
            routes={
                "h": route("/h", "hedge", hedge_delay="10ms"),
                # hedges due in ten minutes: only a failure sends one sooner
                "h10m": route("/h10m", "hedge", hedge_delay="10m"),
                "hr": route("/hr", "hedge", hedge_delay="10ms", repeat_unsafe="yes"),
                "f": route("/f", "first"),
                "q": route("/q", "quorum", quorum="2"),
                "all": route("/all", "all"),
            })

    def extra(self, route, outcome, kind="hedge", m=None):
        m = m if m is not None else self.fd.metrics()
        return m.get(EXTRA, route=route, kind=kind, outcome=outcome)

    def post(self, path, t, rid=None, headers=(), body=b"pay=1"):
        """Send a POST on a new connection; returns the client (read its
        answer with read_response(method="POST"))."""
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        hdrs = list(headers)
        if rid:
            hdrs.append(("X-Request-Id", rid))
        c.request("POST", "%s%stag=%s" % (path, "&" if "?" in path else "?", t),
                  hdrs, body)
        return c

    def assertNotSent(self, name, t, e, ups):
        self.assertEqual((ups[name].get("error"), ups[name].get("reason")),
                         ("cancelled", "not_sent"), e)
        self.assertEqual(self.f[name].requests_tagged(t), [],
                         "leg %s of a POST reached its upstream" % name)

    # ------------------------------------------------------------------
    def test_post_on_a_hedge_route_is_sent_once(self):
        m0 = self.fd.metrics()
        t = self.tag("p")
        rid = "repeat-" + t
        c = self.post("/h/x?a.hold=1&a.body=once", t, rid)
        a = self.f["a"].wait_for_tag(t)
        # the hedge was due 10 ms after a was sent: watch b well past it
        self.assertNoRequest(self.f["b"], lambda q: q.tag == t,
                             max(0.05, a.arrived + 0.3 - time.monotonic()),
                             "a hedge of a POST")
        self.f["a"].release(t)
        r = c.read_response(method="POST")
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"once", "a"), r)
        self.assertEqual(a.body, b"pay=1")
        e, ups = legs(self.fd, rid)
        self.assertNotSent("b", t, e, ups)
        m1 = self.fd.metrics()
        self.assertEqual(self.extra("h", "skipped_unsafe", m=m1),
                         self.extra("h", "skipped_unsafe", m=m0) + 1)
        self.assertEqual(self.extra("h", "sent", m=m1), self.extra("h", "sent", m=m0))
        self.assertEqual(m1.get("fanoutd_hedges_sent_total"),
                         m0.get("fanoutd_hedges_sent_total"))

    def test_post_whose_leg_fails_is_answered_verbatim(self):
        # hedge: a failure sends the next leg at once and it would win; a
        # POST gets the failure as it is, as proxy mode answers
        for route in ("h10m", "f"):
            m0 = self.fd.metrics()
            t = self.tag("v")
            rid = "repeat-" + t
            c = self.post("/%s/x?a.status=500&a.body=broke&b.body=won" % route, t, rid)
            r = c.read_response(method="POST")
            self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                             (500, b"broke", "a"), "%s: %r" % (route, r))
            e, ups = legs(self.fd, rid)
            self.assertEqual(e["status"], 500, e)
            self.assertNotSent("b", t, e, ups)
            self.assertEqual(self.extra(route, "skipped_unsafe"),
                             self.extra(route, "skipped_unsafe", m=m0) + 1, route)

    def test_post_on_a_first_route_goes_to_the_first_upstream_only(self):
        t = self.tag("f")
        rid = "repeat-" + t
        c = self.post("/f/x?a.hold=1&a.body=first", t, rid)
        a = self.f["a"].wait_for_tag(t)
        # first sends every leg at once: b would be there with a
        self.assertNoRequest(self.f["b"], lambda q: q.tag == t,
                             max(0.05, a.arrived + 0.3 - time.monotonic()),
                             "leg b of a POST in mode first")
        self.f["a"].release(t)
        r = c.read_response(method="POST")
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"first", "a"), r)
        e, ups = legs(self.fd, rid)
        self.assertNotSent("b", t, e, ups)

    def test_post_on_a_quorum_route_is_answered_as_proxy(self):
        t = self.tag("q")
        rid = "repeat-" + t
        c = self.post("/q/x?a.body=solo", t, rid)
        r = c.read_response(method="POST")
        # not an envelope: a's answer as it is
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"solo", "a"), r)
        e, ups = legs(self.fd, rid)
        self.assertNotSent("b", t, e, ups)

    def test_idempotency_key_makes_a_post_safe_to_hedge(self):
        m0 = self.fd.metrics()
        t = self.tag("k")
        c = self.post("/h/x?a.hold=1&b.body=hedged", t,
                      headers=[("Idempotency-Key", "k-" + t)])
        a = self.f["a"].wait_for_tag(t)
        b = self.f["b"].wait_for_tag(t)
        r = c.read_response(method="POST")
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"hedged", "b"), r)
        self.assertEqual((a.body, b.body), (b"pay=1", b"pay=1"))
        self.assertEqual(b.header("idempotency-key"), "k-" + t)
        self.assertCancelled(self.f["a"], a, "first leg")
        self.assertEqual(self.extra("h", "sent"), self.extra("h", "sent", m=m0) + 1)
        self.assertEqual(self.extra("h", "skipped_unsafe"),
                         self.extra("h", "skipped_unsafe", m=m0))

    def test_repeat_unsafe_yes_hedges_a_post(self):
        t = self.tag("r")
        c = self.post("/hr/x?a.hold=1&b.body=hedged", t)
        a = self.f["a"].wait_for_tag(t)
        self.f["b"].wait_for_tag(t)
        r = c.read_response(method="POST")
        self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
        self.assertCancelled(self.f["a"], a, "first leg")

    def test_idempotent_methods_are_hedged(self):
        for method in ("PUT", "DELETE"):
            t = self.tag("m")
            c = self.fd.client()
            self.addCleanup(c.__exit__)
            c.request(method, "/h/x?a.hold=1&b.body=hedged&tag=" + t, body=b"x")
            a = self.f["a"].wait_for_tag(t)
            b = self.f["b"].wait_for_tag(t)
            self.assertEqual(b.method, method)
            r = c.read_response(method=method)
            self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
            self.assertCancelled(self.f["a"], a, "first leg")

    def test_mode_all_sends_a_post_to_every_upstream(self):
        t = self.tag("all")
        c = self.post("/all/x?body=ok", t)
        r = c.read_response(method="POST")
        self.assertEnvelope(r, 200, ["a", "b"])
        for n in ("a", "b"):
            self.assertEqual(len(self.f[n].requests_tagged(t)), 1, n)


# ----------------------------------------------------------------------
WINDOW_USE = 9.0    # a run longer than this may have left the 10 s window


class BudgetTest(harness.TestCase):

    def start(self, **route):
        self.a, self.b = self.fake("a"), self.fake("b")
        r = {"match": "/h", "mode": "hedge", "upstreams": ["a", "b"],
             "hedge_delay": "10ms"}
        r.update(route)
        self.fd = self.daemon(upstreams={"a": self.a, "b": self.b},
                              routes={"h": r})
        return self.fd

    def extra(self, outcome, m=None):
        m = m if m is not None else self.fd.metrics()
        return m.get(EXTRA, route="h", kind="hedge", outcome=outcome)

    def run_hedges(self, n):
        """N requests one after another on route h: a holds each, b answers
        at once.  For each, wait until the hedge is at b or refused
        (skipped_budget grew); then let the request end.  Returns the list
        of booleans "hedge sent", after skipping the test if the run did not
        fit in the budget's window."""
        fd, a, b = self.fd, self.a, self.b
        out = []
        t0 = time.monotonic()
        for k in range(1, n + 1):
            skipped0 = self.extra("skipped_budget")
            t = "k%d" % k
            c = fd.client()
            self.addCleanup(c.__exit__)
            c.request("GET", "/h/x?a.hold=1&a.body=a&b.body=b&tag=" + t)
            q = a.wait_for_tag(t)

            def decided():
                if b.requests_tagged(t):
                    return "sent"
                if self.extra("skipped_budget") > skipped0:
                    return "skipped"
                return None
            d = harness.wait_until(decided, what="request %d: its hedge sent or "
                                   "refused" % k)
            if d == "sent":
                r = c.read_response()
                self.assertEqual((r.status, r.header("fanout-upstream")), (200, "b"), r)
                self.assertCancelled(a, q, "request %d's first leg" % k)
            else:
                a.release(t)
                r = c.read_response()
                self.assertEqual((r.status, r.header("fanout-upstream")), (200, "a"), r)
                self.assertEqual(b.requests_tagged(t), [],
                                 "request %d: a hedge refused by the budget was "
                                 "sent" % k)
            c.close()
            out.append(d == "sent")
        took = time.monotonic() - t0
        if took > WINDOW_USE:
            self.skipTest("%d requests took %.1f s: more than %.0f s of the "
                          "budget's 10 s window" % (n, took, WINDOW_USE))
        return out

    @staticmethod
    def expected(n, budget, budget_min):
        """The design's rule, request by request: extra attempt k is sent
        iff sent_so_far < floor(k * budget / 100) + budget_min * 10."""
        out, sent = [], 0
        for k in range(1, n + 1):
            ok = sent < (k * budget) // 100 + budget_min * 10
            sent += ok
            out.append(ok)
        return out

    def check(self, n, budget, budget_min):
        m0 = self.fd.metrics()
        got = self.run_hedges(n)
        want = self.expected(n, budget, budget_min)
        self.assertEqual(["k%d" % k for k, s in enumerate(got, 1) if s],
                         ["k%d" % k for k, s in enumerate(want, 1) if s],
                         "requests whose hedge was sent")
        sent = sum(want)
        m1 = self.fd.metrics()
        self.assertEqual(self.extra("sent", m1) - self.extra("sent", m0), sent)
        self.assertEqual(self.extra("skipped_budget", m1) -
                         self.extra("skipped_budget", m0), n - sent)
        self.assertEqual(m1.get("fanoutd_hedges_sent_total") -
                         m0.get("fanoutd_hedges_sent_total"), sent)
        # b answers at once and a never: every hedge sent won
        self.assertEqual(self.extra("won", m1) - self.extra("won", m0), sent)
        self.assertEqual(self.extra("skipped_unsafe", m1), 0)
        return sent

    def test_budget_is_a_share_of_the_requests(self):
        self.start(budget="25%", budget_min="0")
        # hedges at requests 4, 8, 12, 16, 20
        self.assertEqual(self.check(20, 25, 0), 5)

    def test_budget_min_allows_ten_per_window(self):
        self.start(budget="0%", budget_min="1")
        self.assertEqual(self.check(14, 0, 1), 10)

    def test_a_retry_over_budget_is_the_failure(self):
        # proxy mode: a connect failure is retried on the other server, an
        # extra attempt; with no budget at all it is not, and the answer is
        # the failure
        dead = self.refused()
        b = self.fake("b")
        fd = self.daemon(
            upstreams={"u": {"servers": "%s, %s" % (dead.url, b.url),
                             "eject_after": "0"}},
            routes={"p": {"match": "/p", "upstreams": "u", "budget": "0%",
                          "budget_min": "0"}})
        codes = []
        for i in range(4):
            r = fd.get("/p/x?tag=r%d" % i)
            codes.append(r.status)
            if r.status != 200:
                doc = self.assertErrorJSON(r, 502)
                self.assertEqual(doc["error"], "upstream_failed", doc)
        self.assertEqual(sorted(set(codes)), [200, 502], codes)
        m = fd.metrics()
        self.assertEqual(m.get(EXTRA, route="p", kind="retry", outcome="skipped_budget"),
                         codes.count(502), m)
        self.assertEqual(m.get(EXTRA, route="p", kind="retry", outcome="sent"), 0)


# ----------------------------------------------------------------------
class LedgerTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")

    @classmethod
    def config(cls, f):
        return dict(upstreams={"a": f["a"], "b": f["b"], "c": f["c"]},
                    routes={"first": {"match": "/first", "mode": "first",
                                      "upstreams": ["a", "b", "c"]},
                            "first2": {"match": "/first2", "mode": "first",
                                       "upstreams": ["a", "b"]}})

    def test_superseded_legs_waste_what_the_log_says(self):
        names = ("a", "b", "c")
        m0 = self.fd.metrics()
        logged = {n: [] for n in names}
        for _ in range(3):
            t = self.tag("w")
            rid = "ledger-" + t
            # a and c hold; b answers once both are at their upstreams
            r, _ = self.call("/first/x?tag=%s&a.hold=1&c.hold=1&b.wait=a,c&b.body=win"
                             % t, rid=rid)
            self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                             (200, b"win", "b"), r)
            for n in ("a", "c"):
                self.assertCancelled(self.f[n], self.f[n].wait_for_tag(t), "leg " + n)
            e, ups = legs(self.fd, rid)
            self.assertNotIn("wasted_ms", ups["b"], "the winner wasted: %r" % e)
            for n in ("a", "c"):
                leg = ups[n]
                self.assertEqual((leg.get("error"), leg.get("reason")),
                                 ("cancelled", "superseded"), e)
                w = leg.get("wasted_ms")
                self.assertIsInstance(w, (int, float), e)
                self.assertGreater(w, 0, e)
                logged[n].append(w)

        def delta(m, n):
            return (m.get(WASTED_S, upstream=n, reason="superseded") -
                    m0.get(WASTED_S, upstream=n, reason="superseded"))
        box = {}

        def adds_up():
            m = box["m"] = self.fd.metrics()
            return all(abs(delta(m, n) - sum(logged[n]) / 1000.0)
                       <= 0.001 * len(logged[n]) for n in ("a", "c"))
        try:
            harness.wait_until(adds_up, what="the ledger to add up to the access log")
        except AssertionError as e:
            m = box.get("m") or self.fd.metrics()
            self.fail("%s: log %r, ledger deltas a=%r c=%r" % (
                e, logged, delta(m, "a"), delta(m, "c")))
        m = self.fd.metrics()
        self.assertEqual(m.sum(WASTED_S, upstream="b"), m0.sum(WASTED_S, upstream="b"),
                         "the winning upstream's ledger moved")
        self.assertEqual(m.sum(WASTED_B, upstream="b"), m0.sum(WASTED_B, upstream="b"))
        # nothing arrived of the held answers: no bytes wasted
        for n in ("a", "c"):
            self.assertEqual(m.sum(WASTED_B, upstream=n), m0.sum(WASTED_B, upstream=n), n)

    def test_a_leg_cut_mid_body_wastes_its_bytes(self):
        m0 = self.fd.metrics()
        t = self.tag("d")
        rid = "ledger-" + t
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/first2/x?tag=%s&a.size=100000&a.partial=5000"
                  "&b.hold=1&b.body=win" % t, [("X-Request-Id", rid)])
        areq = harness.wait_partial_answer_read(self.f["a"], t)
        self.f["b"].release(t)
        r = c.read_response()
        self.assertEqual((r.status, r.body, r.header("fanout-upstream")),
                         (200, b"win", "b"), r)
        self.assertCancelled(self.f["a"], areq, "the mid-body loser")
        want = m0.get(WASTED_B, upstream="a", reason="superseded") + 5000
        self.fd.wait_metric(WASTED_B, lambda v: v >= want, upstream="a",
                            reason="superseded")
        m = self.fd.metrics()
        self.assertEqual(m.get(WASTED_B, upstream="a", reason="superseded"), want,
                         "wasted bytes are the 5000 body bytes received")
        self.assertEqual(m.sum(WASTED_B, upstream="b"), m0.sum(WASTED_B, upstream="b"))
        e, ups = legs(self.fd, rid)
        self.assertGreater(ups["a"].get("wasted_ms", 0), 0, e)


if __name__ == "__main__":
    harness.main()
