#!/usr/bin/env python3
"""bench/h2_rounds.py - interleaved h2load rounds over TLS, req/s, p50/p99, CPU per request.

    h2_rounds.py --target NAME=URL ... [--rounds 3] [--duration 10] [--warmup 2]
                 [--requests N] [--clients 32] [--streams 8] [--threads 2]
                 [--tls13-ciphers SUITE] --raw DIR [--json OUT]

Run by bench/h2.sh (which starts the servers); usable alone against servers that are
already up.  For every round, each target in turn (the order is reversed every other
round, so with two targets they alternate who goes first) gets one

    h2load -t T -c C -m M -D DURATION --warm-up-time WARMUP --log-file F URL

(or `-n N` instead of `-D/--warm-up-time` with --requests).  From each run:

  * req/s: h2load's "finished in ..., X req/s" (with -D: over the measured DURATION only);
  * p50 / p99 latency: h2load itself prints only min/max/mean/sd, so they are computed,
    nearest-rank, from its --log-file (one line per request: start us since the epoch,
    status, us until the end of the response), keeping the requests that started inside
    the measured window (after the warm-up) and did not fail;
  * CPU us per request of the server: user + sys ticks of every process listening on the
    URL's port and their children (nginx's master and workers; fanoutd's threads are in
    its one process), read from /proc (helpers of bench/cpu_per_request.py) at 0.5 s into
    the measured window and 0.5 s before its end, divided by the requests in that span
    (CPU seconds per second / req/s).  With --requests: over the whole run.

Each run must have negotiated ALPN h2 and got only 2xx answers; otherwise it is reported
as failed (and the exit status is 1).  Prints one line per run, per-round ratios of the
first target over the second (req/s, CPU), then a markdown table of medians (min..max).
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_per_request import CLK_TCK, cpu_ticks, listening_pids, tree_pids  # noqa: E402


def nearest_rank(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def parse_h2load(txt):
    out = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", txt)
    if m:
        secs = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        out["seconds"], out["rps"] = secs, float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", txt)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"),
                        m.groups()):
            out[k] = int(v)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt)
    if m:
        out["status"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m.groups())))
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", txt)
    if m:
        out["req_time_min_max_mean"] = list(m.groups())
    for key, pat in (("tls", r"TLS Protocol: (\S+)"), ("cipher", r"Cipher: (\S+)"),
                     ("alpn", r"Application protocol: (\S+)")):
        m = re.search(pat, txt)
        if m:
            out[key] = m.group(1)
    return out


def latencies(logfile, t_from_us):
    """Durations in ms of the requests that started at or after t_from_us and succeeded."""
    vals = []
    try:
        with open(logfile) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                try:
                    start, status, dur = int(parts[0]), int(parts[1]), int(parts[2])
                except ValueError:
                    continue
                if status < 0 or start < t_from_us:
                    continue
                vals.append(dur / 1000.0)
    except OSError:
        pass
    vals.sort()
    return vals


def run_one(a, name, url, pids, rnd):
    tag = "r%d.%s" % (rnd, name)
    logf = os.path.join(a.raw, "h2load.%s.log" % tag)
    txtf = os.path.join(a.raw, "h2load.%s.txt" % tag)
    cmd = ["h2load", "-t", str(a.threads), "-c", str(a.clients), "-m", str(a.streams)]
    if a.requests:
        cmd += ["-n", str(a.requests)]
        limit = 600
    else:
        cmd += ["-D", str(a.duration), "--warm-up-time", str(a.warmup)]
        limit = a.duration + a.warmup + 60
    if a.tls13_ciphers:
        cmd += ["--tls13-ciphers=" + a.tls13_ciphers]
    cmd += ["--log-file", logf, url]
    wall0_us = int(time.time() * 1e6)
    mono0 = time.monotonic()
    cpu = None
    with open(txtf, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            if a.requests:
                c0, tc0 = cpu_ticks(pids), time.monotonic()
                p.wait(timeout=limit)
                c1, tc1 = cpu_ticks(pids), time.monotonic()
            else:
                # sample strictly inside the measured window: [warmup+0.5, warmup+D-0.5]
                edge = 0.5 if a.duration >= 3 else 0.1
                time.sleep(max(0.0, mono0 + a.warmup + edge - time.monotonic()))
                c0, tc0 = cpu_ticks(pids), time.monotonic()
                time.sleep(max(0.0, mono0 + a.warmup + a.duration - edge - time.monotonic()))
                c1, tc1 = cpu_ticks(pids), time.monotonic()
                p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        cpu = (c1[0] - c0[0], c1[1] - c0[1], tc1 - tc0)
    with open(txtf) as f:
        txt = f.read()
    res = parse_h2load(txt)
    res.update({"round": rnd, "target": name, "url": url, "cmd": " ".join(cmd),
                "exit": p.returncode})
    t_from = 0 if a.requests else wall0_us + int(a.warmup * 1e6)
    lat = latencies(logf, t_from)
    if lat:
        res["lat_n"] = len(lat)
        res["p50_ms"] = nearest_rank(lat, 50)
        res["p90_ms"] = nearest_rank(lat, 90)
        res["p99_ms"] = nearest_rank(lat, 99)
        res["max_ms"] = lat[-1]
    if not a.keep_logs:
        try:
            os.unlink(logf)
        except OSError:
            pass
    if "rps" in res and res["rps"] > 0 and cpu is not None:
        du, ds, span = cpu
        if a.requests:
            per = 1e6 / CLK_TCK / max(res.get("succeeded", 0), 1)
        else:
            per = 1e6 / CLK_TCK / (res["rps"] * span)
        res["user_us"], res["sys_us"] = du * per, ds * per
        res["cpu_us"] = (du + ds) * per
        res["cpu_span_s"] = span
    problems = []
    if "rps" not in res:
        problems.append("no h2load summary: " + txt[-300:].replace("\n", " "))
    if res.get("alpn") != "h2":
        problems.append("ALPN %s, not h2" % res.get("alpn"))
    st = res.get("status", {})
    bad = st.get("3xx", 0) + st.get("4xx", 0) + st.get("5xx", 0)
    if bad or res.get("failed", 0) or res.get("errored", 0) or res.get("timeout", 0):
        problems.append("non-2xx %d, failed %d, errored %d, timeout %d" % (
            bad, res.get("failed", 0), res.get("errored", 0), res.get("timeout", 0)))
    if problems:
        res["problems"] = problems
    return res


def fmt(v, spec="%.2f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else spec % v


def mmm(vals, spec="%.2f"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return "%s (%s..%s)" % (spec % statistics.median(vals), spec % min(vals), spec % max(vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--target", action="append", required=True, help="NAME=https://127.0.0.1:PORT/PATH")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per run (h2load -D)")
    ap.add_argument("--warmup", type=int, default=2, help="h2load --warm-up-time, seconds")
    ap.add_argument("--requests", type=int, default=0, help="h2load -n N instead of -D")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tls13-ciphers", default="",
                    help="h2load --tls13-ciphers (empty: h2load's default list, server's choice)")
    ap.add_argument("--raw", required=True, help="directory for h2load outputs")
    ap.add_argument("--keep-logs", action="store_true", help="keep h2load's per-request logs")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not (1 <= a.rounds <= 20 and 1 <= a.duration <= 300 and 0 <= a.warmup <= 60
            and 0 <= a.requests <= 10_000_000 and 1 <= a.clients <= 2000
            and 1 <= a.streams <= 1000 and 1 <= a.threads <= 16):
        ap.error("out of bounds: rounds 1..20, duration 1..300, warmup 0..60, requests <= 1e7, "
                 "clients 1..2000, streams 1..1000, threads 1..16")
    os.makedirs(a.raw, exist_ok=True)

    targets = []
    for t in a.target:
        name, url = t.split("=", 1)
        u = urlsplit(url)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            ap.error("loopback targets only: %s" % url)
        pids = tree_pids(listening_pids(u.port))
        if not pids:
            raise SystemExit("h2_rounds: nothing listens on port %s (%s)" % (u.port, name))
        targets.append((name, url, pids))

    runs = []
    failed = False
    for r in range(1, a.rounds + 1):
        order = targets if r % 2 else list(reversed(targets))
        for name, url, pids in order:
            res = run_one(a, name, url, pids, r)
            runs.append(res)
            print("round %d %-8s %9s req/s  p50 %6s ms  p99 %7s ms  cpu %6s us/req (user %s + sys %s)"
                  "  %s %s %s%s" % (
                      r, name, fmt(res.get("rps"), "%.0f"), fmt(res.get("p50_ms")),
                      fmt(res.get("p99_ms")), fmt(res.get("cpu_us"), "%.1f"),
                      fmt(res.get("user_us"), "%.1f"), fmt(res.get("sys_us"), "%.1f"),
                      res.get("alpn", "?"), res.get("tls", "?"), res.get("cipher", "?"),
                      ("  PROBLEM: " + "; ".join(res["problems"])) if "problems" in res else ""),
                  flush=True)
            if "problems" in res:
                failed = True
        if len(targets) >= 2:
            a_name, b_name = targets[0][0], targets[1][0]
            ra = next(x for x in runs if x["round"] == r and x["target"] == a_name)
            rb = next(x for x in runs if x["round"] == r and x["target"] == b_name)
            rr = ra.get("rps", 0) / rb["rps"] if rb.get("rps") else None
            cr = rb.get("cpu_us", 0) / ra["cpu_us"] if ra.get("cpu_us") and rb.get("cpu_us") else None
            print("round %d ratio %s/%s req/s x%s   CPU per request %s/%s x%s" % (
                r, a_name, b_name, fmt(rr), b_name, a_name, fmt(cr)), flush=True)

    names = [t[0] for t in targets]
    summary = {"rounds": a.rounds, "duration": a.duration, "warmup": a.warmup,
               "requests": a.requests, "clients": a.clients, "streams": a.streams,
               "threads": a.threads, "runs": runs, "median": {}}
    for n in names:
        mine = [x for x in runs if x["target"] == n]
        summary["median"][n] = {k: statistics.median([x[k] for x in mine if k in x])
                                for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "user_us", "sys_us")
                                if any(k in x for x in mine)}
    ratios = []
    cpu_ratios = []
    if len(names) >= 2:
        for r in range(1, a.rounds + 1):
            ra = next(x for x in runs if x["round"] == r and x["target"] == names[0])
            rb = next(x for x in runs if x["round"] == r and x["target"] == names[1])
            if rb.get("rps") and ra.get("rps"):
                ratios.append(ra["rps"] / rb["rps"])
            if ra.get("cpu_us") and rb.get("cpu_us"):
                cpu_ratios.append(rb["cpu_us"] / ra["cpu_us"])
        summary["ratio_rps"] = ratios
        summary["ratio_cpu"] = cpu_ratios

    load = ("h2load -t %d -c %d -m %d %s%s" % (a.threads, a.clients, a.streams,
            ("-n %d" % a.requests) if a.requests else "-D %d --warm-up-time %d" % (a.duration, a.warmup),
            (" --tls13-ciphers=" + a.tls13_ciphers) if a.tls13_ciphers else ""))
    print()
    print("h2 over TLS, %s, %d rounds (median, min..max over rounds)" % (load, a.rounds))
    print()
    print("| target | req/s | p50 ms | p99 ms | CPU us/req (user + sys) |")
    print("|---|---|---|---|---|")
    for n in names:
        mine = [x for x in runs if x["target"] == n]
        med = summary["median"][n]
        print("| %s | %s | %s | %s | %s (%s + %s) |" % (
            n, mmm([x.get("rps") for x in mine], "%.0f"), mmm([x.get("p50_ms") for x in mine]),
            mmm([x.get("p99_ms") for x in mine]), mmm([x.get("cpu_us") for x in mine], "%.1f"),
            fmt(med.get("user_us"), "%.1f"), fmt(med.get("sys_us"), "%.1f")))
    if ratios:
        print("| **%s/%s req/s** | **x%s** | | | CPU/req %s/%s x%s |" % (
            names[0], names[1], mmm(ratios), names[1], names[0], mmm(cpu_ratios)))
        print()
        print("h2 summary: %s/%s req/s x%.2f (rounds %s) cpu %s/%s x%s%s" % (
            names[0], names[1], statistics.median(ratios),
            ",".join("%.2f" % x for x in ratios), names[1], names[0],
            fmt(statistics.median(cpu_ratios)) if cpu_ratios else "-",
            "  (SOME RUNS FAILED)" if failed else ""))
    else:
        n = names[0]
        print()
        print("h2 summary: %s %s req/s p50 %s ms p99 %s ms cpu %s us/req%s" % (
            n, fmt(summary["median"][n].get("rps"), "%.0f"), fmt(summary["median"][n].get("p50_ms")),
            fmt(summary["median"][n].get("p99_ms")), fmt(summary["median"][n].get("cpu_us"), "%.1f"),
            "  (SOME RUNS FAILED)" if failed else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
