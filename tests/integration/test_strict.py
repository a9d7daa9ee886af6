"""Strict HTTP/1.1 on the client side (issue 5, item 1; SPEC section 4).

Every malformed or ambiguous request is refused with the right status, a
JSON error body carrying the request id, and a close; the upstream never
sees any of it.  413/431/400 come before the whole request was read and are
followed by a lingering close.  Slow heads and bodies get 408.  An
absolute-form target is routed by its path only: fanoutd is not an open
proxy.
"""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import os  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import harness  # noqa: E402

# Only StrictTimeoutTest runs with these; everything else has timeouts
# that cannot fire (harness.CALM_SERVER), so that a slow machine cannot turn
# the answer under test into a 408.
HEADER_TIMEOUT = 0.3
BODY_TIMEOUT = 0.3
MAX_HEADER = 4096
MAX_BODY = 65536


def raw_head(lines, target="/", method="GET", version="HTTP/1.1", host=True):
    """A request head from raw LINES (bytes or str, no line ends added
    beyond CRLF between them)."""
    out = [("%s %s %s" % (method, target, version)).encode("latin-1")]
    if host:
        out.append(b"Host: fanoutd.test")
    for line in lines:
        out.append(line.encode("latin-1") if isinstance(line, str) else line)
    return b"\r\n".join(out) + b"\r\n\r\n"


class StrictBase(harness.SharedDaemonTest):
    """The helpers; the tests are in the two classes below."""

    FAKES = ("a", "other")
    SERVER = {}

    @classmethod
    def config(cls, f):
        server = {"max_header_size": "4k", "max_body_size": "64k"}
        server.update(cls.SERVER)
        return dict(
            upstreams={"a": f["a"], "other": f["other"]},
            routes={"r": {"match": "/", "upstreams": "a"}},
            server=server)

    # helpers ----------------------------------------------------------
    def seen(self):
        """What the upstreams have seen so far: requests and connections."""
        return ({id(r) for f in self.f.values() for r in f.snapshot()} |
                {id(c) for f in self.f.values() for c in f.connections})

    def accepted_all(self):
        """Every connection made to an upstream so far has been accepted by
        it: a connection of our own is accepted after those queued before
        it (the fakes accept in order)."""
        for f in self.f.values():
            with socket.create_connection((f.host, f.port)) as s:
                me = s.getsockname()
                f.wait_for(lambda: any(c.peer == me for c in f.connections),
                           what="our own connection accepted")

    def assertNothingForwarded(self, before, within=0.3):
        """No upstream received any request since BEFORE (a snapshot from
        seen()), observed for WITHIN seconds."""
        def new():
            return [r for f in self.f.values() for r in f.snapshot()
                    if id(r) not in before]
        try:
            got = harness.wait_until(new, within, "a forwarded request")
        except AssertionError:
            return
        self.fail("a rejected request reached an upstream: %r" % got)

    def assertNoWholeRequestForwarded(self, before):
        """Mode proxy sends a body on as it arrives, so an upstream may have
        seen the start of a request that was then refused mid-body: it must
        never have received the whole of it, and its connection must be
        closed (the upload cut), not left waiting for the rest."""
        def new():
            return [r for f in self.f.values() for r in f.snapshot()
                    if id(r) not in before]
        # Once fanoutd has released the transfer, every upstream connection
        # it opened has been accepted, and each of those that carried any
        # of the request has been seen closed (after all it carried), nothing
        # more of it can arrive later (and be taken for the next test's).
        self.fd.wait_metric("fanoutd_upstream_transfers_in_flight",
                            lambda v: v == 0)
        self.accepted_all()
        for f in self.f.values():
            with f.cond:
                conns = [c for c in f.connections if id(c) not in before]
            f.wait_connections_closed(
                conns + [r.conn for r in f.snapshot() if id(r) not in before])
        for r in new():
            self.assertIsNone(r.complete, "a refused request reached an "
                              "upstream whole: %r" % r)

    def reject(self, raw, status, close=True, what=None, timeout=harness.PATIENCE):
        """Send RAW on a new connection and expect STATUS as a JSON error,
        then (CLOSE) the connection closed by fanoutd."""
        what = what or repr(raw[:120])
        with self.fd.client(timeout=timeout) as c:
            try:
                c.send(raw)
            except OSError as e:
                self.fail("%s: sending failed: %r" % (what, e))
            try:
                r = c.read_response(timeout=timeout)
            except AssertionError as e:
                self.fail("%s: no %d answer: %s" % (what, status, e))
            try:
                self.assertErrorJSON(r, status)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (what, e)) from None
            if close:
                self.assertTrue(r.conn_close,
                                "%s: %d without Connection: close: %r" % (what, status, r))
                try:
                    c.wait_eof()
                except AssertionError as e:
                    self.fail("%s: %s" % (what, e))
                self.assertEqual(bytes(c.buf), b"",
                                 "%s: bytes after the %d: %r" % (what, status, bytes(c.buf)))
        return r

    def reject_all(self, cases, status, close=True):
        before = self.seen()
        failures = []
        for name, raw in cases:
            mark = self.seen()
            try:
                self.reject(raw, status, close=close, what=name)
            except AssertionError as e:
                failures.append(str(e))
            fwd = [r for f in self.f.values() for r in f.snapshot() if id(r) not in mark]
            if fwd:
                failures.append("%s: forwarded upstream as %r" % (
                    name, [(r.method, r.target, r.headers) for r in fwd]))
        if not failures:
            self.assertNothingForwarded(before)
        if failures:
            self.fail("%d of %d cases wrong:\n  %s" % (
                len(failures), len(cases), "\n  ".join(failures)))


