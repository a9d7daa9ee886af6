"""Upstream faults (issue 5, item 2; SPEC section 4).

Refused, reset in the head, reset in the body, hung, over
max_response_size, not HTTP at all: each is a clean 502 (504 for the hung
one) with a JSON error body, the error recorded per leg in the access log
(upstreams[].error) and in fanoutd_upstream_requests_total{outcome}, and
the next request on the same route is served.  In mode all the envelope
shows each leg's error.
"""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import time  # noqa: E402

import contextlib  # noqa: E402

import harness  # noqa: E402
from fakeupstream import FakeUpstream  # noqa: E402

TIMEOUT = 0.3
MAX_RESPONSE = 1024
FAULTY = ("rsth", "rstb", "hung", "big", "junk")


class UpstreamFaultTest(harness.SharedDaemonTest):

    FAKES = ("ok",) + FAULTY + ("fresh",)   # "fresh": hung, used once
    REFUSED = ("refused", "dead")   # "dead" comes to life in one test

    @classmethod
    def config(cls, f):
        ups = {}
        for n in cls.FAKES + cls.REFUSED:
            ups[n] = {"url": f[n].url, "timeout": "300ms" if n in ("hung", "fresh") else "3s",
                      "connect_timeout": "1s", "max_response_size": "1k"}
        routes = {}
        for n in cls.FAKES + cls.REFUSED:
            routes["p_" + n] = {"match": "/p/%s/" % n, "mode": "proxy",
                                "upstreams": n, "deadline": "5s"}
        legs = ["ok"] + list(FAULTY) + ["refused"]
        routes["first"] = {"match": "/first/", "mode": "first",
                           "upstreams": ["rstb", "ok"], "deadline": "5s"}
        routes["all"] = {"match": "/all/", "mode": "all", "upstreams": legs,
                         "deadline": "5s"}
        routes["all_ok"] = {"match": "/allok/", "mode": "all",
                            "upstreams": ["ok"] + list(FAULTY), "deadline": "5s"}
        return dict(upstreams=ups, routes=routes,
                    server={"keepalive_timeout": "10s"})

    # helpers ----------------------------------------------------------
    def outcome(self, m, name, outcome):
        return m.get("fanoutd_upstream_requests_total", upstream=name, outcome=outcome)

    def fault(self, name, query, status, error, outcome="error", cut_ok=False,
              client=None):
        """One request to upstream NAME on its proxy route that fails with
        ERROR: checks the answer, the access log leg and the counter, then
        that the next request on the route is served.

        CUT_OK: the fault comes after the upstream's head, and mode proxy
        streams (fanoutd(8): "once the head has gone out ... the connection
        is closed instead, and the client sees a short body"): the answer
        is either STATUS as a JSON error, or a head and a body cut short by
        a close, never a message that looks complete, and never nothing at
        all.  Returns (response or None for a cut, log entry, seconds)."""
        m0 = self.fd.metrics()
        tag = self.tag(name)
        t0 = time.monotonic()
        r = None
        # CLIENT: a kept-alive connection to use (it stays on one worker,
        # with that worker's pooled upstream connections).
        with (contextlib.nullcontext(client) if client is not None
              else self.fd.client(timeout=5)) as c:
            c.request("GET", "/p/%s/x?tag=%s&%s" % (name, tag, query))
            try:
                r = c.read_response(timeout=5)
            except harness.ClosedError as ce:
                if not cut_ok:
                    raise
                if str(ce).startswith("connection closed before a response head"):
                    self.fail("%s?%s: the client got an empty reply (no 502, no head and "
                              "short body): %s" % (name, query, ce))
            dt = time.monotonic() - t0
        if r is not None:
            self.assertErrorJSON(r, status)
            rid = r.header("x-request-id")
            e = self.fd.wait_access_log(request_id=rid, timeout=3)
            self.assertEqual(e.get("status"), status, e)
        else:
            e = self.fd.wait_access_log(lambda x: "tag=%s&" % tag in x.get("path", ""),
                                        timeout=3, what="access log line for tag " + tag)
        legs = e.get("upstreams")
        self.assertIsInstance(legs, list, e)
        self.assertEqual(len(legs), 1, e)
        self.assertEqual(legs[0].get("name"), name, e)
        self.assertEqual(legs[0].get("error"), error,
                         "leg error for %s?%s: %r" % (name, query, e))
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v >= self.outcome(m0, name, outcome) + 1,
                            timeout=3, upstream=name, outcome=outcome)
        m1 = self.fd.metrics()
        self.assertEqual(self.outcome(m1, name, outcome),
                         self.outcome(m0, name, outcome) + 1, "%s{%s}" % (name, outcome))
        self.assertEqual(self.outcome(m1, name, "ok"), self.outcome(m0, name, "ok"),
                         "a failed leg counted as ok")
        # the next request on the same route works
        tag2 = self.tag(name)
        r2, _ = self.call("/p/%s/x?tag=%s&body=next" % (name, tag2), timeout=5)
        self.assertEqual((r2.status, r2.body), (200, b"next"),
                         "the request after a %s fault: %r" % (error, r2))
        return r, e, dt

    # proxy mode ---------------------------------------------------------
    def test_refused_is_502_connect(self):
        """Nothing listens: 502, error connect.  Once something listens on
        that port, the route is served again."""
        m0 = self.fd.metrics()
        r, _ = self.call("/p/dead/x?tag=" + self.tag("ref"))
        self.assertErrorJSON(r, 502)
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"), timeout=3)
        self.assertEqual([(u.get("name"), u.get("error")) for u in e["upstreams"]],
                         [("dead", "connect")], e)
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == self.outcome(m0, "dead", "error") + 1,
                            timeout=3, upstream="dead", outcome="error")
        # bring the port to life: the same route works now
        port = self.f["dead"].port
        self.f["dead"].close()
        up = FakeUpstream("dead", port=port)
        self.f["dead"] = up         # closed by tearDownClass
        r2, _ = self.call("/p/dead/x?body=alive")
        self.assertEqual((r2.status, r2.body), (200, b"alive"), r2)

    def test_reset_in_the_head_is_502_reset(self):
        r, e, _ = self.fault("rsth", "reset=headers", 502, "reset")
        self.assertNotIn(b"X-Upstream", r.raw_head, "a piece of the upstream head leaked")

    def test_reset_in_the_body_is_502_reset(self):
        """The head (200) and half the body came, then a reset: a 502, or
        (streamed) the head and a short body cut by a close."""
        self.fault("rstb", "reset=body&size=900", 502, "reset", cut_ok=True)

    def test_reset_in_a_chunked_body_is_502_reset(self):
        self.fault("rstb", "reset=body&size=900&chunked=1", 502, "reset", cut_ok=True)

    def test_close_without_answer_is_502_reset(self):
        self.fault("rsth", "close=1", 502, "reset")

    def test_hung_on_a_new_connection_is_504_timeout(self):
        """No answer at all on a new upstream connection: 504 at the
        upstream's timeout (300 ms), its connection closed."""
        self.assertEqual(self.f["fresh"].connections, [])
        tag = self.tag("fresh")
        r, e, dt = self.fault("fresh", "hang=1&t=" + tag, 504, "timeout", outcome="timeout")
        self.assertGreaterEqual(dt, TIMEOUT * 0.9, "504 before the timeout: %.0f ms" % (dt * 1000))
        self.assertLess(dt, TIMEOUT + 1.5, "504 long after the timeout: %.0f ms" % (dt * 1000))
        req = self.f["fresh"].wait_for_request(lambda q: q.q("t") == tag, timeout=2)
        self.assertEqual(req.index, 0, "not on a new connection")
        self.f["fresh"].wait_closed(req, timeout=3)

    def test_hung_is_504_timeout(self):
        """No answer at all on a kept-alive (reused) upstream connection:
        504 at the upstream's timeout, error timeout (not connect: the
        connection was there all along), the connection closed."""
        c = self.fd.client(timeout=5)
        self.addCleanup(c.__exit__)
        r0 = c.get("/p/hung/x?body=warm")
        self.assertEqual(r0.status, 200, r0)
        tag = self.tag("hung")
        r, e, dt = self.fault("hung", "hang=1&t=" + tag, 504, "timeout",
                              outcome="timeout", client=c)
        self.assertGreaterEqual(dt, TIMEOUT * 0.9, "504 before the timeout: %.0f ms" % (dt * 1000))
        self.assertLess(dt, TIMEOUT + 1.5, "504 long after the timeout: %.0f ms" % (dt * 1000))
        req = self.f["hung"].wait_for_request(lambda q: q.q("t") == tag, timeout=2)
        self.assertGreater(req.index, 0, "not on a reused connection")
        self.f["hung"].wait_closed(req, timeout=3)

    def test_hung_mid_body_is_504_timeout(self):
        """Head and part of the body, then nothing: 504 at the timeout."""
        self.fault("hung", "partial=10&size=100", 504, "timeout", outcome="timeout",
                   cut_ok=True)

    def test_over_max_response_size_is_502_too_large(self):
        self.fault("big", "size=10240", 502, "too_large")

    def test_over_max_response_size_chunked_is_502_too_large(self):
        """No Content-Length to judge by: the limit is enforced while the
        body arrives (a 502, or a cut once the head is out)."""
        self.fault("big", "size=10240&chunked=1", 502, "too_large", cut_ok=True)

    def test_max_response_size_boundary(self):
        """The control: exactly max_response_size passes."""
        r, _ = self.call("/p/big/x?size=%d" % MAX_RESPONSE)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), MAX_RESPONSE)

    def test_not_http_is_502_protocol(self):
        """Bytes that are not HTTP, connection held open: fanoutd notices by
        itself (502 protocol), well before the upstream timeout."""
        r, e, dt = self.fault("junk", "garbage=1", 502, "protocol")
        self.assertLess(dt, 2.0, "took %.0f ms to notice" % (dt * 1000))

    def test_faults_dont_leak_upstream_bytes(self):
        """Mode first answers only with a whole success: a leg that failed
        mid-body leaks none of its bytes, the other leg's answer is given
        (and the failed leg is logged)."""
        q = ("rstb.reset=body&rstb.body=%s&ok.body=fine&ok.wait=rstb&ok.delay=100"
             "&tag=%s" % ("SECRET" * 100, self.tag("leak")))
        r, _ = self.call("/first/x?" + q, timeout=5)
        self.assertEqual((r.status, r.body), (200, b"fine"), r)
        self.assertEqual(r.header("fanout-upstream"), "ok", r)
        self.assertNotIn(b"SECRET", r.raw_head + r.body)
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"), timeout=3)
        got = {u.get("name"): u.get("error") for u in e.get("upstreams", [])}
        self.assertEqual(got, {"rstb": "reset", "ok": None}, e)

    # mode all -----------------------------------------------------------
    def test_all_mode_envelope_shows_each_error(self):
        """Every fault at once, one per leg, in mode all: 502 (partial =
        fail) with an envelope naming each leg's error; the access log has
        the same per leg."""
        q = ("rsth.reset=headers&rstb.reset=body&rstb.size=900&hung.hang=1"
             "&big.size=10240&junk.garbage=1&ok.body=fine&tag=" + self.tag("all"))
        m0 = self.fd.metrics()
        r, _ = self.call("/all/x?" + q, timeout=5)
        names = ["ok"] + list(FAULTY) + ["refused"]
        env = self.assertEnvelope(r, 502, names)
        self.assertLegOK(env, "ok")
        want = {"rsth": "reset", "rstb": "reset", "hung": "timeout",
                "big": "too_large", "junk": "protocol", "refused": "connect"}
        for n, err in want.items():
            self.assertLegError(env, n, err)
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"), timeout=3)
        got = {u.get("name"): u.get("error") for u in e.get("upstreams", [])}
        self.assertEqual(got, dict(want, ok=None), e)
        m1 = self.fd.metrics()
        for n in want:
            oc = "timeout" if n == "hung" else "error"
            self.assertEqual(self.outcome(m1, n, oc), self.outcome(m0, n, oc) + 1,
                             "%s{outcome=%s}" % (n, oc))
        self.assertEqual(self.outcome(m1, "ok", "ok"), self.outcome(m0, "ok", "ok") + 1)
        # the next request, every upstream healthy, is a 200 envelope
        r2, _ = self.call("/allok/x?body=fine", timeout=5)
        env2 = self.assertEnvelope(r2, 200, ["ok"] + list(FAULTY))
        for n in ["ok"] + list(FAULTY):
            self.assertLegOK(env2, n)


if __name__ == "__main__":
    harness.main()
