"""Two hops: client -> fanoutd A -> fanoutd B -> far upstream.  The deadline
budget shrinks at every hop, and a client hang-up at A travels down the
chain: A closes its leg to B, B sees its own client hang up (499
client_closed) and closes the far upstream's connection."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

# A's routes: a deadline unlike any default, never reached in a test
A_DEADLINE_MS = 8 * 60 * 1000
# fanoutd keeps a margin of a few ms of every budget for itself at each hop
# (DEADLINE_MARGIN_MS); what a hop may take beyond the time measured from
# the client's send is allowed this much
MARGINS_MS = 1000


def deadline_ms(req):
    v = req.header("x-request-deadline-ms")
    if v is None:
        raise AssertionError("no X-Request-Deadline-Ms in %r" % req.headers)
    return int(v)


class ChainTest(harness.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.far = harness.FakeUpstream("far")
        cls.mirror = harness.FakeUpstream("mirror")
        cls.b = cls.a = None
        try:
            # B first: A's config needs B's address.  B's own route
            # deadline is the harness's 10 minutes: whatever ends a request
            # at B sooner came from A.
            cls.b = harness.Fanoutd(
                upstreams={"far": cls.far},
                routes={"p": {"match": "/", "upstreams": "far"}})
            cls.b.start()
            dl = "%dms" % A_DEADLINE_MS
            cls.a = harness.Fanoutd(
                upstreams={"b": cls.b, "mirror": cls.mirror},
                routes={
                    "proxy": {"match": "/p", "upstreams": "b", "deadline": dl},
                    # the mirror sees exactly what A sends B
                    "all": {"match": "/all", "mode": "all",
                            "upstreams": ["b", "mirror"], "deadline": dl},
                })
            cls.a.start()
            # A daemon's first requests are slow under valgrind (its code
            # is translated on the first pass); test_budget_enforced_at_b
            # wants its request at the far upstream before its budget is
            # spent, so each route is used once first.
            for path in ("/p/warm", "/all/warm"):
                cls.a.get(path + "?body=warm")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for d in (cls.a, cls.b):
                if d is not None:
                    d.cleanup()
        finally:
            cls.far.close()
            cls.mirror.close()

    def setUp(self):
        super().setUp()
        self._daemons += [self.b, self.a]
        for u in (self.far, self.mirror):
            self._fake_failures[id(u)] = len(u.failures)
        self.addCleanup(self.assertFakeFine, self.far, self.mirror)

    def assertLeft(self, ms, budget_ms, spent_s, what):
        """MS (an X-Request-Deadline-Ms seen upstream) is what is left of
        BUDGET_MS after SPENT_S seconds (from the client's send to the
        upstream's receipt), less the hops' margins."""
        self.assertLess(ms, budget_ms, "%s: %d ms of a %d ms budget" % (what, ms, budget_ms))
        self.assertGreaterEqual(ms, budget_ms - spent_s * 1000 - MARGINS_MS,
                                "%s: %d ms left of %d ms after %.0f ms"
                                % (what, ms, budget_ms, spent_s * 1000))

    # ------------------------------------------------------------------
    def test_proxy_chain_works(self):
        r = self.a.get("/p/x?body=through&tag=pc")
        self.assertEqual((r.status, r.body), (200, b"through"), r)
        self.assertEqual(r.header("x-upstream"), "far", r)

    def test_budget_shrinks_at_every_hop(self):
        rid = "chain-budget-1"
        with self.a.client() as c:
            t0 = time.monotonic()
            c.request("GET", "/all/x?echo=1&tag=cb1", [("X-Request-Id", rid)])
            r = c.read_response()
        env = self.assertEnvelope(r, 200, ["b", "mirror"])
        far = self.far.wait_for_tag("cb1")
        to_b = self.mirror.wait_for_tag("cb1")
        sent_to_b = deadline_ms(to_b)
        at_far = deadline_ms(far)
        self.assertLeft(sent_to_b, A_DEADLINE_MS, to_b.arrived - t0,
                        "A's leg budget against A's route deadline")
        self.assertLess(at_far, sent_to_b, "B did not shrink the budget it was given "
                        "(B got %d, far upstream got %d)" % (sent_to_b, at_far))
        self.assertLeft(at_far, A_DEADLINE_MS, far.arrived - t0,
                        "B's leg budget against A's route deadline")
        # B's route deadline (10 minutes) did not lengthen it, and the
        # request id went the whole way
        self.assertEqual(far.header("x-request-id"), rid)
        echo = env["b"].get("body")
        self.assertIsInstance(echo, dict, env)
        hdrs = {k.lower(): v for k, v in echo["headers"]}
        self.assertEqual(int(hdrs["x-request-deadline-ms"]), at_far)

    def test_client_budget_shrinks_the_chain(self):
        # 5 minutes: less than A's route deadline, and it never runs out
        budget = 5 * 60 * 1000
        with self.a.client() as c:
            t0 = time.monotonic()
            c.request("GET", "/p/x?echo=1&tag=cb2", [("X-Request-Deadline-Ms", str(budget))])
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        far = self.far.wait_for_tag("cb2")
        self.assertLeft(deadline_ms(far), budget, far.arrived - t0,
                        "the far upstream's budget against the client's")

    def test_budget_enforced_at_b(self):
        # The client gives A a short budget, A gives B a little less; the
        # far upstream, which never answers, is cut then, though B's own
        # route deadline is 10 minutes.  B's deadline fires a few ms (the
        # margin) before A's, so B normally logs deadline; on a starved
        # machine A's may win and B sees its client leave.
        #
        # The request has to reach the far upstream before the budget is
        # spent, and nothing but speed orders that: when it has not (no
        # request there by the time the 504 came), the test is run again
        # with a budget five times longer.  Normally the first one does.
        for budget in (0.6, 3, 15):
            tag = "cb3-%d" % (budget * 1000)
            rid = "chain-budget-" + tag
            with self.a.client() as c:
                t0 = time.monotonic()
                c.request("GET", "/p/x?hang=1&tag=" + tag,
                          [("X-Request-Deadline-Ms", "%d" % (budget * 1000)),
                           ("X-Request-Id", rid)])
                r = c.read_response()
            self.assertEqual(r.status, 504, r)
            reqs = self.far.requests_tagged(tag)
            if not reqs:
                sys.stderr.write("the %s s budget was spent before the request "
                                 "reached the far upstream: again with a longer "
                                 "one\n" % budget)
                continue
            far = reqs[0]
            # not before the budget: B's is the client's less the time A
            # took and A's margin (5 ms, and a ms of rounding), so it runs
            # out at the same moment, that much early.  Nothing waited for
            # B's 10 minutes either.
            self.assertNotBefore(r, t0, budget - 0.01, "504")
            self.assertCancelled(self.far, far,
                                 "far upstream connection after the budget ran out")
            self.assertLess(deadline_ms(far), budget * 1000)
            eb = self.b.wait_access_log(request_id=rid)
            self.assertIn((eb["status"], eb["cancel_reason"]),
                          [(504, "deadline"), (499, "client_closed")], eb)
            ea = self.a.wait_access_log(request_id=rid)
            self.assertEqual(ea["status"], 504, ea)
            return
        self.fail("the budget was spent before the request reached the far "
                  "upstream, every time")

    def _hangup(self, target, tag, how):
        # Every upstream holds the request for ever: only the hang-up ends it
        rid = "chain-" + tag
        c = self.a.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "%s?hang=1&tag=%s" % (target, tag), [("X-Request-Id", rid)])
        far = self.far.wait_for_tag(tag)
        # in mode all, A's other leg is at the mirror too
        mirror = [self.mirror.wait_for_tag(tag)] if target.startswith("/all") else []
        c.abort(how)
        self.assertCancelled(self.far, far, "far upstream connection after a hang-up at A")
        for m in mirror:
            self.assertCancelled(self.mirror, m, "A's other leg")
        ea = self.a.wait_access_log(request_id=rid)
        self.assertEqual((ea["status"], ea["cancel_reason"]), (499, "client_closed"), ea)
        ua = {u["name"]: u for u in ea["upstreams"]}
        self.assertEqual((ua["b"].get("error"), ua["b"].get("reason")),
                         ("cancelled", "client_closed"), ea)
        # B saw A's leg close as its own client hanging up
        eb = self.b.wait_access_log(request_id=rid)
        self.assertEqual((eb["status"], eb["cancel_reason"]), (499, "client_closed"), eb)
        self.assertEqual(eb["upstreams"][0].get("error"), "cancelled", eb)
        for d in (self.a, self.b):
            d.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
            d.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

    def test_hangup_at_a_cancels_far_upstream_proxy(self):
        # the client's close is a FIN (it was sent nothing to leave unread)
        self._hangup("/p/x", "hp1", "close")

    def test_hangup_at_a_cancels_far_upstream_all(self):
        self._hangup("/all/x", "ha1", "rst")


if __name__ == "__main__":
    harness.main()
