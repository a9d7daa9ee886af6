"""TLS termination on the front end (listen = ADDR tls, tls_cert, tls_key).

HTTP/1.1 over TLS (Python's ssl module with ALPN http/1.1, and curl -k)
reaches the upstream with X-Forwarded-Proto: https; a client that hangs up
over TLS still cancels its request; failed handshakes (clear text on the TLS
port, a client that gives up mid-handshake, a TLS 1.0 client) are counted
and leave the daemon serving; certificate errors are FILE:LINE errors at -t
and at reload; SIGHUP loads a new certificate for new connections and a
broken one changes nothing. The TLS policy: TLS 1.2 suites ECDHE with AEAD
only by default (a CBC-only client is refused), tls_ciphers replaces them,
tls_min_version = 1.3 refuses TLS 1.2, and a bad value of either fails -t
at its line.

Each test makes its own throwaway self-signed certificates with the openssl
command in a temporary directory that its cleanup deletes.
"""

import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
import h2raw  # noqa: E402

PATIENCE = harness.PATIENCE


def tcp(port):
    """A plain TCP connection to fanoutd's PORT."""
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)


def line_of(text, needle):
    """1-based number of the first line of TEXT containing NEEDLE."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the config" % needle)


class TlsClient(harness.Client):
    """harness.Client over TLS: the same request and response helpers."""

    def __init__(self, port, host="127.0.0.1", timeout=PATIENCE, alpn=("http/1.1",),
                 minimum=None, maximum=None):
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = raw
        ctx = h2raw.client_context(alpn, minimum, maximum)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.reset_seen = False
        self.closed_at = None

    @property
    def alpn(self):
        return self.sock.selected_alpn_protocol()

    def peer_der(self):
        return self.sock.getpeercert(binary_form=True)

    def _fill(self, deadline):
        try:
            return harness.Client._fill(self, deadline)
        except ssl.SSLError:
            # the peer went without close_notify
            self.eof = True
            return False


class TlsBase(harness.TestCase):

    def setUp(self):
        super().setUp()
        h2raw.tool("openssl")
        self.certdir = tempfile.mkdtemp(prefix="fanoutd-tls-")
        self.cert, self.key = h2raw.make_cert(self.certdir, "a")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.certdir, ignore_errors=True)

    def tls_daemon(self, start=True, cert=None, key=None, **kw):
        d = h2raw.TlsFanoutd(cert=cert or self.cert, key=key or self.key, **kw)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        if start:
            d.start()
        return d

    def start(self, **kw):
        self.up = self.fake("up")
        opts = dict(upstreams={"up": self.up},
                    routes={"r": {"match": "/", "upstreams": "up"}})
        opts.update(kw)
        return self.tls_daemon(**opts)

    def tls_client(self, fd, **kw):
        c = TlsClient(fd.tls_port, **kw)
        self.addCleanup(c.__exit__)
        return c

    def assertServing(self, fd):
        """The daemon still runs and a good TLS request works."""
        self.assertTrue(fd.running(), "fanoutd died:\n%s" % fd.stderr_tail())
        self.assertEqual(fd.healthz().status, 200)
        with self.tls_client(fd) as c:
            r = c.get("/ok?body=still-serving")
        self.assertEqual((r.status, r.body), (200, b"still-serving"), r)


class TlsRequestTest(TlsBase):

    def test_http11_over_tls_with_alpn(self):
        fd = self.start()
        m0 = fd.metrics()
        with self.tls_client(fd) as c:
            self.assertEqual(c.alpn, "http/1.1")
            self.assertEqual(c.peer_der(), h2raw.cert_der(self.cert))
            r = c.get("/p1?body=over-tls&tag=t1", [("X-Request-Id", "tls-1")])
            self.assertEqual((r.status, r.body), (200, b"over-tls"), r)
            # keep-alive: a second request on the same TLS connection
            r = c.get("/p2?body=again&tag=t2")
            self.assertEqual((r.status, r.body), (200, b"again"), r)
        req = self.up.wait_for_tag("t1")
        self.assertEqual(req.header("x-forwarded-proto"), "https", req.headers)
        self.assertEqual(self.up.wait_for_tag("t2").header("x-forwarded-proto"), "https")
        e = fd.wait_access_log(request_id="tls-1")
        self.assertEqual((e["status"], e["proto"], e["tls"]), (200, "HTTP/1.1", True), e)
        m1 = fd.metrics()
        self.assertEqual(m1.get("fanoutd_tls_handshakes_total", result="ok"),
                         m0.get("fanoutd_tls_handshakes_total", result="ok") + 1)
        self.assertEqual(m1.get("fanoutd_tls_handshakes_total", result="error"),
                         m0.get("fanoutd_tls_handshakes_total", result="error"))
        self.assertEqual(m1.get("fanoutd_connections_by_proto_total", proto="http/1.1"),
                         m0.get("fanoutd_connections_by_proto_total", proto="http/1.1") + 1)
        self.assertEqual(m1.get("fanoutd_requests_by_proto_total", proto="HTTP/1.1"),
                         m0.get("fanoutd_requests_by_proto_total", proto="HTTP/1.1") + 2)

    def test_clear_text_port_says_http(self):
        # the control for X-Forwarded-Proto: the clear-text listener of the
        # same daemon forwards "http", and the log says tls false
        fd = self.start()
        r = fd.get("/plain?body=plain&tag=p", [("X-Request-Id", "plain-1")])
        self.assertEqual((r.status, r.body), (200, b"plain"), r)
        self.assertEqual(self.up.wait_for_tag("p").header("x-forwarded-proto"), "http")
        e = fd.wait_access_log(request_id="plain-1")
        self.assertEqual((e["proto"], e["tls"]), ("HTTP/1.1", False), e)
        # and a TLS client hello on the clear-text port is no TLS: the
        # handshake fails on what fanoutd answers (or on its close), not
        # for want of an answer
        with self.assertRaises((ssl.SSLError, OSError)) as cm:
            TlsClient(fd.port).sock.close()
        self.assertNotIsInstance(cm.exception, socket.timeout)

    def test_client_forwarded_proto_is_replaced(self):
        fd = self.start()
        with self.tls_client(fd) as c:
            r = c.get("/f?tag=fp&body=x", [("X-Forwarded-Proto", "http")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.up.wait_for_tag("fp").header_all("x-forwarded-proto"),
                         ["https"])

    def test_tls_versions(self):
        fd = self.start()
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.tls_client(fd, minimum=v, maximum=v) as c:
                self.assertEqual(c.sock.version(), v.name.replace("v1_", "v1."))
                r = c.get("/v?body=" + v.name)
            self.assertEqual((r.status, r.body), (200, v.name.encode()), r)

    def test_no_alpn_is_http11(self):
        fd = self.start()
        with self.tls_client(fd, alpn=None) as c:
            self.assertIsNone(c.alpn)
            r = c.get("/n?body=no-alpn")
        self.assertEqual((r.status, r.body), (200, b"no-alpn"), r)

    def test_curl_over_tls(self):
        fd = self.start()
        p = subprocess.run(
            [h2raw.tool("curl"), "-sS", "-k", "--http1.1",
             "--max-time", "%d" % PATIENCE,
             "-H", "X-Request-Id: curl-tls",
             "-w", "\n%{http_code} %{http_version} %{ssl_verify_result}",
             "https://127.0.0.1:%d/c?body=curl-over-tls&tag=curl" % fd.tls_port],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=PATIENCE + 10)
        self.assertEqual(p.returncode, 0, p)
        body, _, tail = p.stdout.decode().rpartition("\n")
        self.assertEqual(body, "curl-over-tls", p.stdout)
        self.assertEqual(tail.split()[:2], ["200", "1.1"], p.stdout)
        self.assertEqual(self.up.wait_for_tag("curl").header("x-forwarded-proto"), "https")
        e = fd.wait_access_log(request_id="curl-tls")
        self.assertEqual((e["status"], e["tls"]), (200, True), e)


class TlsCancelTest(TlsBase):

    def _hang_up(self, how):
        fd = self.start()
        cc0 = fd.metric("fanoutd_cancellations_total", reason="client_closed")
        c = self.tls_client(fd)
        rid = "tls-hangup-" + how
        c.request("GET", "/slow?hang=1&tag=" + how, [("X-Request-Id", rid)])
        req = self.up.wait_for_tag(how)
        self.assertIsNone(req.conn.closed)
        c.abort(how)
        self.assertCancelled(self.up, req,
                             "upstream connection after a TLS client %s" % how)
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual((e["status"], e["cancel_reason"], e["tls"]),
                         (499, "client_closed", True), e)
        fd.wait_metric("fanoutd_cancellations_total", lambda v: v == cc0 + 1,
                       reason="client_closed")
        fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
        fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)
        self.assertServing(fd)

    def test_fin_mid_request_cancels(self):
        # close() on the ssl socket: a FIN, no close_notify
        self._hang_up("close")

    def test_reset_mid_request_cancels(self):
        self._hang_up("rst")

    def test_close_notify_mid_request_cancels(self):
        # a TLS close_notify alert, then FIN: an orderly TLS end
        fd = self.start()
        c = self.tls_client(fd)
        c.request("GET", "/slow?hang=1&tag=cn", [("X-Request-Id", "tls-cn")])
        req = self.up.wait_for_tag("cn")
        try:
            # sends close_notify, then waits for fanoutd's (or its close)
            c.sock.unwrap()
        except socket.timeout:
            self.fail("fanoutd neither answered a close_notify nor closed")
        except (ssl.SSLError, OSError):
            pass
        c.raw.close()
        self.assertCancelled(self.up, req, "upstream connection after close_notify")
        e = fd.wait_access_log(request_id="tls-cn")
        self.assertEqual((e["status"], e["cancel_reason"]), (499, "client_closed"), e)


class TlsHandshakeFailureTest(TlsBase):

    def errors(self, fd):
        return fd.metric("fanoutd_tls_handshakes_total", result="error")

    def _read_to_eof(self, s, timeout=PATIENCE):
        """Everything the server sends until it closes (bounded)."""
        s.settimeout(timeout)
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return data
            except socket.timeout:
                raise AssertionError("the server kept the connection open after "
                                     "a failed handshake (got %r)" % data)
            if not chunk:
                return data
            data += chunk

    def test_clear_text_on_the_tls_port(self):
        fd = self.start()
        e0 = self.errors(fd)
        with tcp(fd.tls_port) as s:
            s.sendall(b"GET /x?tag=plain HTTP/1.1\r\nHost: x\r\n\r\n")
            data = self._read_to_eof(s)
        self.assertNotIn(b"HTTP/1.1", data, "clear text was answered as HTTP")
        fd.wait_metric("fanoutd_tls_handshakes_total", lambda v: v == e0 + 1,
                       result="error")
        self.assertEqual(self.up.requests_tagged("plain"), [])
        self.assertServing(fd)

    def test_client_gives_up_mid_handshake(self):
        fd = self.start()
        e0 = self.errors(fd)
        ok0 = fd.metric("fanoutd_tls_handshakes_total", result="ok")
        # a real ClientHello, through a memory BIO, then a hang-up once the
        # server has answered it (ServerHello ...)
        ctx = h2raw.client_context(("h2", "http/1.1"))
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = out.read()
        self.assertEqual(hello[:1], b"\x16", "not a handshake record")
        with tcp(fd.tls_port) as s:
            s.sendall(hello)
            first = s.recv(5)
            self.assertEqual(first[:1], b"\x16", "no ServerHello: %r" % first)
        fd.wait_metric("fanoutd_tls_handshakes_total", lambda v: v == e0 + 1,
                       result="error")
        self.assertEqual(fd.metric("fanoutd_tls_handshakes_total", result="ok"), ok0)
        self.assertServing(fd)

    def test_tcp_connect_and_close(self):
        # a port scanner: connect, send nothing, leave
        fd = self.start()
        tcp(fd.tls_port).close()
        fd.wait_metric("fanoutd_connections_active", lambda v: v == 0)
        self.assertServing(fd)

    def _old_client_hello(self, version):
        """A ClientHello record for TLS VERSION (0x0301: 1.0, 0x0302: 1.1),
        no extensions: Python's own client will not offer these any more."""
        suites = [0xc02b, 0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035]
        body = (struct.pack(">H", version) + os.urandom(32) + b"\x00" +
                struct.pack(">H", 2 * len(suites)) +
                b"".join(struct.pack(">H", x) for x in suites) + b"\x01\x00")
        hs = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs

    def test_tls10_and_tls11_refused(self):
        fd = self.start()
        for version in (0x0301, 0x0302):
            e0 = self.errors(fd)
            with tcp(fd.tls_port) as s:
                s.sendall(self._old_client_hello(version))
                data = self._read_to_eof(s)
            # an alert record: protocol_version (70), fatal
            self.assertGreaterEqual(len(data), 7, "no alert: %r" % data)
            self.assertEqual(data[0], 0x15, "not an alert: %r" % data)
            self.assertEqual(data[5:7], b"\x02\x46",
                             "not a protocol_version alert: %r" % data)
            fd.wait_metric("fanoutd_tls_handshakes_total", lambda v: v == e0 + 1,
                           result="error")
        self.assertServing(fd)


