#!/usr/bin/env python3
"""bench/inflight.py - figure 6: N requests in flight at once through the proxy to a slow
upstream; every one must be answered, with no errors.

  inflight.py --port 25090 [--n 10000] [--ms 2000] [--slow-port 26002]
              [--admin-port 25099] [--pid PID] [--connect-concurrency 1000] --json OUT.json

Opens N client connections (at most --connect-concurrency connecting at once), each sends
`GET /slow?ms=MS&id=RUN.K` and reads the whole answer (Content-Length), then closes.  All N
are started within about a second, and each answer takes MS at the upstream, so all of
them are in flight together.  Meanwhile a poller samples every 100 ms: fanoutd's
fanoutd_requests_in_flight (admin /metrics), the slow upstream's active_connections
(/stats) and the proxy's open descriptors (/proc/PID/fd).  At the end it asks the slow
upstream how many of this run's requests it served.  Reports statuses, error kinds,
latency p50/p99/max, elapsed time and the peaks.  Raises its own RLIMIT_NOFILE soft limit
to the hard limit.  Bounded: per-request timeout (MS + 60 s) and --max-seconds.
Stdlib only.  Last line: "inflight summary: ...".
"""
import argparse
import asyncio
import http.client
import json
import math
import os
import re
import resource
import socket
import statistics
import sys
import time


def http_get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def in_flight_metric(admin_port):
    st, body = http_get(admin_port, "/metrics")
    tot = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("fanoutd_requests_in_flight"):
            tot += float(line.rsplit(None, 1)[-1])
    return tot


async def one(loop, a, k, run, sem, res):
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        async with sem:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", a.port)), 30)
            await loop.sock_sendall(s, ("GET /slow?ms=%d&id=%s.%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                        "Connection: close\r\n\r\n" % (a.ms, run, k)).encode())
        buf = b""
        deadline = a.ms / 1000.0 + 60
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), deadline)
            if not chunk:
                break
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
        if not buf:
            res["errors"]["closed_without_answer"] = res["errors"].get("closed_without_answer", 0) + 1
            return
        status = buf.split(b" ", 2)[1].decode(errors="replace") if b" " in buf else "?"
        res["status"][status] = res["status"].get(status, 0) + 1
        if status != "200" and len(res["samples"]) < 3:
            res["samples"].append(buf[:400].decode(errors="replace"))
        res["lat"].append(time.monotonic() - t0)
    except (OSError, asyncio.TimeoutError) as e:
        kind = type(e).__name__ + (":" + os.strerror(e.errno) if getattr(e, "errno", None) else "")
        res["errors"][kind] = res["errors"].get(kind, 0) + 1
    finally:
        s.close()


async def poller(a, stop, peaks):
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if a.admin_port:
            try:
                v = await loop.run_in_executor(None, in_flight_metric, a.admin_port)
                peaks["in_flight"] = max(peaks.get("in_flight", 0), v)
            except Exception:
                peaks["metrics_errors"] = peaks.get("metrics_errors", 0) + 1
        if a.slow_port:
            try:
                st, body = await loop.run_in_executor(None, http_get, a.slow_port, "/stats")
                peaks["upstream_active_conns"] = max(peaks.get("upstream_active_conns", 0),
                                                     json.loads(body)["active_connections"])
            except Exception:
                peaks["stats_errors"] = peaks.get("stats_errors", 0) + 1
        if a.pid:
            try:
                peaks["proxy_fds"] = max(peaks.get("proxy_fds", 0), len(os.listdir("/proc/%d/fd" % a.pid)))
            except OSError:
                pass
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def main_async(a):
    loop = asyncio.get_running_loop()
    run = "inf%x%04x" % (os.getpid(), int(time.time()) & 0xFFFF)
    res = {"status": {}, "errors": {}, "lat": [], "samples": []}
    peaks = {}
    stop = asyncio.Event()
    pt = asyncio.ensure_future(poller(a, stop, peaks))
    sem = asyncio.Semaphore(a.connect_concurrency)
    t0 = time.monotonic()
    await asyncio.gather(*(one(loop, a, k, run, sem, res) for k in range(a.n)))
    elapsed = time.monotonic() - t0
    stop.set()
    await pt
    served = None
    if a.slow_port:
        try:
            st, body = await loop.run_in_executor(None, lambda: http_get(a.slow_port, "/log?run=" + run, 30))
            recs = json.loads(body)["requests"]
            served = {}
            for r in recs:
                served[r["state"]] = served.get(r["state"], 0) + 1
        except Exception as e:
            served = {"error": str(e)}
    lat = sorted(res["lat"])
    mem = {}
    if a.pid:
        try:
            with open("/proc/%d/status" % a.pid) as f:
                for line in f:
                    if line.split(":")[0] in ("VmRSS", "VmHWM"):
                        mem[line.split(":")[0]] = round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            pass

    def pct(p):
        return lat[max(1, math.ceil(p / 100.0 * len(lat))) - 1] if lat else None
    out = {"n": a.n, "ms": a.ms, "port": a.port, "statuses": res["status"], "errors": res["errors"],
           "elapsed_s": round(elapsed, 2),
           "latency_s": {"p50": pct(50), "p99": pct(99), "max": lat[-1] if lat else None},
           "peak_in_flight": peaks.get("in_flight"), "peak_upstream_active_conns": peaks.get("upstream_active_conns"),
           "peak_proxy_fds": peaks.get("proxy_fds"), "upstream_records": served,
           "non_200_samples": res["samples"], "proxy_mem_mib": mem, "label": a.label,
           "poll_errors": {k: v for k, v in peaks.items() if k.endswith("_errors")}}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    ok = res["status"].get("200", 0)
    for smp in res["samples"]:
        print("inflight: non-200 answer: %r" % smp, flush=True)
    print("inflight summary: n=%d ok(200)=%d other=%s errors=%s elapsed=%.1fs p50=%.2fs p99=%.2fs "
          "max=%.2fs peak_in_flight=%s peak_upstream_conns=%s peak_fds=%s proxy_mem_mib=%s upstream=%s" % (
              a.n, ok, {k: v for k, v in res["status"].items() if k != "200"}, res["errors"], elapsed,
              out["latency_s"]["p50"] or 0, out["latency_s"]["p99"] or 0, out["latency_s"]["max"] or 0,
              out["peak_in_flight"], out["peak_upstream_active_conns"], out["peak_proxy_fds"], mem, served),
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--ms", type=int, default=2000)
    ap.add_argument("--slow-port", type=int, default=0)
    ap.add_argument("--admin-port", type=int, default=0)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--connect-concurrency", type=int, default=1000)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", required=True)
    ap.add_argument("--max-seconds", type=float, default=240)
    a = ap.parse_args()
    if not (1 <= a.n <= 50000 and 0 <= a.ms <= 60000):
        ap.error("bounds: n 1..50000, ms 0..60000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.n + 100 > hard:
        print("inflight: warning: RLIMIT_NOFILE hard limit %d < n + 100" % hard, file=sys.stderr)

    async def bounded():
        await asyncio.wait_for(main_async(a), a.max_seconds)
    asyncio.run(bounded())


if __name__ == "__main__":
    main()
