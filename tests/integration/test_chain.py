"""Two hops: client -> fanoutd A -> fanoutd B -> far upstream.  The deadline
budget shrinks at every hop, and a client hang-up at A travels down the
chain: A closes its leg to B, B sees its own client hang up (499
client_closed) and closes the far upstream's connection."""


import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

CHAIN_PROMPT = 0.3   # hang-up at A -> far upstream closed


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
            # B first: A's config needs B's address
            cls.b = harness.Fanoutd(
                upstreams={"far": cls.far},
                routes={"p": {"match": "/", "upstreams": "far", "deadline": "20s"}})
            cls.b.start()
            cls.a = harness.Fanoutd(
                upstreams={"b": cls.b, "mirror": cls.mirror},
                routes={
                    "proxy": {"match": "/p", "upstreams": "b", "deadline": "5s"},
                    # the mirror sees exactly what A sends B
                    "all": {"match": "/all", "mode": "all",
                            "upstreams": ["b", "mirror"], "deadline": "5s"},
                })
            cls.a.start()
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

    # ------------------------------------------------------------------
    def test_proxy_chain_works(self):
        r = self.a.get("/p/x?body=through&tag=pc")
        self.assertEqual((r.status, r.body), (200, b"through"), r)
        self.assertEqual(r.header("x-upstream"), "far", r)

    def test_budget_shrinks_at_every_hop(self):
        rid = "chain-budget-1"
        with self.a.client() as c:
            c.request("GET", "/all/x?echo=1&tag=cb1", [("X-Request-Id", rid)])
            r = c.read_response(timeout=10)
        env = self.assertEnvelope(r, 200, ["b", "mirror"])
        far = self.far.wait_for_tag("cb1")
        sent_to_b = deadline_ms(self.mirror.wait_for_tag("cb1"))
        at_far = deadline_ms(far)
        self.assertLess(sent_to_b, 5000, "A's leg budget is not below its deadline")
        self.assertGreater(sent_to_b, 3000, sent_to_b)
        self.assertLess(at_far, sent_to_b, "B did not shrink the budget it was given "
                        "(B got %d, far upstream got %d)" % (sent_to_b, at_far))
        self.assertGreater(at_far, 2000, at_far)
        # B's route deadline (20s) did not lengthen it, and the request id
        # went the whole way
        self.assertEqual(far.header("x-request-id"), rid)
        echo = env["b"].get("body")
        self.assertIsInstance(echo, dict, env)
        hdrs = {k.lower(): v for k, v in echo["headers"]}
        self.assertEqual(int(hdrs["x-request-deadline-ms"]), at_far)

    def test_client_budget_shrinks_the_chain(self):
        with self.a.client() as c:
            c.request("GET", "/p/x?echo=1&tag=cb2", [("X-Request-Deadline-Ms", "900")])
            r = c.read_response(timeout=5)
        self.assertEqual(r.status, 200, r)
        at_far = deadline_ms(self.far.wait_for_tag("cb2"))
        self.assertTrue(0 < at_far < 900, at_far)

    def test_budget_enforced_at_b(self):
        # The client gives A 600ms, A gives B a little less; the far
        # upstream is cut then, though B's own route deadline is 20s.  B's
        # deadline fires a few ms (the margin) before A's, so B normally logs
        # deadline; on a starved machine A's may win and B sees its client
        # leave: either way nothing waits for the 20s.
        rid = "chain-budget-3"
        with self.a.client() as c:
            c.request("GET", "/p/x?delay=5000&tag=cb3",
                      [("X-Request-Deadline-Ms", "600"), ("X-Request-Id", rid)])
            far = self.far.wait_for_tag("cb3")
            r = c.read_response(timeout=5)
        self.assertEqual(r.status, 504, r)
        self.assertLess(r.received - far.arrived, 2.0, "the 600ms budget was not kept")
        self.assertClosedWithin(self.far, far, r.received, CHAIN_PROMPT,
                                "far upstream connection after the budget ran out")
        self.assertLess(deadline_ms(far), 600)
        eb = self.b.wait_access_log(request_id=rid)
        self.assertIn((eb["status"], eb["cancel_reason"]),
                      [(504, "deadline"), (499, "client_closed")], eb)
        ea = self.a.wait_access_log(request_id=rid)
        self.assertEqual(ea["status"], 504, ea)

    def _hangup(self, target, tag, how):
        rid = "chain-" + tag
        c = self.a.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "%s?delay=8000&tag=%s" % (target, tag), [("X-Request-Id", rid)])
        far = self.far.wait_for_tag(tag)
        mirror = self.mirror.requests_tagged(tag)
        t0 = c.abort(how)
        self.assertClosedWithin(self.far, far, t0, CHAIN_PROMPT,
                                "far upstream connection after a hang-up at A")
        for m in mirror:
            self.assertClosedWithin(self.mirror, m, t0, 0.2, "A's other leg")
        self.assertIsNone(far.responded)
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
        self._hangup("/p/x", "hp1", "close")

    def test_hangup_at_a_cancels_far_upstream_all(self):
        self._hangup("/all/x", "ha1", "rst")


if __name__ == "__main__":
    harness.main()
