#!/usr/bin/env python3
"""bench/soak.py - fanoutd under mixed load for a bounded time: does it leak?

    bench/soak.py [--fanoutd PATH] [--minutes M] [--idle-seconds S]
                  [--sample-seconds S] [--keep]

Starts fanoutd (2 workers, config in a temp dir) in front of three fast
HTTP/1.1 keep-alive upstreams (which close a connection idle for 3 s) and a
faulty one (resets, hangs, truncates), all of them Python threads in one
child process, with routes in every mode (proxy, all, first, hedge,
quorum).  Then, in cycles of a minute: wrk on a proxy route (also with
256 KiB answers), a fan-out route with POST bodies and the faulty route;
h2load (h2c) bursts on first / hedge / quorum; clients that abandon a slow
request (FIN, RST with SO_LINGER 0, half-close); HTTP/2 streams reset by the
client (tests/integration/h2raw.py); a SIGHUP reload every 30 s, one of them
with a bad config that must be refused while the old one keeps serving.

Every --sample-seconds (15): VmRSS, Anonymous (smaps_rollup: the heap and
thread stacks, as near to "heap in use" as one gets from outside), the
descriptors by kind, fanoutd's sockets toward the upstreams by TCP state,
and the in-flight gauges from /metrics.  After the load, an idle phase
(longer than the worker's idle trim) and a last sample.

Prints the series, the RSS slope after minute 2 (least squares over VmRSS
read every second, KiB/min; the 15 s samples alone are too few for a bound
of 100 KiB/min under bursty load) and the idle figures.  Exit status 1 when: the slope is over 100 KiB/min (runs of
10 minutes or more only), idle RSS is more than 4 MiB above the sample after
the first minute, an upstream socket is in CLOSE-WAIT 1 s into the idle
phase or at its end, a gauge is not 0 at idle, the bad config was not
refused, a GET or a POST fails after the idle phase, or fanoutd died or did
not exit 0 on SIGTERM.  Loopback only, free ports, every process started is
ended by PID (also on SIGINT).  Needs wrk, h2load and curl.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.dont_write_bytecode = True
from harness import free_port  # noqa: E402

PROCS = []          # every child process, ended by PID at exit
UPSTREAM_KEEPALIVE_S = 3
STOP = threading.Event()


# ---- the upstreams (run in a child process: --serve-upstreams) ----------

def serve_upstreams(max_seconds):
    """Three fast upstreams and a faulty one; prints their ports as JSON."""
    import http.server
    import socketserver

    class Fast(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # An idle keep-alive connection is closed after this, as nginx's
        # keepalive_timeout does: fanoutd must not keep it in CLOSE-WAIT.
        timeout = UPSTREAM_KEEPALIVE_S

        def log_message(self, *a):
            pass

        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            q = dict(kv.split("=", 1) for kv in
                     self.path.partition("?")[2].split("&") if "=" in kv)
            ms = min(int(q.get("ms", "0") or 0), 60000)
            if ms:
                # A slow answer that stops when fanoutd lets go.
                self.connection.settimeout(ms / 1000.0)
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        self.close_connection = True
                        return
                except socket.timeout:
                    pass
                except OSError:
                    self.close_connection = True
                    return
                self.connection.settimeout(self.timeout)
            kb = min(int(q.get("kb", "0") or 0), 4096)
            body = (b'{"ok":true,"pad":"' + b"x" * (kb * 1024) + b'"}') if kb \
                else b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = answer

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 512
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            pass    # a reset or a broken pipe is what the soak is about

    servers = [Server(("127.0.0.1", 0), Fast) for _ in range(3)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()

    faulty = socket.socket()
    faulty.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    faulty.bind(("127.0.0.1", 0))
    faulty.listen(512)
    turn = [0]
    lock = threading.Lock()

    def faulty_conn(c):
        try:
            c.settimeout(60)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            with lock:
                turn[0] += 1
                kind = turn[0] % 3
            if kind == 0:      # reset
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
            elif kind == 1:    # hang until the proxy gives up
                while c.recv(65536):
                    pass
            else:              # truncate
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
                          b"Content-Type: text/plain\r\n\r\n0123456789")
        except OSError:
            pass
        finally:
            c.close()

    def faulty_loop():
        while True:
            c, _ = faulty.accept()
            threading.Thread(target=faulty_conn, args=(c,), daemon=True).start()

    threading.Thread(target=faulty_loop, daemon=True).start()
    print(json.dumps({"fast": [s.server_address[1] for s in servers],
                      "faulty": faulty.getsockname()[1]}), flush=True)
    # Until the parent ends us (by PID) or the bound passes.
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        if os.getppid() == 1:
            break


# ---- processes -----------------------------------------------------------

def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def end(p, grace=5.0):
    """End one child by its PID: SIGTERM, then SIGKILL after GRACE."""
    if p.poll() is not None:
        return p.returncode
    try:
        p.terminate()
        return p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def end_all():
    for p in PROCS:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass




# ---- fanoutd's configuration ---------------------------------------------

def config_text(port, admin, fast, faulty, variant=0, bad=False):
    f = ["[server]",
         "listen = 127.0.0.1:%d" % port,
         "workers = 2",
         "http2 = on",
         "access_log = off",
         "log_level = warn",
         "drain_timeout = 5s",
         "keepalive_timeout = 30s",
         "",
         "[admin]",
         "listen = 127.0.0.1:%d" % admin, ""]
    if bad:
        f += ["listn = 127.0.0.1:1", ""]   # refused: unknown key
    for i, p in enumerate(fast):
        f += ['[upstream "u%d"]' % (i + 1), "url = http://127.0.0.1:%d" % p,
              "timeout = 15s", ""]
    f += ['[upstream "bad"]', "url = http://127.0.0.1:%d" % faulty,
          "timeout = %dms" % (1500 + 100 * variant), ""]
    routes = [
        ("proxy", "/p/", "proxy", "u1, u2", []),
        ("all", "/all/", "all", "u1, u2, u3", []),
        ("first", "/first/", "first", "u1, u2, u3", []),
        ("hedge", "/hedge/", "hedge", "u1, u2, u3",
         ["hedge_delay = %dms" % (2 + variant)]),
        ("quorum", "/quorum/", "quorum", "u1, u2, u3", ["quorum = 2"]),
        ("faulty", "/faulty/", "all", "u1, bad", ["partial = allow"]),
        ("faultyproxy", "/fp/", "first", "bad, u2", []),
        ("slow", "/slow/", "all", "u1, u2, u3", ["deadline = 20s"]),
        ("slowproxy", "/sp/", "proxy", "u3", ["deadline = 20s"]),
    ]
    for name, match, mode, ups, extra in routes:
        f += ['[route "%s"]' % name, "match = %s" % match,
              "strip_prefix = yes", "mode = %s" % mode,
              "upstreams = %s" % ups] + extra + [""]
    return "\n".join(f)


# ---- what is sampled -------------------------------------------------------

def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def anon_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fds(pid):
    kinds = {"socket": 0, "pipe": 0, "anon": 0, "file": 0}
    inodes = set()
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            t = os.readlink(os.path.join(d, name))
        except OSError:
            continue
        if t.startswith("socket:["):
            kinds["socket"] += 1
            inodes.add(t[8:-1])
        elif t.startswith("pipe:["):
            kinds["pipe"] += 1
        elif t.startswith("anon_inode:"):
            kinds["anon"] += 1
        else:
            kinds["file"] += 1
    return kinds, inodes


TCP_STATES = {"01": "ESTAB", "02": "SYN-SENT", "04": "FIN-WAIT-1",
              "05": "FIN-WAIT-2", "06": "TIME-WAIT", "07": "CLOSE",
              "08": "CLOSE-WAIT", "09": "LAST-ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def upstream_sockets(inodes, ports):
    """fanoutd's sockets toward PORTS, counted by TCP state."""
    states = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    c = line.split()
                    rport = int(c[2].rsplit(":", 1)[1], 16)
                    if rport in ports and c[9] in inodes:
                        s = TCP_STATES.get(c[3], c[3])
                        states[s] = states.get(s, 0) + 1
        except OSError:
            pass
    return states


