"""HTTP/2 on the front end: h2c with prior knowledge and h2 over TLS (ALPN).

curl, nghttp and h2load fetch through a proxy route and a fan-out route;
many streams share one connection.  With the raw client of h2raw.py: a
client's RST_STREAM cancels that stream's request alone (its upstream
connection is closed, the others go on and finish on the same connection);
the connection going cancels every stream; rapid reset and CONTINUATION
floods end the connection with ENHANCE_YOUR_CALM and cost the upstreams
nothing; streams over h2_max_concurrent_streams are refused; SIGTERM sends
GOAWAY and lets the stream in flight finish; grpc-timeout shortens the
deadline; max_body_size answers 413 on one stream while another succeeds.

Held upstream answers (the fake upstream's hold=1) are released by the
test on an event it has seen, so every step waits on an event, never on
time; a cancel is checked by the upstream connection closing on a request
that would be held for ever, with no bound in ms (how fast is the
benchmarks' business).  Waits are bounded by harness.PATIENCE only.
"""

import json
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
import h2raw  # noqa: E402
from h2raw import (CANCEL, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM,  # noqa: E402
                   NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM)

PATIENCE = harness.PATIENCE

def requests_at(up, pred=lambda r: True):
    """The requests fanoutd made to the fake upstream UP that PRED takes."""
    return [r for r in up.snapshot() if pred(r)]


class H2Base(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.certdir = None

    def tearDown(self):
        super().tearDown()
        if self.certdir is not None:
            shutil.rmtree(self.certdir, ignore_errors=True)

    def release(self, up, tag):
        """Answer the request tagged TAG held at UP (hold=1), once it is
        held there; returns how many such requests were held, their
        connections still open."""
        held = up.wait_for(lambda: [r for r in up.held() if r.tag == tag],
                           what="a held request tag=%s" % tag)
        up.release(tag)
        return len(held)

    def start(self, server=None, routes=None, tls=False, **kw):
        """A fanoutd on self.up (a fake upstream): route "r" for
        everything, "all" (mode all over up and up2) under /all/."""
        self.up = self.fake("up")
        self.up2 = self.fake("up2")
        opts = dict(
            upstreams={"up": self.up, "up2": self.up2},
            routes=routes or {
                "r": {"match": "/", "upstreams": "up"},
                "all": {"match": "/all/", "strip_prefix": "yes", "mode": "all",
                        "upstreams": "up, up2"}},
            server=dict(server or {}))
        opts.update(kw)
        if not tls:
            return self.daemon(**opts)
        h2raw.tool("openssl")
        self.certdir = tempfile.mkdtemp(prefix="fanoutd-h2-")
        self.cert, self.key = h2raw.make_cert(self.certdir)
        d = h2raw.TlsFanoutd(cert=self.cert, key=self.key, **opts)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def h2(self, fd, tls=False, **kw):
        c = h2raw.H2Client(fd.tls_port if tls else fd.port, tls=tls, **kw)
        self.addCleanup(c.close)
        if tls:
            self.assertEqual(c.alpn, "h2", "ALPN did not choose h2")
        return c

    def run_tool(self, argv, timeout=PATIENCE + 10):
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "%s exited %d:\n%s\n%s"
                         % (argv, p.returncode, out[-2000:], err[-2000:]))
        return out

    def assertServing(self, fd):
        """Alive, healthy, and a fresh HTTP/2 connection gets an answer."""
        self.assertTrue(fd.running(), "fanoutd died:\n%s" % fd.stderr_tail())
        self.assertEqual(fd.healthz().status, 200)
        with h2raw.H2Client(fd.port) as c:
            st = c.get("/fresh?body=fresh")
        self.assertEqual((st.status, st.body, st.rst), (200, b"fresh", None), st)

    def wait_idle(self, fd):
        """Nothing in flight inside fanoutd, upstream transfers included."""
        fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
        fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)


# ----------------------------------------------------------------------