class StrictTest(StrictBase):
    """Everything but the timeouts, with timeouts that cannot fire."""

    # controls: what is valid is served ----------------------------------
    def test_valid_requests_are_forwarded(self):
        """The controls for everything below: the same shapes, well formed,
        reach the upstream intact."""
        tag = self.tag("ok")
        with self.fd.client() as c:
            c.send(raw_head(["Content-Length: 5"], "/v?echo=1&tag=%s-cl" % tag, "POST") + b"hello")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["body"], "hello")
            c.send(raw_head(["Transfer-Encoding: chunked"], "/v?echo=1&tag=%s-te" % tag, "POST")
                   + b"3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["body"], "hello")
            c.send(raw_head(["X-Obs: caf\xe9", "X-Tab: a\tb"], "/v?echo=1&tag=%s-ob" % tag))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            c.send(raw_head([], "/v?echo=1&tag=%s-10" % tag, version="HTTP/1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        for suffix in ("cl", "te", "ob", "10"):
            self.f["a"].wait_for_tag("%s-%s" % (tag, suffix))

    # 400 ---------------------------------------------------------------
    def test_framing_ambiguity_is_400(self):
        """Request smuggling shapes: Content-Length with Transfer-Encoding,
        several or invalid Content-Length values.  The smuggled request
        after the body must never run."""
        smuggled = b"GET /?tag=SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
        cases = [
            ("CL+TE", raw_head(["Content-Length: 5", "Transfer-Encoding: chunked"],
                               "/", "POST") + b"0\r\n\r\n" + smuggled),
            ("TE+CL", raw_head(["Transfer-Encoding: chunked", "Content-Length: 50"],
                               "/", "POST") + b"0\r\n\r\n" + smuggled),
            ("two CL", raw_head(["Content-Length: 5", "Content-Length: 6"], "/", "POST")
             + b"hello!" + smuggled),
            ("two equal CL", raw_head(["Content-Length: 5", "Content-Length: 5"], "/", "POST")
             + b"hello"),
            ("CL list", raw_head(["Content-Length: 5, 6"], "/", "POST") + b"hello!"),
            ("CL abc", raw_head(["Content-Length: abc"], "/", "POST")),
            ("CL -1", raw_head(["Content-Length: -1"], "/", "POST")),
            ("CL +5", raw_head(["Content-Length: +5"], "/", "POST") + b"hello"),
            ("CL 0x10", raw_head(["Content-Length: 0x10"], "/", "POST")),
            ("CL 5 5", raw_head(["Content-Length: 5 5"], "/", "POST") + b"hello"),
            ("CL empty", raw_head(["Content-Length: "], "/", "POST")),
            ("CL overflow", raw_head(["Content-Length: 99999999999999999999999"], "/", "POST")),
            ("TE chunked twice", raw_head(["Transfer-Encoding: chunked",
                                           "Transfer-Encoding: chunked"], "/", "POST")
             + b"0\r\n\r\n"),
        ]
        self.reject_all(cases, 400)

    def test_bad_chunks_are_400(self):
        te = raw_head(["Transfer-Encoding: chunked"], "/", "POST")
        cases = [
            ("chunk size zz", te + b"zz\r\nhello\r\n0\r\n\r\n"),
            ("chunk size -1", te + b"-1\r\nx\r\n0\r\n\r\n"),
            ("chunk size 0x5", te + b"0x5\r\nhello\r\n0\r\n\r\n"),
            ("chunk size empty", te + b"\r\nhello\r\n0\r\n\r\n"),
            ("chunk size overflow", te + b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
            ("chunk data longer than its size", te + b"3\r\nhello\r\n0\r\n\r\n"),
            ("chunk size with space", te + b"5 5\r\nhello\r\n0\r\n\r\n"),
            ("chunk size bare LF", te + b"5\nhello\r\n0\r\n\r\n"),
        ]
        self.reject_all(cases, 400)

    def test_malformed_header_lines_are_400(self):
        cases = [
            ("obs-fold", raw_head(["X-A: a", " folded"])),
            ("obs-fold tab", raw_head(["X-A: a", "\tfolded"])),
            ("space before colon", raw_head(["X-A : a"])),
            ("tab before colon", raw_head(["X-A\t: a"])),
            ("space before colon (CL)", raw_head(["Content-Length : 5"], "/", "POST") + b"hello"),
            ("no colon", raw_head(["X-A a"])),
            ("empty name", raw_head([": a"])),
            ("space in name", raw_head(["X A: a"])),
            ("CTL in name", raw_head([b"X-\x01A: a"])),
            ("NUL in name", raw_head([b"X-\x00A: a"])),
            ("CTL in value", raw_head([b"X-A: a\x01b"])),
            ("NUL in value", raw_head([b"X-A: a\x00b"])),
            ("DEL in value", raw_head([b"X-A: a\x7fb"])),
            ("ESC in value", raw_head([b"X-A: a\x1bb"])),
            ("bare CR in value", raw_head([b"X-A: a\rb"])),
            ("bare CR line end", b"GET / HTTP/1.1\r\nHost: fanoutd.test\rX-A: a\r\n\r\n"),
            ("bare LF line ends", b"GET / HTTP/1.1\nHost: fanoutd.test\nX-A: a\n\n"),
            ("bare LF in head", b"GET / HTTP/1.1\r\nHost: fanoutd.test\nX-A: a\r\n\r\n"),
            ("no Host", raw_head([], host=False)),
            ("two Hosts", raw_head(["Host: other.test"])),
            ("bad Host", raw_head([], host=False)[:-2] + b"Host: a b\r\n\r\n"),
        ]
        self.reject_all(cases, 400)

    def test_bad_request_line_is_400(self):
        cases = [
            ("target foo", b"GET foo HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("target * with GET", b"GET * HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("empty target", b"GET  HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("space in target", b"GET /a b HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("CTL in target", b"GET /a\x01b HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("NUL in target", b"GET /a\x00b HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("lower-case version", b"GET / http/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("garbage version", b"GET / HTTP/1.1x\r\nHost: fanoutd.test\r\n\r\n"),
            ("bare CR in request line", b"GET /\r HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("bad method chars", b"G(T / HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
            ("absolute-form without host", b"GET http:///x HTTP/1.1\r\nHost: fanoutd.test\r\n\r\n"),
        ]
        self.reject_all(cases, 400)

    def test_request_line_without_version(self):
        """GET / with no version (HTTP/0.9 style): 400 or 505, never
        forwarded."""
        before = self.seen()
        with self.fd.client() as c:
            c.send(b"GET /\r\nHost: fanoutd.test\r\n\r\n")
            r = c.read_response()
            self.assertIn(r.status, (400, 505), r)
            self.assertErrorJSON(r, r.status)
            c.wait_eof()
        self.assertNothingForwarded(before)

    # 501, 505 ------------------------------------------------------------
    def test_unknown_transfer_coding_is_501(self):
        cases = [
            ("TE gzip", raw_head(["Transfer-Encoding: gzip"], "/", "POST") + b"xxxx"),
            ("TE identity", raw_head(["Transfer-Encoding: identity"], "/", "POST") + b"xxxx"),
            ("TE gzip, chunked", raw_head(["Transfer-Encoding: gzip, chunked"], "/", "POST")
             + b"0\r\n\r\n"),
            ("TE x-custom", raw_head(["Transfer-Encoding: x-custom"], "/", "POST")),
        ]
        self.reject_all(cases, 501)

    def test_chunked_not_last_is_rejected(self):
        """RFC 9112 6.3: chunked not the final coding: the length cannot be
        known; 400 (or 501, the coding being unsupported) and close."""
        raw = raw_head(["Transfer-Encoding: chunked, gzip"], "/", "POST") + b"0\r\n\r\n"
        before = self.seen()
        with self.fd.client() as c:
            c.send(raw)
            r = c.read_response()
            self.assertIn(r.status, (400, 501), r)
            self.assertErrorJSON(r, r.status)
            c.wait_eof()
        self.assertNothingForwarded(before)

    def test_unsupported_version_is_505(self):
        cases = [
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: fanoutd.test\r\n\r\n"),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: fanoutd.test\r\n\r\n"),
            ("HTTP/3.0", b"GET / HTTP/3.0\r\nHost: fanoutd.test\r\n\r\n"),
            ("HTTP/0.9", b"GET / HTTP/0.9\r\nHost: fanoutd.test\r\n\r\n"),
        ]
        self.reject_all(cases, 505)

    # 431, 413 ------------------------------------------------------------
    def test_head_over_max_header_size_is_431(self):
        big = "X-Big: " + "b" * (MAX_HEADER + 100)
        many = ["X-H%d: %s" % (i, "v" * 60) for i in range(MAX_HEADER // 60 + 10)]
        cases = [
            ("one big header", raw_head([big])),
            ("many headers", raw_head(many)),
            ("big target", raw_head([], "/" + "t" * (MAX_HEADER + 100))),
        ]
        self.reject_all(cases, 431)

    def test_431_before_the_head_ends(self):
        """A head that grows past max_header_size without ever ending is
        answered 431 at once, not at header_timeout (ten minutes here: an
        answer that waited for it would not come in time)."""
        before = self.seen()
        with self.fd.client() as c:
            c.send(b"GET / HTTP/1.1\r\nHost: fanoutd.test\r\n")
            c.send(b"X-Big: " + b"y" * (MAX_HEADER + 512))
            r = c.read_response()
            self.assertErrorJSON(r, 431)
        self.assertNothingForwarded(before)

    def test_413_before_the_body_is_sent(self):
        """Content-Length: 10m and no body at all: the 413 arrives without a
        byte of the body being sent (not at body_timeout, ten minutes
        here)."""
        before = self.seen()
        with self.fd.client() as c:
            c.send(raw_head(["Content-Length: %d" % (10 << 20)], "/", "POST"))
            r = c.read_response()
            self.assertErrorJSON(r, 413)
            self.assertTrue(r.conn_close, r)
            c.wait_eof()
        self.assertNothingForwarded(before)

    def test_413_for_a_growing_chunked_body(self):
        """A chunked body that grows past max_body_size is answered 413
        while it is still coming (no final chunk is ever sent; the body
        timeout is ten minutes away)."""
        before = self.seen()
        with self.fd.client() as c:
            c.send(raw_head(["Transfer-Encoding: chunked"], "/", "POST"))
            chunk = b"c" * 16384
            sent = 0
            while sent <= MAX_BODY + 16384:
                try:
                    c.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                except OSError:
                    break           # already answered and closed: read it
                sent += len(chunk)
            r = c.read_response()
            self.assertErrorJSON(r, 413)
            c.wait_eof()
        self.assertNoWholeRequestForwarded(before)

    def test_body_at_the_limit_is_served(self):
        """The control for 413: a body of exactly max_body_size passes,
        one byte more does not."""
        tag = self.tag("lim")
        r, _ = self.call("/lim?echo=1&tag=" + tag, method="POST", body=b"l" * MAX_BODY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_len"], MAX_BODY)
        before = self.seen()
        self.reject(raw_head(["Content-Length: %d" % (MAX_BODY + 1)], "/", "POST")
                    + b"l" * (MAX_BODY + 1), 413)
        self.assertNothingForwarded(before)

    # lingering close -------------------------------------------------------
    # What lingering() sends: body bytes until the answer is there (at
    # most), and after it.  Together well under what fanoutd discards while
    # lingering (1 MB), so that it is all taken.
    LINGER_BEFORE = 192 * 1024
    LINGER_AFTER = 64 * 1024

    def lingering(self, head, status):
        """Send HEAD, then body bytes until the answer is there, then more,
        as a client still uploading does, without reading: the answer must
        be readable whole afterwards, and the bytes sent after it must be
        taken (read and discarded), not met with a reset.  A close without
        lingering resets the connection once bytes arrive that nobody
        reads, and a reset may throw the unread answer away.  Nothing is
        paced by the clock: the order (answer, then more bytes) is what
        matters.  (fanoutd lingers for up to 2 s after its answer: the
        bytes after it go out at once, not seconds later.)"""
        c = self.fd.client()
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            c.send(head)
            c.sock.setblocking(False)
            piece = b"z" * 8192
            send_error = None
            before = after = 0
            while send_error is None:
                more = [c.sock] if before < self.LINGER_BEFORE else []
                readable, writable, _ = select.select([c.sock], more, [],
                                                      harness.PATIENCE)
                if readable:
                    break           # the answer (or a close) is there
                if not writable:
                    self.fail("no %d answer within %.0fs" % (status, harness.PATIENCE))
                try:
                    before += c.sock.send(piece)
                except BlockingIOError:
                    pass
                except OSError as e:
                    send_error = e
            while send_error is None and after < self.LINGER_AFTER:
                _, writable, _ = select.select([], [c.sock], [], harness.PATIENCE)
                if not writable:
                    self.fail("fanoutd stopped taking bytes after its %d answer "
                              "(%d taken)" % (status, after))
                try:
                    after += c.sock.send(piece)
                except BlockingIOError:
                    pass
                except OSError as e:
                    send_error = e
            if send_error is None:
                # a reset that came in after the last send
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    send_error = OSError(err, os.strerror(err))
            c.sock.setblocking(True)
            c.sock.settimeout(harness.PATIENCE)
            try:
                r = c.read_response()
            except AssertionError as e:
                self.fail("the %d answer was lost (send error %r, reset seen %s): %s"
                          % (status, send_error, c.reset_seen, e))
            self.assertErrorJSON(r, status)
            self.assertIsNone(send_error,
                              "fanoutd reset the connection after its %d answer "
                              "(no lingering close; %d bytes sent before the answer "
                              "was seen, %d after): %r"
                              % (status, before, after, send_error))
            # the upload done, fanoutd closes in turn, without a reset
            c.sock.shutdown(socket.SHUT_WR)
            c.wait_eof()
            self.assertFalse(c.reset_seen, "fanoutd reset the connection at its "
                             "end (it had not read all that was sent)")
        finally:
            c.__exit__()

    def test_lingering_close_after_413(self):
        self.lingering(raw_head(["Content-Length: %d" % (10 << 20)], "/", "POST"), 413)

    def test_lingering_close_after_431(self):
        self.lingering(raw_head(["X-Big: " + "b" * (MAX_HEADER + 100)], "/", "POST")[:-4]
                       + b"\r\nContent-Length: 100000000\r\n\r\n", 431)

    def test_lingering_close_after_400(self):
        self.lingering(raw_head(["Content-Length: 5", "Content-Length: 9"], "/", "POST"), 400)

    # not an open proxy ---------------------------------------------------------
    def test_absolute_form_is_routed_by_path(self):
        """GET http://HOST/x is routed by /x; the upstream gets origin form
        and its own Host; the host named in the target is never contacted
        (here: another fake upstream on loopback)."""
        other = self.f["other"]
        n_conn = len(other.connections)
        for host in ("other.example", "127.0.0.1:%d" % other.port):
            tag = self.tag("abs")
            target = "http://%s/x/y?echo=1&tag=%s" % (host, tag)
            r, _ = self.call(target)
            self.assertEqual(r.status, 200, r)
            req = self.f["a"].wait_for_tag(tag)
            self.assertEqual(req.target, "/x/y?echo=1&tag=%s" % tag)
            self.assertEqual(req.header("host"), "127.0.0.1:%d" % self.f["a"].port)
        self.assertNoRequest(other, lambda r: True, 0.2, "a request via absolute-form")
        self.assertEqual(len(other.connections), n_conn,
                         "fanoutd connected to the host named in an absolute-form target")

    def test_connect_is_refused(self):
        """CONNECT (authority-form) is never tunnelled."""
        other = self.f["other"]
        n_conn = len(other.connections)
        before = self.seen()
        with self.fd.client() as c:
            c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                   % (other.port, other.port))
            r = c.read_response()
            self.assertIn(r.status, (400, 405, 501), r)
            self.assertErrorJSON(r, r.status)
        self.assertNothingForwarded(before)
        self.assertEqual(len(other.connections), n_conn)

    def test_error_is_logged_with_its_request_id(self):
        """A rejected request still gets its access-log line, keyed by the
        X-Request-Id it was answered with."""
        r = self.reject(raw_head(["Content-Length: 1", "Content-Length: 2"], "/", "POST"), 400)
        rid = r.header("x-request-id")
        e = self.fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 400, e)



class StrictTimeoutTest(StrictBase):
    """header_timeout and body_timeout themselves: short, and the lower
    bound is the test (the 408 never comes before the timeout).  How late
    it may come is left to the waits' patience: fanoutd's timer is what
    fires, however slow the machine."""

    SERVER = {"header_timeout": "%dms" % (HEADER_TIMEOUT * 1000),
              "body_timeout": "%dms" % (BODY_TIMEOUT * 1000)}

    # 408 ---------------------------------------------------------------------
    def test_slow_head_is_408(self):
        """Half a head, then nothing: 408 at header_timeout (from the
        accept, so never before HEADER_TIMEOUT after the connect began); a
        head dripping a byte at a time does not extend it: its 408 comes
        while the drip goes on."""
        before = self.seen()
        t0 = time.monotonic()
        with self.fd.client() as c:
            c.send(b"GET /slowhead HTTP/1.1\r\nHost: fanoutd.test\r\n")
            r = c.read_response()
            dt = time.monotonic() - t0
            self.assertErrorJSON(r, 408)
            self.assertGreaterEqual(dt, HEADER_TIMEOUT * 0.9, "408 too early: %.0f ms" % (dt * 1000))
            c.wait_eof()
        t0 = time.monotonic()
        with self.fd.client() as c:
            # a byte every 20 ms or more: the drip would last a minute (the
            # head stays under max_header_size), far past header_timeout
            head = b"GET /drip HTTP/1.1\r\nHost: fanoutd.test\r\nX-Drip: " + b"d" * 3000
            answered = False
            for i in range(len(head)):
                try:
                    c.send(head[i:i + 1])
                except OSError:
                    answered = True     # answered and closed: read it
                    break
                # pacing, not synchronisation: stop as soon as an answer is
                # there
                readable, _, _ = select.select([c.sock], [], [], 0.02)
                if readable:
                    answered = True
                    break
            self.assertTrue(answered, "no answer while a head dripped for %.0fs: "
                            "the drip extended header_timeout (%d ms)"
                            % (time.monotonic() - t0, HEADER_TIMEOUT * 1000))
            r = c.read_response()
            dt = time.monotonic() - t0
            self.assertErrorJSON(r, 408)
            self.assertGreaterEqual(dt, HEADER_TIMEOUT * 0.9, "408 too early: %.0f ms" % (dt * 1000))
        self.assertNothingForwarded(before)

    def test_slow_body_is_408(self):
        """A body that stops coming: 408 at body_timeout, never before it
        (measured from before the head was sent)."""
        before = self.seen()
        with self.fd.client() as c:
            t0 = time.monotonic()
            c.send(raw_head(["Content-Length: 100"], "/slowbody", "POST") + b"0123456789")
            r = c.read_response()
            dt = time.monotonic() - t0
            self.assertErrorJSON(r, 408)
            self.assertGreaterEqual(dt, BODY_TIMEOUT * 0.9, "408 too early: %.0f ms" % (dt * 1000))
            c.wait_eof()
        with self.fd.client() as c:
            c.send(raw_head(["Transfer-Encoding: chunked"], "/slowbody", "POST") + b"5\r\nab")
            r = c.read_response()
            self.assertErrorJSON(r, 408)
        self.assertNoWholeRequestForwarded(before)

    def test_idle_connection_is_closed(self):
        """A connection that never sends a byte is closed at header_timeout
        (a 408 is allowed, not required), not before it; not at the
        keep-alive timeout (ten minutes here) either."""
        t0 = time.monotonic()
        with self.fd.client() as c:
            c.wait_eof()
            dt = time.monotonic() - t0
            self.assertGreaterEqual(dt, HEADER_TIMEOUT * 0.9, "closed too early: %.0f ms"
                                    % (dt * 1000))
            if c.buf:
                r = c.read_response()
                self.assertErrorJSON(r, 408)


if __name__ == "__main__":
    harness.main()
