"""Abort churn (issue 5, item 5; SPEC section 5).

Thousands of requests across the modes proxy, all, first, hedge and quorum,
50 at a time, whose clients close, reset or half-close at random points:
mid-head, mid-body, while the upstreams hold the answer back, and
mid-response.  Afterwards nothing is left: no request or transfer in
flight, no client connection, the daemon's descriptors back at their
baseline, every upstream connection that carried an abandoned request
closed (for the requests whose upstreams never answer: closed, unanswered;
for abandoned bodies: closed), nothing forwarded from half a head, one
access-log line per request (499 client_closed for the abandoned waiting
ones), every mode still serving, and a clean exit (under ASan/LSan: no
report; under valgrind memcheck: no error and no definite or indirect leak).

Every timeout of the daemon is the harness's 10 minutes (churn_config sets
none: CI once saw a mode-first request's three legs all hit a 1 s connect
timeout under valgrind), and every wait of the test is bounded by PATIENCE
alone: how fast the daemon cleans up is not the test.

FANOUTD_CHURN_N (default 2000), FANOUTD_CHURN_SEED (default: random, printed)
and FANOUTD_CHURN_PARALLEL (default 50) tune the run.  The valgrind run is
done when valgrind is on PATH (or FANOUTD_VALGRIND=1) unless
FANOUTD_SKIP_VALGRIND is set; it is skipped for an ASan build.
"""

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import concurrent.futures  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import harness  # noqa: E402

MODES = ("proxy", "all", "first", "hedge", "quorum")
KINDS = (("head", 3), ("body", 3), ("wait", 4), ("wait_long", 2), ("resp", 3),
         ("none", 2))
HOWS = ("close", "rst", "half")
BODY_LEN = 20000
RESP_SIZE = 200000


def fds_beside_upstreams(pid, ports):
    """pid's descriptors less its established TCP connections to the given
    (upstream) ports, read from the kernel: the descriptors first, then
    /proc/net/tcp, so that a socket closed in between counts once too
    many, never once too few."""
    fds = os.listdir("/proc/%d/fd" % pid)
    inodes = set()
    for x in fds:
        try:
            m = re.match(r"socket:\[(\d+)\]$", os.readlink("/proc/%d/fd/%s" % (pid, x)))
        except OSError:
            continue        # closed since
        if m:
            inodes.add(m.group(1))
    up = 0
    with open("/proc/%d/net/tcp" % pid) as f:
        for line in f.readlines()[1:]:
            v = line.split()    # sl local rem st ... uid timeout inode
            if (v[9] in inodes and v[3] == "01" and
                    int(v[2].rsplit(":", 1)[1], 16) in ports):
                up += 1
    return len(fds) - up, up


is_asan_build = harness.is_asan_build


class Op:
    """One churned request and what became of it."""

    def __init__(self, i, mode, kind, how, rng):
        self.i = i
        self.mode = mode
        self.kind = kind
        self.how = how
        self.tag = "ch%d" % i
        self.t_abort = None
        self.status = None          # for kind none
        self.reached = False        # seen by an upstream before the abort
        self.delay = rng.randint(50, 500)
        self.wait_s = rng.uniform(0, self.delay * 0.6) / 1000.0
        self.cut = rng.random()
        self.read_more = rng.randint(0, 50000)

    def __repr__(self):
        return "<Op %s %s/%s/%s>" % (self.tag, self.mode, self.kind, self.how)