class H2ClientsTest(H2Base):
    """Real clients: curl, nghttp, h2load."""

    def curl(self, *args):
        out = self.run_tool([h2raw.tool("curl"), "-sS", "--max-time", "%d" % PATIENCE,
                             "-w", "\n%{http_code} %{http_version}"] + list(args))
        body, _, tail = out.rpartition("\n")
        code, version = tail.split()
        return int(code), version, body

    def test_curl_prior_knowledge(self):
        fd = self.start()
        m0 = fd.metrics()
        code, version, body = self.curl(
            "--http2-prior-knowledge", "-H", "X-Request-Id: curl-h2c",
            "http://127.0.0.1:%d/p?body=h2c-body&tag=h2c" % fd.port)
        self.assertEqual((code, version, body), (200, "2", "h2c-body"))
        req = self.up.wait_for_tag("h2c")
        self.assertEqual(req.header("x-forwarded-proto"), "http")
        self.assertEqual(req.header("x-request-id"), "curl-h2c")
        e = fd.wait_access_log(request_id="curl-h2c")
        self.assertEqual((e["status"], e["proto"], e["tls"], e["route"]),
                         (200, "HTTP/2.0", False, "r"), e)
        m1 = fd.metrics()
        self.assertEqual(m1.get("fanoutd_requests_by_proto_total", proto="HTTP/2.0"),
                         m0.get("fanoutd_requests_by_proto_total", proto="HTTP/2.0") + 1)
        self.assertEqual(m1.get("fanoutd_connections_by_proto_total", proto="h2"),
                         m0.get("fanoutd_connections_by_proto_total", proto="h2") + 1)

    def test_curl_h2_over_tls(self):
        fd = self.start(tls=True)
        code, version, body = self.curl(
            "--http2", "-k", "-H", "X-Request-Id: curl-h2",
            "https://127.0.0.1:%d/p?body=h2-body&tag=h2tls" % fd.tls_port)
        self.assertEqual((code, version, body), (200, "2", "h2-body"))
        self.assertEqual(self.up.wait_for_tag("h2tls").header("x-forwarded-proto"),
                         "https")
        e = fd.wait_access_log(request_id="curl-h2")
        self.assertEqual((e["status"], e["proto"], e["tls"]), (200, "HTTP/2.0", True), e)
        self.assertGreaterEqual(fd.metric("fanoutd_tls_handshakes_total", result="ok"), 1)

    def test_curl_fan_out_all(self):
        fd = self.start(tls=True)
        for args in (["--http2-prior-knowledge",
                      "http://127.0.0.1:%d/all/x?body=fan" % fd.port],
                     ["--http2", "-k",
                      "https://127.0.0.1:%d/all/x?body=fan" % fd.tls_port]):
            code, version, body = self.curl(*args)
            self.assertEqual((code, version), (200, "2"), body)
            env = json.loads(body)
            self.assertEqual(env, {"up": {"status": 200, "body": "fan"},
                                   "up2": {"status": 200, "body": "fan"}})

    def test_nghttp_proxy_and_fan_out(self):
        fd = self.start(tls=True)
        for base in ("http://127.0.0.1:%d" % fd.port,
                     "https://127.0.0.1:%d" % fd.tls_port):
            out = self.run_tool([h2raw.tool("nghttp"), "-v", base + "/n?body=nghttp-body"])
            self.assertRegex(out, r"recv \(stream_id=\d+\) :status: 200")
            self.assertIn("nghttp-body", out)
            out = self.run_tool([h2raw.tool("nghttp"), base + "/all/n?body=fan"])
            self.assertEqual(json.loads(out), {"up": {"status": 200, "body": "fan"},
                                               "up2": {"status": 200, "body": "fan"}})

    def test_many_streams_on_one_connection_h2load(self):
        fd = self.start(tls=True)
        for base, n in (("http://127.0.0.1:%d" % fd.port, 100),
                        ("https://127.0.0.1:%d" % fd.tls_port, 40)):
            m0 = fd.metrics()
            u0 = len(requests_at(self.up))
            out = self.run_tool([h2raw.tool("h2load"), "-n", str(n), "-c", "1", "-m", "10",
                                 base + "/many?body=m"])
            self.assertRegex(out, r"requests: %d total, %d started, %d done, %d "
                             r"succeeded, 0 failed, 0 errored" % (n, n, n, n))
            self.assertRegex(out, r"status codes: %d 2xx" % n)
            self.assertRegex(out, r"Application protocol: h2c?\n")
            self.wait_idle(fd)
            self.assertEqual(len(requests_at(self.up)) - u0, n)
            m1 = fd.metrics()
            self.assertEqual(
                m1.get("fanoutd_requests_by_proto_total", proto="HTTP/2.0"),
                m0.get("fanoutd_requests_by_proto_total", proto="HTTP/2.0") + n)
            self.assertEqual(
                m1.get("fanoutd_connections_by_proto_total", proto="h2"),
                m0.get("fanoutd_connections_by_proto_total", proto="h2") + 1)
        lines = [e for e in fd.access_log_lines() if e["path"] == "/many?body=m"]
        self.assertEqual(len(lines), 140)
        self.assertTrue(all(e["proto"] == "HTTP/2.0" and e["status"] == 200
                            for e in lines), lines[:3])
        self.assertEqual(sum(1 for e in lines if e["tls"]), 40)

    def test_nghttp_many_streams(self):
        fd = self.start()
        out = self.run_tool([h2raw.tool("nghttp"), "-ns", "-m", "30",
                             "http://127.0.0.1:%d/m?body=abc" % fd.port])
        codes = re.findall(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+3 /m\?body=abc$",
                           out, re.M)
        self.assertEqual(codes, ["200"] * 30, out)


