"""Upstream connections resting in curl's cache (issue 6).

fanoutd leaves a resting upstream socket registered for reading, so that
the next transfer on it costs no epoll_ctl, and unwatches it when it
becomes readable while nobody waits on it; a resting HTTP/1.1 connection
that receives bytes is retired (curl 7.88 would take them for the next
answer).  These tests check what can go wrong with that: reuse itself, a
resting connection closed by the upstream (a level-triggered EOF nobody
unwatches spins a CPU, and the dead connection must not be used again),
a stale response on a resting connection (never the next request's
answer), and streamed answers that pause on a reused connection (never
cut for "resting").
"""

import hashlib
import os
import re
import socket
import sys
import threading
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
                    routes={"r": {"match": "/", "upstreams": "up"}},
                    server={"workers": "1", "log_level": "debug"})

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
        r, _ = self.call("/x?" + query)
        self.assertEqual(r.status, 200, r)
        return r

    def request_for(self, tag):
        return self.up.wait_for_tag(tag)

    def post_elsewhere(self, bad, what):
        """A POST after the resting connection BAD went bad must be carried
        whole, once, by another connection.  A GET cannot tell: a dead
        connection cannot answer, and curl itself retries a GET that found
        a reused connection dead on a fresh one.  A body that was streamed
        (mode proxy streams it as it arrives) cannot be sent again: a POST
        on a connection that dies under it is a 502 ("rewinding of the
        data stream failed"), so this one fails if BAD is used again."""
        tag = self.tag("post")
        body = os.urandom(3000)
        r, _ = self.call("/x?echo=1&tag=" + tag, method="POST", body=body)
        self.assertEqual(r.status, 200, "%s: the next POST was not answered: %r" % (what, r))
        echo = r.json()
        self.assertEqual((echo["method"], echo["body_len"], echo["body_sha256"]),
                         ("POST", len(body), hashlib.sha256(body).hexdigest()), what)
        reqs = self.up.requests_tagged(tag)
        self.assertEqual(len(reqs), 1, "%s: the POST went upstream as %r" % (what, reqs))
        self.assertIsNot(reqs[0].conn, bad, what)
        return r

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
        req = self.request_for(tag)
        self.up.wait_closed(req)
        self.assert_not_spinning("the upstream closed a resting connection")
        # the dead connection is not used again
        self.post_elsewhere(req.conn, "after the upstream closed the resting connection")


    def test_stale_response_on_a_resting_connection(self):
        tag = self.tag("junk")
        self.get("tag=%s&body=one&after=junk" % tag)
        req = self.request_for(tag)
        self.up.wait_for(lambda: req.after_sent is not None,
                         what="a stale 408 sent on the resting connection")
        # fanoutd lets go of the poisoned connection (it shuts it at once)
        self.up.wait_closed(req)
        self.assert_not_spinning("a stale response arrived on a resting connection")
        tag2 = self.tag("junk")
        r2 = self.get("tag=%s&body=two" % tag2)
        self.assertEqual(r2.body, b"two", "the stale 408 became the next answer: %r" % r2)
        # nor does the connection that had it carry anything again
        self.post_elsewhere(req.conn, "after a stale answer on a resting connection")

    def test_a_post_lost_with_its_reused_connection_spoils_nothing(self):
        # A POST on a resting connection that the upstream closes without
        # answering cannot be sent again (its body was streamed): a 502.
        # The transfer's curl handle must not carry that failure into the
        # next transfers: with libcurl 8.14 a pooled handle did, and every
        # later request on the worker was a 502 that never left fanoutd.
        tag = self.tag("warm")
        r = self.get("tag=%s&body=warm" % tag)
        warm = self.request_for(tag)
        tag = self.tag("lost")
        r, _ = self.call("/x?close=1&tag=" + tag, method="POST", body=b"p" * 500)
        self.assertEqual(r.status, 502, r)
        lost = self.request_for(tag)
        self.assertIs(lost.conn, warm.conn, "the POST did not go on the resting "
                      "connection: nothing here is tested")
        for i in range(3):
            tag = self.tag("after")
            r, _ = self.call("/x?body=a%d&tag=%s" % (i, tag))
            self.assertEqual((r.status, r.body), (200, b"a%d" % i),
                             "request %d after the lost POST: %r" % (i, r))
            self.request_for(tag)

    def test_paused_answers_on_reused_connections_arrive_whole(self):
        # large answers on reused connections, read by a client that takes
        # its time: curl pauses them, sometimes before any socket callback
        size = 600000
        for i in range(6):
            tag = self.tag("big")
            with self.fd.client() as c:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                c.request("GET", "/x?tag=%s&size=%d" % (tag, size))
                r = c.read_response()
            self.assertEqual((r.status, len(r.body)), (200, size), "answer %d cut" % i)


    def test_idle_worker_trims_its_handle_pool(self):
        """Handles that sent a body keep curl's 64 KiB send buffer: at most
        8 are pooled, and a worker quiet for two 5 s ticks frees them all
        and keeps 8 lean ones (issue 20).  20 POSTs in flight at once leave
        20 such handles; a pool that kept them all says "was ..., 20"."""
        start = len(self.fd.stderr_text())
        results = []

        def post(i):
            r, _ = self.call("/x?delay=300&tag=" + self.tag("fat"),
                             method="POST", body=b"b" * 4000)
            results.append(r.status)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(harness.PATIENCE)
        self.assertEqual(results, [200] * 20)
        pat = re.compile(r"idle: pool trimmed lean=(\d+) fat=(\d+) "
                         r"\(was (\d+), (\d+)\)")
        # the trim comes 10 to 15 s after the last transfer
        m = harness.wait_until(
            lambda: pat.search(self.fd.stderr_text()[start:]),
            what="the idle trim in the log")
        lean, fat, was_lean, was_fat = map(int, m.groups())
        self.assertEqual(fat, 0, m.group(0))
        self.assertLessEqual(lean, 8, m.group(0))
        self.assertTrue(1 <= was_fat <= 8, m.group(0))
        # still serving, with a body, from the trimmed pool
        r, _ = self.call("/x?echo=1", method="POST", body=b"after")
        self.assertEqual(r.status, 200, r)


class ProxyEnvironmentTest(harness.SharedDaemonTest):
    """Upstreams are reached directly: curl's proxy variables are ignored
    (fanoutd(8), ENVIRONMENT)."""
    FAKES = ("up", "trap")

    @classmethod
    def config(cls, f):
        cls.up, cls.trap = f["up"], f["trap"]
        proxy = "http://127.0.0.1:%d" % cls.trap.port
        return dict(upstreams={"up": cls.up},
                    routes={"r": {"match": "/", "upstreams": "up"}},
                    env={"http_proxy": proxy, "HTTP_PROXY": proxy,
                         "all_proxy": proxy, "ALL_PROXY": proxy,
                         "no_proxy": None, "NO_PROXY": None})

    def test_proxy_variables_are_ignored(self):
        tag = self.tag("env")
        r, _ = self.call("/x?tag=%s&body=direct" % tag)
        self.assertEqual((r.status, r.body), (200, b"direct"), r)
        self.up.wait_for_tag(tag)
        self.assertEqual(self.trap.snapshot(), [], "a request went to the environment's proxy")


if __name__ == "__main__":
    harness.main()
