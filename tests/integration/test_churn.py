"""Churn: many clients hang up in every way; nothing may be left behind."""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

N = 100
BATCH = 20


class ChurnTest(harness.TestCase):

    def test_aborted_clients_leave_nothing(self):
        up = self.fake("slow")
        # every timeout is the harness's 10 minutes: only the hang-ups end
        # anything, and the upstream never answers
        fd = self.daemon(
            upstreams={"slow": up},
            routes={"r": {"match": "/", "upstreams": "slow"}})
        ways = ["close", "half", "rst", "close-mid-head", "rst-mid-head"]
        m0 = fd.metrics()
        carried = []            # upstream requests whose client hung up
        n_full = 0
        for start in range(0, N, BATCH):
            batch = []
            for i in range(start, min(start + BATCH, N)):
                how = ways[i % len(ways)]
                c = fd.client()
                self.addCleanup(c.__exit__)
                tag = "churn%d" % i
                raw = harness.build_request("GET", "/c?hang=1&tag=" + tag)
                if how.endswith("mid-head"):
                    c.send(raw[:len(raw) // 2])
                else:
                    c.send(raw)
                    n_full += 1
                batch.append((c, how, tag))
            # wait for every complete request to reach the upstream, then
            # hang up all of them
            for c, how, tag in batch:
                if not how.endswith("mid-head"):
                    carried.append(up.wait_for_tag(tag))
            for c, how, tag in batch:
                c.abort(how.replace("-mid-head", ""))
        up.wait_connections_closed([r.conn for r in carried])
        fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
        fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)
        fd.wait_metric("fanoutd_connections_active", lambda v: v == 0)
        # no request was answered by the upstream
        self.assertTrue(all(r.responded is None for r in carried))
        self.assertEqual(len(carried), n_full)
        targets = {r.target for r in carried}
        # every full request was cancelled as client_closed, exactly once
        fd.wait_metric("fanoutd_cancellations_total",
                       lambda v: v >= m0.get("fanoutd_cancellations_total",
                                             reason="client_closed") + n_full,
                       reason="client_closed")
        m1 = fd.metrics()
        self.assertEqual(m1.get("fanoutd_cancellations_total", reason="client_closed"),
                         m0.get("fanoutd_cancellations_total", reason="client_closed")
                         + n_full)
        entries = harness.wait_until(
            lambda: (lambda es: es if len(es) >= n_full else None)(
                [e for e in fd.access_log_lines() if e.get("path") in targets]),
            what="%d access log lines" % n_full)
        self.assertEqual(len(entries), n_full, "one access log line per request")
        for e in entries:
            self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # and it still serves
        r = fd.get("/c?body=alive")
        self.assertEqual((r.status, r.body), (200, b"alive"), r)
        self.assertLessEqual(len(up.open_connections()), 1,
                             "upstream connections left open: %r" % up.open_connections())


if __name__ == "__main__":
    harness.main()
