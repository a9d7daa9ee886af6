"""Signals and systemd notification.

SIGUSR1 reopens the access log (log rotation); sd_notify messages on a test
NOTIFY_SOCKET: READY=1 once listening, RELOADING=1 / READY=1 around a reload,
STOPPING=1 when a drain starts, WATCHDOG=1 from the loop when WATCHDOG_USEC
is set; and the parts of a SIGTERM drain test_drain.py leaves out: idle
keep-alive connections close at once while other requests are in flight, and
a request that was arriving when SIGTERM came is still served, with
Connection: close.
"""

import json
import os
import re
import socket
import tempfile
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


# ----------------------------------------------------------------------
# a NOTIFY_SOCKET for the daemon

class NotifySocket:
    """An AF_UNIX datagram socket bound to a temporary path; a thread
    records every message as (time.monotonic(), {KEY: VALUE})."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fanoutd-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages = []
        self._barriers = 0
        self.cond = threading.Condition()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            kv = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                if "=" in line:
                    k, _, v = line.partition("=")
                    kv[k] = v
            with self.cond:
                self.messages.append((time.monotonic(), kv))
                self.cond.notify_all()

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass

    def snapshot(self):
        with self.cond:
            return list(self.messages)

    def mark(self):
        """An index: wait_for(..., since=mark) looks only at what comes next."""
        with self.cond:
            return len(self.messages)

    def barrier(self):
        """An index after every message sent to this socket so far: a
        datagram of our own goes into the same queue, behind whatever
        fanoutd sent before this call, and the index is the one after it
        once the thread has taken it out.  What comes after the mark was
        sent after this call, by construction (mark() only knows what the
        thread has read already)."""
        with self.cond:
            self._barriers += 1
            n = str(self._barriers)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(b"TEST_BARRIER=" + n.encode(), self.path)
        finally:
            s.close()
        i, _, _ = self.wait_for("TEST_BARRIER", n)
        return i + 1

    def wait_for(self, key, value=None, since=0, timeout=harness.PATIENCE):
        """The first message after index SINCE with KEY (=VALUE); returns
        (index, time, message)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.messages)):
                    t, kv = self.messages[i]
                    if key in kv and (value is None or kv[key] == value):
                        return i, t, kv
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s%s on NOTIFY_SOCKET within %.1fs; got %r"
                                         % (key, "=" + value if value else "",
                                            timeout, self.messages[since:]))
                self.cond.wait(left)

    def count(self, key, since=0):
        with self.cond:
            return sum(1 for _, kv in self.messages[since:] if key in kv)


class NotifyFanoutd(harness.Fanoutd):
    """Ready means READY=1 on the notify socket, and nothing else: the test
    then checks that both listeners already accept."""

    notify = None

    def wait_ready(self, timeout=harness.PATIENCE):
        end = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                harness._live.pop(self.proc.pid, None)
                self.returncode = rc
                raise harness._StartExit(rc)
            try:
                self.notify.wait_for("READY", "1", timeout=0.05)
                return
            except AssertionError:
                if time.monotonic() >= end:
                    raise


