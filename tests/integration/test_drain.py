"""SIGTERM: drain, drain timeout, second SIGTERM."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


class DrainTest(harness.TestCase):

    def start(self, **server):
        self.up = self.fake("slow")
        return self.daemon(
            upstreams={"slow": self.up},
            routes={"r": {"match": "/", "upstreams": "slow"}},
            server=server)

    def draining(self, fd):
        """Wait until fanoutd has taken the SIGTERM in: /healthz says so."""
        h = harness.wait_until(
            lambda: (lambda r: r if r.status == 503 else None)(fd.healthz()),
            what="/healthz 503 during the drain")
        self.assertEqual(h.body.strip(), b"draining")

    def test_in_flight_request_finishes_during_drain(self):
        fd = self.start(drain_timeout="10m")
        with fd.client() as c:
            c.request("GET", "/x?hold=1&body=drained&tag=d1")
            self.up.wait_for_tag("d1")
            fd.sigterm()
            # /healthz answers 503 "draining" while the request is in flight
            self.draining(fd)
            # the listener is closed: new connections are refused
            self.assertTrue(harness.wait_until(lambda: harness.connect_refused(fd.port),
                                               what="connect refused after SIGTERM"))
            self.assertTrue(fd.running(), "fanoutd exited with a request in flight")
            self.up.release("d1")
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"drained"), r)
        self.assertTrue(r.conn_close, "no Connection: close during the drain: %r" % r)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_idle_keepalive_connection_closed_on_drain(self):
        # drain_timeout is what would close it if the drain did not: far away
        fd = self.start(drain_timeout="10m")
        with fd.client() as c:
            r = c.get("/x?body=one")
            self.assertEqual(r.status, 200)
            self.assertFalse(r.conn_close)
            fd.sigterm()
            c.wait_eof()
            self.assertEqual(bytes(c.buf), b"", "an idle connection was sent something")
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_drain_timeout_cancels_with_503(self):
        fd = self.start(drain_timeout="300ms")
        rid = "drain-timeout-1"
        with fd.client() as c:
            c.request("GET", "/x?hang=1&tag=dt1", [("X-Request-Id", rid)])
            req = self.up.wait_for_tag("dt1")
            t0 = time.monotonic()
            fd.sigterm()
            r = c.read_response()
        self.assertErrorJSON(r, 503)
        self.assertTrue(r.conn_close, r)
        # the lower bound is the test: no 503 before drain_timeout
        dt = r.received - t0
        self.assertGreaterEqual(dt, 0.3, "503 %.0f ms after SIGTERM, before the "
                                "drain timeout" % (dt * 1000))
        self.assertCancelled(self.up, req)
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (503, "shutdown"), e)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_second_sigterm_cancels_at_once(self):
        # the drain alone would wait ten minutes: the 503 comes from the
        # second signal
        fd = self.start(drain_timeout="10m")
        with fd.client() as c:
            c.request("GET", "/x?hang=1&tag=st1")
            req = self.up.wait_for_tag("st1")
            fd.sigterm()
            # the first signal has been taken in once /healthz says draining
            self.draining(fd)
            fd.sigterm()
            r = c.read_response()
        self.assertErrorJSON(r, 503)
        self.assertTrue(r.conn_close, r)
        self.assertCancelled(self.up, req)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_exit_0_when_idle(self):
        # nothing to wait for: the exit cannot be the drain timeout's
        fd = self.start(drain_timeout="10m")
        fd.sigterm()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_sigint_drains_too(self):
        import signal
        fd = self.start(drain_timeout="10m")
        with fd.client() as c:
            c.request("GET", "/x?hold=1&body=int&tag=si1")
            self.up.wait_for_tag("si1")
            fd.signal(signal.SIGINT)
            self.draining(fd)
            self.up.release("si1")
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"int"), r)
        self.assertTrue(r.conn_close, r)
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())


if __name__ == "__main__":
    harness.main()