class H2RawTest(H2Base):
    """The raw client against the basics."""

    def test_streams_interleave_on_one_connection(self):
        fd = self.start(tls=True)
        for tls in (False, True):
            c = self.h2(fd, tls=tls)
            # 40 answers, 78k in all (test_large_answers goes further)
            sids = {c.request("/s?size=%d&tag=s%d" % (100 * i + 1, i)): 100 * i + 1
                    for i in range(40)}
            for sid, size in sids.items():
                st = c.response(sid)
                self.assertEqual((st.status, st.rst, len(st.data)), (200, None, size), st)
                self.assertEqual(st.body, b"x" * size)
            self.assertIsNone(c.goaway)

    def test_large_request_body(self):
        fd = self.start()
        c = self.h2(fd)
        body = bytes(range(256)) * 4096          # 1 MiB up, past every window
        sid = c.request("/big?body=got-it&tag=up1m", method="POST", body=body)
        st = c.response(sid)
        self.assertEqual((st.status, st.rst, st.body), (200, None, b"got-it"), st)
        req = self.up.wait_for_tag("up1m")
        self.assertEqual(len(req.body), len(body))
        self.assertTrue(req.body == body, "the request body arrived altered")

    def test_large_answers(self):
        # answers far over the stream window and fanoutd's own buffers
        # (OUT_HIGH 128k, STREAM_HIGH 256k), in clear text and over TLS
        fd = self.start(tls=True)
        for tls in (False, True):
            for size in (300000, 3000000):
                with self.subTest(tls=tls, size=size):
                    c = self.h2(fd, tls=tls)
                    st = c.get("/big?size=%d" % size)
                    self.assertEqual((st.status, st.rst, len(st.data), st.ended),
                                     (200, None, size, True), st)
                    self.assertEqual(st.body, b"x" * size)
                    c.close()

    def test_curl_large_answer_h2c(self):
        fd = self.start()
        p = subprocess.run(
            [h2raw.tool("curl"), "-sS", "--max-time", "%d" % PATIENCE,
             "--http2-prior-knowledge",
             "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
             "http://127.0.0.1:%d/big?size=1000000" % fd.port],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=PATIENCE + 10)
        self.assertEqual((p.returncode, p.stdout.decode()), (0, "200 1000000"), p)

    def test_error_answers_are_json(self):
        fd = self.start(routes={"r": {"match": "/only", "upstreams": "up"}})
        c = self.h2(fd)
        st = c.get("/nowhere", headers=[("x-request-id", "rid-404")])
        self.assertEqual(st.status, 404, st)
        doc = json.loads(st.body)
        self.assertEqual(doc.get("request_id"), "rid-404", doc)
        self.assertTrue(doc.get("error"), doc)

    def test_header_block_in_continuations(self):
        # a header block split over HEADERS and a few CONTINUATION frames
        # is legitimate and is served
        fd = self.start()
        c = self.h2(fd)
        sid = c.new_stream_id()
        block = h2raw.encode_headers(h2raw.request_headers(
            "/cont?echo=1&tag=cont", headers=[("x-one", "1"), ("x-two", "2")]))
        parts = [block[:10], block[10:30], block[30:50], block[50:]]
        c.headers(sid, None, end_stream=True, end_headers=False, block=parts[0])
        for i, p in enumerate(parts[1:]):
            c.continuation(sid, p, end_headers=(i == len(parts) - 2))
        st = c.response(sid)
        self.assertEqual(st.status, 200, st)
        req = self.up.wait_for_tag("cont")
        self.assertEqual((req.header("x-one"), req.header("x-two")), ("1", "2"))

    def test_http2_off(self):
        fd = self.start(tls=True, server={"http2": "off"})
        # the preface is taken as an HTTP/1.1 request "PRI *", which is an
        # error (the brief says 505; fanoutd.ini(5) "an error": 400 as
        # before HTTP/2 existed here), and the connection is closed
        with harness.Client(fd.port) as c:
            c.send(h2raw.PREFACE + h2raw.frame(h2raw.SETTINGS, 0, 0))
            r = c.read_response()
            self.assertIn(r.status, (400, 505), r)
            self.assertErrorJSON(r, r.status)
            c.wait_eof()
        # ALPN never picks h2
        raw = socket.create_connection(("127.0.0.1", fd.tls_port), timeout=PATIENCE)
        s = h2raw.client_context(("h2", "http/1.1")).wrap_socket(
            raw, server_hostname="localhost")
        try:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        finally:
            s.close()
        self.assertEqual(requests_at(self.up), [])


