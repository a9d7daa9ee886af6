"""Listen addresses are fanoutd's alone.

Workers share a client address through SO_REUSEPORT, and that option would
as gladly let a second process in: the kernel would then split the clients
between two configurations.  So an address fanoutd does not hold yet must
not be held by any other socket: at start-up that is exit 2 with
"cannot listen on ADDR: address in use by PID (COMM)", at a reload a failed
reload that keeps the running configuration.  fanoutd's own workers still
share the address, and a reload that keeps an address keeps its sockets.
"""

import os
import socket

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

REQUESTS = 8


class ListenTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.a_up = self.fake("a", defaults={"body": "from-a"})
        self.b_up = self.fake("b", defaults={"body": "from-b"})

    def start(self, up, start=True, **kw):
        opts = dict(upstreams={"u": up},
                    routes={"r": {"match": "/", "upstreams": "u"}},
                    server={"workers": "2"})
        opts.update(kw)
        return self.daemon(start=start, **opts)

    def start_fails(self, up, port=None, admin_port=None):
        """Run a fanoutd on these ports (fresh ones where None) to its
        exit, which must be 2; its stderr.  (Not Fanoutd.start(): its
        readiness check would find the other daemon's /healthz.)"""
        d = self.start(up, start=False)
        d.port = port or harness.free_port()
        d.admin_port = admin_port or harness.free_port()
        d.write_config()
        p = harness.run_cli(["-c", d.config_path], binary=d.binary)
        self.assertEqual(p.returncode, 2, p.stderr)
        return p.stderr

    def holder(self):
        """A plain listening socket of this process on a free port."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        return s, s.getsockname()[1]

    def requests_one_per_connection(self, d, n):
        for i in range(n):
            with d.client() as c:
                r = c.get("/n/%d" % i)
            self.assertEqual((r.status, r.body), (200, b"from-a"), r)

    # ------------------------------------------------------------------
    def test_twin_on_the_same_address_exits_2_and_names_the_holder(self):
        a = self.start(self.a_up)
        err = self.start_fails(self.b_up, port=a.port)
        self.assertRegex(err, r"cannot listen on 127\.0\.0\.1:%d: address in "
                              r"use by %d \(" % (a.port, a.pid))
        # every request, each on a new connection, reaches A: none was
        # taken by a socket of B's
        self.requests_one_per_connection(a, REQUESTS)
        self.assertEqual(len(self.a_up.snapshot()), REQUESTS)
        self.assertEqual(self.b_up.snapshot(), [])
        # A counts a request once its answer is written: wait for the
        # count, then check it is exact
        harness.wait_until(lambda: a.metrics().sum("fanoutd_requests_total") >= REQUESTS,
                           what="%d requests counted" % REQUESTS)
        harness.wait_until(lambda: len(a.access_log_lines()) >= REQUESTS,
                           what="%d access log lines" % REQUESTS)
        self.assertEqual(a.metrics().sum("fanoutd_requests_total"), REQUESTS)
        self.assertEqual(len(a.access_log_lines()), REQUESTS)

    def test_twin_on_the_same_admin_address_exits_2(self):
        a = self.start(self.a_up)
        err = self.start_fails(self.b_up, admin_port=a.admin_port)
        self.assertRegex(err, r"cannot listen on 127\.0\.0\.1:%d \(admin\): "
                              r"address in use by %d \(" % (a.admin_port, a.pid))
        self.assertEqual(a.healthz().status, 200)
        self.requests_one_per_connection(a, 2)

    def test_a_foreign_listener_makes_start_fail_naming_its_pid(self):
        _, port = self.holder()
        err = self.start_fails(self.a_up, port=port)
        self.assertRegex(err, r"(?m)error cannot listen on 127\.0\.0\.1:%d: "
                              r"address in use by %d \([^)]+\)" % (port, os.getpid()))

    def test_own_workers_share_the_address(self):
        d = self.start(self.a_up, server={"workers": "4"})
        log = d.stderr_text()
        for w in range(4):
            self.assertRegex(log, r"listening on 127\.0\.0\.1:%d worker=%d\b"
                                  % (d.port, w))
        self.assertIn("fanoutd ready workers=4", log)
        self.requests_one_per_connection(d, REQUESTS)
        self.assertEqual(len(self.a_up.snapshot()), REQUESTS)

    def test_reload_keeping_the_address_keeps_its_sockets(self):
        d = self.start(self.a_up)
        d.routes["r"]["deadline"] = "7s"
        d.reload("ok")
        self.assertNotIn("cannot listen", d.stderr_text())
        self.requests_one_per_connection(d, 2)

    def test_reload_adding_a_held_address_fails_and_keeps_serving(self):
        d = self.start(self.a_up)
        s, held = self.holder()
        d.server_opts["listen"] = "127.0.0.1:%d, 127.0.0.1:%d" % (d.port, held)
        d.routes["r"]["upstreams"] = "v"
        d.upstreams["v"] = self.b_up
        d.reload("error")
        log = d.stderr_text()
        self.assertRegex(log, harness.LOG_START + r"error cannot listen on "
                         r"127\.0\.0\.1:%d: address in use by %d \("
                         % (held, os.getpid()))
        self.assertRegex(log, harness.LOG_START + r"error reload failed, "
                         r"keeping the running configuration$")
        # the old configuration serves, on the old address
        self.requests_one_per_connection(d, 3)
        self.assertEqual(self.b_up.snapshot(), [])
        self.assertEqual(d.reload_counts(), (0, 1))
        # and a free new address is taken by a later reload
        s.close()
        d.reload("ok")
        self.assertRegex(d.stderr_text(), r"listening on 127\.0\.0\.1:%d "
                                          r"worker=1" % held)


if __name__ == "__main__":
    harness.main()
