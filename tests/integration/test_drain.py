"""SIGTERM: drain, drain timeout, second SIGTERM."""

import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PROMPT = 0.2


class DrainTest(harness.TestCase):

    def start(self, **server):
        self.up = self.fake("slow")
        opts = {"keepalive_timeout": "30s"}
        opts.update(server)
        return self.daemon(
            upstreams={"slow": self.up},
            routes={"r": {"match": "/", "upstreams": "slow", "deadline": "30s"}},
            server=opts)

    def test_in_flight_request_finishes_during_drain(self):
        fd = self.start(drain_timeout="10s")
        with fd.client() as c:
            c.request("GET", "/x?delay=1500&body=drained&tag=d1")
            self.up.wait_for_tag("d1")
            fd.sigterm()
            # /healthz answers 503 "draining" while the request is in flight
            h = harness.wait_until(
                lambda: (lambda r: r if r.status == 503 else None)(fd.healthz()),
                2.0, "/healthz 503 during the drain")
            self.assertEqual(h.body.strip(), b"draining")
            # the listener is closed: new connections are refused
            self.assertTrue(harness.wait_until(lambda: harness.connect_refused(fd.port),
                                               2.0, "connect refused after SIGTERM"))
            r = c.read_response(timeout=5)
        self.assertEqual((r.status, r.body), (200, b"drained"), r)
        self.assertTrue(r.conn_close, "no Connection: close during the drain: %r" % r)
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())

    def test_idle_keepalive_connection_closed_on_drain(self):
        fd = self.start(drain_timeout="10s")
        with fd.client() as c:
            r = c.get("/x?body=one")
            self.assertEqual(r.status, 200)
            self.assertFalse(r.conn_close)
            t0 = time.monotonic()
            fd.sigterm()
            t1 = c.wait_eof(timeout=3)
            self.assertLess(t1 - t0, 1.0, "idle connection kept for %.0f ms" % ((t1 - t0) * 1000))
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())

    def test_drain_timeout_cancels_with_503(self):
        fd = self.start(drain_timeout="300ms")
        rid = "drain-timeout-1"
        with fd.client() as c:
            c.request("GET", "/x?delay=10000&tag=dt1", [("X-Request-Id", rid)])
            req = self.up.wait_for_tag("dt1")
            t0 = time.monotonic()
            fd.sigterm()
            r = c.read_response(timeout=5)
        self.assertErrorJSON(r, 503)
        self.assertTrue(r.conn_close, r)
        dt = r.received - t0
        self.assertGreater(dt, 0.2, "503 before the drain timeout")
        self.assertLess(dt, 1.5, "503 %.0f ms after SIGTERM" % (dt * 1000))
        self.assertClosedWithin(self.up, req, r.received, PROMPT)
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (503, "shutdown"), e)
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())

    def test_second_sigterm_cancels_at_once(self):
        fd = self.start(drain_timeout="30s")
        with fd.client() as c:
            c.request("GET", "/x?delay=10000&tag=st1")
            req = self.up.wait_for_tag("st1")
            fd.sigterm()
            # the first signal has been taken in once /healthz says draining
            harness.wait_until(lambda: fd.healthz().status == 503, 2.0,
                               "/healthz 503 after the first SIGTERM")
            t0 = time.monotonic()
            fd.sigterm()
            r = c.read_response(timeout=5)
        self.assertErrorJSON(r, 503)
        self.assertTrue(r.conn_close, r)
        self.assertLess(r.received - t0, 1.0)
        self.assertClosedWithin(self.up, req, t0, 1.0)
        self.assertEqual(fd.wait_exit(3), 0, fd.stderr_tail())

    def test_exit_0_when_idle(self):
        fd = self.start()
        t0 = time.monotonic()
        fd.sigterm()
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_sigint_drains_too(self):
        import signal
        fd = self.start(drain_timeout="10s")
        with fd.client() as c:
            c.request("GET", "/x?delay=500&body=int&tag=si1")
            self.up.wait_for_tag("si1")
            fd.signal(signal.SIGINT)
            r = c.read_response(timeout=5)
        self.assertEqual((r.status, r.body), (200, b"int"), r)
        self.assertTrue(r.conn_close, r)
        self.assertEqual(fd.wait_exit(5), 0, fd.stderr_tail())


if __name__ == "__main__":
    harness.main()
