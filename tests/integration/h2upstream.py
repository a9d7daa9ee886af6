"""An HTTP/2 upstream without TLS (h2c, prior knowledge) that records what
fanoutd does on each stream, built on python3-h2.

One selector loop in a background thread serves every connection, so a
RST_STREAM or a close is seen the moment it arrives and its time recorded.
Streams are answered by path:

  /hold/TAG    not answered until release(TAG); the stream stays open
  anything     answered at once: 200, body "ok <path>" (or size=N bytes)

H2Upstream("h2", idle_close_ms=200) ends a connection on which no stream
has been open for that long, as a server's idle timeout does: a GOAWAY,
then a FIN (the connection's idle_closed records when).

Every connection (opened, closed) and every stream on it (path, when it
arrived, when and how it was reset, when it was answered) is recorded.
Tests wait on that record with the wait_* methods, never with sleeps; each
is bounded by PATIENCE (fakeupstream.py: 60 s, FANOUTD_TEST_PATIENCE), which
only bounds how long a broken test takes to fail.  All times are
time.monotonic().
"""

import itertools
import selectors
import socket
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from fakeupstream import PATIENCE, wait_on


class Stream:
    def __init__(self, conn, sid, headers):
        self.conn = conn
        self.id = sid
        self.headers = dict(headers)
        self.path = self.headers.get(":path", "")
        self.arrived = time.monotonic()
        self.ended = None           # the request's END_STREAM
        self.reset = None           # when a RST_STREAM came
        self.reset_code = None
        self.answered = None        # when the answer's END_STREAM went out

    @property
    def tag(self):
        p = urllib.parse.urlsplit(self.path).path
        return p[len("/hold/"):] if p.startswith("/hold/") else None

    def __repr__(self):
        return "<stream %d.%d %s reset=%s answered=%s>" % (
            self.conn.id, self.id, self.path, self.reset_code,
            self.answered is not None)


class Connection:
    def __init__(self, cid, sock):
        self.id = cid
        self.sock = sock
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False,
                                      header_encoding="utf-8"))
        self.opened = time.monotonic()
        self.closed = None
        self.goaway = None          # error code of a GOAWAY from the peer
        self.idle_closed = None     # when idle_close_ms ended it
        self.active = self.opened   # the last read or answer (idle_close_ms)
        self.streams = {}
        self.pending = {}           # sid -> body bytes not yet sent


