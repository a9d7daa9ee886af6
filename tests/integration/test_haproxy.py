"""Several fanoutd instances behind HAProxy (contrib/haproxy.cfg): a rolling
restart under a steady load loses no request.

Three fanoutd instances and one fake upstream on loopback, HAProxy in the
foreground with contrib/haproxy.cfg (only the ports rewritten).  Client
threads send a paced stream of requests through HAProxy, on keep-alive
connections, while each instance in turn is stopped with SIGTERM (exit 0
awaited), seen DOWN by HAProxy, started again on the same ports and seen UP,
before the next.  Every request must be answered 200 with the right body,
and every instance, old and new, must have served some.

HAProxy's own check intervals and timeouts (contrib/haproxy.cfg) are part
of the scenario; the test's own waits are for events (a status on the
stats page, an exit, an access-log line), bounded by PATIENCE, and fanoutd
runs with timeouts that cannot fire (harness.CALM_*), so that no request of
the load can fail for fanoutd being slow.

Skips (exit 77) when haproxy is not installed.
"""

import csv
import io
import os
import re
import shutil
import subprocess
import threading
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

CONTRIB = os.path.join(harness.SRCDIR, "contrib", "haproxy.cfg")
N = 3
THREADS = 4
RATE = 75              # requests per second per thread (paced, not a sync)
PER_CONNECTION = 20    # requests on one client keep-alive connection
MAX_REQUESTS = 100000  # a hard bound on the load, whatever happens

# contrib/haproxy.cfg's ports, rewritten to free ones
CFG_FRONT, CFG_STATS = 8080, 8404
CFG_CLIENT = (8081, 8082, 8083)
CFG_ADMIN = (9901, 9902, 9903)


def find_haproxy():
    exe = shutil.which("haproxy")
    if exe is None:
        for d in ("/usr/sbin", "/usr/local/sbin"):    # sbin is not on every PATH
            p = os.path.join(d, "haproxy")
            if os.access(p, os.X_OK):
                return p
    return exe


