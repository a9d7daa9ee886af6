"""Proxy mode: what reaches the upstream, what reaches the client."""

import hashlib
import os
import time
import urllib.parse

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

# route "api": a deadline unlike any default, for the X-Request-Deadline-Ms
# tests (it never fires in a test)
API_DEADLINE_MS = 9 * 60 * 1000
# a client's X-Request-Deadline-Ms that does fire (test_client_deadline_enforced),
# and longer ones for a machine on which the first ran out before the request
# reached the upstream
CLIENT_DEADLINES = (0.3, 3, 30)
HOP_REQ = ["keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
           "proxy-connection", "x-custom-hop"]


def hdrs(echo):
    """Echoed headers as {lowercase name: [values]}."""
    out = {}
    for k, v in echo["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class ProxyTest(harness.SharedDaemonTest):
    FAKES = ("a", "b")
    REFUSED = ("dead1", "dead2")

    @classmethod
    def config(cls, f):
        cls.up, cls.up2 = f["a"], f["b"]
        return dict(
            upstreams=dict({n: f[n] for n in ("a", "b", "dead1", "dead2")},
                           based=f["a"].url + "/base"),
            routes={
                "api": {"match": "/api", "upstreams": "a",
                        "deadline": "%dms" % API_DEADLINE_MS},
                "based": {"match": "/based", "upstreams": "based"},
                "ro": {"match": "/ro", "upstreams": "a", "methods": "GET, HEAD"},
                "rr": {"match": "/rr", "upstreams": "a, b"},
                "failover": {"match": "/failover", "upstreams": "dead1, a"},
                "allbad": {"match": "/allbad", "upstreams": "dead1, dead2"},
            })

    # test_client_deadline_enforced wants its request at the upstream
    # before its 300 ms are up
    WARM = ("/api/warm?body=warm",)

    def echo(self, target, headers=None, method="GET", body=None, chunks=None,
             host="fanoutd.test"):
        """The upstream's echo of one request; self.t_sent is when it was
        sent."""
        with self.fd.client() as c:
            self.t_sent = time.monotonic()
            c.request(method, target, headers, body, host=host, chunks=chunks)
            r = c.read_response(method=method)
        self.assertEqual(r.status, 200, r)
        return r, r.json()

    def assertDeadlineLeft(self, e, budget_ms):
        """The echoed X-Request-Deadline-Ms is what is left of BUDGET_MS:
        at most BUDGET_MS, and less by no more than the time from the
        client's send to the upstream's receipt (fanoutd keeps a margin of
        a few ms for itself: 1 s is allowed for it)."""
        ms = hdrs(e).get("x-request-deadline-ms")
        self.assertIsNotNone(ms, "no X-Request-Deadline-Ms: %r" % e["headers"])
        self.assertRegex(ms[0], r"^\d+$")
        ms = int(ms[0])
        req = self.up.wait_for_request(lambda q: q.conn.id == e["conn"] and
                                       q.index == e["index"], what="the echoed request")
        spent_ms = (req.arrived - self.t_sent) * 1000
        self.assertLessEqual(ms, budget_ms)
        self.assertGreaterEqual(ms, budget_ms - spent_ms - 1000,
                                "%d ms left of %d ms after %.0f ms"
                                % (ms, budget_ms, spent_ms))
        return ms

    # ------------------------------------------------------------------
    def test_get_status_headers_body(self):
        q = urllib.parse.urlencode([("status", "201"), ("body", "hello world"),
                                    ("hdr", "X-Up-Thing: 42"),
                                    ("ctype", "text/x-test")])
        r = self.fd.get("/api/thing?" + q)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body, b"hello world")
        self.assertEqual(r.header("x-up-thing"), "42")
        self.assertEqual(r.header("content-type"), "text/x-test")
        self.assertEqual(r.header("x-upstream"), "a")
        self.assertTrue(r.header("x-request-id"))

    def test_status_passthrough_non_2xx(self):
        r = self.fd.get("/api/x?status=404&body=nope")
        self.assertEqual((r.status, r.body), (404, b"nope"), r)
        r = self.fd.get("/api/x?status=500&body=boom")
        self.assertEqual((r.status, r.body), (500, b"boom"), r)

    def test_path_and_query_appended(self):
        _, e = self.echo("/api/users/7?echo=1&a=b%20c")
        self.assertEqual(e["target"], "/api/users/7?echo=1&a=b%20c")
        self.assertEqual(e["method"], "GET")

    def test_target_goes_as_the_client_wrote_it(self):
        # after the path of the server's URL, byte for byte: percent-escapes
        # keep their case and are not decoded, and nothing is normalised
        for target in ("/api/a%2Fb/%7e/x?echo=1&q=%2F%2f&r=a+b",
                       "/api//double//slash?echo=1",
                       "/api/x?echo=1&empty=&"):
            with self.subTest(target=target):
                _, e = self.echo(target)
                self.assertEqual(e["target"], target)
        _, e = self.echo("/based/users/7?echo=1&a=b%2Fc")
        self.assertEqual(e["target"], "/base/based/users/7?echo=1&a=b%2Fc")

    def test_fragment_is_not_sent(self):
        with self.fd.client() as c:
            c.send(b"GET /api/f?echo=1#part HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["target"], "/api/f?echo=1")

    def test_large_response(self):
        r = self.fd.get("/api/big?size=300000")
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), 300000)

    def test_chunked_upstream_response(self):
        r = self.fd.get("/api/c?body=abcdefghij&chunked=1")
        self.assertEqual((r.status, r.body), (200, b"abcdefghij"), r)

    def test_hop_by_hop_removed_towards_upstream(self):
        headers = [("Connection", "keep-alive, X-Custom-Hop"),
                   ("X-Custom-Hop", "secret"),
                   ("Keep-Alive", "timeout=5"),
                   ("TE", "gzip"),
                   ("Trailer", "X-Trail"),
                   ("Upgrade", "websocket"),
                   ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                   ("Proxy-Connection", "keep-alive"),
                   ("X-End-To-End", "kept")]
        _, e = self.echo("/api/hop?echo=1", headers)
        h = hdrs(e)
        for name in HOP_REQ:
            self.assertNotIn(name, h, "hop-by-hop %s reached the upstream: %r"
                             % (name, e["headers"]))
        for v in h.get("connection", []):
            self.assertNotIn("x-custom-hop", v.lower())
        self.assertEqual(h.get("x-end-to-end"), ["kept"])

    def test_te_trailers_is_the_one_te_that_crosses(self):
        # fanoutd passes trailers on (fanoutd(8), GRPC), so the upstream
        # may send them: TE: trailers, and nothing else the client's TE said
        _, e = self.echo("/api/te?echo=1", [("TE", "gzip, trailers;q=1")])
        self.assertEqual(hdrs(e).get("te"), ["trailers"], e["headers"])

    def test_hop_by_hop_removed_towards_client(self):
        q = urllib.parse.urlencode([
            ("body", "ok"),
            ("hdr", "Connection: X-Up-Hop"),
            ("hdr", "X-Up-Hop: secret"),
            ("hdr", "Keep-Alive: timeout=99"),
            ("hdr", "Proxy-Connection: keep-alive"),
            ("hdr", "Trailer: X-Trail"),
            ("hdr", "X-Up-Keep: kept")])
        r = self.fd.get("/api/hop?" + q)
        self.assertEqual((r.status, r.body), (200, b"ok"), r)
        for name in ("x-up-hop", "keep-alive", "proxy-connection", "trailer"):
            self.assertFalse(r.has_header(name), "%s reached the client: %r" % (name, r))
        for v in r.header_all("connection"):
            self.assertNotIn("x-up-hop", v.lower())
        self.assertEqual(r.header("x-up-keep"), "kept")

    def test_forwarding_headers(self):
        _, e = self.echo("/api/fwd?echo=1", host="client.example:1234")
        h = hdrs(e)
        self.assertEqual(h.get("host"), ["127.0.0.1:%d" % self.up.port])
        self.assertEqual(h.get("x-forwarded-host"), ["client.example:1234"])
        self.assertEqual(h.get("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(h.get("x-forwarded-proto"), ["http"])
        self.assertEqual(len(h.get("x-request-id", [])), 1, h)
        # what is left of the route's deadline
        self.assertDeadlineLeft(e, API_DEADLINE_MS)

    def test_forwarded_for_appends(self):
        _, e = self.echo("/api/fwd?echo=1", [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")])
        self.assertEqual(hdrs(e).get("x-forwarded-for"),
                         ["10.0.0.1, 10.0.0.2, 127.0.0.1"])

    def test_request_id_passthrough(self):
        r, e = self.echo("/api/rid?echo=1", [("X-Request-Id", "test-rid-abc123")])
        self.assertEqual(hdrs(e).get("x-request-id"), ["test-rid-abc123"])
        self.assertEqual(r.header("x-request-id"), "test-rid-abc123")

    def test_request_id_generated_unique(self):
        ids = set()
        for _ in range(3):
            r, e = self.echo("/api/rid?echo=1")
            rid = r.header("x-request-id")
            self.assertTrue(rid)
            self.assertEqual(hdrs(e).get("x-request-id"), [rid])
            ids.add(rid)
        self.assertEqual(len(ids), 3, ids)

    def test_client_deadline_shortens(self):
        # 5 minutes: shorter than the route's 9, and long enough never to fire
        _, e = self.echo("/api/dl?echo=1", [("X-Request-Deadline-Ms", "300000")])
        self.assertDeadlineLeft(e, 300000)

    def test_client_deadline_never_lengthens(self):
        _, e = self.echo("/api/dl?echo=1", [("X-Request-Deadline-Ms", "3600000")])
        self.assertDeadlineLeft(e, API_DEADLINE_MS)

    def test_client_deadline_enforced(self):
        # The upstream never answers.  The request has to reach it before
        # the deadline runs out, and nothing but speed orders that: when
        # it has not (no request there when the 504 came), the test runs
        # again with a ten times longer deadline.  Normally the first does.
        for deadline in CLIENT_DEADLINES:
            tag = "cdl%d" % (deadline * 1000)
            rid = "client-deadline-" + tag
            with self.fd.client() as c:
                t0 = time.monotonic()
                c.request("GET", "/api/dl?hang=1&tag=" + tag,
                          [("X-Request-Deadline-Ms", "%d" % (deadline * 1000)),
                           ("X-Request-Id", rid)])
                r = c.read_response()
            reqs = self.up.requests_tagged(tag)
            if reqs:
                break
            sys.stderr.write("the 504 came before the request reached the "
                             "upstream: again with a longer deadline\n")
        else:
            self.fail("every 504 came before the request reached the upstream")
        self.assertErrorJSON(r, 504)
        # the lower bound is the test: no 504 before the client's deadline
        self.assertNotBefore(r, t0, deadline, "504")
        self.assertCancelled(self.up, reqs[0],
                             "upstream connection after the client's deadline")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)

    def test_post_content_length_body(self):
        body = bytes(range(256)) * 80        # 20 KiB, every byte value
        _, e = self.echo("/api/post?echo=1", [("Content-Type", "application/x-bin")],
                         method="POST", body=body)
        self.assertEqual(e["method"], "POST")
        self.assertEqual(e["body_len"], len(body))
        self.assertEqual(e["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(hdrs(e).get("content-type"), ["application/x-bin"])

    def test_post_chunked_body(self):
        chunks = [b"first-", os.urandom(5000), b"", b"-last"]
        chunks = [c for c in chunks if c]
        body = b"".join(chunks)
        _, e = self.echo("/api/post?echo=1", method="POST", chunks=chunks)
        self.assertEqual(e["body_len"], len(body))
        self.assertEqual(e["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_methods_in_turn_leave_nothing_behind(self):
        # One connection, one after the other: the upstream transfers reuse
        # the same configured curl handle, so whatever one method set must
        # not reach the next (a GET after a POST is still a bodiless GET).
        body = os.urandom(3000)
        steps = [("POST", body, None), ("GET", None, None),
                 ("HEAD", None, None), ("GET", None, None),
                 ("PUT", None, [body[:1000], body[1000:]]),
                 ("DELETE", None, None), ("GET", None, None),
                 ("PATCH", b"", None), ("GET", None, None)]
        with self.fd.client() as c:
            for i, (method, data, chunks) in enumerate(steps):
                t = "turn%d" % i
                c.request(method, "/api/turn?echo=1&tag=" + t, body=data,
                          chunks=chunks)
                r = c.read_response(method=method)
                self.assertEqual(r.status, 200, (method, r))
                req = self.up.wait_for_tag(t)
                sent = data if chunks is None else b"".join(chunks)
                self.assertEqual((req.method, req.body), (method, sent or b""),
                                 "step %d" % i)
                names = {n.lower() for n, _ in req.headers}
                # nothing the client did not send: no Accept, Expect or
                # Content-Type of curl's own
                self.assertFalse(names & {"accept", "expect", "content-type"},
                                 "step %d %s: %r" % (i, method, req.headers))
                if sent is None:
                    self.assertFalse(names & {"content-length", "transfer-encoding"},
                                     "step %d %s: %r" % (i, method, req.headers))

    def test_head(self):
        with self.fd.client() as c:
            c.request("HEAD", "/api/head?size=1234&tag=head1")
            r = c.read_response(method="HEAD")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"")
            cl = r.header("content-length")
            if cl is not None:
                self.assertEqual(cl, "1234")
            # no stray body bytes: the next response on the connection parses
            c.request("GET", "/api/after-head?body=next")
            r2 = c.read_response()
            self.assertEqual((r2.status, r2.body), (200, b"next"))
        self.assertEqual(self.up.wait_for_tag("head1").method, "HEAD")

    def test_round_robin(self):
        seen = []
        for i in range(4):
            r = self.fd.get("/rr/x?body=x")
            self.assertEqual(r.status, 200, r)
            seen.append(r.header("x-upstream"))
        self.assertEqual(sorted(seen), ["a", "a", "b", "b"], seen)
        for i in range(3):
            self.assertNotEqual(seen[i], seen[i + 1], "not round robin: %s" % seen)

    def test_next_upstream_on_connect_failure(self):
        for i in range(3):
            r = self.fd.get("/failover/x?body=alive")
            self.assertEqual((r.status, r.body), (200, b"alive"), r)
            self.assertEqual(r.header("x-upstream"), "a")

    def test_all_refused_502(self):
        r = self.fd.get("/allbad/x")
        self.assertErrorJSON(r, 502)

    def test_no_route_404(self):
        n = len(self.up.snapshot())
        r = self.fd.get("/nowhere")
        self.assertErrorJSON(r, 404)
        self.assertEqual(len(self.up.snapshot()), n, "a 404 reached an upstream")

    def test_method_not_allowed_405(self):
        with self.fd.client() as c:
            c.request("POST", "/ro/x?tag=m405", body=b"data")
            r = c.read_response()
        self.assertErrorJSON(r, 405)
        self.assertEqual(self.up.requests_tagged("m405"), [])
        r = self.fd.get("/ro/x?body=fine")
        self.assertEqual((r.status, r.body), (200, b"fine"))

    def test_access_log_line(self):
        rid = "access-log-test-1"
        r = self.fd.get("/api/log?body=12345&tag=al", [("X-Request-Id", rid)])
        self.assertEqual(r.status, 200)
        e = self.fd.wait_access_log(request_id=rid)
        for key in ("time", "request_id", "client", "method", "path", "route",
                    "status", "bytes", "duration_ms", "cancel_reason", "upstreams"):
            self.assertIn(key, e, "access log entry lacks %r: %r" % (key, e))
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["path"], "/api/log?body=12345&tag=al")
        self.assertEqual(e["route"], "api")
        self.assertEqual(e["status"], 200)
        self.assertIsNone(e["cancel_reason"])
        self.assertIn("127.0.0.1", str(e["client"]))
        self.assertIsInstance(e["bytes"], int)
        self.assertGreaterEqual(e["bytes"], 5)
        self.assertIsInstance(e["duration_ms"], (int, float))
        self.assertGreaterEqual(e["duration_ms"], 0)
        self.assertIsInstance(e["upstreams"], list)
        self.assertEqual(len(e["upstreams"]), 1, e)
        u = e["upstreams"][0]
        self.assertEqual(u.get("name"), "a")
        self.assertEqual(u.get("status"), 200)
        self.assertIn("duration_ms", u)

    def test_access_log_error_lines(self):
        rid = "access-log-404"
        r = self.fd.get("/nowhere/x", [("X-Request-Id", rid)])
        self.assertEqual(r.status, 404)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 404)
        rid = "access-log-502"
        r = self.fd.get("/allbad/x", [("X-Request-Id", rid)])
        self.assertEqual(r.status, 502)
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 502)
        self.assertEqual(e["route"], "allbad")
        for u in e["upstreams"]:
            self.assertIn("error", u, e)

    def test_requests_total_metric(self):
        before = self.fd.metrics().get("fanoutd_requests_total", route="api", code="200")
        for _ in range(2):
            self.assertEqual(self.fd.get("/api/m?body=x").status, 200)
        self.fd.wait_metric("fanoutd_requests_total", lambda v: v >= before + 2,
                            route="api", code="200")


if __name__ == "__main__":
    harness.main()