class H2Upstream:
    """h2c upstream on 127.0.0.1; use as a context manager or call close()."""

    def __init__(self, name="h2", idle_close_ms=None):
        self.name = name
        self.idle_close_ms = idle_close_ms
        self.cond = threading.Condition()
        self.connections = []
        self.streams = []
        self._ids = itertools.count(1)
        self._calls = []            # run in the loop thread
        self._released = set()      # tags answered (loop thread only)
        self._stop = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name="h2upstream-" + name)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # test side ------------------------------------------------------------
    def close(self):
        if not self._stop:
            self._stop = True
            self._wake()
            self.thread.join(5)
            for c in self.connections:
                if c.closed is None:
                    c.sock.close()
            self.lsock.close()
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def release(self, tag):
        """Answer every held stream /hold/TAG (and any that comes later)."""
        self._call(lambda: self._release(tag))

    def wait_for(self, predicate, timeout=PATIENCE, what="condition"):
        return wait_on(self.cond, predicate, timeout,
                       lambda: "%s: timed out after %.1fs waiting for %s (streams: %r)"
                       % (self.name, timeout, what, self.streams))

    def wait_stream(self, tag, timeout=PATIENCE):
        def find():
            for s in self.streams:
                if s.tag == tag:
                    return s
            return None
        return self.wait_for(find, timeout, "a stream /hold/%s" % tag)

    def wait_reset(self, stream, timeout=PATIENCE):
        self.wait_for(lambda: stream.reset is not None, timeout,
                      "RST_STREAM on stream %d.%d" % (stream.conn.id, stream.id))
        return stream.reset

    def wait_stopped(self, stream, timeout=PATIENCE):
        """Wait until the peer gave up STREAM: a RST_STREAM for it, or its
        connection closed; returns when."""
        def stopped():
            return stream.reset or stream.conn.closed
        return self.wait_for(stopped, timeout, "stream %d.%d reset or closed"
                             % (stream.conn.id, stream.id))

    def wait_answered(self, n, timeout=PATIENCE):
        return self.wait_for(
            lambda: sum(1 for s in self.streams if s.answered) >= n, timeout,
            "%d answered streams" % n)

    def open_connections(self):
        with self.cond:
            return [c for c in self.connections if c.closed is None]

    # loop thread ----------------------------------------------------------
    def _call(self, fn):
        with self.cond:
            self._calls.append(fn)
        self._wake()

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _loop(self):
        while not self._stop:
            for key, _ in self.sel.select(self._idle_check()):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    try:
                        while self._wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                    with self.cond:
                        calls, self._calls = self._calls, []
                    for fn in calls:
                        fn()
                else:
                    self._read(key.data)
        self.sel.close()

    def _idle(self, c):
        return (c.closed is None and not c.pending and
                all(s.answered or s.reset for s in c.streams.values()))

    def _idle_check(self):
        """idle_close_ms: end the connections idle that long; the select
        timeout until the next one is due (None: none is idle)."""
        if self.idle_close_ms is None:
            return None
        now, due = time.monotonic(), None
        for c in list(self.connections):
            if not self._idle(c):
                continue
            left = c.active + self.idle_close_ms / 1000.0 - now
            if left > 0:
                due = left if due is None else min(due, left)
                continue
            c.h2.close_connection()
            self._flush(c)
            with self.cond:
                c.idle_closed = time.monotonic()
            self._close(c)
        return due

    def _accept(self):
        try:
            s, _ = self.lsock.accept()
        except BlockingIOError:
            return
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Connection(next(self._ids), s)
        c.h2.initiate_connection()
        self._flush(c)
        self.sel.register(s, selectors.EVENT_READ, c)
        with self.cond:
            self.connections.append(c)
            self.cond.notify_all()

    def _close(self, c):
        if c.closed is not None:
            return
        self.sel.unregister(c.sock)
        c.sock.close()
        with self.cond:
            c.closed = time.monotonic()
            self.cond.notify_all()

    def _flush(self, c):
        data = c.h2.data_to_send()
        if data:
            try:
                c.sock.sendall(data)
            except OSError:
                self._close(c)

    def _read(self, c):
        try:
            data = c.sock.recv(65536)
        except (ConnectionResetError, BlockingIOError):
            data = b""
        if not data:
            self._close(c)
            return
        c.active = time.monotonic()
        try:
            events = c.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush(c)
            self._close(c)
            return
        for ev in events:
            self._event(c, ev)
        self._flush(c)

    def _event(self, c, ev):
        if isinstance(ev, h2.events.RequestReceived):
            s = Stream(c, ev.stream_id, ev.headers)
            c.streams[ev.stream_id] = s
            with self.cond:
                self.streams.append(s)
                self.cond.notify_all()
        elif isinstance(ev, h2.events.DataReceived):
            c.h2.acknowledge_received_data(ev.flow_controlled_length,
                                           ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            s = c.streams.get(ev.stream_id)
            if s is not None:
                s.ended = time.monotonic()
                if s.tag is None or s.tag in self._released:
                    self._answer(s)
        elif isinstance(ev, h2.events.StreamReset):
            s = c.streams.get(ev.stream_id)
            if s is not None:
                with self.cond:
                    s.reset = time.monotonic()
                    s.reset_code = int(ev.error_code)
                    self.cond.notify_all()
            c.pending.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.WindowUpdated):
            for sid in list(c.pending):
                if c.h2.local_flow_control_window(sid) > 0:
                    self._send_body(c, sid)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            with self.cond:
                c.goaway = int(ev.error_code)
                self.cond.notify_all()

    def _release(self, tag):
        self._released.add(tag)
        for c in self.connections:
            if c.closed is not None:
                continue
            for s in list(c.streams.values()):
                if (s.tag == tag and s.ended and s.reset is None
                        and s.answered is None):
                    self._answer(s)
            self._flush(c)

    def _answer(self, s):
        c = s.conn
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(s.path).query)
        if "size" in q:
            body = b"x" * int(q["size"][0])
        else:
            body = ("ok %s" % s.path).encode()
        c.h2.send_headers(s.id, [(":status", "200"),
                                 ("content-length", str(len(body))),
                                 ("content-type", "text/plain")])
        c.pending[s.id] = body
        self._send_body(c, s.id)

    def _send_body(self, c, sid):
        body = c.pending[sid]
        while body:
            n = min(len(body), c.h2.local_flow_control_window(sid),
                    c.h2.max_outbound_frame_size)
            if n <= 0:
                c.pending[sid] = body
                return
            c.h2.send_data(sid, body[:n])
            body = body[n:]
        c.h2.end_stream(sid)
        del c.pending[sid]
        c.active = time.monotonic()
        with self.cond:
            c.streams[sid].answered = time.monotonic()
            self.cond.notify_all()
