#!/usr/bin/env python3
"""Measure how fast a client's hang-up reaches the upstream through fanoutd.

Run by hand (not part of make check):

    python3 bench/cancel_latency.py [--fanoutd PATH] [-n 200] [--mode close|rst|half|mix]
                                    [--legs N]

Each trial: open a client, send a request the upstream holds for 10 s, wait
until the fake upstream has seen it arrive, record t0, hang up the client,
and record when the upstream sees its connection close.  Prints median, p90,
p99 and max of (upstream close - t0) in milliseconds.  With --legs N the
route fans out (mode all) to N upstreams and a trial's latency is the time
until the last of the N upstream connections closed.
"""

import argparse
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import harness  # noqa: E402
from fakeupstream import FakeUpstream  # noqa: E402


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanoutd", default=harness.FANOUTD, help="fanoutd binary")
    ap.add_argument("-n", "--trials", type=int, default=200)
    ap.add_argument("--mode", choices=["close", "rst", "half", "mix"], default="close",
                    help="how the client hangs up (mix: round robin of all three)")
    ap.add_argument("--delay", type=int, default=10000, help="upstream hold, ms")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="give up on one trial after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--legs", type=int, default=1,
                    help="fan out to this many upstreams (mode all)")
    args = ap.parse_args()

    if not os.access(args.fanoutd, os.X_OK):
        sys.exit("fanoutd not found at %s (use --fanoutd)" % args.fanoutd)
    if args.keep:
        os.environ["FANOUTD_KEEP_TMP"] = "1"

    modes = ["close", "rst", "half"] if args.mode == "mix" else [args.mode]
    ups = [FakeUpstream("bench%d" % i) for i in range(args.legs)]
    route = {"match": "/", "upstreams": ", ".join("bench%d" % i
                                                    for i in range(args.legs)),
             "deadline": "60s"}
    if args.legs > 1:
        route["mode"] = "all"
    fd = harness.Fanoutd(
        binary=args.fanoutd,
        upstreams={"bench%d" % i: u for i, u in enumerate(ups)},
        routes={"r": route},
        server={"log_level": "warn", "keepalive_timeout": "60s"})
    lat = {m: [] for m in modes}
    failures = 0
    try:
        fd.start()
        for i in range(args.trials):
            how = modes[i % len(modes)]
            tag = "b%d" % i
            c = harness.Client(fd.port)
            try:
                c.request("GET", "/bench?delay=%d&tag=%s" % (args.delay, tag))
                reqs = [u.wait_for_tag(tag, timeout=args.timeout) for u in ups]
                t0 = c.abort(how)
                try:
                    t1 = max(u.wait_closed(r, timeout=args.timeout)
                             for u, r in zip(ups, reqs))
                except AssertionError:
                    failures += 1
                    print("trial %d (%s): upstream not closed within %.1fs"
                          % (i, how, args.timeout), file=sys.stderr)
                    continue
                lat[how].append((t1 - t0) * 1000.0)
            finally:
                c.__exit__()
        if args.keep:
            print("temp dir:", fd.tmp)
    finally:
        fd.cleanup()
        for u in ups:
            u.close()

    print("command: %s" % " ".join([sys.executable] + sys.argv))
    print("fanoutd: %s (legs: %d)" % (args.fanoutd, args.legs))
    everything = []
    for how in modes:
        vals = sorted(lat[how])
        everything += vals
        report(how, vals)
    if len(modes) > 1:
        report("all", sorted(everything))
    if failures:
        print("failures (upstream never closed): %d" % failures)
    sys.exit(1 if failures else 0)


def report(label, vals):
    if not vals:
        print("%-6s n=0" % label)
        return
    print("%-6s n=%-4d median %7.2f ms  p90 %7.2f ms  p99 %7.2f ms  max %7.2f ms" % (
        label, len(vals), statistics.median(vals), percentile(vals, 90),
        percentile(vals, 99), vals[-1]))


if __name__ == "__main__":
    main()