GAUGES = ("fanoutd_requests_in_flight", "fanoutd_upstream_transfers_in_flight",
          "fanoutd_connections_active")


def metrics(admin):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin,
                                timeout=5) as r:
        return r.read().decode()


def metric_value(text, name, labels=""):
    total = None
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and labels in line:
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def sample(t0, pid, admin, ports, phase):
    kinds, inodes = fds(pid)
    m = metrics(admin)
    s = {"t": time.monotonic() - t0, "phase": phase,
         "rss": proc_status(pid, "VmRSS"), "anon": anon_kib(pid),
         "fds": kinds, "tcp": upstream_sockets(inodes, ports)}
    for g in GAUGES:
        s[g] = metric_value(m, g)
    return s


def row(s):
    tcp = " ".join("%s=%d" % kv for kv in sorted(s["tcp"].items())) or "-"
    f = s["fds"]
    return ("%6.0f  %-5s %9.1f %9.1f  %4d %3d %3d %3d  %5s %5s %5s  %s" % (
        s["t"], s["phase"], s["rss"] / 1024, s["anon"] / 1024, f["socket"],
        f["pipe"], f["anon"], f["file"],
        fmt_g(s["fanoutd_requests_in_flight"]),
        fmt_g(s["fanoutd_upstream_transfers_in_flight"]),
        fmt_g(s["fanoutd_connections_active"]), tcp))