class Churn:
    """Runs the churn against one daemon and checks what it left."""

    def __init__(self, test, fd, fakes, n, parallel, seed):
        self.t = test
        self.fd = fd
        self.fakes = fakes
        self.n = n
        self.parallel = parallel
        self.rng = random.Random(seed)
        self.errors = []
        self.lock = threading.Lock()
        self.arrived = {}           # tag -> Event, set by the fakes' handler
        self._index, self._indexed = {}, 0     # tagged()
        kinds = [k for k, w in KINDS for _ in range(w)]
        self.ops = [Op(i, self.rng.choice(MODES), self.rng.choice(kinds),
                       self.rng.choice(HOWS), self.rng) for i in range(n)]

    def on_request(self, req):
        """FakeUpstream handler: note the arrival, answer as the query says."""
        ev = self.arrived.get(req.tag)
        if ev is not None:
            ev.set()
        return None

    def tagged(self, tag):
        """The requests tagged TAG at every fake.  Indexed, and the index
        made again whenever the fakes have recorded more (a scan of every
        request for each of thousands of tags took half a minute)."""
        n = sum(len(f.requests) for f in self.fakes)
        if n != self._indexed:
            index = {}
            for f in self.fakes:
                with f.cond:
                    reqs = list(f.requests)
                for r in reqs:
                    index.setdefault(r.tag, []).append(r)
            self._index, self._indexed = index, sum(len(x) for x in index.values())
        return list(self._index.get(tag, ()))

    def err(self, op, msg):
        with self.lock:
            self.errors.append("%r: %s" % (op, msg))

    # one request ---------------------------------------------------------
    def run_op(self, op):
        try:
            self._run_op(op)
        except Exception as e:     # any surprise is a failure, named
            self.err(op, "client side: %r" % e)

    def _abort(self, c, op):
        op.t_abort = time.monotonic()
        c.abort(op.how)
        if op.how == "half":
            # half_close = cancel: fanoutd ends the connection
            try:
                c.wait_eof()
            except AssertionError as e:
                self.err(op, "after a half-close: %s" % e)

    def _run_op(self, op):
        target = "/%s/r?tag=%s" % (op.mode, op.tag)
        with self.fd.client() as c:
            if op.kind == "head":
                raw = harness.build_request("GET", target + "&body=x")
                c.send(raw[:max(1, int((len(raw) - 4) * op.cut))])
                self._abort(c, op)
            elif op.kind == "body":
                head = harness.build_request(
                    "POST", target + "&echo=1", [("Content-Length", str(BODY_LEN))])
                c.send(head + b"b" * int(BODY_LEN * op.cut * 0.99))
                self._abort(c, op)
            elif op.kind == "wait":
                c.send(harness.build_request("GET", target + "&delay=%d" % op.delay))
                # a random point while the upstreams hold the answer back
                # (pacing, not synchronisation)
                time.sleep(op.wait_s)
                self._abort(c, op)
            elif op.kind == "wait_long":
                # the upstreams never answer: only the abort ends it
                c.send(harness.build_request("GET", target + "&hang=1"))
                if not self.arrived[op.tag].wait(harness.PATIENCE):
                    self.err(op, "did not reach an upstream within %.0fs" % harness.PATIENCE)
                op.reached = True
                self._abort(c, op)
            elif op.kind == "resp":
                c.send(harness.build_request("GET", target + "&size=%d" % RESP_SIZE))
                got = 0
                c.sock.settimeout(harness.PATIENCE)
                while got < 1 + op.read_more:
                    data = c.sock.recv(min(65536, 1 + op.read_more - got))
                    if not data:
                        self.err(op, "closed by fanoutd after %d response bytes" % got)
                        return
                    got += len(data)
                self._abort(c, op)
            elif op.kind == "none":
                c.request("GET", target + "&body=ok")
                r = c.read_response()
                op.status = r.status
                if r.status != 200:
                    self.err(op, "answered %r" % r)

    def run(self):
        for op in self.ops:
            if op.kind == "wait_long":
                self.arrived[op.tag] = threading.Event()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as ex:
            list(ex.map(self.run_op, self.ops))
        return time.monotonic() - t0

    # what it left --------------------------------------------------------
    def fds_beside_upstreams(self):
        return fds_beside_upstreams(self.fd.pid, {f.port for f in self.fakes})

    def baseline(self):
        """Descriptors of the daemon that are not open upstream connections,
        as the kernel sees them (the upstreams' own view lags behind a close
        by fanoutd): the least seen over ~0.2 s, so that an admin connection
        being closed just then is not counted."""
        samples = []
        for _ in range(10):
            samples.append(self.fds_beside_upstreams()[0])
            time.sleep(0.02)    # sampling interval, not synchronisation
        return min(samples)

    def check(self, base_fds):
        t, fd = self.t, self.fd
        t.assertEqual(self.errors, [], "%d client-side failures" % len(self.errors))
        for g in ("fanoutd_requests_in_flight", "fanoutd_upstream_transfers_in_flight",
                  "fanoutd_connections_active"):
            fd.wait_metric(g, lambda v: v == 0)
        by_kind = {}
        for op in self.ops:
            by_kind.setdefault(op.kind, []).append(op)
        problems = []
        # wait_long: every leg that carried it was closed, unanswered (the
        # upstreams never answer them: only a cancel closes them)
        legs = [r for op in by_kind.get("wait_long", []) for r in self.tagged(op.tag)]
        try:
            for f in self.fakes:
                f.wait_connections_closed([r.conn for r in legs if r.conn in f.connections])
        except AssertionError as e:
            problems.append("upstream connections of abandoned requests left open: %s" % e)
        for r in legs:
            if r.responded is not None:
                problems.append("%r answered by the upstream after its client left" % r)
        # body: a leg started on a partial body must not stay open
        legs_b = [r for op in by_kind.get("body", []) for r in self.tagged(op.tag)
                  if r.complete is None]
        try:
            for f in self.fakes:
                f.wait_connections_closed([r.conn for r in legs_b if r.conn in f.connections])
        except AssertionError as e:
            problems.append("upstream connections of abandoned bodies left open: %s" % e)
        # head: never forwarded
        for op in by_kind.get("head", []):
            if self.tagged(op.tag):
                problems.append("%r forwarded with half a head" % op)
        # (Nothing is checked by its timing: the fakes' clocks are read in
        # their threads, which 50 client threads can starve of the GIL, and
        # how fast the daemon is is not the test.)
        # one access-log line per request, 499 for the abandoned waiting ones
        if not os.path.exists(fd.access_log):
            t.fail("the access log %s is gone (its directory %s): did something "
                   "else remove it?" % (fd.access_log, "exists" if os.path.isdir(fd.tmp)
                                        else "is gone too"))
        # fanoutd counts a request out of fanoutd_requests_in_flight just
        # before it writes its access-log line: wait for the lines of the
        # requests that must have one
        logged = [op.tag for kind in ("wait_long", "none") for op in by_kind.get(kind, [])]
        box = {}

        def all_logged():
            box["entries"] = fd.access_log_lines()
            box["by_tag"] = by_tag = {}
            for e in box["entries"]:
                m = re.search(r"[?&]tag=(ch\d+)(?:&|$)", e.get("path") or "")
                if m:
                    by_tag.setdefault(m.group(1), []).append(e)
            return all(tag in by_tag for tag in logged)
        try:
            harness.wait_until(all_logged, what="the access-log lines of %d requests"
                               % len(logged))
        except AssertionError as e:
            problems.append(str(e))
        entries, by_tag = box["entries"], box["by_tag"]
        ids = [e.get("request_id") for e in entries]
        dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if dup:
            problems.append("request ids logged more than once: %r" % dup[:10])
        for op in by_kind.get("wait_long", []):
            es = by_tag.get(op.tag, [])
            if len(es) != 1:
                problems.append("%r: %d access-log lines" % (op, len(es)))
            elif (es[0].get("status"), es[0].get("cancel_reason")) != (499, "client_closed"):
                problems.append("%r: logged %r" % (op, es[0]))
        for op in by_kind.get("none", []):
            if len(by_tag.get(op.tag, [])) != 1:
                problems.append("%r: %d access-log lines" % (op, len(by_tag.get(op.tag, []))))
        n_legs = sum(len(self.tagged(op.tag)) for op in self.ops)
        n_cut = sum(1 for op in self.ops for r in self.tagged(op.tag)
                    if op.kind != "none" and r.responded is None)
        sys.stderr.write("churn: %s; %d upstream legs, %d of them cut before "
                         "their answer\n" % (", ".join(
                             "%s %d" % (k, len(v)) for k, v in sorted(by_kind.items())),
                             n_legs, n_cut))
        if problems:
            t.fail("%d problems after the churn (%d access-log lines, %d tagged):\n  %s" % (
                len(problems), len(entries), len(by_tag), "\n  ".join(problems[:40])))
        # descriptors: back to the baseline, established upstream
        # connections aside (fanoutd may pool more of them than before);
        # one that the upstream closed and fanoutd still holds counts
        box = {}

        def settled():
            rest, box["up"] = self.fds_beside_upstreams()
            box["fds"] = rest + box["up"]
            return rest <= base_fds
        try:
            harness.wait_until(settled, what="the descriptor count to settle")
        except AssertionError:
            t.fail("fanoutd has %d descriptors with %d upstream connections open: "
                   "%d beyond its baseline of %d (leaked descriptors):\n%s"
                   % (box["fds"], box["up"], box["fds"] - box["up"] - base_fds, base_fds,
                      sorted(os.readlink("/proc/%d/fd/%s" % (fd.pid, x))
                             for x in os.listdir("/proc/%d/fd" % fd.pid))))
        # and every mode still serves
        for mode in MODES:
            r = fd.get("/%s/r?body=after" % mode)
            t.assertEqual(r.status, 200, "%s after the churn: %r" % (mode, r))


