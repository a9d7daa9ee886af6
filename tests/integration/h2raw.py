"""A tiny raw HTTP/2 client for fanoutd's integration tests.

It speaks just enough HTTP/2 (RFC 9113) over a plain socket (h2c with prior
knowledge) or an ssl-wrapped one (ALPN h2) to send exactly the frames a test
wants, including ones no well-behaved client sends: HEADERS followed at once
by RST_STREAM, endless CONTINUATION frames, more streams than allowed.

Header blocks are encoded as HPACK "literal header field without indexing,
new name", never Huffman-coded, which any decoder takes.  Nothing of the
server's header blocks is decoded but the :status: the client announces
SETTINGS_HEADER_TABLE_SIZE = 0, so the server's encoder keeps no dynamic
table and the :status is either a static-table index (0x88 = 200 ...) or a
literal with the static name :status, whose digits are decoded (plain or
Huffman-coded).  Anything else gives status None.

Every read is bounded (socket timeouts, a deadline per wait), by default by
harness.PATIENCE, which only bounds how long a broken test takes to fail;
nothing synchronises with sleeps.
"""

import shutil
import socket
import ssl
import struct
import time

import harness

# frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY",
               RST_STREAM: "RST_STREAM", SETTINGS: "SETTINGS",
               PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
               WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xb

# settings
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW = 0x7fffffff

# :status values in the HPACK static table (RFC 7541 appendix A)
STATIC_STATUS = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400,
                 0x8d: 404, 0x8e: 500}

# Huffman codes of the ten digits (RFC 7541 appendix B): (bits, length)
_HUFF_DIGITS = {(0x0, 5): "0", (0x1, 5): "1", (0x2, 5): "2",
                (0x19, 6): "3", (0x1a, 6): "4", (0x1b, 6): "5",
                (0x1c, 6): "6", (0x1d, 6): "7", (0x1e, 6): "8",
                (0x1f, 6): "9"}


class H2Error(AssertionError):
    """The connection did not do what a wait expected."""


# ----------------------------------------------------------------------
# encoding

def frame(ftype, flags, stream_id, payload=b""):
    """One frame: the 9-byte header and PAYLOAD."""
    n = len(payload)
    return struct.pack(">BHBBI", (n >> 16) & 0xff, n & 0xffff, ftype, flags,
                       stream_id & 0x7fffffff) + bytes(payload)


