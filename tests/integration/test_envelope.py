"""The JSON envelope: member order, JSON bodies embedded by Content-Type,
text as strings, binary as base64, JSON that does not parse as a string,
failure members."""

import base64
import json
import urllib.parse

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

ORDER = ["c", "a", "b"]      # route order, not the order of the sections


class EnvelopeTest(harness.SharedDaemonTest):
    FAKES = ("a", "b", "c")

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={"a": f["a"], "b": f["b"], "c": f["c"]},
            routes={
                "env": {"match": "/env", "mode": "all", "upstreams": ORDER,
                        "partial": "allow"},
                # quorum and first answer with the same envelope when it fails
                "q": {"match": "/q", "mode": "quorum", "upstreams": ORDER,
                      "quorum": "3"},
                "first": {"match": "/first", "mode": "first", "upstreams": ORDER},
            })

    def env(self, opts, prefix="/env/x", status=200):
        """OPTS: list of (option, value) pairs, scoped or not."""
        q = urllib.parse.urlencode(list(opts) + [("tag", self.tag("e"))])
        r, _ = self.call(prefix + "?" + q)
        return r, self.assertEnvelope(r, status, ORDER)

    def one(self, name, **opts):
        """Leg NAME answers with OPTS, the other two with body=x; returns
        NAME's member."""
        pairs = [("%s.%s" % (name, k), v) for k, v in opts.items()]
        pairs.append(("body", "x"))
        r, env = self.env(pairs)
        for n in ORDER:
            if n != name:
                self.assertEqual(self.assertLegOK(env, n).get("body"), "x")
        return env[name]

    # ------------------------------------------------------------------
    def test_member_order_is_route_order(self):
        # a answers first, then b, c last (each held until fanoutd has
        # counted the one before); members still c, a, b
        m0 = self.fd.metrics()
        t = self.tag("o")
        with self.fd.client() as c:
            c.request("GET", "/env/x?hold=1&body=x&tag=" + t)
            for n in ("a", "b", "c"):
                self.f[n].release(t)
                self.fd.wait_metric(
                    "fanoutd_upstream_requests_total",
                    lambda v: v == m0.get("fanoutd_upstream_requests_total",
                                          upstream=n, outcome="ok") + 1,
                    upstream=n, outcome="ok")
            r = c.read_response()
        env = self.assertEnvelope(r, 200, ORDER)
        self.assertEqual(list(env), ORDER)
        self.assertIn("application/json", r.header("content-type"))

    def test_json_object_embedded(self):
        doc = {"name": "\u00e9l\u00e8ve", "n": [1, 2.5, None, True],
               "nested": {"q": "\"quoted\"\\"}}
        leg = self.one("a", body=json.dumps(doc), ctype="application/json")
        self.assertEqual(leg.get("status"), 200, leg)
        self.assertEqual(leg.get("body"), doc, "JSON body not embedded as JSON: %r" % leg)
        self.assertNotIn("body_base64", leg)

    def test_json_with_charset_and_plus_json(self):
        leg = self.one("b", body='{"k": 1}', ctype="application/json; charset=utf-8")
        self.assertEqual(leg.get("body"), {"k": 1}, leg)
        leg = self.one("c", body='{"type": "about:blank", "status": 409}',
                       ctype="application/problem+json")
        self.assertEqual(leg.get("body"), {"type": "about:blank", "status": 409}, leg)

    def test_json_with_escaped_nul_embedded(self):
        # "\u0000" is a valid JSON string escape (RFC 8259 section 7)
        doc = {"s": "a\u0000b", "t": "ok"}
        leg = self.one("a", body=json.dumps(doc), ctype="application/json")
        self.assertEqual(leg.get("body"), doc, "valid JSON with \\u0000 not embedded "
                         "as JSON: %r" % leg)

    def test_json_scalars_embedded(self):
        self.assertEqual(self.one("a", body="42", ctype="application/json").get("body"), 42)
        leg = self.one("a", body="null", ctype="application/json")
        self.assertIn("body", leg, leg)
        self.assertIsNone(leg["body"], leg)
        self.assertEqual(self.one("a", body='"s"', ctype="application/json").get("body"),
                         "s")

    def test_invalid_json_embedded_as_string(self):
        for bad in ('{"a": 1', '{"a": 1} trailing', "not json at all", "{'a': 1}"):
            leg = self.one("a", body=bad, ctype="application/json")
            self.assertEqual(leg.get("status"), 200, leg)
            self.assertEqual(leg.get("body"), bad, "invalid JSON %r: %r" % (bad, leg))

    def test_text_that_looks_like_json_stays_a_string(self):
        # the Content-Type decides, not the bytes
        leg = self.one("b", body='{"x": 1}', ctype="text/plain")
        self.assertEqual(leg.get("body"), '{"x": 1}', leg)

    def test_text_escaped_correctly(self):
        text = 'quote " backslash \\ newline \n tab \t ctl \x01\x1f del \x7f ' \
               'unicode \u00e9\u4e2d\U0001F600 </script>'
        leg = self.one("c", body=text, ctype="text/plain; charset=utf-8")
        self.assertEqual(leg.get("body"), text, leg)
        self.assertNotIn("body_base64", leg)

    def test_binary_as_base64(self):
        cases = [bytes(range(256)),          # NUL and invalid UTF-8
                 b"abc\x00def",              # valid UTF-8 but a NUL
                 b"\xff\xfe\xfd",            # invalid UTF-8
                 b"caf\xc3"]                 # truncated UTF-8 sequence
        for data in cases:
            leg = self.one("a", bodyhex=data.hex())
            self.assertEqual(leg.get("status"), 200, leg)
            self.assertNotIn("body", leg, "binary %r as text: %r" % (data, leg))
            self.assertIn("body_base64", leg, leg)
            self.assertEqual(base64.b64decode(leg["body_base64"], validate=True), data)
            # binary with a text Content-Type is still binary
            leg = self.one("b", bodyhex=data.hex(), ctype="text/plain")
            self.assertEqual(base64.b64decode(leg.get("body_base64", ""), validate=True),
                             data, leg)

    def test_large_and_chunked_bodies(self):
        # bodies far larger than any buffer size: a text (Content-Length),
        # a chunked text, and a chunked JSON echo of a 128 KiB POST body
        text = "0123456789abcdef" * 8192
        q = urllib.parse.urlencode([
            ("a.size", "200000"), ("a.ctype", "text/plain"),
            ("b.size", "150000"), ("b.ctype", "text/plain"), ("b.chunked", "1"),
            ("c.echo", "1"), ("c.chunked", "1"), ("tag", self.tag("big"))])
        r, _ = self.call("/env/x?" + q, method="POST", body=text.encode())
        env = self.assertEnvelope(r, 200, ORDER)
        self.assertEqual(self.assertLegOK(env, "a").get("body"), "x" * 200000)
        self.assertEqual(self.assertLegOK(env, "b").get("body"), "x" * 150000)
        echo = self.assertLegOK(env, "c").get("body")
        self.assertIsInstance(echo, dict, "a chunked JSON body not embedded as JSON")
        self.assertEqual(echo.get("body"), text)

    def test_other_2xx_statuses(self):
        leg = self.one("a", status="201", body="made")
        self.assertEqual((leg.get("status"), leg.get("body")), (201, "made"), leg)
        leg = self.one("b", status="204")
        self.assertEqual(leg.get("status"), 204, leg)
        self.assertNotIn("error", leg)

    def test_failure_members(self):
        r, env = self.env([("a.status", "503"), ("a.body", "down"),
                           ("b.close", "1"), ("c.body", "ok")])
        self.assertEqual(r.header("fanout-partial").replace(" ", ""), "a,b", r)
        a = self.assertLegError(env, "a", "status")
        self.assertEqual(a.get("status"), 503, a)
        if "body" in a:
            self.assertEqual(a["body"], "down", a)
        self.assertIn(env["b"].get("error"), ("reset", "protocol"), env)
        self.assertIsInstance(env["b"].get("reason"), str, env)
        self.assertEqual(self.assertLegOK(env, "c").get("body"), "ok")

    def test_quorum_failure_envelope(self):
        # quorum 3 of 3 and one fails: 502 with the envelope, route order
        r, env = self.env([("a.status", "500"), ("body", "y")], prefix="/q/x",
                          status=502)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)

    def test_first_all_failed_envelope(self):
        r, env = self.env([("a.status", "500"), ("b.status", "404"), ("c.close", "1")],
                          prefix="/first/x", status=502)
        self.assertEqual(self.assertLegError(env, "a", "status").get("status"), 500)
        self.assertEqual(self.assertLegError(env, "b", "status").get("status"), 404)
        self.assertIn(env["c"].get("error"), ("reset", "protocol"), env)


if __name__ == "__main__":
    harness.main()