def listening(port):
    """Whether a socket listens on 127.0.0.1:PORT, from the kernel's table
    (no probe connection: that would be one more client for fanoutd)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def wait_drain_taken_in(test, fd):
    """Wait until fanoutd and every worker of it have taken the SIGTERM in.
    /healthz says "draining" as soon as the main thread has the signal; the
    workers learn it a moment later (a job on each loop), and until then an
    answer they send is not yet a drain's.  A worker closes its client
    listener in the same job that starts its drain, so once no listener is
    left on the client port every worker is draining."""
    h = harness.wait_until(
        lambda: (lambda r: r if r.status == 503 else None)(fd.healthz()),
        what="/healthz 503 during the drain")
    test.assertEqual(h.body.strip(), b"draining")
    harness.wait_until(lambda: not listening(fd.port),
                       what="every worker draining (client listeners closed)")


# ptrace(2) on one thread: PTRACE_SEIZE then PTRACE_INTERRUPT stops that
# thread only (not its thread group), which is what a stuck loop looks like.
_libc = None


def _ptrace(req, tid):
    global _libc
    import ctypes
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long,
                                 ctypes.c_void_p, ctypes.c_void_p]
    if _libc.ptrace(req, tid, None, None) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def ptrace_stop_thread(tid):
    _ptrace(0x4206, tid)        # PTRACE_SEIZE
    _ptrace(0x4207, tid)        # PTRACE_INTERRUPT
    os.waitpid(tid, os.__dict__.get("__WALL", 0x40000000))
    return tid


def ptrace_release_thread(tid):
    _ptrace(17, tid)            # PTRACE_DETACH


class NotifyTest(harness.TestCase):

    WORKERS = 1

    def start(self, env=None, **kw):
        self.ns = NotifySocket()
        self.addCleanup(self.ns.close)
        self.up = self.fake("up")
        e = {"NOTIFY_SOCKET": self.ns.path}
        e.update(env or {})
        d = NotifyFanoutd(upstreams={"up": self.up},
                          routes={"r": {"match": "/", "upstreams": "up"}},
                          # a drain waits for what the test holds: the
                          # drain timeout must not end it first
                          server={"drain_timeout": "10m",
                                  "workers": str(self.WORKERS)},
                          env=e, **kw)
        d.notify = self.ns
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def test_ready_once_listening(self):
        fd = self.start()
        _, t, kv = self.ns.wait_for("READY", "1")
        # READY=1 came when both listeners were already up: no polling here
        self.assertFalse(harness.connect_refused(fd.port),
                         "READY=1 sent before the client listener accepts")
        self.assertFalse(harness.connect_refused(fd.admin_port),
                         "READY=1 sent before the admin listener accepts")
        self.assertEqual(kv.get("STATUS"), "serving", kv)
        self.assertEqual(fd.get("/x?body=hi").body, b"hi")
        self.assertEqual(self.ns.count("READY"), 1, self.ns.snapshot())
        self.assertEqual(self.ns.count("STOPPING"), 0)

    def test_reload_sends_reloading_then_ready(self):
        fd = self.start()
        for expect in ("ok", "error"):
            with self.subTest(reload=expect):
                if expect == "error":
                    fd.server_opts["bogus_key"] = "1"
                m = self.ns.mark()
                t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
                fd.reload(expect)
                t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
                i, _, kv = self.ns.wait_for("RELOADING", "1", since=m)
                usec = kv.get("MONOTONIC_USEC")
                self.assertIsNotNone(usec, "RELOADING=1 without MONOTONIC_USEC: %r" % kv)
                self.assertTrue(re.fullmatch(r"\d+", usec), kv)
                self.assertLessEqual(t0 * 1e6 - 1000, int(usec))
                self.assertLessEqual(int(usec), t1 * 1e6 + 1000)
                j, _, kv = self.ns.wait_for("READY", "1", since=i + 1)
                self.assertGreater(j, i)
                self.assertEqual(self.ns.count("READY", since=m), 1,
                                 self.ns.snapshot()[m:])
        self.assertEqual(self.ns.count("STOPPING"), 0)

    def test_stopping_when_the_drain_starts(self):
        fd = self.start()
        with fd.client() as c:
            # held at the upstream until STOPPING=1 is in: the drain cannot
            # end before it
            c.request("GET", "/x?hold=1&body=late&tag=st")
            req = self.up.wait_for_tag("st")
            m = self.ns.barrier()
            fd.sigterm()
            _, t, kv = self.ns.wait_for("STOPPING", "1", since=m)
            # at the start of the drain, not at the exit
            self.assertIsNone(req.responded)
            self.assertTrue(fd.running(), "STOPPING=1 only at the exit")
            wait_drain_taken_in(self, fd)
            self.up.release("st")
            r = c.read_response()
        self.assertEqual((r.status, r.body), (200, b"late"))
        self.assertTrue(r.conn_close, "no Connection: close during the drain: %r" % r)
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())
        self.assertEqual(self.ns.count("STOPPING"), 1)
        self.assertEqual(self.ns.count("READY", since=m), 0)

    PETS = 6        # gaps between WATCHDOG=1 measured

    def test_watchdog_pets(self):
        """A 1 s period: fanoutd pets twice per period (sd_watchdog_enabled(3)),
        every 500 ms, from a timer that keeps its schedule.  The interval
        is what fanoutd says it is; the pets come at about that rate: six
        gaps take about 3 s, where a pet per period (the bug that gets a
        healthy service killed) takes 6 s and a busy loop a few ms.  The
        bounds sit half-way between, and no single gap is timed (a pet may
        be late on a loaded machine; the schedule is not)."""
        fd = self.start(env={"WATCHDOG_USEC": "1000000"})
        self.ns.wait_for("READY", "1")
        self.assertRegex(fd.stderr_text(), r"(?m)watchdog enabled interval_ms=500$")
        # A pet is rightly held back when a worker's loop did not turn for
        # half a period ("worker loop stuck", logged): on a box so loaded
        # that a thread waits that long for a CPU, the rate measures the
        # box.  Such a run is measured again (a few times at most).
        for attempt in range(3):
            stuck = fd.stderr_text().count("worker loop stuck")
            first, t_first, _ = self.ns.wait_for("WATCHDOG", "1",
                                                 since=self.ns.mark())
            last, t_last = first, t_first
            for k in range(self.PETS):
                last, t_last, _ = self.ns.wait_for("WATCHDOG", "1", since=last + 1)
            if fd.stderr_text().count("worker loop stuck") == stuck:
                break
        else:
            self.skipTest("every measurement met a worker loop held up for "
                          "half a watchdog period: the machine is too loaded")
        span = t_last - t_first
        self.assertLess(span, self.PETS * 0.75,
                        "%d WATCHDOG=1 gaps took %.2fs with WATCHDOG_USEC=1000000: "
                        "not twice per period" % (self.PETS, span))
        self.assertGreater(span, self.PETS * 0.25,
                           "%d WATCHDOG=1 gaps took %.2fs: a busy loop?"
                           % (self.PETS, span))
        self.assertTrue(fd.running())

    def test_stuck_worker_stops_the_watchdog(self):
        """A worker whose loop stops turning (here: that one thread stopped
        with ptrace, the others and the main thread running on) means no
        more WATCHDOG=1, so systemd restarts the process."""
        fd = self.start(env={"WATCHDOG_USEC": "1000000"})
        self.ns.wait_for("READY", "1")
        self.ns.wait_for("WATCHDOG", "1")
        tids = sorted(int(t) for t in os.listdir("/proc/%d/task" % fd.proc.pid))
        workers = tids[1:1 + self.WORKERS]     # created after the main thread
        try:
            stopped = ptrace_stop_thread(workers[-1])
        except OSError as e:
            self.skipTest("cannot ptrace a thread here: %s" % e)
        stuck = lambda: fd.stderr_text().count("worker loop stuck")
        try:
            harness.wait_until(lambda: stuck() >= 1, what="the stuck worker noticed")
            # Every pet after this line would come from a timer that saw
            # the worker stuck.  The window is two more of them (each says
            # so in the log, where a pet would have gone out).
            n = stuck()
            mark = self.ns.barrier()
            harness.wait_until(lambda: stuck() >= n + 2,
                               what="two more pets held back")
            end = self.ns.barrier()
            got = [kv for _, kv in self.ns.snapshot()[mark:end] if "WATCHDOG" in kv]
            self.assertEqual(got, [], "WATCHDOG=1 sent while a worker was stuck")
        finally:
            ptrace_release_thread(stopped)
        # released, it is petted again
        self.ns.wait_for("WATCHDOG", "1", since=self.ns.barrier())

    def test_no_watchdog_unless_asked(self):
        for env in ({}, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}):
            with self.subTest(env=env):
                fd = self.start(env=env)
                self.ns.wait_for("READY", "1")
                # the timer would be armed before READY=1
                self.assertNotIn("watchdog enabled", fd.stderr_text())
                # an observation window of five 100 ms pet intervals (what
                # WATCHDOG_USEC=200000 would ask for), not a synchronisation
                time.sleep(0.5)
                end = self.ns.barrier()
                self.assertEqual([kv for _, kv in self.ns.snapshot()[:end]
                                  if "WATCHDOG" in kv], [], self.ns.snapshot())
                fd.cleanup()


# ----------------------------------------------------------------------

class AccessLogRotationTest(harness.TestCase):

    WORKERS = 1

    def start(self, **server):
        self.up = self.fake("up")
        server.setdefault("workers", str(self.WORKERS))
        return self.daemon(upstreams={"up": self.up},
                           routes={"r": {"match": "/", "upstreams": "up"}},
                           server=server)

    def paths(self, path):
        try:
            with open(path) as f:
                return [json.loads(l)["path"]
                        for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            return None

    def reopened(self, fd, n):
        harness.wait_until(lambda: fd.stderr_text().count("access log reopened") >= n,
                           what="'access log reopened' #%d in the log" % n)

    def test_sigusr1_after_rename_starts_a_new_file(self):
        fd = self.start()
        rotated = fd.access_log + ".1"
        fd.get("/one")
        fd.wait_access_log(lambda e: e["path"] == "/one")
        os.rename(fd.access_log, rotated)
        # until SIGUSR1 the daemon still writes to the renamed file
        fd.get("/two")
        harness.wait_until(lambda: "/two" in (self.paths(rotated) or []),
                           what="/two in the renamed file")
        self.assertFalse(os.path.exists(fd.access_log))
        fd.sigusr1()
        self.reopened(fd, 1)
        fd.get("/three")
        harness.wait_until(lambda: self.paths(fd.access_log) == ["/three"],
                           what="/three alone in a new file at the original path")
        self.assertEqual(self.paths(rotated), ["/one", "/two"])
        # a second rotation works the same
        os.rename(fd.access_log, rotated + ".2")
        fd.sigusr1()
        self.reopened(fd, 2)
        fd.get("/four")
        harness.wait_until(lambda: self.paths(fd.access_log) == ["/four"],
                           what="/four alone in the newest file")
        self.assertEqual(self.paths(rotated + ".2"), ["/three"])

    def test_sigusr1_without_rename_appends(self):
        fd = self.start()
        fd.get("/one")
        fd.wait_access_log(lambda e: e["path"] == "/one")
        fd.sigusr1()
        self.reopened(fd, 1)
        fd.get("/two")
        harness.wait_until(lambda: self.paths(fd.access_log) == ["/one", "/two"],
                           what="both lines (a reopen must not truncate)")

    def test_sigusr1_with_access_log_on_stderr(self):
        fd = self.start(access_log="-")
        fd.sigusr1()
        self.reopened(fd, 1)
        self.assertEqual(fd.get("/x?body=a").status, 200)
        harness.wait_until(lambda: re.search(r'(?m)^\{.*"path":"/x\?body=a"',
                                             fd.stderr_text()),
                           what="the access line on stderr")
        fd.sigterm()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())


# ----------------------------------------------------------------------

class DrainDetailTest(harness.TestCase):

    WORKERS = 1

    def start(self, **server):
        self.up = self.fake("up")
        # the drain waits for what the test holds at the upstream: its
        # timeout is what would end it otherwise, far away
        opts = {"drain_timeout": "10m", "workers": str(self.WORKERS)}
        opts.update(server)
        return self.daemon(upstreams={"up": self.up},
                           routes={"r": {"match": "/", "upstreams": "up"}},
                           server=opts)

    def draining(self, fd):
        wait_drain_taken_in(self, fd)

    def test_idle_connections_close_at_once_while_a_request_is_in_flight(self):
        fd = self.start()
        idle = []
        for i in range(3):
            c = fd.client()
            self.addCleanup(c.sock.close)
            r = c.get("/idle%d" % i)
            self.assertEqual(r.status, 200)
            self.assertFalse(r.conn_close, r)
            idle.append(c)
        busy = fd.client()
        self.addCleanup(busy.sock.close)
        # held at the upstream until every idle connection is seen closed:
        # "at once" means while a request is still in flight (the other
        # things that would close them, the keep-alive and drain timeouts,
        # are minutes away)
        busy.request("GET", "/busy?hold=1&body=done&tag=busy")
        req = self.up.wait_for_tag("busy")
        fd.sigterm()
        for c in idle:
            c.wait_eof()
            self.assertEqual(bytes(c.buf), b"", "an idle connection got bytes")
        self.assertIsNone(req.responded)
        # the admin side still answers during the drain
        h = fd.healthz()
        self.assertEqual((h.status, h.body.strip()), (503, b"draining"))
        m = fd.metrics()
        self.assertEqual(m.get("fanoutd_requests_in_flight"), 1)
        self.assertEqual(m.get("fanoutd_connections_active"), 1)
        # (with two workers, the busy connection's may not be the one that
        # closed the idle ones)
        self.draining(fd)
        self.up.release("busy")
        r = busy.read_response()
        self.assertEqual((r.status, r.body), (200, b"done"), r)
        self.assertTrue(r.conn_close, "no Connection: close on a response "
                        "sent during the drain: %r" % r)
        busy.wait_eof()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def _arriving(self, fd, c, conn_no):
        """Wait until fanoutd has read the first bytes of a request on
        connection CONN_NO (its state left idle, or it is new)."""
        harness.wait_until(
            lambda: re.search(r"connection (open|state) conn=%d\b" % conn_no,
                              fd.stderr_text()), what="connection %d seen" % conn_no)

    def test_request_arriving_on_a_new_connection_is_served(self):
        fd = self.start()
        with fd.client() as c:
            c.send(b"GET /x?body=arrived HTTP/1.1\r\nHost: a\r\n")
            self._arriving(fd, c, 1)
            fd.sigterm()
            self.draining(fd)
            c.send(b"X-Late: 1\r\n\r\n")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"arrived"), r)
            self.assertTrue(r.conn_close, "no Connection: close on a response "
                            "sent during the drain: %r" % r)
            c.wait_eof()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_request_arriving_on_a_kept_alive_connection_is_served(self):
        fd = self.start()
        with fd.client() as c:
            r = c.get("/first?body=1")
            self.assertFalse(r.conn_close)
            c.send(b"GET /second?body=2 HTTP/1.1\r\nHost: a\r\n")
            harness.wait_until(
                lambda: re.search(r"(?m)connection state conn=1 idle -> head",
                                  fd.stderr_text()),
                what="fanoutd reading the second request's head")
            fd.sigterm()
            self.draining(fd)
            c.send(b"\r\n")
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"2"), r)
            self.assertTrue(r.conn_close, "no Connection: close on a response "
                            "sent during the drain: %r" % r)
            c.wait_eof()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())

    def test_every_response_after_the_drain_started_says_close(self):
        # two connections busy at SIGTERM, answered (one after the other)
        # only once the drain was taken in: both answers carry Connection:
        # close and neither connection is reused
        fd = self.start()
        cs = []
        for i in range(2):
            c = fd.client()
            self.addCleanup(c.sock.close)
            c.request("GET", "/x?hold=1&body=b%d&tag=cc%d" % (i, i))
            self.up.wait_for_tag("cc%d" % i)
            cs.append(c)
        fd.sigterm()
        self.draining(fd)
        for i, c in enumerate(cs):
            self.up.release("cc%d" % i)
            r = c.read_response()
            self.assertEqual((r.status, r.body), (200, b"b%d" % i), r)
            self.assertTrue(r.conn_close, "no Connection: close on a response "
                            "sent during the drain: %r" % r)
            c.wait_eof()
        self.assertEqual(fd.wait_exit(), 0, fd.stderr_tail())



# The same with two worker loops (the main thread keeps signals, the admin
# side and the drain; the workers hold the connections and the access log).

class NotifyTwoWorkersTest(NotifyTest):
    WORKERS = 2


class AccessLogRotationTwoWorkersTest(AccessLogRotationTest):
    WORKERS = 2


class DrainDetailTwoWorkersTest(DrainDetailTest):
    WORKERS = 2


if __name__ == "__main__":
    harness.main()