# ----------------------------------------------------------------------

class H2CancelTest(H2Base):

    def test_rst_stream_cancels_that_stream_alone(self):
        fd = self.start()
        m0 = fd.metrics()
        cc0 = m0.get("fanoutd_cancellations_total", reason="client_closed")
        rs0 = m0.get("fanoutd_h2_streams_reset_total")
        c = self.h2(fd)
        bodies = {"a": "size=100000", "b": "body=never", "c": "body=gamma"}
        sids = {}
        for n in ("a", "b", "c"):
            sids[n] = c.request("/slow?hold=1&tag=k-%s&%s" % (n, bodies[n]),
                                headers=[("x-request-id", "rid-" + n)])
        reqs = {n: self.up.wait_for_tag("k-" + n) for n in sids}
        conns = {n: reqs[n].conn for n in reqs}
        self.assertEqual(len({cn.id for cn in conns.values()}), 3,
                         "three requests in flight share an upstream connection")
        self.assertTrue(all(cn.closed is None for cn in conns.values()))

        c.rst_stream(sids["b"], CANCEL)
        self.assertCancelled(self.up, reqs["b"],
                             "the reset stream's upstream connection")
        self.assertIsNone(conns["a"].closed, "stream a's upstream connection closed too")
        self.assertIsNone(conns["c"].closed, "stream c's upstream connection closed too")
        e = fd.wait_access_log(request_id="rid-b")
        self.assertEqual((e["status"], e["cancel_reason"], e["proto"]),
                         (499, "client_closed", "HTTP/2.0"), e)
        fd.wait_metric("fanoutd_cancellations_total", lambda v: v == cc0 + 1,
                       reason="client_closed")
        self.assertEqual(fd.metric("fanoutd_h2_streams_reset_total"), rs0 + 1)

        # the two others are still waiting, and now get their answers
        self.assertEqual(self.release(self.up, "k-a"), 1)
        self.assertEqual(self.release(self.up, "k-c"), 1)
        sa = c.response(sids["a"])
        sc = c.response(sids["c"])
        self.assertEqual((sa.status, sa.rst, sa.body), (200, None, b"x" * 100000), sa)
        self.assertEqual((sc.status, sc.rst, sc.body), (200, None, b"gamma"), sc)
        sb = c.stream(sids["b"])
        self.assertFalse(sb.headers or sb.data, "the reset stream was answered: %r" % sb)
        self.assertIsNone(c.goaway)
        self.assertFalse(c.eof)
        # one 499 line, two 200s
        lines = harness.wait_until(
            lambda: (lambda ls: len(ls) == 3 and ls)(
                [x for x in fd.access_log_lines()
                 if x["request_id"] in ("rid-a", "rid-b", "rid-c")]),
            what="three access log lines")
        self.assertEqual(sorted(x["status"] for x in lines), [200, 200, 499], lines)
        self.assertEqual([x["request_id"] for x in lines if x["status"] == 499], ["rid-b"])
        self.assertEqual([x["request_id"] for x in fd.access_log_lines()
                          if x["status"] == 499], ["rid-b"])
        # and the connection serves more
        st = c.get("/after?body=after")
        self.assertEqual((st.status, st.body), (200, b"after"), st)
        self.assertEqual(fd.metric("fanoutd_cancellations_total", reason="client_closed"),
                         cc0 + 1)

    def test_rst_stream_over_tls(self):
        fd = self.start(tls=True)
        c = self.h2(fd, tls=True)
        keep = c.request("/slow?hold=1&tag=t-keep&body=kept")
        gone = c.request("/slow?hold=1&tag=t-gone", headers=[("x-request-id", "rid-tg")])
        rk = self.up.wait_for_tag("t-keep")
        rg = self.up.wait_for_tag("t-gone")
        c.rst_stream(gone, CANCEL)
        self.assertCancelled(self.up, rg)
        self.assertIsNone(rk.conn.closed)
        e = fd.wait_access_log(request_id="rid-tg")
        self.assertEqual((e["status"], e["cancel_reason"], e["tls"]),
                         (499, "client_closed", True), e)
        self.assertEqual(self.release(self.up, "t-keep"), 1)
        st = c.response(keep)
        self.assertEqual((st.status, st.body), (200, b"kept"), st)

    def _connection_gone(self, how):
        fd = self.start()
        cc0 = fd.metric("fanoutd_cancellations_total", reason="client_closed")
        c = self.h2(fd)
        for n in (1, 2):
            c.request("/slow?hold=1&tag=%s-%d" % (how, n),
                      headers=[("x-request-id", "rid-%s-%d" % (how, n))])
        reqs = [self.up.wait_for_tag("%s-%d" % (how, n)) for n in (1, 2)]
        self.assertNotEqual(reqs[0].conn.id, reqs[1].conn.id)
        if how == "rst":
            c.reset()
        else:
            c.close()
        for r in reqs:
            self.assertCancelled(self.up, r,
                                 "upstream connection after the client's %s" % how)
        for n in (1, 2):
            e = fd.wait_access_log(request_id="rid-%s-%d" % (how, n))
            self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)
        fd.wait_metric("fanoutd_cancellations_total", lambda v: v == cc0 + 2,
                       reason="client_closed")
        self.wait_idle(fd)
        fd.wait_metric("fanoutd_connections_active", lambda v: v == 0)
        self.assertServing(fd)

    def test_tcp_close_cancels_every_stream(self):
        self._connection_gone("close")

    def test_tcp_reset_cancels_every_stream(self):
        self._connection_gone("rst")

    def test_fan_out_stream_reset_cuts_every_leg(self):
        fd = self.start()
        c = self.h2(fd)
        sid = c.request("/all/x?hold=1&tag=fan", headers=[("x-request-id", "rid-fan")])
        r1 = self.up.wait_for_tag("fan")
        r2 = self.up2.wait_for_tag("fan")
        c.rst_stream(sid, CANCEL)
        self.assertCancelled(self.up, r1, "leg up")
        self.assertCancelled(self.up2, r2, "leg up2")
        e = fd.wait_access_log(request_id="rid-fan")
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