def churn_config(fakes, log_level="info"):
    """The daemon's configuration.  It sets no timeout: the harness gives
    every one (header, body, keep-alive, connect, upstream, deadline) 10
    minutes, so none can fire during a churn."""
    names = [f.name for f in fakes]
    ups = {f.name: {"url": f.url} for f in fakes}
    routes = {}
    for mode in MODES:
        r = {"match": "/%s/" % mode, "mode": mode, "upstreams": names}
        if mode == "hedge":
            r["hedge_delay"] = "50ms"
        if mode == "quorum":
            r["quorum"] = "2"
        routes[mode] = r
    return dict(upstreams=ups, routes=routes,
                server={"max_body_size": "1m", "half_close": "cancel",
                        "log_level": log_level})


TIMEOUT_KEYS = ("header_timeout", "body_timeout", "keepalive_timeout",
                "connect_timeout", "timeout", "deadline")


def assert_calm(test, fd):
    """Every timeout in FD's configuration is there, and is the harness's
    10 minutes: nothing but the churn's aborts ends a request."""
    seen = {}
    for line in fd.render_config().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() in TIMEOUT_KEYS:
            seen.setdefault(k.strip(), set()).add(v.strip())
    test.assertEqual(sorted(seen), sorted(TIMEOUT_KEYS), fd.render_config())
    for k, vs in seen.items():
        test.assertEqual(vs, {"10m"}, "%s: %s\n%s" % (k, vs, fd.render_config()))