def hpack_int(value, prefix_bits, first=0):
    """RFC 7541 5.1: VALUE with an N-bit prefix; FIRST holds the bits above
    the prefix of the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s):
    if isinstance(s, str):
        s = s.encode("latin-1")
    return hpack_int(len(s), 7, 0) + s      # H = 0: no Huffman


def encode_field(name, value):
    """Literal header field without indexing, new name (0x00)."""
    return b"\x00" + hpack_string(name) + hpack_string(value)


def encode_headers(headers):
    """A header block: HEADERS is a list of (name, value)."""
    return b"".join(encode_field(n, v) for n, v in headers)


def request_headers(path, method="GET", authority="fanoutd.test",
                    scheme="http", headers=()):
    """Pseudo-headers first, then HEADERS (names lower-cased)."""
    out = [(":method", method), (":scheme", scheme), (":path", path),
           (":authority", authority)]
    out += [(n.lower(), v) for n, v in headers]
    return out


def settings_payload(settings):
    return b"".join(struct.pack(">HI", k, v) for k, v in settings)


# ----------------------------------------------------------------------
# decoding the little we decode

def _hpack_read_int(block, pos, prefix_bits):
    limit = (1 << prefix_bits) - 1
    v = block[pos] & limit
    pos += 1
    if v < limit:
        return v, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        v += (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def _huffman_digits(data):
    """Decode a Huffman-coded string of digits; None for anything else."""
    out = []
    code = 0
    clen = 0
    for byte in data:
        for i in range(7, -1, -1):
            code = (code << 1) | ((byte >> i) & 1)
            clen += 1
            d = _HUFF_DIGITS.get((code, clen))
            if d is not None:
                out.append(d)
                code = clen = 0
            elif clen > 7:
                return None
    # what is left must be padding: at most 7 bits, all ones
    if clen and code != (1 << clen) - 1:
        return None
    return "".join(out)


def decode_status(block):
    """The :status of a response header block, or None (see the module
    docstring for what is understood)."""
    try:
        pos = 0
        # dynamic table size updates (001xxxxx) may come first
        while pos < len(block) and block[pos] & 0xe0 == 0x20:
            _, pos = _hpack_read_int(block, pos, 5)
        if pos >= len(block):
            return None
        b = block[pos]
        if b in STATIC_STATUS:
            return STATIC_STATUS[b]
        if b & 0x80:
            return None                   # indexed, not a :status we know
        if b & 0xc0 == 0x40:
            idx, pos = _hpack_read_int(block, pos, 6)   # incremental indexing
        else:
            idx, pos = _hpack_read_int(block, pos, 4)   # without / never
        if not 8 <= idx <= 14:
            return None                   # the name is not :status
        huff = block[pos] & 0x80
        n, pos = _hpack_read_int(block, pos, 7)
        raw = bytes(block[pos:pos + n])
        s = _huffman_digits(raw) if huff else raw.decode("latin-1")
        if s is None or len(s) != 3 or not s.isdigit():
            return None
        return int(s)
    except IndexError:
        return None


# ----------------------------------------------------------------------
# the client

class Stream:
    """What came back on one stream."""

    def __init__(self, sid):
        self.id = sid
        self.headers = False        # a HEADERS frame (a whole block) came
        self.status = None          # decoded :status, or None
        self.blocks = []            # raw header blocks (response, trailers)
        self.data = bytearray()     # DATA payloads (padding removed)
        self.ended = False          # END_STREAM seen
        self.rst = None             # RST_STREAM error code from the server
        self.ended_at = None

    @property
    def done(self):
        return self.ended or self.rst is not None

    @property
    def body(self):
        return bytes(self.data)

    def __repr__(self):
        return ("<Stream %d headers=%s status=%r data=%d bytes %r ended=%s rst=%r>"
                % (self.id, self.headers, self.status, len(self.data),
                   bytes(self.data[:60]), self.ended, self.rst))


class H2Client:
    """One HTTP/2 connection.

    tls: wrap the socket in TLS offering ALPN "h2" (certificates are not
    verified: the tests make throwaway ones).  settings: extra SETTINGS
    (id, value) pairs; the client always announces a header table of 0, no
    push and the largest stream window, and opens the connection window
    wide, so a test never has to hand out window itself.  preface=False
    sends nothing at all (the caller writes the preface itself)."""

    def __init__(self, port, host="127.0.0.1", tls=False,
                 timeout=harness.PATIENCE,
                 settings=(), preface=True, alpn=("h2",),
                 server_hostname="localhost", big_window=True):
        self.timeout = timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = raw
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            try:
                self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
            except BaseException:
                raw.close()
                raise
            self.alpn = self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
            self.alpn = None
        self.buf = bytearray()
        self.eof = False
        self.reset_seen = False
        self.send_error = None
        self.streams = {}
        self.frames = []            # every frame received, in order
        self.goaway = None          # (last_stream_id, error_code, debug)
        self.goaway_at = None
        self.server_settings = {}
        self.settings_acked = False  # the server ACKed ours
        self.pings = []             # payloads of PING ACKs received
        self.next_id = 1
        self._block = None          # (stream id, bytearray) of an open block
        if preface:
            s = [(SETTINGS_HEADER_TABLE_SIZE, 0), (SETTINGS_ENABLE_PUSH, 0)]
            if big_window:
                s.append((SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW))
            s += list(settings)
            out = PREFACE + frame(SETTINGS, 0, 0, settings_payload(s))
            if big_window:
                out += frame(WINDOW_UPDATE, 0, 0,
                             struct.pack(">I", MAX_WINDOW - 65535))
            self.send(out)

    # sending -----------------------------------------------------------
    def send(self, data):
        """Write DATA; False (and send_error set) when the peer has gone."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError,
                socket.timeout) as e:
            self.send_error = e
            return False
        except OSError as e:
            self.send_error = e
            return False

    def send_frame(self, ftype, flags, sid, payload=b""):
        return self.send(frame(ftype, flags, sid, payload))

    def new_stream_id(self):
        sid = self.next_id
        self.next_id += 2
        return sid

    def headers_frame(self, sid, headers, end_stream=True, end_headers=True,
                      block=None):
        """The bytes of a HEADERS frame (not sent)."""
        if block is None:
            block = encode_headers(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, block)

    def headers(self, sid, headers, end_stream=True, end_headers=True, block=None):
        return self.send(self.headers_frame(sid, headers, end_stream,
                                            end_headers, block))

    def data(self, sid, payload, end_stream=False, max_frame=16384):
        """DATA frames of at most MAX_FRAME bytes; END_STREAM on the last."""
        payload = bytes(payload)
        out = bytearray()
        if not payload:
            out += frame(DATA, END_STREAM if end_stream else 0, sid, b"")
        for i in range(0, len(payload), max_frame):
            last = i + max_frame >= len(payload)
            out += frame(DATA, END_STREAM if (end_stream and last) else 0, sid,
                         payload[i:i + max_frame])
        return self.send(bytes(out))

    def rst_stream(self, sid, code=CANCEL):
        return self.send_frame(RST_STREAM, 0, sid, struct.pack(">I", code))

    def window_update(self, sid, increment):
        return self.send_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))

    def continuation(self, sid, block, end_headers=False):
        return self.send_frame(CONTINUATION, END_HEADERS if end_headers else 0,
                               sid, block)

    def ping(self, payload=b"fanoutd!"):
        return self.send_frame(PING, 0, 0, payload[:8].ljust(8, b"\0"))

    def send_goaway(self, last=0, code=NO_ERROR):
        return self.send_frame(GOAWAY, 0, 0, struct.pack(">II", last, code))

    def request(self, path, method="GET", headers=(), body=None,
                authority="fanoutd.test", scheme=None, end_stream=None):
        """Open a stream: HEADERS (and DATA with BODY); returns its id.
        END_STREAM goes on the last frame unless END_STREAM is False."""
        if scheme is None:
            scheme = "https" if self.alpn else "http"
        sid = self.new_stream_id()
        hdrs = request_headers(path, method, authority, scheme, headers)
        if body is None:
            es = True if end_stream is None else end_stream
            self.headers(sid, hdrs, end_stream=es)
        else:
            self.headers(sid, hdrs, end_stream=False)
            self.data(sid, body, end_stream=True if end_stream is None else end_stream)
        self.stream(sid)
        return sid

    # reading -----------------------------------------------------------
    def stream(self, sid):
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = Stream(sid)
        return st

    def _fill(self, deadline):
        """Read more; False on EOF.  Raises socket.timeout at DEADLINE."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            raise socket.timeout() from None
        except ConnectionResetError:
            self.reset_seen = True
            data = b""
        except (ssl.SSLError, OSError):
            # an unclean TLS end (no close_notify) or a dead socket
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_frame(self, timeout=None):
        """The next frame as (type, flags, stream_id, payload), after it has
        been recorded (see _record); None once the connection has ended.
        Raises socket.timeout when nothing whole comes in TIMEOUT."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 9:
                n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack(">I", bytes(self.buf[5:9]))[0] & 0x7fffffff
                    payload = bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    f = (ftype, flags, sid, payload)
                    self._record(f)
                    return f
            if self.eof or not self._fill(deadline):
                return None

    def _record(self, f):
        ftype, flags, sid, payload = f
        self.frames.append(f)
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acked = True
            else:
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    self.server_settings[k] = v
                self.send_frame(SETTINGS, ACK, 0)
        elif ftype == PING:
            if flags & ACK:
                self.pings.append(payload)
            else:
                self.send_frame(PING, ACK, 0, payload)
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7fffffff, code, payload[8:])
            self.goaway_at = time.monotonic()
        elif ftype == RST_STREAM:
            st = self.stream(sid)
            st.rst = struct.unpack(">I", payload[:4])[0]
            st.ended_at = time.monotonic()
        elif ftype == DATA:
            st = self.stream(sid)
            body = payload
            if flags & PADDED and body:
                body = body[1:len(body) - body[0]]
            st.data += body
            if flags & END_STREAM:
                st.ended = True
                st.ended_at = time.monotonic()
        elif ftype == HEADERS:
            block = payload
            if flags & PADDED and block:
                block = block[1:len(block) - block[0]]
            if flags & PRIORITY_FLAG:
                block = block[5:]
            st = self.stream(sid)
            if flags & END_STREAM:
                st.ended = True
                st.ended_at = time.monotonic()
            if flags & END_HEADERS:
                self._block_done(st, bytes(block))
            else:
                self._block = (sid, bytearray(block))
        elif ftype == CONTINUATION:
            if self._block is not None and self._block[0] == sid:
                self._block[1].extend(payload)
                if flags & END_HEADERS:
                    sid, block = self._block
                    self._block = None
                    self._block_done(self.stream(sid), bytes(block))

    def _block_done(self, st, block):
        if not st.blocks:
            st.headers = True
            st.status = decode_status(block)
        st.blocks.append(block)

    def _state(self):
        """A short account of the connection, for failure messages."""
        open_ = [st for st in self.streams.values() if not st.done]
        return "goaway=%r eof=%s streams=%d done=%d, not done: %r" % (
            self.goaway, self.eof, len(self.streams),
            len(self.streams) - len(open_), open_[:5])

    def wait(self, pred, timeout=None, what="condition"):
        """Read frames until pred() is true; returns its value.  Raises
        H2Error when TIMEOUT passes, or the connection ends, first."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.eof:
                raise H2Error("connection ended while waiting for %s (%s)"
                              % (what, self._state()))
            left = deadline - time.monotonic()
            if left <= 0:
                raise H2Error("timed out after %.1fs waiting for %s (%s)"
                              % (timeout, what, self._state()))
            try:
                self.read_frame(left)
            except socket.timeout:
                pass

    def wait_closed(self, timeout=None):
        """Read (and record) until the server closes the connection."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise H2Error("server did not close the connection within %.1fs "
                              "(goaway=%r)" % (timeout, self.goaway))
            try:
                self.read_frame(left)
            except socket.timeout:
                pass
        return time.monotonic()

    def handshake(self, timeout=None):
        """Wait for the server's SETTINGS (ours ACKed in return)."""
        return self.wait(lambda: bool(self.server_settings) or
                         any(f[0] == SETTINGS and not f[1] & ACK for f in self.frames),
                         timeout, "the server's SETTINGS")

    def response(self, sid, timeout=None):
        """Wait until stream SID ends (END_STREAM or RST_STREAM)."""
        st = self.stream(sid)
        self.wait(lambda: st.done, timeout, "stream %d to end" % sid)
        return st

    def get(self, path, headers=(), timeout=None, **kw):
        """One request on a new stream; waits for its end; returns the Stream."""
        return self.response(self.request(path, headers=headers, **kw), timeout)

    # the end -------------------------------------------------------------
    def close(self):
        """An orderly close (FIN); returns the time it was done."""
        t = time.monotonic()
        try:
            self.sock.close()
        except OSError:
            pass
        return t

    def reset(self):
        """An abortive close: RST."""
        try:
            self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
        except OSError:
            pass
        return self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------
