"""Upstream faults (issue 5, item 2; SPEC section 4).

Refused, reset in the head, reset in the body, hung, over
max_response_size, not HTTP at all: each is a clean 502 (504 for the hung
one) with a JSON error body, the error recorded per leg in the access log
(upstreams[].error) and in fanoutd_upstream_requests_total{outcome}, and
the next request on the same route is served.  In mode all the envelope
shows each leg's error.

The hung upstreams' timeout is what the hung tests are about, so it is
short (300 ms), and every other timeout is the harness's 10 minutes.  A
test through a hung upstream needs its request there before the timeout
fires, and a healthy answer through one within it: nothing but speed
orders that.  So the hung upstreams come in three variants (300 ms, 3 s,
30 s); a test that finds its 300 ms too short for this machine (TooSlow:
the request never reached the upstream, or a healthy answer timed out)
runs again with the next.  Normally the first one does.
"""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import time  # noqa: E402

import contextlib  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402

import harness  # noqa: E402
from fakeupstream import FakeUpstream  # noqa: E402

# the hung upstreams' timeout, by variant suffix: "hung", "hung3", "hung30"
VARIANTS = (("", 0.3), ("3", 3), ("30", 30))
MAX_RESPONSE = 1024


def faulty(s):
    """The faulty upstreams of variant S."""
    return ("rsth", "rstb", "hung" + s, "big", "junk")



class TooSlow(Exception):
    """A hung upstream's short timeout was too short for this machine:
    the test says nothing about the product, and runs again with a longer
    one."""