def fmt_g(v):
    return "?" if v is None else "%d" % v


HEADER = ("     s  phase  RSS MiB  Anon MiB  sock pip ano fil  "
          "reqs  xfer  conn  upstream sockets by state")


def slope_kib_per_min(points):
    """Least squares slope of (seconds, KiB) points, in KiB per minute."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx * 60


# ---- the load -------------------------------------------------------------

def abandoning_clients(port, counts):
    """Leave a slow request by FIN, RST (SO_LINGER 0) or half-close."""
    kinds = ("fin", "rst", "half")
    i = 0
    while not STOP.is_set():
        kind = kinds[i % 3]
        path = "/slow/x?ms=3000" if i % 2 == 0 else "/sp/x?ms=3000"
        i += 1
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(("GET %s HTTP/1.1\r\nHost: soak\r\n\r\n" % path).encode())
            time.sleep(0.1)
            if kind == "rst":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
            elif kind == "half":
                c.shutdown(socket.SHUT_WR)
                c.settimeout(5)
                try:
                    while c.recv(65536):
                        pass
                except OSError:
                    pass
            c.close()
            counts[kind] = counts.get(kind, 0) + 1
        except OSError:
            counts["error"] = counts.get("error", 0) + 1
        STOP.wait(0.2)


def h2_resets(port, counts):
    """HTTP/2 streams reset by the client while their legs are in flight."""
    import h2raw
    while not STOP.is_set():
        try:
            c = h2raw.H2Client(port, timeout=5)
            try:
                c.handshake()
                sids = [c.request("/slow/x?ms=2000") for _ in range(4)]
                sids.append(c.request("/all/x"))
                time.sleep(0.05)
                for sid in sids[:2]:
                    c.rst_stream(sid)
                c.response(sids[4], timeout=5)
                counts["reset"] = counts.get("reset", 0) + 2
            finally:
                if counts.get("conns", 0) % 2:
                    c.close()       # the other two streams go with the FIN
                else:
                    for sid in sids[2:4]:
                        c.rst_stream(sid)
                    c.close()
                counts["conns"] = counts.get("conns", 0) + 1
        except Exception as e:   # noqa: BLE001 - counted, the soak goes on
            counts["error"] = counts.get("error", 0) + 1
            counts["last_error"] = repr(e)[:120]
        STOP.wait(0.5)


def load_cycle(port, seconds, tmp, cycle):
    """The wrk and h2load processes of one cycle; returned to be waited for."""
    base = "http://127.0.0.1:%d" % port
    post = os.path.join(tmp, "post.lua")
    d = "%ds" % max(1, int(seconds))
    out = open(os.path.join(tmp, "load-%d.txt" % cycle), "w")
    procs = [
        start(["wrk", "-t1", "-c16", "-d" + d, "--timeout", "10s",
               base + "/p/x"], stdout=out, stderr=subprocess.STDOUT),
        start(["wrk", "-t1", "-c8", "-d" + d, "--timeout", "10s", "-s", post,
               base + "/all/x"], stdout=out, stderr=subprocess.STDOUT),
        start(["wrk", "-t1", "-c4", "-d" + d, "--timeout", "10s",
               base + "/faulty/x"], stdout=out, stderr=subprocess.STDOUT),
        start(["wrk", "-t1", "-c2", "-d" + d, "--timeout", "10s",
               base + "/p/x?kb=256"], stdout=out, stderr=subprocess.STDOUT),
    ]
    return procs, out


def h2load_bursts(port, seconds, tmp, cycle, counts):
    """h2c bursts on the routes that cancel their losers."""
    t_end = time.monotonic() + seconds
    i = 0
    routes = ("/quorum/x", "/first/x", "/hedge/x", "/fp/x", "/all/x?kb=64")
    with open(os.path.join(tmp, "h2load-%d.txt" % cycle), "w") as out:
        while not STOP.is_set() and time.monotonic() < t_end - 3:
            url = "http://127.0.0.1:%d%s" % (port, routes[i % len(routes)])
            i += 1
            p = start(["h2load", "-n", "2000", "-c", "4", "-m", "16", "-t", "1",
                       "-T", "5", "-N", "5", url], stdout=out,
                      stderr=subprocess.STDOUT)
            try:
                p.wait(max(1, min(20, t_end - time.monotonic())))
                counts["bursts"] = counts.get("bursts", 0) + 1
            except subprocess.TimeoutExpired:
                pass
            end(p)
            STOP.wait(2)


def _interrupt(*_):
    raise KeyboardInterrupt


# ---- main -------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.path.join(REPO, "fanoutd")
    if not os.path.exists(default):
        default = os.path.join(REPO, "build", "fanoutd")
    ap.add_argument("--fanoutd", default=default)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--sample-seconds", type=float, default=15)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--serve-upstreams", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_upstreams:
        serve_upstreams(a.serve_upstreams)
        return 0
    for tool in ("wrk", "h2load", "curl"):
        if shutil.which(tool) is None:
            sys.exit("soak: %s is not installed" % tool)
    binary = os.path.abspath(a.fanoutd)
    if not os.access(binary, os.X_OK):
        sys.exit("soak: no fanoutd at %s (--fanoutd)" % binary)

    atexit.register(end_all)
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = tempfile.mkdtemp(prefix="fanoutd-soak-")
    load_seconds = a.minutes * 60
    problems = []
    threads = []
    cycle_procs = []
    fd = None
    try:
        up = start([sys.executable, os.path.abspath(__file__), "--serve-upstreams",
                    str(load_seconds + a.idle_seconds + 300)],
                   stdout=subprocess.PIPE, text=True)
        ports = json.loads(up.stdout.readline())
        fast, faulty = ports["fast"], ports["faulty"]
        up_ports = set(fast) | {faulty}
        port, admin = free_port(), free_port()
        conf = os.path.join(tmp, "fanoutd.ini")
        with open(os.path.join(tmp, "post.lua"), "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("b", 4000)\n'
                    'wrk.headers["Content-Type"] = "text/plain"\n')

        def write_conf(variant=0, bad=False):
            with open(conf + ".new", "w") as f:
                f.write(config_text(port, admin, fast, faulty, variant, bad))
            os.replace(conf + ".new", conf)

        write_conf()
        log = open(os.path.join(tmp, "fanoutd.log"), "w")
        fd = start([binary, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                metrics(admin)
                urllib.request.urlopen("http://127.0.0.1:%d/p/x" % port,
                                       timeout=5).read()
                break
            except OSError:
                if fd.poll() is not None or time.monotonic() > deadline:
                    sys.exit("soak: fanoutd did not start (see %s)" %
                             os.path.join(tmp, "fanoutd.log"))
                time.sleep(0.1)
        print("soak: fanoutd %s pid %d port %d admin %d, upstreams %s faulty %d,"
              " %.1f min + %.0f s idle, dir %s" % (
                  binary, fd.pid, port, admin, fast, faulty, a.minutes,
                  a.idle_seconds, tmp), flush=True)

        t0 = time.monotonic()
        samples = [sample(t0, fd.pid, admin, up_ports, "start")]
        print(HEADER)
        print(row(samples[-1]), flush=True)
        counts = {"abandon": {}, "h2rst": {}, "h2load": {}}
        rss_series = []
        threads = [threading.Thread(target=abandoning_clients,
                                    args=(port, counts["abandon"]), daemon=True),
                   threading.Thread(target=h2_resets,
                                    args=(port, counts["h2rst"]), daemon=True)]
        for t in threads:
            t.start()

        next_sample = t0 + a.sample_seconds
        next_reload = t0 + 30
        reloads = 0
        bad_done = False
        bad_result = None
        cycle = 0
        t_load_end = t0 + load_seconds
        while time.monotonic() < t_load_end:
            cycle += 1
            left = t_load_end - time.monotonic()
            length = min(60, left)
            procs, out = load_cycle(port, length, tmp, cycle)
            cycle_procs = procs
            bt = threading.Thread(target=h2load_bursts,
                                  args=(port, length, tmp, cycle,
                                        counts["h2load"]), daemon=True)
            bt.start()
            c_end = time.monotonic() + length
            while time.monotonic() < c_end:
                now = time.monotonic()
                if fd.poll() is not None:
                    problems.append("fanoutd died: exit status %s" % fd.returncode)
                    raise RuntimeError("fanoutd died")
                if now >= next_reload:
                    reloads += 1
                    bad = not bad_done and reloads == 2
                    if bad:
                        before = metric_value(metrics(admin),
                                              "fanoutd_config_reloads_total",
                                              'result="error"') or 0
                    write_conf(variant=reloads % 2, bad=bad)
                    os.kill(fd.pid, signal.SIGHUP)
                    if bad:
                        bad_done = True
                        time.sleep(1)
                        after = metric_value(metrics(admin),
                                             "fanoutd_config_reloads_total",
                                             'result="error"') or 0
                        try:
                            code = urllib.request.urlopen(
                                "http://127.0.0.1:%d/p/x" % port,
                                timeout=5).status
                        except OSError as e:
                            code = repr(e)
                        bad_result = "refused" if after > before and code == 200 \
                            else "NOT refused (errors %s -> %s, GET %s)" % (
                                before, after, code)
                        if not bad_result.startswith("refused"):
                            problems.append("bad config: " + bad_result)
                        write_conf(variant=reloads % 2)
                    next_reload += 30
                if now >= next_sample:
                    samples.append(sample(t0, fd.pid, admin, up_ports, "load"))
                    print(row(samples[-1]), flush=True)
                    next_sample += a.sample_seconds
                # VmRSS every second for the slope: one reading every 15 s
                # under bursty load gives a slope whose noise (about
                # 300 KiB/min over 8 minutes) is larger than the bound.
                rss_series.append((time.monotonic() - t0,
                                   proc_status(fd.pid, "VmRSS")))
                time.sleep(max(0.05, min(next_sample, next_reload, c_end,
                                         time.monotonic() + 1)
                               - time.monotonic()))
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    end(p)
            out.close()
            bt.join(25)

        # The idle phase.
        STOP.set()
        for t in threads:
            t.join(15)
        for p in cycle_procs:
            end(p)
        t_idle = time.monotonic()
        time.sleep(1)
        s1 = sample(t0, fd.pid, admin, up_ports, "idle1")
        samples.append(s1)
        print(row(s1), flush=True)
        while time.monotonic() < t_idle + a.idle_seconds:
            time.sleep(min(a.sample_seconds,
                           max(0.1, t_idle + a.idle_seconds - time.monotonic())))
            samples.append(sample(t0, fd.pid, admin, up_ports, "idle"))
            print(row(samples[-1]), flush=True)
        idle = samples[-1]

        # Judgement.
        warm = [p for p in rss_series if p[0] >= 120]
        slope = slope_kib_per_min(warm)
        slope15 = slope_kib_per_min([(s["t"], s["rss"]) for s in samples
                                     if s["phase"] == "load" and s["t"] >= 120])
        first_min = next((s for s in samples if s["t"] >= 60), None)
        print()
        print("soak: load %.1f min, %d cycles, %d reloads (bad config: %s)" % (
            a.minutes, cycle, reloads, bad_result or "not tried"))
        print("soak: abandoning clients %s; h2 resets %s; h2load %s" % (
            counts["abandon"], counts["h2rst"], counts["h2load"]))
        print("soak: RSS start %.1f MiB, after minute 1 %s, end of load %.1f, "
              "idle %.1f MiB (Anonymous %.1f MiB)" % (
                  samples[0]["rss"] / 1024,
                  "%.1f" % (first_min["rss"] / 1024) if first_min else "-",
                  max((s for s in samples if s["phase"] == "load"),
                      key=lambda s: s["t"], default=samples[0])["rss"] / 1024,
                  idle["rss"] / 1024, idle["anon"] / 1024))
        if slope is None:
            print("soak: RSS slope after minute 2: too few samples")
        else:
            judged = a.minutes >= 10
            print("soak: RSS slope after minute 2: %+.1f KiB/min over %d readings "
                  "1 s apart (%s over the 15 s samples)%s"
                  % (slope, len(warm),
                     "%+.1f" % slope15 if slope15 is not None else "-",
                     "" if judged else
                     " (not judged: run shorter than 10 minutes)"))
            if judged and slope > 100:
                problems.append("RSS slope %.1f KiB/min > 100" % slope)
        if first_min is not None and idle["rss"] > first_min["rss"] + 4096:
            problems.append("idle RSS %.1f MiB > minute-1 RSS %.1f + 4 MiB" % (
                idle["rss"] / 1024, first_min["rss"] / 1024))
        print("soak: idle: upstream sockets 1 s in %s, at the end %s (the "
              "upstreams close keep-alive connections idle for %d s)" % (
                  s1["tcp"] or "{}", idle["tcp"] or "{}", UPSTREAM_KEEPALIVE_S))
        for s, when in ((s1, "1 s into idle"), (idle, "at the end of idle")):
            cw = s["tcp"].get("CLOSE-WAIT", 0)
            if cw:
                problems.append("%d upstream sockets in CLOSE-WAIT %s" % (cw, when))
        for g in GAUGES:
            if idle[g] != 0:
                problems.append("%s = %s at idle" % (g, idle[g]))

        # Still serving after the idle trim: a GET and a POST.
        for path, data in (("/p/x", None), ("/all/x", b"after idle")):
            try:
                code = urllib.request.urlopen(
                    "http://127.0.0.1:%d%s" % (port, path), data=data,
                    timeout=10).status
            except OSError as e:
                code = repr(e)
            if code != 200:
                problems.append("after idle: %s %s -> %s" % (
                    "POST" if data else "GET", path, code))
        rc = end(fd, 15)
        print("soak: fanoutd exit status at SIGTERM: %s" % rc)
        if rc != 0:
            problems.append("fanoutd exit status %s at SIGTERM" % rc)
        end(up)
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        STOP.set()
        end_all()
        if fd is not None and fd.returncode not in (0, None) and \
                not any("exit status" in p for p in problems):
            problems.append("fanoutd exit status %s" % fd.returncode)
        if a.keep or problems:
            print("soak: files kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for p in problems:
        print("soak: PROBLEM: %s" % p)
    print("soak summary: %s" % ("ok" if not problems else
                                "%d problem(s)" % len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
