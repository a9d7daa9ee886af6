"""Mode proxy streams the answer: large bodies pass whole, a client that
does not read holds the upstream back (fanoutd does not buffer it all), and
a cancel once the head is out cuts the connection instead of appending an
error to a half-sent answer."""

import hashlib
import os
import socket
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

BIG = 32 * 1024 * 1024
# What fanoutd may hold of an answer its client does not read: its high
# mark, plus what the sockets on either side of it hold (loopback buffers
# autotune to several MiB).  Without backpressure it would be the whole
# 128 MiB.
HELD_MAX = 48 * 1024 * 1024
# test_a_client_that_does_not_read_holds_the_upstream_back: how long a
# paused transfer is watched.  A measurement window, not a synchronisation:
# a fanoutd that went on reading would take in more than HELD_MAX in it.
WATCH = 0.5


def unsent(conn):
    """Bytes of the fake upstream's answer on CONN not yet taken by the
    kernel (the fake's output buffer).  Belongs in fakeupstream.py."""
    return len(conn._outbuf)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class StreamingTest(harness.TestCase):

    def start(self, **route):
        self.up = self.fake("up")
        r = {"match": "/", "upstreams": "up"}
        r.update(route)
        return self.daemon(
            upstreams={"up": {"url": self.up.url, "max_response_size": "256m"}},
            routes={"r": r},
            server={"max_body_size": "64m"})

    def test_large_body_passes_whole_with_its_length(self):
        fd = self.start()
        r = fd.get("/big?size=%d" % BIG)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-length"), str(BIG))
        self.assertEqual(len(r.body), BIG)
        self.assertEqual(r.body, b"x" * BIG)

    def test_chunked_upstream_is_sent_chunked(self):
        fd = self.start()
        r = fd.get("/c?size=300000&chunked=1")
        self.assertEqual(r.status, 200)
        self.assertIn("chunked", (r.header("transfer-encoding") or "").lower())
        self.assertIsNone(r.header("content-length"))
        self.assertEqual(r.body, b"x" * 300000)
        # the connection is still good for the next request
        self.assertEqual(fd.get("/n?body=next").body, b"next")

    def test_http10_client_gets_a_close_delimited_body(self):
        fd = self.start()
        with fd.client() as c:
            c.send(b"GET /c?size=100000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("transfer-encoding"))
            self.assertEqual(r.body, b"x" * 100000)
            self.assertTrue(c.eof, "a close-delimited body ends with the close")

    def test_a_client_that_does_not_read_holds_the_upstream_back(self):
        # ASan keeps freed memory in quarantine: RSS says nothing there.
        check_rss = not harness.is_asan_build(harness.FANOUTD)
        fd = self.start()
        pid = fd.proc.pid
        before = rss_kib(pid)
        s = socket.create_connection(("127.0.0.1", fd.port), timeout=harness.PATIENCE)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /huge?size=%d&tag=bp HTTP/1.1\r\nHost: x\r\n\r\n"
                  % (4 * BIG))
        req = self.up.wait_for_tag("bp")
        # The transfer is paused once fanoutd holds its high mark (so the
        # fake has queued its answer: it is written at once).
        fd.wait_metric("fanoutd_upstream_transfers_paused", lambda v: v == 1)
        # Without backpressure fanoutd would take in all 128 MiB; with it,
        # it stops at its high mark plus what the sockets hold.  Watched
        # for WATCH seconds: what left the fake, and fanoutd's memory.
        grown = 0
        end = time.monotonic() + WATCH
        while True:
            grown = max(grown, rss_kib(pid) - before)
            taken = 4 * BIG - unsent(req.conn)
            self.assertLess(taken, HELD_MAX, "%d bytes taken from the upstream "
                            "while the client read nothing" % taken)
            if time.monotonic() >= end:
                break
            time.sleep(WATCH / 20)      # sampling interval
        if check_rss:
            self.assertLess(grown, HELD_MAX // 1024,
                            "fanoutd grew by %d KiB while its client read "
                            "nothing" % grown)
        # Now read it all: nothing lost or duplicated.
        h = hashlib.sha256()
        got = 0
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        self.assertIn(b"200", head.split(b"\r\n")[0])
        h.update(rest)
        got = len(rest)
        while got < 4 * BIG:
            d = s.recv(1 << 20)
            self.assertTrue(d, "closed after %d of %d bytes" % (got, 4 * BIG))
            h.update(d)
            got += len(d)
        self.assertEqual(h.hexdigest(),
                         hashlib.sha256(b"x" * (4 * BIG)).hexdigest())
        fd.wait_metric("fanoutd_upstream_transfers_paused", lambda v: v == 0)
        if check_rss:
            self.assertLess(rss_kib(pid) - before, HELD_MAX // 1024)

    def read_partial(self, c, n):
        """Read the head of a streamed answer and N body bytes (all that
        the upstream sends: partial=N, then it holds the rest); returns
        the head."""
        head = c.read_response(head_only=True)
        self.assertEqual(head.status, 200, head)
        deadline = time.monotonic() + harness.PATIENCE
        while len(c.buf) < n:
            self.assertTrue(c._fill(deadline), "closed after %d of %d body bytes"
                            % (len(c.buf), n))
        self.assertEqual(len(c.buf), n, "more than the upstream sent")
        return head

    def test_client_close_mid_body_closes_the_upstream(self):
        # The client has read all it was sent, so its close is a FIN (with
        # unread data the kernel would send a RST): the FIN alone must
        # cancel the transfer, which the upstream holds for ever.
        fd = self.start()
        c = fd.client()
        self.addCleanup(c.__exit__)
        c.request("GET", "/p?size=1000000&partial=20000&tag=mid",
                  [("X-Request-Id", "stream-mid")])
        req = self.up.wait_for_tag("mid")
        self.read_partial(c, 20000)
        c.close()
        self.assertCancelled(self.up, req, "upstream connection after a mid-body FIN")
        e = fd.wait_access_log(request_id="stream-mid")
        self.assertEqual(e["status"], 499, e)
        self.assertEqual(e["cancel_reason"], "client_closed", e)
        fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

    def test_deadline_mid_body_cuts_the_connection(self):
        # The deadline must fire once the upstream's head is out, and
        # nothing orders that but speed: when the deadline comes first (a
        # whole 504, correct but no test of the cut), the test is run again
        # with a ten times longer deadline.  Normally the first one does.
        for deadline in (0.3, 3, 30):
            fd = self.start(deadline="%dms" % (deadline * 1000))
            rid = "stream-dl-%d" % (deadline * 1000)
            c = fd.client()
            self.addCleanup(c.__exit__)
            c.request("GET", "/p?size=1000000&partial=20000&tag=dl",
                      [("X-Request-Id", rid)])
            head = c.read_response(head_only=True)
            if head.status == 504:
                sys.stderr.write("the %s s deadline came before the upstream's "
                                 "head: again with a longer one\n" % deadline)
                continue
            self.assertEqual(head.status, 200, head)
            req = self.up.wait_for_tag("dl")
            # the rest: the 20000 bytes, then the cut; nothing appended
            c.wait_eof()
            self.assertEqual(bytes(c.buf), b"x" * 20000,
                             "not the upstream's 20000 bytes and a cut")
            self.assertCancelled(self.up, req, "upstream connection after the deadline")
            e = fd.wait_access_log(request_id=rid)
            self.assertEqual(e["cancel_reason"], "deadline", e)
            return
        self.fail("the deadline fired before the upstream's head came out, every time")

    # ---- request bodies ----------------------------------------------------

    def test_request_body_goes_upstream_as_it_arrives(self):
        fd = self.start()
        total = 1000000
        with fd.client() as c:
            c.send(b"POST /up?echo=1&tag=early HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: %d\r\n\r\n" % total + b"a" * 1000)
            # The upstream has the request while most of the body is still
            # with the client: nothing waits for the whole of it.
            req = self.up.wait_for_tag("early")
            self.assertIsNone(req.complete)
            c.send(b"a" * (total - 1000))
            r = c.read_response()
        self.assertEqual(r.status, 200)
        echo = harness.json.loads(r.body)
        self.assertEqual(echo["body_len"], total)
        self.assertEqual(echo["body_sha256"],
                         hashlib.sha256(b"a" * total).hexdigest())
        self.assertEqual(echo["method"], "POST")

    def test_large_chunked_upload_arrives_whole(self):
        fd = self.start()
        body = os.urandom(8 * 1024 * 1024)
        with fd.client() as c:
            c.send(b"PUT /up?echo=1 HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 100000):
                piece = body[i:i + 100000]
                c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200)
        echo = harness.json.loads(r.body)
        self.assertEqual(echo["method"], "PUT")
        self.assertEqual(echo["body_len"], len(body))
        self.assertEqual(echo["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_client_gone_mid_upload_closes_the_upstream(self):
        fd = self.start()
        c = fd.client()
        self.addCleanup(c.__exit__)
        c.send(b"POST /up?echo=1&tag=gone HTTP/1.1\r\nHost: x\r\n"
               b"X-Request-Id: upload-gone\r\n"
               b"Content-Length: 1000000\r\n\r\n" + b"a" * 5000)
        # the upstream has the head: the transfer runs, waiting for the body
        req = self.up.wait_for_tag("gone")
        # nothing was sent to the client, so its close is a FIN
        c.close()
        self.assertCancelled(self.up, req, "upstream connection after a mid-upload FIN")
        self.assertIsNone(req.complete, "the upstream got the whole body")
        e = fd.wait_access_log(request_id="upload-gone")
        self.assertEqual(e["status"], 499, e)


if __name__ == "__main__":
    harness.main()