# ----------------------------------------------------------------------

class H2FloodTest(H2Base):

    def test_rapid_reset(self):
        fd = self.start(server={"h2_max_concurrent_streams": "20"})
        m0 = fd.metrics()
        fl0 = m0.get("fanoutd_h2_floods_total", kind="rapid_reset")
        c = self.h2(fd)
        c.handshake()
        self.assertEqual(c.server_settings.get(h2raw.SETTINGS_MAX_CONCURRENT_STREAMS), 20)
        block = h2raw.encode_headers(h2raw.request_headers("/rr?hang=1&tag=rr"))
        rst = struct.pack(">I", CANCEL)
        sid = 1
        pairs = 0
        total, per_batch = 100000, 2000
        while pairs < total:
            batch = bytearray()
            for _ in range(per_batch):
                batch += h2raw.frame(h2raw.HEADERS, END_STREAM | END_HEADERS, sid, block)
                batch += h2raw.frame(h2raw.RST_STREAM, 0, sid, rst)
                sid += 2
            if not c.send(bytes(batch)):
                break           # the server has closed or reset: that is success
            pairs += per_batch
        # the server ends the connection (a GOAWAY first, if it gets through
        # before the reset that closing on unread input causes)
        c.wait_closed()
        if c.goaway is not None:
            self.assertEqual(c.goaway[1], ENHANCE_YOUR_CALM, c.goaway)
        # nothing reached the upstream beyond what the bucket allows
        self.wait_idle(fd)
        seen = requests_at(self.up, lambda r: r.tag == "rr")
        self.assertLessEqual(len(seen), 20, "%d rapid-reset requests reached the "
                             "upstream" % len(seen))
        for r in seen:
            self.assertCancelled(self.up, r,
                                 "a rapid-reset request's upstream connection")
        harness.wait_until(lambda: re.search(
            harness.LOG_START + r"warn .*http2 flood, closing connection kind=rapid_reset "
            r"client=127\.0\.0\.1", fd.stderr_text()), what="the flood warning")
        fd.wait_metric("fanoutd_h2_floods_total", lambda v: v == fl0 + 1,
                       kind="rapid_reset")
        self.assertEqual(fd.metric("fanoutd_h2_floods_total", kind="continuation"),
                         m0.get("fanoutd_h2_floods_total", kind="continuation"))
        self.assertServing(fd)

    def test_a_few_resets_are_no_flood(self):
        # well under the bucket: the connection goes on serving
        fd = self.start(server={"h2_max_concurrent_streams": "20"})
        c = self.h2(fd)
        c.handshake()
        for _ in range(10):
            sid = c.request("/few?hang=1&tag=few")
            c.rst_stream(sid, CANCEL)
        st = c.get("/few?body=ok")
        self.assertEqual((st.status, st.body), (200, b"ok"), st)
        self.assertIsNone(c.goaway)
        self.assertEqual(fd.metric("fanoutd_h2_floods_total", kind="rapid_reset"), 0)
        self.assertEqual(fd.metric("fanoutd_h2_streams_reset_total"), 10)

    def test_continuation_flood(self):
        fd = self.start()
        m0 = fd.metrics()
        c = self.h2(fd)
        c.handshake()
        sid = c.new_stream_id()
        out = bytearray(c.headers_frame(
            sid, h2raw.request_headers("/cf?tag=cf"), end_stream=True,
            end_headers=False))
        n = 1000
        for i in range(n):
            out += h2raw.frame(h2raw.CONTINUATION, END_HEADERS if i == n - 1 else 0,
                               sid, h2raw.encode_field("x-c%d" % i, "v"))
        c.send(bytes(out))
        c.wait_closed()
        if c.goaway is not None:
            self.assertEqual(c.goaway[1], ENHANCE_YOUR_CALM, c.goaway)
        self.assertFalse(c.stream(sid).headers, "the flooded stream was answered")
        harness.wait_until(lambda: re.search(
            harness.LOG_START + r"warn .*http2 flood, closing connection kind=continuation "
            r"client=127\.0\.0\.1", fd.stderr_text()), what="the flood warning")
        fd.wait_metric("fanoutd_h2_floods_total",
                       lambda v: v == m0.get("fanoutd_h2_floods_total",
                                             kind="continuation") + 1,
                       kind="continuation")
        self.wait_idle(fd)
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "cf"), [])
        self.assertServing(fd)

    def test_huge_header_block_in_few_frames(self):
        # a block over max_header_size + 16k in a handful of CONTINUATIONs
        fd = self.start(server={"max_header_size": "4k"})
        c = self.h2(fd)
        c.handshake()
        sid = c.new_stream_id()
        out = bytearray(c.headers_frame(sid, h2raw.request_headers("/hb?tag=hb"),
                                        end_stream=True, end_headers=False))
        for i in range(4):
            out += h2raw.frame(h2raw.CONTINUATION, END_HEADERS if i == 3 else 0, sid,
                               h2raw.encode_field("x-big%d" % i, "v" * 12000))
        c.send(bytes(out))
        c.wait_closed()
        if c.goaway is not None:
            self.assertEqual(c.goaway[1], ENHANCE_YOUR_CALM, c.goaway)
        fd.wait_metric("fanoutd_h2_floods_total", lambda v: v == 1, kind="continuation")
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "hb"), [])
        self.assertServing(fd)

    def test_streams_over_the_limit_refused_before_settings_ack(self):
        """Before the client has acknowledged the limit, a stream over it is
        refused (RST_STREAM REFUSED_STREAM) and the others go on."""
        fd = self.start(server={"h2_max_concurrent_streams": "2"})
        c = self.h2(fd)
        sids = [c.request("/lim?hold=1&tag=lim%d&body=b%d" % (i, i)) for i in range(3)]
        c.wait(lambda: c.stream(sids[2]).done or c.goaway,
               what="the third stream to be refused")
        self.assertIsNone(c.goaway, "the connection was ended, not the stream refused")
        self.assertEqual(c.stream(sids[2]).rst, REFUSED_STREAM, c.stream(sids[2]))
        self.up.wait_for_tag("lim0")
        self.up.wait_for_tag("lim1")
        self.assertEqual(self.release(self.up, "lim0"), 1)
        self.assertEqual(self.release(self.up, "lim1"), 1)
        for i in (0, 1):
            st = c.response(sids[i])
            self.assertEqual((st.status, st.body), (200, b"b%d" % i), st)
        self.wait_idle(fd)
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "lim2"), [])
        # with room again, the same connection takes a new stream
        st = c.get("/lim?body=room")
        self.assertEqual((st.status, st.body), (200, b"room"), st)

    def test_streams_over_an_acknowledged_limit_end_the_connection(self):
        """A client that opens more streams than the limit it acknowledged
        is broken: nghttp2 ends the connection (GOAWAY PROTOCOL_ERROR), as
        Apache httpd's mod_http2 does, and the extra stream never reaches an
        upstream. (RFC 9113 5.1.2 asks for a stream error; nghttp2 1.52 makes
        it a connection error once the SETTINGS are acknowledged.)"""
        fd = self.start(server={"h2_max_concurrent_streams": "2"})
        c = self.h2(fd)
        c.handshake()
        c.ping()
        c.wait(lambda: c.pings, what="the PING ACK")
        self.assertEqual(c.server_settings.get(h2raw.SETTINGS_MAX_CONCURRENT_STREAMS), 2)
        sids = [c.request("/lim?hold=1&tag=lim%d&body=b%d" % (i, i)) for i in range(3)]
        c.wait(lambda: c.goaway, what="GOAWAY")
        last, code, _ = c.goaway
        self.assertEqual(code, PROTOCOL_ERROR, c.goaway)
        self.assertLess(last, sids[2])
        c.wait_closed()
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "lim2"), [])
        self.assertTrue(fd.running())
        # a well-behaved connection is served
        st = self.h2(fd).get("/lim?body=next")
        self.assertEqual((st.status, st.body), (200, b"next"), st)