class UpstreamFaultTest(harness.SharedDaemonTest):

    # "fresh": hung, used once per variant
    FAKES = ("ok", "rsth", "rstb", "big", "junk") + tuple(
        n + s for s, _ in VARIANTS for n in ("hung", "fresh"))
    REFUSED = ("refused", "dead")   # "dead" comes to life in one test

    @classmethod
    def config(cls, f):
        ups = {}
        for n in cls.FAKES + cls.REFUSED:
            ups[n] = {"url": f[n].url, "max_response_size": "1k"}
        for s, limit in VARIANTS:
            for n in ("hung", "fresh"):
                ups[n + s]["timeout"] = "%dms" % (limit * 1000)
        routes = {}
        for n in cls.FAKES + cls.REFUSED:
            routes["p_" + n] = {"match": "/p/%s/" % n, "mode": "proxy", "upstreams": n}
        routes["first"] = {"match": "/first/", "mode": "first",
                           "upstreams": ["rstb", "ok"]}
        for s, _ in VARIANTS:
            routes["all" + s] = {"match": "/all%s/" % s, "mode": "all",
                                 "upstreams": ["ok"] + list(faulty(s)) + ["refused"]}
            routes["all_ok" + s] = {"match": "/allok%s/" % s, "mode": "all",
                                    "upstreams": ["ok"] + list(faulty(s))}
        return dict(upstreams=ups, routes=routes)

    def variants(self, body):
        """Run BODY(suffix, timeout) with each variant of the hung
        upstreams in turn until one is not TooSlow; returns its value."""
        for s, limit in VARIANTS:
            try:
                return body(s, limit)
            except TooSlow as e:
                sys.stderr.write("%s with %.0f ms: %s; again with a longer timeout\n"
                                 % (self.id(), limit * 1000, e))
        self.fail("every timeout was too short for this machine")

    def reached(self, name, tag):
        """Raise TooSlow unless the request tagged TAG reached the hung
        upstream NAME before it timed out."""
        if not self.f[name].requests_tagged(tag):
            raise TooSlow("the request had not reached %s when it was answered" % name)

    # helpers ----------------------------------------------------------
    def count(self, m, name, outcome):
        return m.get("fanoutd_upstream_requests_total", upstream=name, outcome=outcome)

    def fault(self, name, query, status, error, outcome="error", cut_ok=False,
              client=None, hung=False):
        """One request to upstream NAME on its proxy route that fails with
        ERROR: checks the answer, the access log leg and the counter, then
        that the next request on the route is served.

        CUT_OK: the fault comes after the upstream's head, and mode proxy
        streams (fanoutd(8): "once the head has gone out ... the connection
        is closed instead, and the client sees a short body"): the answer
        is either STATUS as a JSON error, or a head and a body cut short by
        a close, never a message that looks complete, and never nothing at
        all.  Returns (response or None for a cut, log entry, seconds from
        the client's send).

        HUNG: NAME is a hung upstream with a short timeout; TooSlow is
        raised when the request had not reached it before the answer, or
        the next request timed out."""
        m0 = self.fd.metrics()
        tag = self.tag(name)
        r = None
        # CLIENT: a kept-alive connection to use (it stays on one worker,
        # with that worker's pooled upstream connections).
        with (contextlib.nullcontext(client) if client is not None
              else self.fd.client()) as c:
            t0 = time.monotonic()
            c.request("GET", "/p/%s/x?tag=%s&%s" % (name, tag, query))
            try:
                r = c.read_response()
            except harness.ClosedError as ce:
                if not cut_ok:
                    raise
                if str(ce).startswith("connection closed before a response head"):
                    self.fail("%s?%s: the client got an empty reply (no 502, no head and "
                              "short body): %s" % (name, query, ce))
            dt = time.monotonic() - t0
        if hung:
            self.reached(name, tag)
        if r is not None:
            self.assertErrorJSON(r, status)
            rid = r.header("x-request-id")
            e = self.fd.wait_access_log(request_id=rid)
            self.assertEqual(e.get("status"), status, e)
        else:
            e = self.fd.wait_access_log(lambda x: "tag=%s&" % tag in x.get("path", ""),
                                        what="access log line for tag " + tag)
        legs = e.get("upstreams")
        self.assertIsInstance(legs, list, e)
        self.assertEqual(len(legs), 1, e)
        self.assertEqual(legs[0].get("name"), name, e)
        self.assertEqual(legs[0].get("error"), error,
                         "leg error for %s?%s: %r" % (name, query, e))
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v >= self.count(m0, name, outcome) + 1,
                            upstream=name, outcome=outcome)
        m1 = self.fd.metrics()
        self.assertEqual(self.count(m1, name, outcome),
                         self.count(m0, name, outcome) + 1, "%s{%s}" % (name, outcome))
        self.assertEqual(self.count(m1, name, "ok"), self.count(m0, name, "ok"),
                         "a failed leg counted as ok")
        # the next request on the same route works
        tag2 = self.tag(name)
        r2, _ = self.call("/p/%s/x?tag=%s&body=next" % (name, tag2))
        if hung and r2.status == 504:
            raise TooSlow("the next request through %s timed out" % name)
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
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"))
        self.assertEqual([(u.get("name"), u.get("error")) for u in e["upstreams"]],
                         [("dead", "connect")], e)
        self.fd.wait_metric("fanoutd_upstream_requests_total",
                            lambda v: v == self.count(m0, "dead", "error") + 1,
                            upstream="dead", outcome="error")
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
        upstream's timeout (not before it, from the client's send), its
        connection closed, the request never answered."""
        def body(s, limit):
            name = "fresh" + s
            self.assertEqual(self.f[name].connections, [])
            tag = self.tag(name)
            r, e, dt = self.fault(name, "hang=1&t=" + tag, 504, "timeout",
                                  outcome="timeout", hung=True)
            self.assertNotBefore(dt, 0, limit, "504")
            req = self.f[name].wait_for_request(lambda q: q.q("t") == tag)
            self.assertEqual(req.index, 0, "not on a new connection")
            self.assertCancelled(self.f[name], req, "upstream connection after its timeout")
        self.variants(body)

    def test_hung_is_504_timeout(self):
        """No answer at all on a kept-alive (reused) upstream connection:
        504 at the upstream's timeout (not before it), error timeout (not
        connect: the connection was there all along), the connection
        closed, the request never answered."""
        def body(s, limit):
            name = "hung" + s
            c = self.fd.client()
            self.addCleanup(c.__exit__)
            r0 = c.get("/p/%s/x?body=warm" % name)
            if r0.status == 504:
                raise TooSlow("the request that opens the connection timed out")
            self.assertEqual(r0.status, 200, r0)
            tag = self.tag(name)
            r, e, dt = self.fault(name, "hang=1&t=" + tag, 504, "timeout",
                                  outcome="timeout", client=c, hung=True)
            self.assertNotBefore(dt, 0, limit, "504")
            req = self.f[name].wait_for_request(lambda q: q.q("t") == tag)
            self.assertGreater(req.index, 0, "not on a reused connection")
            self.assertCancelled(self.f[name], req, "upstream connection after its timeout")
        self.variants(body)

    def test_hung_mid_body_is_504_timeout(self):
        """Head and part of the body, then nothing: 504 at the timeout."""
        self.variants(lambda s, limit: self.fault(
            "hung" + s, "partial=10&size=100", 504, "timeout", outcome="timeout",
            cut_ok=True, hung=True))

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
        itself (502 protocol), not at the upstream's timeout (10 minutes:
        the wait for the answer would fail long before)."""
        self.fault("junk", "garbage=1", 502, "protocol")

    def test_faults_dont_leak_upstream_bytes(self):
        """Mode first answers only with a whole success: a leg that failed
        mid-body leaks none of its bytes, the other leg's answer is given
        (and the failed leg is logged)."""
        # ok answers only once fanoutd has counted rstb's failure: the
        # failed leg's bytes have come and gone before there is a winner
        m0 = self.fd.metrics()
        tag = self.tag("leak")
        q = ("rstb.reset=body&rstb.body=%s&ok.body=fine&ok.hold=1&tag=%s"
             % ("SECRET" * 100, tag))
        with self.fd.client() as c:
            c.request("GET", "/first/x?" + q)
            self.fd.wait_metric("fanoutd_upstream_requests_total",
                                lambda v: v >= self.count(m0, "rstb", "error") + 1,
                                upstream="rstb", outcome="error")
            self.f["ok"].release(tag)
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"fine"), r)
        self.assertEqual(r.header("fanout-upstream"), "ok", r)
        self.assertNotIn(b"SECRET", r.raw_head + r.body)
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"))
        got = {u.get("name"): u.get("error") for u in e.get("upstreams", [])}
        self.assertEqual(got, {"rstb": "reset", "ok": None}, e)

    # mode all -----------------------------------------------------------
    def test_all_mode_envelope_shows_each_error(self):
        """Every fault at once, one per leg, in mode all: 502 (partial =
        fail) with an envelope naming each leg's error; the access log has
        the same per leg."""
        self.variants(self._all_mode_envelope)

    def _all_mode_envelope(self, s, limit):
        hung = "hung" + s
        tag = self.tag("all")
        q = ("rsth.reset=headers&rstb.reset=body&rstb.size=900&%s.hang=1"
             "&big.size=10240&junk.garbage=1&ok.body=fine&tag=%s" % (hung, tag))
        m0 = self.fd.metrics()
        r, _ = self.call("/all%s/x?%s" % (s, q))
        self.reached(hung, tag)
        names = ["ok"] + list(faulty(s)) + ["refused"]
        env = self.assertEnvelope(r, 502, names)
        self.assertLegOK(env, "ok")
        want = {"rsth": "reset", "rstb": "reset", hung: "timeout",
                "big": "too_large", "junk": "protocol", "refused": "connect"}
        for n, err in want.items():
            self.assertLegError(env, n, err)
        e = self.fd.wait_access_log(request_id=r.header("x-request-id"))
        got = {u.get("name"): u.get("error") for u in e.get("upstreams", [])}
        self.assertEqual(got, dict(want, ok=None), e)
        m1 = self.fd.metrics()
        for n in want:
            oc = "timeout" if n == hung else "error"
            self.assertEqual(self.count(m1, n, oc), self.count(m0, n, oc) + 1,
                             "%s{outcome=%s}" % (n, oc))
        self.assertEqual(self.count(m1, "ok", "ok"), self.count(m0, "ok", "ok") + 1)
        # the next request, every upstream healthy, is a 200 envelope
        r2, _ = self.call("/allok%s/x?body=fine" % s)
        if r2.status != 200:
            try:
                late = r2.json().get(hung, {}).get("error") == "timeout"
            except (ValueError, AttributeError):
                late = False
            if late:
                raise TooSlow("the healthy answer through %s timed out" % hung)
        env2 = self.assertEnvelope(r2, 200, ["ok"] + list(faulty(s)))
        for n in ["ok"] + list(faulty(s)):
            self.assertLegOK(env2, n)