class AbortChurnTest(harness.TestCase):

    def churn(self, n, parallel, **daemon_kw):
        seed = int(os.environ.get("FANOUTD_CHURN_SEED", random.randrange(1 << 30)))
        sys.stderr.write("\nchurn: %d requests, %d at a time, seed %d "
                         "(FANOUTD_CHURN_SEED=%d reproduces)\n" % (n, parallel, seed, seed))
        box = {}
        fakes = [self.fake(n_, handler=lambda req: box["ch"].on_request(req))
                 for n_ in ("a", "b", "c")]
        kw = churn_config(fakes)
        kw.update(daemon_kw)
        fd = self.daemon(start=False, **kw)
        ch = box["ch"] = Churn(self, fd, fakes, n, parallel, seed)
        fd.start()
        assert_calm(self, fd)
        # warm-up: every mode once, so that the upstream connections exist
        for mode in MODES:
            r = fd.get("/%s/r?body=warm" % mode)
            self.assertEqual(r.status, 200, r)
        harness.wait_until(lambda: fd.metric("fanoutd_connections_active") == 0,
                           what="the warm-up connections to close")
        base = ch.baseline()
        took = ch.run()
        sys.stderr.write("churn: %d requests in %.1fs\n" % (n, took))
        ch.check(base)
        return fd

    def test_abort_churn(self):
        n = int(os.environ.get("FANOUTD_CHURN_N", "2000"))
        parallel = int(os.environ.get("FANOUTD_CHURN_PARALLEL", "50"))
        t0 = time.monotonic()
        fd = self.churn(n, parallel)
        fd.stop()           # fails on a sanitizer report or a non-zero exit
        self.assertEqual(fd.returncode, 0)
        sys.stderr.write("churn: whole test %.1fs\n" % (time.monotonic() - t0))


class ValgrindChurnTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        if os.environ.get("FANOUTD_SKIP_VALGRIND"):
            raise unittest.SkipTest("FANOUTD_SKIP_VALGRIND is set")
        if shutil.which("valgrind") is None:
            if os.environ.get("FANOUTD_VALGRIND") == "1":
                self.fail("FANOUTD_VALGRIND=1 but valgrind is not on PATH")
            raise unittest.SkipTest("valgrind not found on PATH")
        if is_asan_build(harness.FANOUTD):
            raise unittest.SkipTest("%s is an ASan build: valgrind cannot run it "
                                    "(the sanitizer run checks leaks instead)"
                                    % harness.FANOUTD)

    def test_abort_churn_under_valgrind(self):
        n = int(os.environ.get("FANOUTD_VALGRIND_CHURN_N", "300"))
        t0 = time.monotonic()
        wrapper = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                   "--errors-for-leak-kinds=definite,indirect", "--track-fds=no",
                   "--num-callers=30"]
        fd = AbortChurnTest.churn(self, n, 20, wrapper=wrapper)
        try:
            fd.stop()
        except AssertionError as e:
            self.fail("under valgrind: %s" % e)
        text = fd.stderr_text()
        self.assertIn("ERROR SUMMARY:", text, "valgrind did not report (did it run?)")
        bad = re.findall(r"ERROR SUMMARY: [1-9]\d* errors", text)
        self.assertEqual(bad, [], "valgrind:\n%s" % fd.stderr_tail(120))
        self.assertEqual(fd.returncode, 0)
        sys.stderr.write("valgrind churn: whole test %.1fs\n" % (time.monotonic() - t0))


if __name__ == "__main__":
    harness.main()