# ----------------------------------------------------------------------

class H2DrainTest(H2Base):

    def test_sigterm_goaway_and_in_flight_stream_finishes(self):
        # drain_timeout is far away: whatever ends here is the drain's doing
        fd = self.start(server={"drain_timeout": "10m"})
        c = self.h2(fd)
        idle = self.h2(fd)
        idle.handshake()
        c.handshake()
        sid = c.request("/d?hold=1&tag=dr&body=drained", headers=[("x-request-id", "rid-dr")])
        req = self.up.wait_for_tag("dr")
        fd.sigterm()
        c.wait(lambda: c.goaway, what="GOAWAY after SIGTERM")
        last, code, _ = c.goaway
        self.assertEqual(code, NO_ERROR, c.goaway)
        self.assertGreaterEqual(last, sid, "GOAWAY's last stream id leaves out the "
                                "stream in flight")
        # the idle connection: GOAWAY and closed
        idle.wait_closed()
        self.assertIsNotNone(idle.goaway, "the idle connection was closed without GOAWAY")
        # a stream opened after GOAWAY is not served (taken in: the PING ACK)
        late = c.request("/d?hold=1&tag=late")
        c.ping()
        c.wait(lambda: c.pings, what="the PING ACK")
        self.assertIsNone(req.conn.closed)
        self.assertTrue(fd.running())
        self.assertEqual(self.release(self.up, "dr"), 1)
        st = c.response(sid)
        self.assertEqual((st.status, st.rst, st.body), (200, None, b"drained"), st)
        self.assertFalse(c.stream(late).headers, c.stream(late))
        c.wait_closed()
        # exiting long before drain_timeout: nothing else was in flight
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "late"), [])
        e = fd.wait_access_log(request_id="rid-dr")
        self.assertEqual((e["status"], e["proto"]), (200, "HTTP/2.0"), e)

    def test_drain_timeout_cancels_the_stream_with_503(self):
        fd = self.start(server={"drain_timeout": "300ms"})
        c = self.h2(fd)
        sid = c.request("/d?hold=1&tag=dt", headers=[("x-request-id", "rid-dt")])
        req = self.up.wait_for_tag("dt")
        t0 = time.monotonic()
        fd.sigterm()
        st = c.response(sid)
        self.assertEqual(st.status, 503, st)
        # the lower bound is the test: no 503 before drain_timeout
        self.assertNotBefore(st.ended_at, t0, 0.3, "503 after SIGTERM")
        self.assertCancelled(self.up, req)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())
        e = fd.wait_access_log(request_id="rid-dt")
        self.assertEqual((e["status"], e["cancel_reason"]), (503, "shutdown"), e)


