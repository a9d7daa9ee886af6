"""gRPC through fanoutd (fanoutd(8), GRPC), end to end, with a real gRPC
client and server: Debian's python3-grpcio on both sides, generic handlers,
bytes in and out.  Unary, errors, trailers-only, metadata both ways, every
kind of streaming, deadlines and cancels as gRPC means them, flow control
against a client that does not read, first and hedge over two servers,
fanoutd's own errors as gRPC statuses, an HTTP/1.1 client's trailers, and
the drain.  Every order a test needs is made (a call held on the server
until the test releases it or the call ends), never waited out."""

import queue
import socket
import struct
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

try:
    import grpc  # noqa: E402
    from grpcpeer import GrpcServer  # noqa: E402
except ImportError:
    grpc = None

try:
    import h2.config  # noqa: E402
    import h2.connection  # noqa: E402
    import h2.events  # noqa: E402
except ImportError:
    h2 = None

PATIENCE = harness.PATIENCE
# route deadlines and client timeouts under test, in turn: a machine too
# slow to reach the server within the first tries the next
LIMITS = (0.3, 3, 30)
ROUTES_DL = {"dl%d" % i: limit for i, limit in enumerate(LIMITS)}


def grpc_frame(message):
    """One length-prefixed gRPC message, uncompressed."""
    return struct.pack(">BI", 0, len(message)) + message