CONNECT_TIMEOUT = 0.3


class ConnectTimeoutTest(harness.TestCase):
    """A connection that never comes: 502, error connect, at the upstream's
    connect_timeout (fanoutd's own timer, not curl's) and not before it;
    the request timeout (ten minutes) is not what ends it."""

    def test_connect_timeout_is_502_connect(self):
        # A listener whose accept queue is full: the kernel drops every
        # further SYN, so a connect to it never completes.  listen(0) holds
        # one connection, which the filler's completed connect is.
        ls = socket.socket()
        filler = socket.socket()
        try:
            ls.bind(("127.0.0.1", 0))
            ls.listen(0)
            filler.setblocking(False)
            filler.connect_ex(ls.getsockname())
            _, w, _ = select.select([], [filler], [], harness.PATIENCE)
            self.assertTrue(w, "the filler's connect did not complete")
            self.assertEqual(filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0)
            up = {"url": "http://127.0.0.1:%d" % ls.getsockname()[1],
                  "connect_timeout": "%dms" % (CONNECT_TIMEOUT * 1000)}
            fd = self.daemon(upstreams={"full": up},
                             routes={"r": {"match": "/", "upstreams": "full"}})
            with fd.client() as c:
                t0 = time.monotonic()
                r = c.get("/x")
                self.assertErrorJSON(r, 502)
                self.assertNotBefore(r, t0, CONNECT_TIMEOUT, "502")
            e = fd.wait_access_log(request_id=r.header("x-request-id"))
            self.assertEqual([(u.get("name"), u.get("error")) for u in e["upstreams"]],
                             [("full", "connect")], e)
            fd.wait_metric("fanoutd_upstream_requests_total",
                           lambda v: v >= 1, upstream="full", outcome="error")
            m1 = fd.metrics()
            self.assertEqual(m1.get("fanoutd_upstream_requests_total",
                                    upstream="full", outcome="timeout"), 0, "counted as a timeout")
        finally:
            filler.close()
            ls.close()


if __name__ == "__main__":
    harness.main()