# ----------------------------------------------------------------------

class H2DeadlineAndLimitsTest(H2Base):

    def test_grpc_timeout_shortens_the_deadline(self):
        # The route's deadline is ten minutes: a 504 within PATIENCE is the
        # grpc-timeout's.  The upstream must have the request before the
        # deadline for its headers to be checked: 200 ms is plenty on any
        # usual machine; one too slow for that tries again with ten times
        # the timeout (the checks are the same, only later).
        fd = self.start(routes={"r": {"match": "/", "upstreams": "up",
                                      "deadline": "10m"}})
        c = self.h2(fd)
        for i, (value, secs) in enumerate((("200m", 0.2), ("2S", 2.0),
                                           ("20S", 20.0))):
            tag, rid = "g%d" % i, "rid-g%d" % i
            t0 = time.monotonic()
            sid = c.request("/g?hang=1&tag=" + tag,
                            headers=[("grpc-timeout", value), ("x-request-id", rid)])
            st = c.response(sid)
            self.assertEqual(st.status, 504, st)
            self.assertNotBefore(st.ended_at, t0, secs, "504")
            self.assertEqual(json.loads(st.body).get("request_id"), rid, st)
            e = fd.wait_access_log(request_id=rid)
            self.assertEqual((e["status"], e["cancel_reason"]), (504, "deadline"), e)
            req = self.up.requests_tagged(tag)
            if req:
                break
        else:
            self.fail("no request reached the upstream before even a %s "
                      "grpc-timeout" % value)
        req = req[0]
        ms = int(secs * 1000)
        dl = req.header("x-request-deadline-ms")
        self.assertIsNotNone(dl, req.headers)
        self.assertTrue(0 < int(dl) <= ms, "X-Request-Deadline-Ms: %s" % dl)
        g = req.header_all("grpc-timeout")
        self.assertEqual(len(g), 1, req.headers)
        m = re.fullmatch(r"(\d{1,8})m", g[0])
        self.assertTrue(m and int(m.group(1)) <= ms, "grpc-timeout upstream: %r" % g)
        self.assertCancelled(self.up, req)

    def test_grpc_timeout_never_lengthens_the_deadline(self):
        # grpc-timeouts over the route's deadline (ten minutes) leave it be
        fd = self.start(routes={"r": {"match": "/", "upstreams": "up",
                                      "deadline": "10m"}})
        c = self.h2(fd)
        for value in ("1H", "99999999S"):
            st = c.get("/g?body=ok&tag=gl-" + value, headers=[("grpc-timeout", value)])
            self.assertEqual((st.status, st.body), (200, b"ok"), st)
            req = self.up.wait_for_tag("gl-" + value)
            self.assertTrue(0 < int(req.header("x-request-deadline-ms")) <= 600000,
                            req.headers)
            g = req.header("grpc-timeout")
            self.assertTrue(g.endswith("m") and int(g[:-1]) <= 600000, g)

    def test_body_over_max_body_size_413_on_that_stream_only(self):
        fd = self.start(server={"max_body_size": "1k"})
        c = self.h2(fd)
        # streamed: no content-length, the body grows past the limit
        big = c.request("/b?echo=1&tag=big", method="POST", end_stream=False,
                        headers=[("x-request-id", "rid-big")])
        # declared: content-length over the limit, the body never sent
        decl = c.request("/b?echo=1&tag=decl", method="POST", end_stream=False,
                         headers=[("content-length", "100000"),
                                  ("x-request-id", "rid-decl")])
        small = c.request("/b?echo=1&tag=small", method="POST", body=b"s" * 500)
        ok = c.request("/o?body=fine&tag=ok")
        c.data(big, b"y" * 4096, end_stream=True)
        for sid in (big, decl):
            st = c.response(sid)
            self.assertEqual(st.status, 413, st)
            self.assertTrue(json.loads(st.body).get("error"), st)
        st = c.response(small)
        self.assertEqual(st.status, 200, st)
        self.assertEqual(json.loads(st.body)["body_len"], 500)
        st = c.response(ok)
        self.assertEqual((st.status, st.body), (200, b"fine"), st)
        self.assertIsNone(c.goaway)
        self.wait_idle(fd)
        # Declared too large: refused at the head, the upstream never asked.
        self.assertEqual(requests_at(self.up, lambda r: r.tag == "decl"), [])
        # Streamed (mode proxy): the request may have gone out with the head
        # when the body arrived in a later read; it never gets the whole
        # body, nor more than the limit of it.
        for r in requests_at(self.up, lambda r: r.tag == "big"):
            self.assertIsNone(r.complete, "the upstream got it whole: %r" % r)
            self.assertLessEqual(len(r.body), 1024, r)
        for rid in ("rid-big", "rid-decl"):
            e = fd.wait_access_log(request_id=rid)
            self.assertEqual(e["status"], 413, e)
        # the connection goes on
        st = c.get("/o?body=again")
        self.assertEqual((st.status, st.body), (200, b"again"), st)


if __name__ == "__main__":
    harness.main()
