"""Client hang-ups cancel the upstream work: close, half-close, reset."""

import itertools

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

_tags = itertools.count(1)


class CancelTest(harness.SharedDaemonTest):
    half_close = None          # default: cancel
    FAKES = ("slow",)

    @classmethod
    def config(cls, f):
        cls.up = f["slow"]
        server = {}
        if cls.half_close:
            server["half_close"] = cls.half_close
        return dict(
            upstreams={"slow": cls.up},
            routes={"r": {"match": "/", "upstreams": "slow"}},
            server=server)

    def pending(self):
        """A client with a request that the upstream never answers; returns
        (client, upstream request, request id)."""
        tag = "c%d" % next(_tags)
        rid = "cancel-" + tag
        c = self.fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/slow?hang=1&tag=%s" % tag, [("X-Request-Id", rid)])
        req = self.up.wait_for_tag(tag)
        return c, req, rid


class CancelOnHangupTest(CancelTest):

    def _check_abort(self, how):
        m0 = self.fd.metrics()
        cc0 = m0.get("fanoutd_cancellations_total", reason="client_closed")
        c, req, rid = self.pending()
        c.abort(how)
        self.assertCancelled(self.up, req, "upstream connection after client %s" % how)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 499, e)
        self.assertEqual(e["cancel_reason"], "client_closed", e)
        self.assertEqual(e["route"], "r")
        # the upstream leg was cut, not answered
        self.assertEqual(len(e["upstreams"]), 1, e)
        self.assertNotEqual(e["upstreams"][0].get("status"), 200, e)
        self.fd.wait_metric("fanoutd_cancellations_total", lambda v: v >= cc0 + 1,
                            reason="client_closed")
        m1 = self.fd.metrics()
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="client_closed"),
                         cc0 + 1, "exactly one cancellation counted")
        for r in ("deadline", "shutdown", "superseded"):
            self.assertEqual(m1.get("fanoutd_cancellations_total", reason=r),
                             m0.get("fanoutd_cancellations_total", reason=r), r)
        self.fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)
        if how == "half":
            # the half-closed client is not answered; fanoutd closes it
            c.wait_eof()
            self.assertEqual(bytes(c.buf), b"", "a cancelled request was answered")

    def test_close(self):
        self._check_abort("close")

    def test_half_close(self):
        self._check_abort("half")

    def test_reset(self):
        self._check_abort("rst")

    def test_other_request_unaffected(self):
        # two requests in flight; hang up one, the other still completes:
        # it is answered only once the first one's cancel reached upstream
        keep = self.fd.client()
        self.addCleanup(keep.__exit__)
        keep.request("GET", "/slow?hold=1&body=survivor&tag=survivor")
        kreq = self.up.wait_for_tag("survivor")
        c, req, rid = self.pending()
        c.close()
        self.assertCancelled(self.up, req)
        self.assertIsNone(kreq.conn.closed, "the survivor's upstream connection "
                          "was closed by the other request's cancel")
        self.up.release("survivor")
        r = keep.read_response()
        self.assertEqual((r.status, r.body), (200, b"survivor"), r)
        self.assertIsNotNone(kreq.responded)
        if kreq.conn.closed is not None:
            self.assertGreaterEqual(kreq.conn.closed, kreq.responded,
                                    "the surviving request's upstream connection "
                                    "was closed before it answered")

    def test_close_mid_request_body(self):
        # Mode proxy streams the body: the head goes upstream before the
        # body is in.  A client gone mid-body leaves no request, transfer or
        # connection, and the upstream's half-sent request is closed.
        for how in ("close", "rst"):
            tag = "mb%d" % next(_tags)
            c = self.fd.client()
            self.addCleanup(c.__exit__)
            c.send(harness.build_request(
                "POST", "/slow?tag=" + tag,
                [("Content-Length", "100000")], body=b"") + b"y" * 1000)
            # the head was parsed and its transfer started: the upstream has it
            req = self.up.wait_for_tag(tag)
            self.fd.wait_metric("fanoutd_requests_in_flight", lambda v: v >= 1)
            c.abort(how)
            self.assertCancelled(self.up, req, "upstream connection of a half-sent POST")
            self.assertIsNone(req.complete, "the upstream got the whole body")
            self.fd.wait_metric("fanoutd_connections_active", lambda v: v == 0)
            self.fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
            self.fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

    def test_cancel_latency_histogram_counts(self):
        m0 = self.fd.metrics()
        n0 = m0.sum("fanoutd_cancel_latency_seconds_count")
        c, req, rid = self.pending()
        c.close()
        self.assertCancelled(self.up, req)
        self.fd.wait_access_log(request_id=rid)
        self.fd.wait_metric("fanoutd_cancel_latency_seconds_count", lambda v: v >= n0 + 1)


class HalfCloseWaitTest(CancelTest):
    half_close = "wait"

    def test_half_closed_client_gets_response(self):
        tag = "hw%d" % next(_tags)
        seen = lambda: self.fd.stderr_text().count("client half-closed")
        n0 = seen()
        with self.fd.client() as c:
            c.request("GET", "/slow?hold=1&body=still-here&tag=" + tag)
            req = self.up.wait_for_tag(tag)
            c.half_close()
            # answered only once fanoutd has taken in the FIN (its debug
            # log says so): the FIN has to meet a request in flight
            harness.wait_until(lambda: seen() > n0, what="fanoutd to see the FIN")
            self.up.release(tag)
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"still-here"), r)
        self.assertIsNotNone(req.responded)
        if req.conn.closed is not None:
            self.assertGreaterEqual(req.conn.closed, req.responded,
                                    "upstream connection closed before it answered")

    def test_reset_still_cancels(self):
        # A FIN alone cannot tell close() from shutdown(SHUT_WR), so with
        # half_close = wait only a reset is a certain hang-up.
        m0 = self.fd.metrics()
        cc0 = m0.get("fanoutd_cancellations_total", reason="client_closed")
        c, req, rid = self.pending()
        c.reset()
        self.assertCancelled(self.up, req)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        self.fd.wait_metric("fanoutd_cancellations_total", lambda v: v == cc0 + 1,
                            reason="client_closed")


if __name__ == "__main__":
    harness.main()