def h2_call(port, path, message, headers=()):
    """One gRPC call by hand over h2c (python3-h2): returns (head fields,
    data, trailer fields or None, frames) where frames lists what came on
    the stream in order: "headers", "data", "trailers", "end"."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    s = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    try:
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":path", path),
                             (":scheme", "http"), (":authority", "fanoutd.test"),
                             ("content-type", "application/grpc"),
                             ("te", "trailers")] + list(headers))
        c.send_data(sid, grpc_frame(message), end_stream=True)
        s.sendall(c.data_to_send())
        head, data, trailers, frames = None, b"", None, []
        while "end" not in frames:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("connection closed, frames so far %r" % frames)
            for ev in c.receive_data(chunk):
                if getattr(ev, "stream_id", sid) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    head = dict(ev.headers)
                    frames.append("headers")
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    frames.append("data")
                    c.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                    frames.append("trailers")
                elif isinstance(ev, h2.events.StreamEnded):
                    frames.append("end")
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError("stream reset: %r" % ev)
            s.sendall(c.data_to_send())
        return head, data, trailers, frames
    finally:
        s.close()


@unittest.skipIf(grpc is None, "python3-grpcio not installed (apt-get install "
                 "python3-grpcio)")
class GrpcBase(harness.TestCase):
    """Two gRPC servers, two upstreams that answer with HTTP errors, a
    refused port, and one fanoutd in front of them all."""

    @classmethod
    def routes(cls):
        ups = ["g1", "g2"]
        r = {
            "g": {"match": "/t.T/", "upstreams": "g1"},
            # a gRPC call is repeated only where the route opts in
            "first": {"match": "/first/", "strip_prefix": "yes", "mode": "first",
                      "upstreams": ups, "repeat_unsafe": "yes"},
            "hedge": {"match": "/hedge/", "strip_prefix": "yes", "mode": "hedge",
                      "upstreams": ups, "hedge_delay": "50ms",
                      "repeat_unsafe": "yes"},
            "once": {"match": "/once/", "strip_prefix": "yes", "mode": "first",
                     "upstreams": ups},
            "all": {"match": "/all/", "strip_prefix": "yes", "mode": "all",
                    "upstreams": ups},
            "quorum": {"match": "/quorum/", "strip_prefix": "yes",
                       "mode": "quorum", "upstreams": ups},
            "web503": {"match": "/web503/", "strip_prefix": "yes",
                       "upstreams": "web503"},
            "web404": {"match": "/web404/", "strip_prefix": "yes",
                       "upstreams": "web404"},
            "dead": {"match": "/dead/", "strip_prefix": "yes", "upstreams": "dead"},
        }
        for name, limit in ROUTES_DL.items():
            r[name] = {"match": "/%s/" % name, "strip_prefix": "yes",
                       "upstreams": "g1", "deadline": "%dms" % (limit * 1000)}
            # an upstream that never answers, nor minds grpc-timeout
            r["hang" + name] = {"match": "/hang%s/" % name, "strip_prefix": "yes",
                                "upstreams": "hang",
                                "deadline": "%dms" % (limit * 1000)}
        return r

    @classmethod
    def setUpClass(cls):
        cls.g1 = cls.g2 = cls.fd = cls.ch = None
        cls.web = {}
        cls.dead = None
        try:
            cls.g1 = GrpcServer("g1")
            cls.g2 = GrpcServer("g2")
            for status in (503, 404):
                cls.web[status] = harness.FakeUpstream(
                    "web%d" % status, defaults={"status": str(status),
                                                "body": "<html>no</html>",
                                                "ctype": "text/html"})
            cls.web["hang"] = harness.FakeUpstream("hang", defaults={"hang": "1"})
            cls.dead = harness.RefusedPort()
            h2up = {"http2": "prior-knowledge"}
            cls.fd = harness.Fanoutd(
                upstreams={"g1": dict(h2up, url=cls.g1.url),
                           "g2": dict(h2up, url=cls.g2.url),
                           "web503": cls.web[503], "web404": cls.web[404],
                           "hang": cls.web["hang"],
                           "dead": cls.dead},
                routes=cls.routes(), server={"max_body_size": "64k"})
            cls.fd.start()
            cls.ch = grpc.insecure_channel("127.0.0.1:%d" % cls.fd.port)
            # warm: the first call under valgrind is slow (whatever it
            # answers: a short deadline may cut it)
            for name in ROUTES_DL:
                try:
                    cls.ch.unary_unary("/%s/t.T/Unary" % name)(
                        b"warm", timeout=PATIENCE, metadata=(("x-tag", "warm"),))
                except grpc.RpcError:
                    pass
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.ch is not None:
                cls.ch.close()
            if cls.fd is not None:
                cls.fd.cleanup()
        finally:
            for x in [cls.g1, cls.g2, cls.dead] + list(cls.web.values()):
                if x is not None:
                    x.close()

    _seq = iter(range(1, 1 << 30))

    def setUp(self):
        super().setUp()
        self._daemons.append(self.fd)

    def tag(self, prefix="c"):
        return "%s%d" % (prefix, next(self._seq))

    def unary(self, path, request=b"hi", tag=None, timeout=PATIENCE, metadata=()):
        tag = tag or self.tag()
        md = (("x-tag", tag), ("x-request-id", tag)) + tuple(metadata)
        return self.ch.unary_unary(path)(request, timeout=timeout, metadata=md)

    def assertGrpcError(self, fn, code, details=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception)
        if details is not None:
            self.assertEqual(cm.exception.details(), details, cm.exception)
        return cm.exception

    def grpc_count(self, route, status):
        return self.fd.metric("fanoutd_grpc_requests_total", route=route,
                              grpc_status=str(status))

    def log_for(self, tag):
        """The access-log line of the call tagged TAG (its x-request-id)."""
        return self.fd.wait_access_log(request_id=tag)


class GrpcCallsTest(GrpcBase):

    def test_unary_and_its_metric_and_log(self):
        n0 = self.grpc_count("g", 0)
        t = self.tag()
        self.assertEqual(self.unary("/t.T/Unary", b"hi", tag=t), b"g1:hi")
        self.fd.wait_metric("fanoutd_grpc_requests_total", lambda v: v == n0 + 1,
                            route="g", grpc_status="0")
        e = self.log_for(t)
        self.assertEqual((e["status"], e["grpc_status"]), (200, 0), e)

    def test_error_status_and_message(self):
        n0 = self.grpc_count("g", 5)
        self.assertGrpcError(
            lambda: self.unary("/t.T/Fail", metadata=(("x-code", "NOT_FOUND"),
                                                      ("x-msg", "no such thing"))),
            grpc.StatusCode.NOT_FOUND, "no such thing")
        self.fd.wait_metric("fanoutd_grpc_requests_total", lambda v: v == n0 + 1,
                            route="g", grpc_status="5")

    @unittest.skipIf(h2 is None, "python3-h2 not installed")
    def test_trailers_only_stays_trailers_only(self):
        head, data, trailers, frames = h2_call(
            self.fd.port, "/t.T/Fail", b"x",
            [("x-tag", self.tag()), ("x-code", "PERMISSION_DENIED"), ("x-msg", "go away")])
        # one HEADERS frame that ends the stream: no DATA, no trailers
        self.assertEqual(frames, ["headers", "end"], (head, trailers))
        self.assertEqual((head[":status"], head["grpc-status"], head["grpc-message"]),
                         ("200", "7", "go away"), head)
        self.assertNotIn("content-length", head)

    @unittest.skipIf(h2 is None, "python3-h2 not installed")
    def test_messages_then_trailers(self):
        head, data, trailers, frames = h2_call(self.fd.port, "/t.T/Unary", b"hey",
                                               [("x-tag", self.tag())])
        self.assertEqual(frames[0], "headers")
        self.assertEqual(frames[-2:], ["trailers", "end"], frames)
        self.assertEqual(data, grpc_frame(b"g1:hey"))
        self.assertEqual((trailers["grpc-status"], trailers["x-server"]), ("0", "g1"),
                         trailers)
        self.assertNotIn("grpc-status", head)

    def test_metadata_both_ways(self):
        t = self.tag()
        resp, call = self.ch.unary_unary("/t.T/Unary").with_call(
            b"m", timeout=PATIENCE, metadata=(("x-tag", t), ("x-in", "from-client")))
        self.assertEqual(resp, b"g1:m")
        self.assertEqual(self.g1.record(t).metadata.get("x-in"), "from-client")
        self.assertIn(("x-out-initial", "from-client"), call.initial_metadata())
        self.assertIn(("x-out-trailing", "from-client"), call.trailing_metadata())
        self.assertIn(("x-server", "g1"), call.trailing_metadata())

    def test_server_streaming(self):
        got = list(self.ch.unary_stream("/t.T/Stream")(
            b"5", timeout=PATIENCE, metadata=(("x-tag", self.tag()),)))
        self.assertEqual(got, [b"m0", b"m1", b"m2", b"m3", b"m4"])

    def test_a_message_over_max_body_size_goes_through_in_mode_proxy(self):
        big = b"y" * (100 * 1024)   # max_body_size is 64k here
        self.assertEqual(self.unary("/t.T/Unary", big), b"g1:" + big)

    def test_client_streaming(self):
        got = self.ch.stream_unary("/t.T/Collect")(
            iter([b"a", b"b", b"c"]), timeout=PATIENCE,
            metadata=(("x-tag", self.tag()),))
        self.assertEqual(got, b"a|b|c")

    def test_bidi_interleaves_nothing_buffered(self):
        # Each message is sent only once the answer to the one before has
        # come back through fanoutd: a proxy that held either direction
        # back (the request body, or the answer) would deadlock here.
        replies = queue.Queue()
        sent = []

        def requests():
            for m in (b"one", b"two", b"three"):
                sent.append(m)
                yield m
                got = replies.get(timeout=PATIENCE)
                self.assertEqual(got, b"re:" + m)

        call = self.ch.stream_stream("/t.T/Bidi")(requests(), timeout=PATIENCE,
                                                 metadata=(("x-tag", self.tag()),))
        out = []
        for r in call:
            out.append(r)
            replies.put(r)
        self.assertEqual(out, [b"re:one", b"re:two", b"re:three"])
        self.assertEqual(sent, [b"one", b"two", b"three"])


class GrpcCancelTest(GrpcBase):

    def test_client_cancel_reaches_the_server(self):
        t = self.tag("cc")
        fut = self.ch.unary_unary("/t.T/Hold").future(
            b"x", timeout=PATIENCE, metadata=(("x-tag", t), ("x-request-id", t)))
        self.g1.wait_started(t)
        fut.cancel()
        r = self.g1.wait_ended(t)
        self.assertTrue(r.cancelled, "the server's call was not cancelled: %r" % r)
        e = self.log_for(t)
        self.assertEqual((e["status"], e["cancel_reason"], e["grpc_status"]),
                         (499, "client_closed", 1), e)

    def _deadline(self, route_of, client_timeout):
        """A held call under a deadline, shortest first, until one reached
        the server before it passed: (error, t_sent, limit, record)."""
        for i, limit in enumerate(LIMITS):
            t = self.tag("dl")
            path = route_of(i)
            t0 = time.monotonic()
            err = self.assertGrpcError(
                lambda: self.unary(path, tag=t,
                                   timeout=limit if client_timeout else PATIENCE),
                grpc.StatusCode.DEADLINE_EXCEEDED)
            rec = self.g1.record(t)
            if rec.started.is_set():
                return err, t0, limit, self.g1.wait_ended(t)
            sys.stderr.write("deadline %s: the call had not reached the server; "
                             "again with a longer one\n" % limit)
        self.fail("no call reached the server before its deadline")

    def test_client_deadline_cancels_the_server_call(self):
        err, t0, limit, rec = self._deadline(lambda i: "/t.T/Hold", True)
        self.assertTrue(rec.cancelled, "the server's call went on: %r" % rec)

    def test_route_deadline_reaches_the_server(self):
        # The server is told the time left (grpc-timeout) and gives up
        # itself a little before fanoutd would: either way the client gets
        # DEADLINE_EXCEEDED and the server's call ends.
        err, t0, limit, rec = self._deadline(lambda i: "/dl%d/t.T/Hold" % i, False)
        self.assertTrue(rec.cancelled, "the server's call went on: %r" % rec)
        # the call carried the time it had left (grpc-timeout)
        self.assertIsNotNone(rec.time_remaining)
        self.assertLessEqual(rec.time_remaining, limit)

    def test_route_deadline_is_fanoutds_deadline_exceeded(self):
        # An upstream that minds no grpc-timeout: fanoutd's own answer,
        # not before the deadline, and the upstream's request cut.
        up = self.web["hang"]
        for i, limit in enumerate(LIMITS):
            t = self.tag("hd")
            t0 = time.monotonic()
            self.assertGrpcError(
                lambda: self.unary("/hangdl%d/t.T/Unary" % i, tag=t),
                grpc.StatusCode.DEADLINE_EXCEEDED, "fanoutd: deadline")
            self.assertNotBefore(time.monotonic(), t0, limit, "DEADLINE_EXCEEDED")
            reqs = [q for q in up.snapshot() if q.header("x-tag") == t]
            if reqs:
                self.assertCancelled(up, reqs[0])
                break
            sys.stderr.write("deadline %s: the call had not reached the upstream; "
                             "again with a longer one\n" % limit)
        else:
            self.fail("no call reached the upstream before its deadline")
        e = self.fd.wait_access_log(lambda e: e.get("cancel_reason") == "deadline"
                                    and e["path"].startswith("/hangdl"))
        self.assertEqual((e["status"], e["grpc_status"]), (200, 4), e)

    def test_a_reader_that_stops_holds_the_server_back(self):
        # 200 messages of 1 MiB; the client takes one and stops reading.
        # fanoutd pauses the upstream transfer, the server's writes block:
        # it has handed gRPC far fewer than 200, and fanoutd's memory does
        # not grow with them. Then the client reads on and gets them all.
        total = 200
        t = self.tag("big")
        it = self.ch.unary_stream("/t.T/Big")(
            str(total).encode(), timeout=PATIENCE, metadata=(("x-tag", t),))
        self.assertEqual(len(next(it)), 1 << 20)
        rec = self.g1.wait_started(t)
        self.fd.wait_metric("fanoutd_upstream_transfers_paused", lambda v: v >= 1)

        # quiet: the server has stopped handing messages over (its count
        # is the same over half a second), bounded by PATIENCE
        def settled():
            before = rec.sent
            time.sleep(0.5)     # an observation window, not a synchronisation
            return rec.sent == before and rec.sent
        held = harness.wait_until(settled, what="the server's writes to block")
        self.assertLess(held, total // 2,
                        "the server wrote %d of %d messages to a client that "
                        "read one" % (held, total))
        rss = self.rss_kib()
        self.assertLess(rss, 256 * 1024, "fanoutd holds %d KiB" % rss)
        rest = list(it)
        self.assertEqual(len(rest), total - 1)
        self.assertTrue(all(len(m) == 1 << 20 for m in rest))

    def test_a_server_that_reads_nothing_holds_the_client_back(self):
        # A client stream of 200 messages of 1 MiB to a server that reads
        # none until released: fanoutd stops taking the client's stream
        # (flow control), so gRPC takes far fewer than 200 from the
        # client's iterator.
        # The stream is far over max_body_size (64k here): a gRPC stream
        # in mode proxy is bounded by flow control, not by that.
        total, taken = 200, [0]
        chunk = b"c" * (1 << 20)

        def messages():
            for _ in range(total):
                yield chunk
                taken[0] += 1
        t = self.tag("sink")
        fut = self.ch.stream_unary("/t.T/Sink").future(
            messages(), timeout=PATIENCE, metadata=(("x-tag", t),))
        self.g1.wait_started(t)

        def settled():
            before = taken[0]
            time.sleep(0.5)     # an observation window, not a synchronisation
            return taken[0] == before and taken[0]
        held = harness.wait_until(settled, what="the client's writes to block")
        # 4 were taken here: what the windows on the way hold
        self.assertLess(held, total // 4,
                        "the client wrote %d of %d messages to a server that "
                        "read none" % (held, total))
        self.g1.release(t)
        self.assertEqual(fut.result(PATIENCE), b"%d %d" % (total, total << 20))

    def rss_kib(self):
        with open("/proc/%d/status" % self.fd.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


class GrpcModesTest(GrpcBase):

    def _race(self, route):
        t = self.tag(route)
        resp, call = self.ch.unary_unary("/%s/t.T/Race" % route).with_call(
            b"r", timeout=PATIENCE, metadata=(("x-tag", t), ("x-request-id", t),
                                              ("x-win", "g2")))
        self.assertEqual(resp, b"g2:won")
        self.assertIn(("x-server", "g2"), call.trailing_metadata())
        # the loser's server sees its call cancelled
        loser = self.g1.wait_ended(t)
        self.assertTrue(loser.cancelled, "the losing call went on: %r" % loser)
        e = self.log_for(t)
        self.assertEqual(e["grpc_status"], 0, e)

    def test_first_answers_with_the_winner_and_cancels_the_loser(self):
        self._race("first")

    def test_hedge_answers_with_the_winner_and_cancels_the_loser(self):
        self._race("hedge")

    def test_a_call_goes_once_where_the_route_does_not_opt_in(self):
        # a gRPC call is a POST: mode first without repeat_unsafe sends it
        # to the first upstream only, as gRPC's hedging is opt-in per method
        t = self.tag("once")
        self.unary("/once/t.T/Unary", tag=t)
        self.assertTrue(self.g1.record(t).started.is_set())
        e = self.log_for(t)
        legs = {u["name"]: u for u in e["upstreams"]}
        self.assertEqual(legs["g2"].get("reason"), "not_sent", e)
        self.assertFalse(self.g2.record(t).started.is_set())
        self.assertEqual(e["grpc_status"], 0, e)
        self.assertEqual(self.fd.metrics().get(
            "fanoutd_extra_attempts_total", route="once", kind="hedge",
            outcome="skipped_unsafe"), 1)

    def test_all_and_quorum_are_unimplemented(self):
        for route in ("all", "quorum"):
            t = self.tag(route)
            self.assertGrpcError(lambda: self.unary("/%s/t.T/Unary" % route, tag=t),
                                 grpc.StatusCode.UNIMPLEMENTED)
            self.assertFalse(self.g1.record(t).started.is_set())
            self.assertFalse(self.g2.record(t).started.is_set())


class GrpcErrorsTest(GrpcBase):

    def test_fanoutds_own_errors_are_grpc_statuses(self):
        cases = [
            ("/nowhere.S/M", b"x", grpc.StatusCode.UNIMPLEMENTED, 12),
            ("/dead/t.T/Unary", b"x", grpc.StatusCode.UNAVAILABLE, 14),
            # mode first keeps the body for every leg: max_body_size holds
            ("/first/t.T/Unary", b"y" * (100 * 1024),
             grpc.StatusCode.RESOURCE_EXHAUSTED, 8),
        ]
        for path, body, code, num in cases:
            self.assertGrpcError(lambda: self.unary(path, body), code)
            e = self.fd.wait_access_log(
                lambda e: e["path"] == path and e.get("grpc_status") == num,
                what="%s logged with grpc_status %d" % (path, num))
            self.assertEqual(e["status"], 200, e)

    def test_an_upstreams_http_error_is_mapped(self):
        for route, code in (("web503", grpc.StatusCode.UNAVAILABLE),
                            ("web404", grpc.StatusCode.UNIMPLEMENTED)):
            err = self.assertGrpcError(
                lambda: self.unary("/%s/t.T/Unary" % route), code)
            self.assertEqual(err.details(), "upstream answered HTTP %s" % route[3:])

    def test_http11_client_with_te_trailers_gets_them(self):
        msg = grpc_frame(b"over h1")
        for te, want in ((True, True), (False, False)):
            headers = [("Content-Type", "application/grpc"), ("x-tag", self.tag())]
            if te:
                headers.append(("TE", "trailers"))
            with self.fd.client() as c:
                c.request("POST", "/t.T/Unary", headers, msg)
                r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, grpc_frame(b"g1:over h1"), r)
            trailers = dict((k.lower(), v) for k, v in r.trailers)
            if want:
                self.assertEqual((trailers.get("grpc-status"), trailers.get("x-server")),
                                 ("0", "g1"), r.trailers)
            else:
                self.assertEqual(trailers, {}, "trailers to a client that did not "
                                 "ask: %r" % r.trailers)


@unittest.skipIf(grpc is None, "python3-grpcio not installed")
class GrpcDrainTest(harness.TestCase):

    def start(self, **server):
        self.g = GrpcServer("g1")
        self.addCleanup(self.g.close)
        fd = self.daemon(upstreams={"g1": {"url": self.g.url,
                                           "http2": "prior-knowledge"}},
                         routes={"g": {"match": "/", "upstreams": "g1"}},
                         server=server)
        self.ch = grpc.insecure_channel("127.0.0.1:%d" % fd.port)
        self.addCleanup(self.ch.close)
        return fd

    def held(self, tag):
        fut = self.ch.unary_unary("/t.T/Hold").future(
            b"x", timeout=PATIENCE, metadata=(("x-tag", tag),))
        self.g.wait_started(tag)
        return fut

    def draining(self, fd):
        harness.wait_until(lambda: fd.healthz().status == 503,
                           what="/healthz 503 during the drain")

    def test_a_call_in_flight_finishes_during_the_drain(self):
        fd = self.start(drain_timeout="10m")
        fut = self.held("d1")
        fd.sigterm()
        self.draining(fd)
        self.g.release("d1")
        self.assertEqual(fut.result(timeout=PATIENCE), b"g1:released")
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_the_drain_timeout_is_unavailable(self):
        fd = self.start(drain_timeout="300ms")
        fut = self.held("d2")
        fd.sigterm()
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result(timeout=PATIENCE)
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.UNAVAILABLE, "fanoutd: shutdown"))
        r = self.g.wait_ended("d2")
        self.assertTrue(r.cancelled, "the server's call went on: %r" % r)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())


if __name__ == "__main__":
    harness.main()