class HAProxy:
    def __init__(self, exe, cfg_text, tmp):
        self.exe = exe
        self.tmp = tmp
        self.cfg = os.path.join(tmp, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(cfg_text)
        self.log_path = os.path.join(tmp, "haproxy.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.exe, "-f", self.cfg, "-db"],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log)
        harness._live[self.proc.pid] = self.proc

    def stop(self):
        if self.proc is not None:
            harness._terminate(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def render(text, front, stats, clients, admins):
    """contrib/haproxy.cfg with its ports replaced; each port it names must
    be there exactly once (the file and this test must not drift apart)."""
    subs = [("127.0.0.1:%d" % CFG_FRONT, "127.0.0.1:%d" % front),
            ("127.0.0.1:%d" % CFG_STATS, "127.0.0.1:%d" % stats)]
    subs += [("127.0.0.1:%d check port %d" % (c, a),
              "127.0.0.1:%d check port %d" % (nc, na))
             for c, a, nc, na in zip(CFG_CLIENT, CFG_ADMIN, clients, admins)]
    for old, new in subs:
        n = len(re.findall(r"(?m)^[^#\n]*%s\b" % re.escape(old), text))
        if n != 1:
            raise AssertionError("contrib/haproxy.cfg: %r %d times in "
                                 "non-comment lines, not once" % (old, n))
        text = re.sub(r"(?m)^([^#\n]*)%s\b" % re.escape(old),
                      lambda m: m.group(1) + new, text)
    return text


class Load:
    """THREADS client threads through HAProxy, paced; every outcome recorded."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []          # (time, what)
        self.seq = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(THREADS)]

    @property
    def total(self):
        with self.lock:
            return self.ok + len(self.failures)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self, timeout=harness.PATIENCE):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return all(not t.is_alive() for t in self.threads)

    def next_id(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def run(self, k):
        next_at = time.monotonic()
        c = None
        on_conn = 0
        while not self.stop.is_set() and self.total < MAX_REQUESTS:
            # pacing: a rate, not a synchronisation
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            next_at = max(next_at + 1.0 / RATE, time.monotonic() - 0.5)
            n = self.next_id()
            body = "ok-%d" % n
            try:
                if c is None:
                    c = harness.Client(self.port)
                    on_conn = 0
                c.request("GET", "/load?body=%s" % body)
                r = c.read_response()
                on_conn += 1
                if r.status != 200 or r.body != body.encode():
                    with self.lock:
                        self.failures.append((time.monotonic(), "%d %r" % (
                            r.status, r.body[:200])))
                else:
                    with self.lock:
                        self.ok += 1
                if r.conn_close or on_conn >= PER_CONNECTION:
                    c.sock.close()
                    c = None
            except Exception as e:
                with self.lock:
                    self.failures.append((time.monotonic(), repr(e)))
                if c is not None:
                    try:
                        c.sock.close()
                    except OSError:
                        pass
                    c = None
        if c is not None:
            c.sock.close()


class HAProxyRollingRestartTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.exe = find_haproxy()
        if self.exe is None:
            self.skipTest("haproxy not installed (apt-get install haproxy)")
        with open(CONTRIB) as f:
            self.contrib = f.read()

    def instance(self, port, admin_port):
        # A drain ends when its requests are answered: its timeout must not
        # cut one of the load's short on a slow machine.
        d = harness.Fanoutd(upstreams={"up": self.up},
                            routes={"r": {"match": "/", "upstreams": "up"}},
                            server={"drain_timeout": "10m", "log_level": "info"},
                            port=port, admin_port=admin_port)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def stats(self):
        r = harness.http_get(self.stats_port, "/stats;csv")
        if r.status != 200:
            raise AssertionError("stats page answered %d" % r.status)
        text = r.body.decode("utf-8", "replace").lstrip("# ")
        rows = list(csv.DictReader(io.StringIO(text)))
        return {row["svname"]: row for row in rows if row.get("pxname") == "fanoutd"}

    def wait_status(self, server, want, timeout=harness.PATIENCE):
        def check():
            st = self.stats()[server]["status"]
            return st if st == want else None
        try:
            return harness.wait_until(check, timeout, "haproxy: %s %s" % (server, want),
                                      interval=0.05)
        except AssertionError as e:
            raise AssertionError("%s; stats: %r\n%s" % (
                e, {k: v["status"] for k, v in self.stats().items()},
                self.hap.log_tail()))

    @staticmethod
    def served(d):
        return sum(1 for e in d.access_log_lines() if e["path"].startswith("/load"))

    def test_rolling_restart_under_load_loses_nothing(self):
        t_begin = time.monotonic()      # for the report, not checked
        self.up = self.fake("up")
        # instances first, on free ports that then stay theirs
        self.gen = [[] for _ in range(N)]   # every process per slot, in order
        for i in range(N):
            d = self.instance(None, None)
            self.gen[i].append(d)
        clients = [g[0].port for g in self.gen]
        admins = [g[0].admin_port for g in self.gen]
        front, self.stats_port = harness.free_port(), harness.free_port()

        # the shipped file as it is, then with our ports
        p = subprocess.run([self.exe, "-c", "-f", CONTRIB], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=harness.PATIENCE)
        self.assertEqual(p.returncode, 0, "haproxy -c -f contrib/haproxy.cfg:\n%s"
                         % p.stdout.decode("utf-8", "replace"))
        self.assertRegex(self.contrib, r"(?m)^\s*option httpchk GET /healthz\s*$")
        self.assertRegex(self.contrib, r"(?m)^\s*http-check expect status 200\s*$")
        self.assertRegex(self.contrib, r"(?m)^\s*option redispatch\b")
        m = re.search(r"(?m)^\s*retry-on\s+(.*)$", self.contrib)
        self.assertTrue(m and {"conn-failure", "empty-response"} <= set(m.group(1).split()),
                        "retry-on must include conn-failure and empty-response")
        cfg = render(self.contrib, front, self.stats_port, clients, admins)
        tmp = self.gen[0][0].tmp
        self.hap = HAProxy(self.exe, cfg, tmp)
        self.addCleanup(self.hap.stop)
        self.hap.start()
        harness.wait_until(lambda: self.hap.proc.poll() is not None or self.stats(),
                           what="haproxy's stats page")
        self.assertIsNone(self.hap.proc.poll(), "haproxy exited:\n%s" % self.hap.log_tail())
        for i in range(N):
            self.wait_status("f%d" % (i + 1), "UP")

        load = Load(front)
        load.start()
        self.addCleanup(load.finish)
        try:
            harness.wait_until(lambda: load.total >= 300, what="300 requests before "
                               "the restarts")
            for i in range(N):
                name = "f%d" % (i + 1)
                old = self.gen[i][-1]
                served_before = self.served(old)
                old.sigterm()
                rc = old.wait_exit()
                self.assertEqual(rc, 0, "%s exited %r after SIGTERM:\n%s"
                                 % (name, rc, old.stderr_tail()))
                self.wait_status(name, "DOWN")
                new = self.instance(clients[i], admins[i])
                self.gen[i].append(new)
                self.wait_status(name, "UP")
                # traffic reaches the new process before the next restart
                harness.wait_until(lambda: self.served(new) > 0,
                                   what="requests served by the new %s" % name)
                print("%s restarted: old served %d (before SIGTERM: %d); "
                      "requests so far %d, failed %d"
                      % (name, self.served(old), served_before, load.total,
                         len(load.failures)))
            n = load.total
            harness.wait_until(lambda: load.total >= n + 300,
                               what="300 requests after the last restart")
        finally:
            stopped = load.finish()
        self.assertTrue(stopped, "client threads did not stop")

        st = self.stats()
        per = []
        for i in range(N):
            counts = [self.served(d) for d in self.gen[i]]
            per.append(counts)
        retries = {k: (v.get("wretr"), v.get("wredis")) for k, v in st.items()}
        print("requests: %d ok, %d failed; served per instance (old, new): %s; "
              "haproxy retries/redispatches: %s; %.1fs"
              % (load.ok, len(load.failures), per, retries,
                 time.monotonic() - t_begin))
        self.assertEqual(load.failures, [], "%d of %d requests failed; first: %r\n%s"
                         % (len(load.failures), load.total, load.failures[:5],
                            self.hap.log_tail(30)))
        for i, counts in enumerate(per):
            for gen, c in enumerate(counts):
                self.assertGreater(c, 0, "f%d (%s) served nothing"
                                   % (i + 1, "old" if gen == 0 else "new"))
        self.assertGreaterEqual(sum(sum(c) for c in per), load.ok)
        for i in range(N):
            self.assertTrue(self.gen[i][-1].running())


if __name__ == "__main__":
    if find_haproxy() is None:
        print("SKIP: haproxy not installed (apt-get install haproxy)")
        sys.exit(harness.SKIP)
    harness.main()