# TLS material and a fanoutd with a TLS listener, for the tests of the
# TLS / HTTP/2 front end

def tool(name):
    """The path of a command-line tool the tests need; a missing one is a
    broken test setup (scripts/deps.sh installs them), not a skip."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError("%s is not installed (scripts/deps.sh installs it)" % name)
    return path


def openssl_path():
    return shutil.which("openssl")


def make_cert(directory, name="cert", cn="localhost"):
    """A throwaway self-signed EC certificate and key in DIRECTORY;
    returns (cert_path, key_path).  Needs the openssl command."""
    import os
    import subprocess
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + "-key.pem")
    p = subprocess.run(
        [openssl_path() or "openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=" + cn, "-keyout", key, "-out", cert],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=harness.PATIENCE)
    if p.returncode != 0:
        raise AssertionError("openssl req failed (%d): %s"
                             % (p.returncode, p.stderr.decode("utf-8", "replace")))
    return cert, key


def cert_der(cert_path):
    """The DER bytes of the first certificate in a PEM file."""
    with open(cert_path) as f:
        pem = f.read()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[:end] + "\n")


def client_context(alpn=None, minimum=None, maximum=None):
    """A TLS client context that does not verify (throwaway certificates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def peer_cert(port, host="127.0.0.1", timeout=harness.PATIENCE,
              alpn=("http/1.1",)):
    """(DER bytes of the certificate served on PORT, selected ALPN)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        s = client_context(alpn).wrap_socket(raw, server_hostname="localhost")
        try:
            return s.getpeercert(binary_form=True), s.selected_alpn_protocol()
        finally:
            s.close()
    finally:
        raw.close()


class TlsFanoutd(harness.Fanoutd):
    """A fanoutd listening on two addresses: PORT in clear text and
    TLS_PORT with tls (listen = 127.0.0.1:PORT, 127.0.0.1:TLS_PORT tls).
    tls_cert and tls_key come from .cert and .key (None leaves that key
    out of the configuration)."""

    def __init__(self, cert=None, key=None, **kw):
        harness.Fanoutd.__init__(self, **kw)
        self.cert = cert
        self.key = key
        self.tls_port = None
        self._tls_for = None

    def render_config(self):
        # a new TLS port with every new clear-text port (a start retried
        # after losing a port race), else the same one (a reload)
        if self.tls_port is None or self._tls_for != self.port:
            while True:
                p = harness.free_port()
                if p not in (self.port, self.admin_port):
                    break
            self.tls_port = p
            self._tls_for = self.port
        self.server_opts["listen"] = "127.0.0.1:%d, 127.0.0.1:%d tls" % (
            self.port, self.tls_port)
        for k, v in (("tls_cert", self.cert), ("tls_key", self.key)):
            if v is None:
                self.server_opts.pop(k, None)
            else:
                self.server_opts[k] = v
        return harness.Fanoutd.render_config(self)
