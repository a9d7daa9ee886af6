#!/usr/bin/env python3
"""bench/cpu_per_request.py - CPU time each server spends per request.

    cpu_per_request.py --target NAME=PORT[/PATH] ... [--rounds 3] [--duration 5]
                       [--conns 64] [--json OUT]

For every round and every target in turn (interleaved), runs
`wrk -t2 -cCONNS -dDURATION` at http://127.0.0.1:PORT/PATH and reads the user and
system CPU time of the processes listening on PORT (all of them: nginx's master
and workers, fanoutd's threads) from /proc before and after.  Dividing by the
requests wrk completed gives microseconds of CPU per request: unlike req/s on a
shared box, this does not depend on how much CPU the neighbours left over, so
it is the steadier way to compare what two servers spend on the same work.
Prints a table and, with --json, writes the per-round figures.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def listening_pids(port):
    out = subprocess.run(["ss", "-Hltnp", "sport = :%d" % port], capture_output=True,
                         text=True, check=False).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def tree_pids(pids):
    """The pids and their children (nginx's workers under its master)."""
    seen = set(pids)
    todo = list(pids)
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            if k not in seen:
                seen.add(k)
                todo.append(k)
    return sorted(seen)


def cpu_ticks(pids):
    user = system = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def run_wrk(url, conns, duration):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % duration, url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise SystemExit("cpu_per_request: no request count from wrk at %s:\n%s" % (url, out))
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--target", action="append", required=True, help="NAME=PORT[/PATH]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()

    targets = []
    for t in a.target:
        name, rest = t.split("=", 1)
        port, _, path = rest.partition("/")
        pids = tree_pids(listening_pids(int(port)))
        if not pids:
            raise SystemExit("cpu_per_request: nothing listens on port %s (%s)" % (port, name))
        targets.append((name, int(port), "/" + path, pids))

    rounds = {name: [] for name, _, _, _ in targets}
    for r in range(a.rounds):
        for name, port, path, pids in targets:
            u0, s0 = cpu_ticks(pids)
            n = run_wrk("http://127.0.0.1:%d%s" % (port, path), a.conns, a.duration)
            u1, s1 = cpu_ticks(pids)
            us = 1e6 / CLK_TCK / max(n, 1)
            rounds[name].append({"round": r + 1, "requests": n, "user_us": (u1 - u0) * us,
                                 "sys_us": (s1 - s0) * us, "total_us": (u1 - u0 + s1 - s0) * us})
            print("round %d %-10s %7d req  user %5.1f us  sys %5.1f us  total %5.1f us/req" % (
                r + 1, name, n, rounds[name][-1]["user_us"], rounds[name][-1]["sys_us"],
                rounds[name][-1]["total_us"]), file=sys.stderr)

    def med(name, key):
        return statistics.median(x[key] for x in rounds[name])

    base = targets[0][0]
    res = {"conns": a.conns, "duration": a.duration, "rounds": rounds, "median": {}}
    print("| target | CPU us/request, median (user + sys) | x %s, per round (median, min..max) |" % base)
    print("|---|---|---|")
    for name, _, _, _ in targets:
        ratios = [b["total_us"] / x["total_us"] for x, b in zip(rounds[name], rounds[base])
                  if x["total_us"]]
        res["median"][name] = {"user_us": med(name, "user_us"), "sys_us": med(name, "sys_us"),
                               "total_us": med(name, "total_us"),
                               "base_over_this": {"med": statistics.median(ratios),
                                                  "min": min(ratios), "max": max(ratios)}}
        m = res["median"][name]
        print("| %s | %.1f (%.1f + %.1f) | %s |" % (
            name, m["total_us"], m["user_us"], m["sys_us"],
            "" if name == base else "%s/%s x%.2f (%.2f..%.2f)" % (
                base, name, m["base_over_this"]["med"], m["base_over_this"]["min"],
                m["base_over_this"]["max"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
