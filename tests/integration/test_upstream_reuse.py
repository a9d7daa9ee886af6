"""Upstream connections resting in curl's cache (issue 6).

fanoutd leaves a resting upstream socket registered for reading, so that
the next transfer on it costs no epoll_ctl, and unwatches it when it
becomes readable while nobody waits on it.  These tests check what can go
wrong with that: reuse itself, and a resting connection closed by the
upstream (a level-triggered EOF nobody unwatches spins a CPU, and the dead
connection must not be used again).
"""

import os
import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import time  # noqa: E402

import harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# CPU the idle daemon may use over the window (ticks are 10 ms; a spinning
# worker uses the whole window)
WINDOW = 0.5
IDLE_CPU_MAX = 0.15


class UpstreamReuseTest(harness.SharedDaemonTest):
    FAKES = ("up",)

    @classmethod
    def config(cls, f):
        cls.up = f["up"]
        # one worker: every request meets the same cache of connections
        return dict(upstreams={"up": cls.up},
                    routes={"r": {"match": "/", "upstreams": "up", "deadline": "5s"}},
                    server={"workers": "1"})

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.fd.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def assert_not_spinning(self, what):
        c0, t0 = self.cpu_seconds(), time.monotonic()
        # a measurement window, not a synchronisation: nothing is awaited
        time.sleep(WINDOW)
        used = self.cpu_seconds() - c0
        elapsed = time.monotonic() - t0
        self.assertLess(used, IDLE_CPU_MAX,
                        "idle fanoutd used %.2f s CPU in %.2f s after %s" %
                        (used, elapsed, what))

    def get(self, query):
        r, _ = self.call("/x?" + query, timeout=5)
        self.assertEqual(r.status, 200, r)
        return r

    def request_for(self, tag):
        return self.up.wait_for_tag(tag, timeout=3)

    def test_resting_connection_carries_the_next_requests(self):
        conns = set()
        for i in range(5):
            tag = self.tag("reuse")
            r = self.get("tag=%s&body=r%d" % (tag, i))
            self.assertEqual(r.body, b"r%d" % i)
            conns.add(r.header("x-upstream-conn"))
        self.assertEqual(len(conns), 1,
                         "5 sequential requests used upstream connections %s" % sorted(conns))
        self.assert_not_spinning("five reused transfers")

    def test_upstream_closes_a_resting_connection(self):
        tag = self.tag("close")
        r1 = self.get("tag=%s&body=one&after=close" % tag)
        self.assertEqual(r1.body, b"one")
        # the upstream has closed the connection fanoutd keeps in its cache
        self.up.wait_closed(self.request_for(tag), timeout=3)
        self.assert_not_spinning("the upstream closed a resting connection")
        tag2 = self.tag("close")
        r2 = self.get("tag=%s&body=two" % tag2)
        self.assertEqual(r2.body, b"two")
        self.assertNotEqual(r2.header("x-upstream-conn"), r1.header("x-upstream-conn"),
                            "the closed connection was used again")


class ProxyEnvironmentTest(harness.SharedDaemonTest):
    """Upstreams are reached directly: curl's proxy variables are ignored
    (fanoutd(8), ENVIRONMENT)."""
    FAKES = ("up", "trap")

    @classmethod
    def config(cls, f):
        cls.up, cls.trap = f["up"], f["trap"]
        proxy = "http://127.0.0.1:%d" % cls.trap.port
        return dict(upstreams={"up": cls.up},
                    routes={"r": {"match": "/", "upstreams": "up", "deadline": "5s"}},
                    env={"http_proxy": proxy, "HTTP_PROXY": proxy,
                         "all_proxy": proxy, "ALL_PROXY": proxy,
                         "no_proxy": None, "NO_PROXY": None})

    def test_proxy_variables_are_ignored(self):
        tag = self.tag("env")
        r, _ = self.call("/x?tag=%s&body=direct" % tag, timeout=5)
        self.assertEqual((r.status, r.body), (200, b"direct"), r)
        self.up.wait_for_tag(tag, timeout=3)
        self.assertEqual(self.trap.snapshot(), [], "a request went to the environment's proxy")


if __name__ == "__main__":
    harness.main()
