"""SIGHUP: reload the configuration.

Good reloads change routes, upstreams, listen addresses (client and admin
together) and the access log for new requests; a request in flight finishes
on the configuration it started with; a bad reload (a config error, or an
address that cannot be bound) changes nothing at all and says why as
FILE:LINE.  Every reload is counted in fanoutd_config_reloads_total{result}.
"""

import re
import threading

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


def line_of(text, needle):
    """1-based number of the first line of TEXT containing NEEDLE."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the config" % needle)


class ReloadTest(harness.TestCase):

    WORKERS = 1

    def setUp(self):
        super().setUp()
        self.x = self.fake("x", defaults={"body": "from-x"})
        self.y = self.fake("y", defaults={"body": "from-y"})

    def start(self, **kw):
        opts = dict(upstreams={"x": self.x, "y": self.y},
                    routes={"a": {"match": "/a", "upstreams": "x"}},
                    server={"workers": str(self.WORKERS)})
        opts.update(kw)
        return self.daemon(**opts)

    def assertServedBy(self, resp, body):
        self.assertEqual((resp.status, resp.body), (200, body.encode()), resp)

    # ------------------------------------------------------------------
    def test_good_reload_changes_the_route_for_new_requests(self):
        fd = self.start()
        with fd.client() as c:
            self.assertServedBy(c.get("/a/1"), "from-x")
            fd.routes["a"]["upstreams"] = "y"
            ok, err = fd.reload("ok")
            self.assertEqual((ok, err), (1, 0))
            # the same keep-alive connection: its next request is new, so it
            # takes the new configuration
            r = c.get("/a/2")
            self.assertServedBy(r, "from-y")
            self.assertFalse(r.conn_close, r)
        self.assertServedBy(fd.get("/a/3"), "from-y")
        self.assertEqual([q.path for q in self.y.requests], ["/a/2", "/a/3"])
        self.assertEqual([q.path for q in self.x.requests], ["/a/1"])
        text = fd.stderr_text()
        self.assertRegex(text, harness.LOG_START + r"info reloaded %s\b" % re.escape(fd.config_path))
        self.assertNotIn("reload failed", text)

    def test_upstream_url_change_applies_to_the_same_name(self):
        fd = self.start(upstreams={"u": self.x},
                        routes={"a": {"match": "/a", "upstreams": "u"}})
        self.assertServedBy(fd.get("/a"), "from-x")
        fd.upstreams["u"] = self.y
        fd.reload("ok")
        self.assertServedBy(fd.get("/a"), "from-y")
        self.assertServedBy(fd.get("/a"), "from-y")
        self.assertEqual(len(self.x.requests), 1)

    def test_in_flight_request_finishes_on_the_configuration_it_started_with(self):
        fd = self.start()
        rid = "reload-inflight-1"
        with fd.client() as slow:
            # held at x until the new configuration has been seen at work
            slow.request("GET", "/a/slow?hold=1&tag=inflight",
                         [("X-Request-Id", rid)])
            req = self.x.wait_for_tag("inflight")
            # The new configuration drops upstream x altogether and gives
            # route a a deadline the slow request does not meet (it is
            # held past it: the 504 below comes after the reload).
            fd.upstreams = {"y": self.y}
            fd.routes = {"a": {"match": "/a", "upstreams": "y",
                               "deadline": "300ms"}}
            fd.reload("ok")
            # a new request takes the new configuration at once ...
            self.assertServedBy(fd.get("/a/new"), "from-y")
            r = fd.get("/a/late?hang=1&tag=late")
            self.assertErrorJSON(r, 504)      # ... deadline included
            self.assertCancelled(self.y, self.y.wait_for_tag("late"))
            self.assertIsNone(req.responded)
            # ... while the one in flight still finishes from x, on the old
            # deadline, with a 200
            self.x.release("inflight")
            resp = slow.read_response()
        self.assertServedBy(resp, "from-x")
        self.assertIsNotNone(req.responded)
        self.assertLessEqual(req.responded, resp.received)
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (200, None), e)
        self.assertEqual([u.get("name") for u in e.get("upstreams", [])], ["x"], e)
        self.assertEqual(len(self.x.requests), 1, self.x.requests)

    def test_bad_reload_keeps_the_running_configuration(self):
        fd = self.start()
        self.assertServedBy(fd.get("/a"), "from-x")
        # a valid change and two errors in the same file: nothing applies
        fd.routes["a"]["upstreams"] = "y"
        fd.routes["b"] = {"match": "/b", "upstreams": "nosuch"}
        fd.server_opts["listn"] = "127.0.0.1:1"
        text = fd.render_config()
        ok, err = fd.reload("error")
        self.assertEqual((ok, err), (0, 1))
        self.assertServedBy(fd.get("/a"), "from-x")
        r = fd.get("/b")
        self.assertErrorJSON(r, 404)
        log = fd.stderr_text()
        path = re.escape(fd.config_path)
        n = line_of(text, "listn =")
        self.assertRegex(log, harness.LOG_START + r"error reload: %s:%d: .*'listn'" % (path, n))
        self.assertRegex(log, harness.LOG_START + r"error reload: %s:\d+: .*nosuch" % path)
        self.assertRegex(log, harness.LOG_START + r"error reload failed, keeping the running "
                              r"configuration$")
        self.assertNotRegex(log, harness.LOG_START + r"info reloaded ")
        # fixing the file makes the next reload good
        del fd.routes["b"]
        del fd.server_opts["listn"]
        self.assertEqual(fd.reload("ok"), (1, 1))
        self.assertServedBy(fd.get("/a"), "from-y")

    def test_reload_error_in_an_unreadable_file(self):
        fd = self.start()
        with open(fd.config_path, "w") as f:
            f.write("[server\nlisten = 127.0.0.1:%d\n" % fd.port)
        before = fd.reload_counts()
        fd.sighup()
        fd.wait_metric("fanoutd_config_reloads_total",
                       lambda v: v == before[1] + 1, result="error")
        self.assertRegex(fd.stderr_text(), harness.LOG_START + r"error reload: %s:1: "
                         % re.escape(fd.config_path))
        self.assertServedBy(fd.get("/a"), "from-x")
        self.assertEqual(fd.healthz().status, 200)

    def test_reload_moves_client_and_admin_listeners(self):
        fd = self.start()
        old_port, old_admin = fd.port, fd.admin_port
        with fd.client() as kept:
            self.assertServedBy(kept.get("/a"), "from-x")
            fd.port = harness.free_port()
            fd.admin_port = harness.free_port()
            fd.reload("ok")
            self.assertTrue(harness.connect_refused(old_port),
                            "old client address still accepts")
            self.assertTrue(harness.connect_refused(old_admin),
                            "old admin address still accepts")
            self.assertServedBy(fd.get("/a"), "from-x")
            self.assertEqual(fd.healthz().body.strip(), b"ok")
            # a connection accepted on the old address is not cut
            self.assertServedBy(kept.get("/a"), "from-x")
        log = fd.stderr_text()
        self.assertIn("listening on 127.0.0.1:%d" % fd.port, log)
        self.assertIn("no longer listening on 127.0.0.1:%d" % old_port, log)

    def _occupied(self):
        """A port bound by another socket (without SO_REUSEADDR, so no bind
        of fanoutd's can share it) that does not listen: a connect to it is
        refused at once.  (A listening one would take fd.reload()'s look at
        the new admin port for an admin listener that never answers.)"""
        return self.refused().port

    def test_unbindable_address_fails_the_whole_reload(self):
        fd = self.start()
        port, admin = fd.port, fd.admin_port
        for what in ("admin", "client"):
            with self.subTest(occupied=what):
                free = harness.free_port()
                busy = self._occupied()
                fd.port, fd.admin_port = ((free, busy) if what == "admin"
                                          else (busy, free))
                fd.routes["a"]["upstreams"] = "y"
                fd.reload("error")
                self.assertEqual((fd.port, fd.admin_port), (port, admin))
                # neither set moved: the free new address was not kept bound
                self.assertTrue(harness.connect_refused(free),
                                "new %s address bound by a failed reload"
                                % ("client" if what == "admin" else "admin"))
                self.assertServedBy(fd.get("/a"), "from-x")
                self.assertEqual(fd.healthz().status, 200)
                fd.routes["a"]["upstreams"] = "x"
        self.assertEqual(fd.reload_counts(), (0, 2))
        log = fd.stderr_text()
        self.assertRegex(log, harness.LOG_START + r"error .*cannot listen on 127\.0\.0\.1:\d+")
        # the same closing line as any other failed reload, so that one grep
        # finds every failed reload
        self.assertEqual(len(re.findall(harness.LOG_START + r"error reload failed, keeping the "
                                        r"running configuration$", log)), 2,
                         "a reload failed on a bind error without saying "
                         "'reload failed, keeping the running configuration'")

    def test_reload_moves_the_access_log(self):
        fd = self.start()
        fd.get("/a?tag=one")
        fd.wait_access_log(lambda e: "tag=one" in e["path"])
        old = fd.access_log
        fd.access_log = old + ".2"
        fd.reload("ok")
        fd.get("/a?tag=two")
        fd.wait_access_log(lambda e: "tag=two" in e["path"])
        with open(old) as f:
            self.assertNotIn("tag=two", f.read())

    def test_access_log_that_cannot_be_opened_fails_the_reload(self):
        fd = self.start()
        old = fd.access_log
        fd.access_log = "/nonexistent-dir/fanoutd/access.log"
        fd.routes["a"]["upstreams"] = "y"
        fd.reload("error")
        fd.access_log = old
        self.assertServedBy(fd.get("/a?tag=still"), "from-x")
        fd.wait_access_log(lambda e: "tag=still" in e["path"])
        log = fd.stderr_text()
        self.assertIn("/nonexistent-dir/fanoutd/access.log", log)
        self.assertRegex(log, harness.LOG_START + r"error reload failed, keeping the running "
                              r"configuration$")

    def test_reloads_under_load_lose_nothing(self):
        fd = self.start()
        stop = threading.Event()
        results = []

        def load():
            while not stop.is_set():
                try:
                    r = fd.get("/a?body=ok")
                    results.append(r.status)
                except Exception as e:        # a refused connect is a failure
                    results.append(repr(e))
        t = threading.Thread(target=load)
        t.start()
        try:
            harness.wait_until(lambda: len(results) >= 20, what="first requests")
            for i in range(10):
                fd.routes["a"]["upstreams"] = "y" if i % 2 == 0 else "x"
                fd.reload("ok")
            n = len(results)
            harness.wait_until(lambda: len(results) >= n + 20, what="more requests")
        finally:
            stop.set()
            t.join(harness.PATIENCE)
        bad = [r for r in results if r != 200]
        self.assertEqual(bad, [], "%d of %d requests failed across 10 reloads"
                         % (len(bad), len(results)))
        self.assertEqual(fd.reload_counts(), (10, 0))

    def test_reload_then_sigterm_drains_and_exits_0(self):
        # a reload does not start a drain, and the daemon still stops cleanly
        fd = self.start()
        fd.reload("ok")
        self.assertEqual(fd.healthz().status, 200)
        fd.sigterm()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())



class ReloadTwoWorkersTest(ReloadTest):
    """The same with two worker loops: every worker takes the new
    configuration and the new listeners, or none does."""
    WORKERS = 2


if __name__ == "__main__":
    harness.main()
