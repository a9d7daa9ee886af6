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

With --floor BIN (bench/floor.c, built by lib.sh's build_floor) every round ends with
the libcurl floor: BIN -n CONNS -d DURATION at the --floor-url URLs (the upstream the
targets proxy to; several URLs share the handles in turn), its own CPU per transfer
(getrusage, after a 1 s warm-up).  --floor-legs K multiplies it (a fan-out of K legs
costs K upstream transfers per request), so the row "floor" is K x the floor and the
first target's ratio to it is taken per round like the others.  --floor-u adds a second
floor row, FLOOR-NAME_u: the same floor with -u, curl driven as fanoutd drives it
(each origin parsed once as a CURLU, the path as CURLOPT_REQUEST_TARGET).

Every target's row also has the whole machine's busy CPU per request over the same
wrk run (/proc/stat: user, nice, system, irq and softirq of all CPUs; "box_us"), so
"rest_us" = box_us - total_us is what everything else spent per request: wrk, the
upstreams, the kernel's threads and any neighbour.  With the box busy, req/s is
(CPUs x busy share) / box_us: report.py uses rest_us to tell what req/s a target
would reach if its own CPU per request were the floor's.
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
    """user and system CPU ticks and minor page faults of the pids"""
    user = system = minflt = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        minflt += int(fields[7])
        user += int(fields[11])
        system += int(fields[12])
    return user, system, minflt


def box_ticks():
    """busy and all CPU ticks of the machine (/proc/stat "cpu": steal and guest left out)"""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = v
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def run_wrk(url, conns, duration):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % duration, url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise SystemExit("cpu_per_request: no request count from wrk at %s:\n%s" % (url, out))
    return int(m.group(1))


def run_floor(a, rnd, name, flags=()):
    """one floor run: its CPU per transfer x --floor-legs, in the targets' row format"""
    cmd = [a.floor, "-n", str(a.conns), "-d", str(a.duration), "-w", "1"] + list(flags) + \
        a.floor_url
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 30)
    try:
        f = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit("cpu_per_request: the floor failed (%s): %s %s" % (
            " ".join(cmd), p.stdout, p.stderr))
    if f["failed"]:
        print("cpu_per_request: WARNING: the floor had %d failed transfers of %d" % (
            f["failed"], f["transfers"]), file=sys.stderr)
    k = a.floor_legs / max(f["transfers"], 1)
    row = {"round": rnd, "requests": f["transfers"] // a.floor_legs, "transfers": f["transfers"],
           "failed": f["failed"], "user_us": f["user_us"] * k, "sys_us": f["sys_us"] * k,
           "total_us": (f["user_us"] + f["sys_us"]) * k,
           "per_transfer_us": f["cpu_us_per_transfer"], "transfers_per_s": f["transfers_per_s"],
           "curl": f["curl"]}
    print("round %d %-10s %7d xfer  user %5.1f us  sys %5.1f us  total %5.1f us/req (%d x %.1f us/transfer)" % (
        rnd, name, f["transfers"], row["user_us"], row["sys_us"], row["total_us"],
        a.floor_legs, f["cpu_us_per_transfer"]), file=sys.stderr)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--target", action="append", required=True, help="NAME=PORT[/PATH]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--json")
    ap.add_argument("--floor", help="the libcurl floor binary (bench/floor.c)")
    ap.add_argument("--floor-url", action="append", default=[],
                    help="URL the floor GETs (repeatable: the handles take them in turn)")
    ap.add_argument("--floor-legs", type=int, default=1,
                    help="upstream transfers per request of the targets (fan-out legs)")
    ap.add_argument("--floor-name", default="floor")
    ap.add_argument("--floor-u", action="store_true",
                    help="also the floor driven as fanoutd drives curl (floor -u: CURLU + "
                    "request target), as FLOOR-NAME_u")
    ap.add_argument("--rotate", action="store_true",
                    help="rotate the order of the targets every round (the first is still the base)")
    a = ap.parse_args()
    if a.floor and not a.floor_url:
        ap.error("--floor needs --floor-url")

    targets = []
    for t in a.target:
        name, rest = t.split("=", 1)
        port, _, path = rest.partition("/")
        pids = tree_pids(listening_pids(int(port)))
        if not pids:
            raise SystemExit("cpu_per_request: nothing listens on port %s (%s)" % (port, name))
        targets.append((name, int(port), "/" + path, pids))

    floors = []
    if a.floor:
        floors.append((a.floor_name, ()))
        if a.floor_u:
            floors.append((a.floor_name + "_u", ("-u",)))
    names = [t[0] for t in targets] + [f[0] for f in floors]
    rounds = {name: [] for name in names}
    for r in range(a.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)] if a.rotate else targets
        for name, port, path, pids in order:
            u0, s0, f0 = cpu_ticks(pids)
            b0, a0 = box_ticks()
            n = run_wrk("http://127.0.0.1:%d%s" % (port, path), a.conns, a.duration)
            b1, a1 = box_ticks()
            u1, s1, f1 = cpu_ticks(pids)
            us = 1e6 / CLK_TCK / max(n, 1)
            x = {"round": r + 1, "requests": n, "rps": n / a.duration,
                 "user_us": (u1 - u0) * us, "sys_us": (s1 - s0) * us,
                 "total_us": (u1 - u0 + s1 - s0) * us, "minflt_per_req": (f1 - f0) / max(n, 1),
                 "box_us": (b1 - b0) * us, "busy": (b1 - b0) / max(a1 - a0, 1)}
            x["rest_us"] = x["box_us"] - x["total_us"]
            rounds[name].append(x)
            print("round %d %-10s %7d req  user %5.1f us  sys %5.1f us  total %5.1f us/req"
                  "  %.3f faults/req  box %5.1f us/req (rest %5.1f, busy %.0f%%)" % (
                      r + 1, name, n, x["user_us"], x["sys_us"], x["total_us"],
                      x["minflt_per_req"], x["box_us"], x["rest_us"], 100 * x["busy"]),
                  file=sys.stderr)
        for name, flags in floors:
            rounds[name].append(run_floor(a, r + 1, name, flags))

    def med(name, key):
        return statistics.median(x[key] for x in rounds[name])

    base = targets[0][0]
    res = {"conns": a.conns, "duration": a.duration, "rounds": rounds, "median": {}}
    print("| target | CPU us/request, median (user + sys) | x %s, per round (median, min..max) |" % base)
    print("|---|---|---|")
    if a.floor:
        res["floor"] = {"legs": a.floor_legs, "urls": a.floor_url,
                        "curl": rounds[a.floor_name][0]["curl"]}
    for name in names:
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