CBC_ONLY = "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"
DEFAULT_SUITES = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                  "ECDHE-ECDSA-CHACHA20-POLY1305")


def handshake(port, maximum=None, minimum=None, ciphers=None):
    """A TLS handshake with fanoutd's PORT: (version, cipher) on success,
    the ssl.SSLError (or the reset) on failure."""
    ctx = h2raw.client_context(("http/1.1",), minimum, maximum)
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    raw = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, ConnectionResetError) as e:
        return e
    finally:
        raw.close()
    try:
        return s.version(), s.cipher()[0]
    finally:
        s.close()


class TlsPolicyTest(TlsBase):
    """TLS 1.2 and 1.3 only; TLS 1.2 suites ECDHE with an AEAD cipher
    (Mozilla intermediate without DHE) unless tls_ciphers says otherwise;
    tls_min_version = 1.3 leaves TLS 1.2 out. The certificates are EC
    (P-256): the ECDSA suites of the default list are the ones in play."""

    def errors(self, fd):
        return fd.metric("fanoutd_tls_handshakes_total", result="error")

    def assertRefused(self, fd, what, **kw):
        e0 = self.errors(fd)
        got = handshake(fd.tls_port, **kw)
        self.assertIsInstance(got, (ssl.SSLError, ConnectionResetError),
                              "%s: the handshake went through: %r" % (what, got))
        fd.wait_metric("fanoutd_tls_handshakes_total", lambda v: v == e0 + 1,
                       result="error")

    def test_cbc_only_tls12_client_refused(self):
        fd = self.start()
        self.assertRefused(fd, "CBC suites only", maximum=ssl.TLSVersion.TLSv1_2,
                           ciphers=CBC_ONLY)
        self.assertServing(fd)

    def test_aead_tls12_client_accepted(self):
        fd = self.start()
        for suite in DEFAULT_SUITES:
            got = handshake(fd.tls_port, maximum=ssl.TLSVersion.TLSv1_2, ciphers=suite)
            self.assertEqual(got, ("TLSv1.2", suite))
        # a client offering everything gets an AEAD suite all the same
        got = handshake(fd.tls_port, maximum=ssl.TLSVersion.TLSv1_2,
                        ciphers=CBC_ONLY + ":" + DEFAULT_SUITES[1])
        self.assertEqual(got, ("TLSv1.2", DEFAULT_SUITES[1]))

    def test_tls_ciphers_replaces_the_default(self):
        # the control for the CBC refusal: with the suite allowed, the same
        # client gets through, so it was the server's list that refused it
        fd = self.start(server={"tls_ciphers": "ECDHE-ECDSA-AES128-SHA  # CBC, on purpose"})
        got = handshake(fd.tls_port, maximum=ssl.TLSVersion.TLSv1_2, ciphers=CBC_ONLY)
        self.assertEqual(got, ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA"))
        self.assertRefused(fd, "a default suite outside tls_ciphers",
                           maximum=ssl.TLSVersion.TLSv1_2, ciphers=DEFAULT_SUITES[0])
        # TLS 1.3 keeps its own suites
        got = handshake(fd.tls_port, minimum=ssl.TLSVersion.TLSv1_3)
        self.assertEqual(got[0], "TLSv1.3")

    def test_min_version_13_refuses_tls12(self):
        fd = self.start(server={"tls_min_version": "1.3"})
        self.assertRefused(fd, "TLS 1.2 only", maximum=ssl.TLSVersion.TLSv1_2)
        with self.tls_client(fd, minimum=ssl.TLSVersion.TLSv1_3) as c:
            self.assertEqual(c.sock.version(), "TLSv1.3")
            r = c.get("/t?body=tls13")
        self.assertEqual((r.status, r.body), (200, b"tls13"), r)

    def test_reload_changes_min_version_for_new_connections(self):
        fd = self.start()
        before = self.tls_client(fd, maximum=ssl.TLSVersion.TLSv1_2)
        self.assertEqual(before.get("/b?body=1").status, 200)
        fd.server_opts["tls_min_version"] = "1.3"
        fd.reload("ok")
        self.assertRefused(fd, "TLS 1.2 after the reload", maximum=ssl.TLSVersion.TLSv1_2)
        # the connection from before keeps its TLS 1.2
        r = before.get("/b?body=still")
        self.assertEqual((r.status, r.body), (200, b"still"), r)
        self.assertEqual(before.sock.version(), "TLSv1.2")


class TlsConfigTest(TlsBase):

    def check(self, fd):
        fd.port = harness.free_port()
        fd.admin_port = harness.free_port()
        fd.write_config()
        with open(fd.config_path) as f:
            text = f.read()
        return harness.run_cli(["-t", "-c", fd.config_path]), text

    def cfg(self, **kw):
        up = self.fake("up")
        return self.tls_daemon(start=False, upstreams={"up": up},
                               routes={"r": {"match": "/", "upstreams": "up"}}, **kw)

    def assertConfigError(self, p, fd, line, pattern):
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, r"(?m)%s:%d: .*%s" % (
            re.escape(fd.config_path), line, pattern), p.stderr)

    def test_good_tls_config_checks_ok(self):
        fd = self.cfg()
        p, _ = self.check(fd)
        self.assertEqual(p.returncode, 0, p)

    def test_tls_listen_without_cert_and_key(self):
        fd = self.cfg()
        fd.cert = fd.key = None
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "listen = "), "tls_cert")

    def test_tls_listen_without_key(self):
        fd = self.cfg()
        fd.key = None
        p, text = self.check(fd)
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, r"(?m)%s:\d+: .*tls_key" % re.escape(fd.config_path))

    def test_missing_cert_file(self):
        missing = os.path.join(self.certdir, "nosuch.pem")
        fd = self.cfg(cert=missing)
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_cert = "), re.escape(missing))

    def test_cert_file_not_pem(self):
        bad = os.path.join(self.certdir, "bad.pem")
        with open(bad, "w") as f:
            f.write("this is not a certificate\n")
        fd = self.cfg(cert=bad)
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_cert = "), re.escape(bad))

    def test_key_not_matching_cert(self):
        _, other_key = h2raw.make_cert(self.certdir, "b")
        fd = self.cfg(key=other_key)
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_key = "), "match")

    def test_cert_without_tls_listen(self):
        # tls_cert and tls_key, but no listen address with tls
        up = self.fake("up")
        fd = self.daemon(start=False, upstreams={"up": up},
                         routes={"r": {"match": "/", "upstreams": "up"}},
                         server={"tls_cert": self.cert, "tls_key": self.key})
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_cert = "), "tls")

    def test_bad_tls_ciphers_fails_check_at_its_line(self):
        fd = self.cfg(server={"tls_ciphers": "NOT-A-SUITE:NOR-THIS"})
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_ciphers = "),
                               re.escape("bad tls_ciphers 'NOT-A-SUITE:NOR-THIS' "
                                         "(no cipher suite that OpenSSL knows)"))
        fd = self.cfg(server={"tls_min_version": "1.1"})
        p, text = self.check(fd)
        self.assertConfigError(p, fd, line_of(text, "tls_min_version = "),
                               re.escape("bad value '1.1' for 'tls_min_version' "
                                         "(use 1.2 or 1.3)"))

    def test_bad_tls_ciphers_reload_keeps_the_old_ones(self):
        fd = self.start()
        ok0, err0 = fd.reload_counts()
        fd.server_opts["tls_ciphers"] = "NOT-A-SUITE"
        self.assertEqual(fd.reload("error"), (ok0, err0 + 1))
        self.assertIn("bad tls_ciphers 'NOT-A-SUITE'", fd.stderr_text())
        got = handshake(fd.tls_port, maximum=ssl.TLSVersion.TLSv1_2,
                        ciphers=DEFAULT_SUITES[0])
        self.assertEqual(got, ("TLSv1.2", DEFAULT_SUITES[0]))
        self.assertServing(fd)

    def test_tls_on_admin_listener_refused(self):
        fd = self.cfg(admin={"listen": "127.0.0.1:%d tls" % harness.free_port()})
        p, text = self.check(fd)
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, r"(?m)%s:\d+: " % re.escape(fd.config_path))

    def test_bad_key_stops_start(self):
        _, other_key = h2raw.make_cert(self.certdir, "b")
        fd = self.cfg(key=other_key)
        with self.assertRaisesRegex(AssertionError, r"exited with 1"):
            fd.start()
        self.assertRegex(fd.stderr_text(), r"%s:\d+: .*match" % re.escape(fd.config_path))


