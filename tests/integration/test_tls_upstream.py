"""Upstreams over TLS (https:// URLs): certificate checks per upstream, and
HTTP/2 over TLS (http2 = on) with a cancelled stream reset on a connection
that stays up.  The TLS upstream is a second fanoutd with a tls listener, in
front of a fake upstream, so both ends of each stream are seen."""

import itertools
import shutil
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
import h2raw  # noqa: E402

_tags = itertools.count(1)


class TlsUpstreamTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        h2raw.tool("openssl")
        self.certdir = tempfile.mkdtemp(prefix="fanoutd-tlsup-")
        self.addCleanup(shutil.rmtree, self.certdir, True)
        self.cert, self.key = h2raw.make_cert(self.certdir, "up", cn="localhost")
        self.fake_up = self.fake("origin")
        # The TLS upstream: a fanoutd with http2 on its tls listener.
        self.tls_up = h2raw.TlsFanoutd(
            cert=self.cert, key=self.key,
            server={"http2": "on", "workers": "1"},
            upstreams={"origin": self.fake_up},
            routes={"r": {"match": "/", "upstreams": "origin"}})
        self._daemons.append(self.tls_up)
        self.addCleanup(self.tls_up.cleanup)
        self.tls_up.start()
        self.url = "https://localhost:%d" % self.tls_up.tls_port

    def start(self, upstreams, routes):
        # One worker: its handles and connections are the ones followed.
        return self.daemon(server={"workers": "1"}, upstreams=upstreams,
                           routes=routes)

    def test_each_upstream_checks_with_its_own_ca(self):
        # own trusts the test certificate through ca_file; sys has the
        # system's CAs, which do not know it; off checks nothing. The
        # three take turns on the same curl handles, so a CA file or a
        # check turned off must not carry over from one to the next.
        fd = self.start(
            upstreams={"own": {"url": self.url, "ca_file": self.cert},
                       "sys": {"url": self.url},
                       "off": {"url": self.url, "tls_verify": "off"}},
            routes={n: {"match": "/" + n, "upstreams": n}
                    for n in ("own", "sys", "off")})
        for i, n in enumerate(["own", "sys", "own", "off", "sys", "own",
                               "sys"]):
            r = fd.get("/%s?body=%s" % (n, n))
            if n == "sys":
                self.assertEqual(r.status, 502, "step %d: %r" % (i, r))
            else:
                self.assertEqual((r.status, r.body), (200, n.encode()),
                                 "step %d (%s)" % (i, n))
        # each line is written after its answer went out: wait for the last
        errs = harness.wait_until(
            lambda: (lambda ls: len(ls) >= 3 and ls)(
                [e for e in fd.access_log_lines() if e["route"] == "sys"]),
            what="three access log lines of route sys")
        self.assertEqual(len(errs), 3, errs)
        for e in errs:
            self.assertEqual(e["upstreams"][0].get("error"), "connect", e)

    def test_h2_over_tls_cancel_resets_only_its_stream(self):
        fd = self.start(
            upstreams={"up": {"url": self.url, "ca_file": self.cert,
                              "http2": "on"}},
            routes={"r": {"match": "/", "upstreams": "up"}})
        self.assertEqual(fd.get("/warm?body=w").status, 200)
        m0 = self.tls_up.metrics()
        held = []
        for _ in range(3):
            t = "tu%d" % next(_tags)
            c = fd.client()
            self.addCleanup(c.__exit__)
            c.request("GET", "/hold?hold=1&body=kept-%s&tag=%s" % (t, t))
            held.append((c, self.fake_up.wait_for_tag(t)))
        # one TLS connection carries the three streams
        self.assertEqual(
            self.tls_up.metrics().sum("fanoutd_connections_by_proto_total"),
            m0.sum("fanoutd_connections_by_proto_total"))
        (a, ra), (b, rb), (c, rc) = held
        a.close()
        # the TLS upstream gets RST_STREAM: its leg to the origin is cut,
        # and the origin (which would hold it for ever) sees that
        # connection closed, the request never answered
        self.assertCancelled(self.fake_up, ra, "origin connection after RST_STREAM")
        self.tls_up.wait_metric("fanoutd_h2_streams_reset_total",
                                lambda v: v >= m0.get(
                                    "fanoutd_h2_streams_reset_total") + 1)
        e = self.tls_up.wait_access_log(
            lambda e: e["path"].endswith("tag=" + ra.tag))
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        # the other two streams are untouched, on the same connection
        self.assertIsNone(rb.conn.closed)
        self.assertIsNone(rc.conn.closed)
        r = fd.get("/after?body=after")
        self.assertEqual((r.status, r.body), (200, b"after"))
        self.assertEqual(
            self.tls_up.metrics().sum("fanoutd_connections_by_proto_total"),
            m0.sum("fanoutd_connections_by_proto_total"))
        # and they finish whole
        for cl, r in ((b, rb), (c, rc)):
            self.fake_up.release(r.tag)
            resp = cl.read_response()
            self.assertEqual((resp.status, resp.body),
                             (200, ("kept-" + r.tag).encode()), resp)


if __name__ == "__main__":
    harness.main()
