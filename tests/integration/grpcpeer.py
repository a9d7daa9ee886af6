"""A real gRPC server for fanoutd's integration tests: Debian's python3-grpcio
with generic handlers and bytes in and out (no code generation), on
127.0.0.1, recording what each call saw.

Service "t.T", every method keyed by the call's "x-tag" metadata:

  Unary    answers b"<name>:" + request; sends the call's "x-in" metadata
           back as initial metadata "x-out-initial" and trailing metadata
           "x-out-trailing"
  Fail     aborts with the status code named by "x-code" (e.g. NOT_FOUND)
           and the message "x-msg", before any message: a trailers-only
           answer
  Hold     waits until the call ends (the client or a proxy cancelled it,
           or its deadline passed) or the test releases the tag; records
           which, and answers b"<name>:released" when released
  Race     answers at once (b"<name>:won") on the server named by "x-win",
           holds like Hold on any other: the two legs of a fan-out
  Stream   answers int(request) messages b"m0", b"m1", ...
  Big      answers int(request) messages of 1 MiB each, counting in
           record.sent how many the server has handed to gRPC (a client
           that does not read holds the server's writes back)
  Collect  client streaming: answers b"|".join(the messages)
  Sink     client streaming: reads nothing until the test releases the tag
           (a server that does not read holds the client's writes back),
           then answers b"<count> <bytes>" of what it read
  Bidi     answers each message as it comes: b"re:" + message

Tests wait on the records with bounded waits (harness.PATIENCE), never on
sleeps.  Every server is stopped by close(); nothing outlives the test.
"""

import threading
from concurrent import futures

import grpc

from fakeupstream import PATIENCE

SERVICE = "t.T"
MIB = 1 << 20


class Record:
    """What one call (one x-tag) saw on the server side."""

    def __init__(self, tag):
        self.tag = tag
        self.started = threading.Event()
        self.ended = threading.Event()      # the handler returned or gave up
        self.cancelled = None               # True: it saw the call end early
        self.metadata = {}
        self.messages = []                  # what a streaming call received
        self.sent = 0                       # messages handed to gRPC
        self.time_remaining = None          # the call's deadline, as told
        self.release = threading.Event()

    def __repr__(self):
        return "<Record %s started=%s cancelled=%s sent=%d>" % (
            self.tag, self.started.is_set(), self.cancelled, self.sent)


class GrpcServer:
    def __init__(self, name="g", workers=16):
        self.name = name
        self._lock = threading.Lock()
        self.records = {}
        methods = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
            "Hold": grpc.unary_unary_rpc_method_handler(self._hold),
            "Race": grpc.unary_unary_rpc_method_handler(self._race),
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
            "Big": grpc.unary_stream_rpc_method_handler(self._big),
            "Collect": grpc.stream_unary_rpc_method_handler(self._collect),
            "Sink": grpc.stream_unary_rpc_method_handler(self._sink),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(workers))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, methods),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.url = "http://127.0.0.1:%d" % self.port

    def close(self):
        for r in list(self.records.values()):
            r.release.set()
        self._server.stop(0).wait(PATIENCE)

    # records -------------------------------------------------------------
    def record(self, tag):
        with self._lock:
            r = self.records.get(tag)
            if r is None:
                r = self.records[tag] = Record(tag)
            return r

    def _begin(self, context):
        md = dict(context.invocation_metadata())
        r = self.record(md.get("x-tag", ""))
        r.metadata = md
        r.time_remaining = context.time_remaining()
        r.started.set()
        return r

    def wait_started(self, tag, timeout=PATIENCE):
        if not self.record(tag).started.wait(timeout):
            raise AssertionError("%s: call %s never reached the server"
                                 % (self.name, tag))
        return self.record(tag)

    def wait_ended(self, tag, timeout=PATIENCE):
        r = self.record(tag)
        if not r.ended.wait(timeout):
            raise AssertionError("%s: call %s still running after %.0fs: %r"
                                 % (self.name, tag, timeout, r))
        return r

    def release(self, tag):
        self.record(tag).release.set()

    # handlers ------------------------------------------------------------
    def _unary(self, request, context):
        r = self._begin(context)
        if "x-in" in r.metadata:
            context.send_initial_metadata((("x-out-initial", r.metadata["x-in"]),))
            context.set_trailing_metadata((("x-out-trailing", r.metadata["x-in"]),
                                           ("x-server", self.name)))
        else:
            context.set_trailing_metadata((("x-server", self.name),))
        r.ended.set()
        return self.name.encode() + b":" + request

    def _fail(self, request, context):
        r = self._begin(context)
        code = getattr(grpc.StatusCode, r.metadata.get("x-code", "INTERNAL"))
        r.ended.set()
        context.abort(code, r.metadata.get("x-msg", ""))

    def _hold(self, request, context):
        r = self._begin(context)
        # Whichever comes first: the call ends under us, or the release.
        context.add_callback(r.release.set)
        r.release.wait(PATIENCE)
        r.cancelled = not context.is_active()
        r.ended.set()
        if r.cancelled:
            return b""
        return self.name.encode() + b":released"

    def _race(self, request, context):
        md = dict(context.invocation_metadata())
        if md.get("x-win") != self.name:
            return self._hold(request, context)
        r = self._begin(context)
        context.set_trailing_metadata((("x-server", self.name),))
        r.ended.set()
        return self.name.encode() + b":won"

    def _stream(self, request, context):
        r = self._begin(context)
        try:
            for i in range(int(request)):
                yield b"m%d" % i
                r.sent += 1
        finally:
            r.cancelled = not context.is_active()
            r.ended.set()

    def _big(self, request, context):
        r = self._begin(context)
        chunk = b"x" * MIB
        try:
            for _ in range(int(request)):
                yield chunk
                r.sent += 1
        finally:
            r.cancelled = not context.is_active()
            r.ended.set()

    def _collect(self, request_iterator, context):
        r = self._begin(context)
        for m in request_iterator:
            r.messages.append(m)
        r.ended.set()
        return b"|".join(r.messages)

    def _sink(self, request_iterator, context):
        r = self._begin(context)
        r.release.wait(PATIENCE)
        n = size = 0
        for m in request_iterator:
            n += 1
            size += len(m)
        r.ended.set()
        return b"%d %d" % (n, size)

    def _bidi(self, request_iterator, context):
        r = self._begin(context)
        try:
            for m in request_iterator:
                r.messages.append(m)
                yield b"re:" + m
        finally:
            r.cancelled = not context.is_active()
            r.ended.set()