class TlsReloadTest(TlsBase):

    def test_sighup_loads_a_new_certificate(self):
        fd = self.start()
        old_der = h2raw.cert_der(self.cert)
        der, _ = h2raw.peer_cert(fd.tls_port)
        self.assertEqual(der, old_der)
        # a connection made before the reload
        before = self.tls_client(fd)
        r = before.get("/k?body=before")
        self.assertEqual(r.status, 200, r)
        # rotate: the new certificate and key at the same paths
        new_cert, new_key = h2raw.make_cert(self.certdir, "new")
        new_der = h2raw.cert_der(new_cert)
        self.assertNotEqual(new_der, old_der)
        os.replace(new_cert, self.cert)
        os.replace(new_key, self.key)
        fd.reload("ok")
        der, _ = h2raw.peer_cert(fd.tls_port)
        self.assertEqual(der, new_der, "a new connection still gets the old certificate")
        with self.tls_client(fd) as c:
            self.assertEqual(c.peer_der(), new_der)
            r = c.get("/k?body=after")
        self.assertEqual((r.status, r.body), (200, b"after"), r)
        # the connection from before goes on
        r = before.get("/k?body=still")
        self.assertEqual((r.status, r.body), (200, b"still"), r)
        self.assertEqual(before.peer_der(), old_der)

    def test_sighup_to_new_paths(self):
        fd = self.start()
        new_cert, new_key = h2raw.make_cert(self.certdir, "other")
        fd.cert, fd.key = new_cert, new_key
        fd.reload("ok")
        der, _ = h2raw.peer_cert(fd.tls_port)
        self.assertEqual(der, h2raw.cert_der(new_cert))

    def test_broken_certificate_reload_keeps_the_old_one(self):
        fd = self.start()
        old_der = h2raw.cert_der(self.cert)
        ok0, err0 = fd.reload_counts()
        garbage = os.path.join(self.certdir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 !\n"
                    "-----END CERTIFICATE-----\n")
        other_cert, _ = h2raw.make_cert(self.certdir, "mm")
        cases = [("garbage", garbage, self.key, "tls_cert = "),
                 ("mismatch", other_cert, self.key, "tls_key = "),
                 ("missing", os.path.join(self.certdir, "gone.pem"), self.key,
                  "tls_cert = ")]
        for what, cert, key, where in cases:
            fd.cert, fd.key = cert, key
            text = fd.render_config()
            pattern = r"(?m)%s:%d: " % (re.escape(fd.config_path), line_of(text, where))
            n0 = len(re.findall(pattern, fd.stderr_text()))
            ok, err = fd.reload("error")
            self.assertEqual((ok, err), (ok0, err0 + 1), what)
            err0 = err
            # the log names the file and the line of the bad key
            self.assertGreater(len(re.findall(pattern, fd.stderr_text())), n0,
                               "%s: no %s in the log" % (what, pattern))
            der, _ = h2raw.peer_cert(fd.tls_port)
            self.assertEqual(der, old_der, "after a bad reload (%s) the certificate "
                             "changed" % what)
            self.assertServing(fd)
        # the files fixed: the next reload is good again
        fd.cert, fd.key = self.cert, self.key
        self.assertEqual(fd.reload("ok"), (ok0 + 1, err0))


if __name__ == "__main__":
    harness.main()
