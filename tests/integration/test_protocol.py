"""Protocol edges a proxy must get right: HEAD answers without a body,
dot-segments refused, trailers never turned into headers, upstream fields
checked before they reach a client, Upgrade not breaking the connection,
chunked HTTP/1.0 refused, folded empty values refused."""

import socket

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


def raw_exchange(port, data, timeout=harness.PATIENCE):
    """Send DATA on a fresh connection, read until the peer closes (or
    resets); returns everything read.  A peer that keeps the connection
    open TIMEOUT seconds is a failure: every exchange sent here ends with
    an error answer, which closes the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError("fanoutd kept the connection open %.0fs "
                                     "(got %r)" % (timeout, out[:200]))
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


class ProtocolTest(harness.SharedDaemonTest):

    FAKES = ("up",)

    @classmethod
    def config(cls, f):
        return dict(
            upstreams={"up": f["up"]},
            routes={"pub": {"match": "/public/", "upstreams": "up"},
                    "all": {"match": "/all/", "mode": "first",
                            "upstreams": "up"}})

    def test_head_error_has_no_body_and_the_next_answer_follows(self):
        with self.fd.client() as c:
            c.send(b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /public/x?body=next HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response(method="HEAD")
            self.assertEqual(r.status, 404)
            self.assertGreater(int(r.header("content-length")), 0)
            r2 = c.read_response()
            self.assertEqual((r2.status, r2.body), (200, b"next"))

    def test_dot_segments_are_refused(self):
        for target in ("/public/../internal/secret", "/public/./x",
                       "/public/%2e%2e/internal", "/public/.%2E/internal",
                       "/public/..%2finternal", "/public/..\\internal"):
            with self.subTest(target=target):
                with self.fd.client() as c:
                    r = c.get(target)
                    self.assertEqual(r.status, 400, r)
        # dots inside a segment are fine
        r = self.fd.get("/public/a..b/.hidden/x.y?body=ok")
        self.assertEqual((r.status, r.body), (200, b"ok"))

    def test_request_trailers_are_not_forwarded_as_headers(self):
        with self.fd.client() as c:
            c.send(b"POST /public/tr?echo=1&tag=tr HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200)
        echo = harness.json.loads(r.body)
        names = [k.lower() for k, v in echo["headers"]]
        self.assertNotIn("authorization", names)
        self.assertEqual(echo["body"], "abc")

    def test_upstream_field_with_a_bare_cr_is_a_502(self):
        # proxy mode and a collecting mode alike
        for path in ("/public/cr", "/all/cr"):
            with self.subTest(path=path):
                r = self.fd.get(path + "?hdr=X-A:a%0DSet-Cookie:%20injected=1")
                self.assertNotEqual(r.status, 200, r)
                self.assertIsNone(r.header("set-cookie"))
                self.assertNotIn(b"injected", r.raw_head)
        self.assertEqual(self.fd.get("/public/ok?body=fine").status, 200)

    def test_upgrade_request_does_not_break_keep_alive(self):
        with self.fd.client() as c:
            c.send(b"GET /public/u?body=one HTTP/1.1\r\nHost: x\r\n"
                   b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
                   b"GET /public/u?body=two HTTP/1.1\r\nHost: x\r\n\r\n")
            r1 = c.read_response()
            r2 = c.read_response()
        self.assertEqual((r1.status, r1.body), (200, b"one"))
        self.assertEqual((r2.status, r2.body), (200, b"two"))

    def test_chunked_http10_is_refused(self):
        out = raw_exchange(self.fd.port,
                           b"POST /public/x HTTP/1.0\r\nConnection: keep-alive\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                           b"GET /public/y?body=second HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:80])
        self.assertNotIn(b"second", out)

    def test_folded_empty_value_is_refused(self):
        out = raw_exchange(self.fd.port,
                           b"GET /public/x HTTP/1.1\r\nHost: x\r\nFoo:\r\n"
                           b" Transfer-Encoding: chunked\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:80])

    def test_long_forwarded_for_list_is_forwarded(self):
        xff = ", ".join("10.0.%d.%d" % (i // 250, i % 250) for i in range(600))
        r = self.fd.get("/public/xff?echo=1", [("X-Forwarded-For", xff)])
        self.assertEqual(r.status, 200, r)
        echo = harness.json.loads(r.body)
        got = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"]
        self.assertEqual(got, [xff + ", 127.0.0.1"])


if __name__ == "__main__":
    harness.main()
