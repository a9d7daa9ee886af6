#!/usr/bin/env python3
"""bench/eject_rounds.py - the warm-up and the wrk rounds of bench/eject.sh.

    eject_rounds.py --port P --admin A --modes "first all" --cases "hok2 ..." --rounds N
                    --duration S --warmup W --conns C --lua wrk_json.lua --raw DIR --json F

Route /<mode>-<case>/ goes to a, b_<mode>_<case>, c (see eject.sh).  Cases ending in 5
are warmed up first: one keep-alive connection, one request at a time, until
fanoutd_upstream_ejections_total of their b upstream is 1, then 200 requests more; each
answer that is not a 200 or carries Fanout-Partial is counted.  Then wrk on every
route in turn, the order rotated each round; req/s and p99 as ratios to hok2 of the
same mode in the same round (median, min..max over rounds).  Loopback only.
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
from cpu_per_request import CLK_TCK, cpu_ticks, listening_pids, tree_pids  # noqa: E402

METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def msum(snap, name, **labels):
    tot = 0.0
    for (n, lab), v in snap.items():
        if n == name and all('%s="%s"' % (k, val) in lab for k, val in labels.items()):
            tot += v
    return tot


def outcomes(snap, upstream):
    res = {}
    for (n, lab), v in snap.items():
        if n == "fanoutd_upstream_requests_total" and 'upstream="%s"' % upstream in lab:
            o = re.search(r'outcome="([^"]*)"', lab).group(1)
            res[o] = res.get(o, 0) + v
    return res


def diff(a, b):
    return {k: int(b.get(k, 0) - a.get(k, 0)) for k in set(a) | set(b) if b.get(k, 0) != a.get(k, 0)}


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return r.status, r.getheader("Fanout-Partial"), body


def warm(a, mode, case):
    up = "b_%s_%s" % (mode, case)
    path = "/%s-%s/" % (mode, case)
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    before = metrics(a.admin)
    n = bad = 0
    bad_kinds = {}
    t0 = time.monotonic()
    ejected_at = None
    while time.monotonic() - t0 < 60 and n < 5000:
        st, partial, _ = get(conn, path)
        n += 1
        if st != 200 or partial:
            bad += 1
            k = "%d%s" % (st, " partial=" + partial if partial else "")
            bad_kinds[k] = bad_kinds.get(k, 0) + 1
        if msum(metrics(a.admin), "fanoutd_upstream_ejections_total", upstream=up) >= 1:
            ejected_at = n
            break
    after_bad = 0
    if ejected_at is not None:
        for _ in range(200):
            st, partial, _ = get(conn, path)
            if st != 200 or partial:
                after_bad += 1
    conn.close()
    snap = metrics(a.admin)
    res = {"mode": mode, "case": case, "requests_to_eject": ejected_at, "bad_before": bad,
           "bad_kinds": bad_kinds, "bad_in_200_after": after_bad,
           "seconds": round(time.monotonic() - t0, 3),
           "ejections": msum(snap, "fanoutd_upstream_ejections_total", upstream=up),
           "b_outcomes": diff(outcomes(before, up), outcomes(snap, up)),
           "server_up": {lab: v for (nm, lab), v in snap.items()
                         if nm == "fanoutd_upstream_server_up" and 'upstream="%s"' % up in lab}}
    return res


def warm_conc(a, case, nconn):
    """mode all, nconn keep-alive connections at once until the ejection, then 1 s more."""
    up, path = "b_all_%s" % case, "/all-%s/" % case
    lock = threading.Lock()
    st = {"n": 0, "bad": 0, "bad_started_after": 0, "ejected_at": None, "stop": False}

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
        while not st["stop"]:
            t = time.monotonic()
            code, partial, _ = get(conn, path)
            with lock:
                st["n"] += 1
                if code != 200 or partial:
                    st["bad"] += 1
                    if st["ejected_at"] is not None and t > st["ejected_at"]:
                        st["bad_started_after"] += 1
        conn.close()

    before = metrics(a.admin)
    t0 = time.monotonic()
    ths = [threading.Thread(target=worker, daemon=True) for _ in range(nconn)]
    for t in ths:
        t.start()
    while time.monotonic() - t0 < 60:
        if msum(metrics(a.admin), "fanoutd_upstream_ejections_total", upstream=up) >= 1:
            with lock:
                st["ejected_at"] = time.monotonic()
                n_at, bad_at = st["n"], st["bad"]
            break
        time.sleep(0.005)
    time.sleep(1.0)
    st["stop"] = True
    for t in ths:
        t.join(60)
    snap = metrics(a.admin)
    return {"mode": "all", "case": case, "conns": nconn,
            "requests_to_eject": n_at if st["ejected_at"] else None,
            "bad_before": bad_at if st["ejected_at"] else st["bad"], "bad_total": st["bad"],
            "bad_started_after": st["bad_started_after"], "requests": st["n"],
            "ejections": msum(snap, "fanoutd_upstream_ejections_total", upstream=up),
            "b_outcomes": diff(outcomes(before, up), outcomes(snap, up))}


def wrk(a, path, secs):
    cmd = ["wrk", "-t2", "-c%d" % a.conns, "-d%ds" % secs, "--latency", "-s", a.lua,
           "http://127.0.0.1:%d%s" % (a.port, path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
    if not m:
        raise SystemExit("eject_rounds: no WRKJSON from %s: %s %s" % (cmd, p.stdout, p.stderr))
    return json.loads(m.group(1)), p.stdout


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin", type=int, required=True)
    ap.add_argument("--modes", default="first all")
    ap.add_argument("--cases", default="hok2 hok1 dead0 dead5 bh0 bh5")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--fanoutd-pid", type=int, default=0)
    ap.add_argument("--conc-cases", default="", help="mode-all cases warmed up with --conc-conns")
    ap.add_argument("--conc-conns", type=int, default=16)
    a = ap.parse_args()
    modes, cases = a.modes.split(), a.cases.split()
    ref = cases[0]

    # every route answers
    for m in modes:
        for c in cases:
            conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
            st, partial, body = get(conn, "/%s-%s/" % (m, c))
            conn.close()
            if st != 200 or b'"leg":"' not in body:
                raise SystemExit("eject_rounds: /%s-%s/ answered %d %r" % (m, c, st, body[:200]))

    warmups = []
    for m in modes:
        for c in cases:
            if c.endswith("5"):
                w = warm(a, m, c)
                warmups.append(w)
                print("warm-up %-5s %-5s: ejected after %s requests (%.1f s), bad answers %d %s, "
                      "then %d bad in 200; b legs %s" % (
                          m, c, w["requests_to_eject"], w["seconds"], w["bad_before"],
                          w["bad_kinds"], w["bad_in_200_after"], w["b_outcomes"]),
                      file=sys.stderr, flush=True)

    concs = []
    for c in a.conc_cases.split():
        w = warm_conc(a, c, a.conc_conns)
        concs.append(w)
        print("warm-up all %-6s x%d: %s" % (c, a.conc_conns, w), file=sys.stderr, flush=True)

    runs = [(m, c) for m in modes for c in cases]
    results = []
    for r in range(a.rounds):
        k = (r * len(runs)) // max(a.rounds, 1) + r
        order = runs[k % len(runs):] + runs[:k % len(runs)]
        for m, c in order:
            path = "/%s-%s/" % (m, c)
            up = "b_%s_%s" % (m, c)
            if a.warmup:
                wrk(a, path, a.warmup)
            pids = tree_pids(listening_pids(a.port))
            s0 = metrics(a.admin)
            c0 = cpu_ticks(pids)
            js, out = wrk(a, path, a.duration)
            c1 = cpu_ticks(pids)
            s1 = metrics(a.admin)
            cpu_us = 1e6 * ((c1[0] + c1[1]) - (c0[0] + c0[1])) / CLK_TCK / max(js["requests"], 1)
            with open(os.path.join(a.raw, "wrk.r%d.%s-%s.txt" % (r, m, c)), "w") as f:
                f.write(out)
            row = {"round": r, "mode": m, "case": c, "rps": js["rps"], "p99_us": js["p99_us"],
                   "p50_us": js["p50_us"], "requests": js["requests"],
                   "non2xx": js["err_status"], "cpu_us": cpu_us,
                   "sock_errors": js["err_connect"] + js["err_read"] + js["err_write"] + js["err_timeout"],
                   "b_outcomes": diff(outcomes(s0, up), outcomes(s1, up)),
                   "ejections": msum(s1, "fanoutd_upstream_ejections_total", upstream=up)}
            results.append(row)
            print("round %d %-5s %-5s rps=%8.0f p99=%7.2fms cpu=%6.1fus/req non2xx=%d b=%s ej=%d" % (
                r, m, c, row["rps"], row["p99_us"] / 1000, cpu_us, row["non2xx"], row["b_outcomes"],
                row["ejections"]), file=sys.stderr, flush=True)
            if a.fanoutd_pid:
                try:
                    os.kill(a.fanoutd_pid, 0)
                except OSError:
                    raise SystemExit("eject_rounds: fanoutd died during %s" % path)

    # table
    table = []
    for m in modes:
        for c in cases:
            rr, pr, rps, p99, failed, cr, cpu, ej = [], [], [], [], [], [], [], []
            for r in range(a.rounds):
                x = [t for t in results if t["round"] == r and t["mode"] == m and t["case"] == c][0]
                h = [t for t in results if t["round"] == r and t["mode"] == m and t["case"] == ref][0]
                rr.append(x["rps"] / h["rps"])
                pr.append(x["p99_us"] / max(h["p99_us"], 1))
                cr.append(x["cpu_us"] / max(h["cpu_us"], 1e-9))
                cpu.append(x["cpu_us"])
                ej.append(x["ejections"])
                rps.append(x["rps"])
                p99.append(x["p99_us"] / 1000)
                bo = x["b_outcomes"]
                legs = sum(bo.values()) or 1
                failed.append(100.0 * (bo.get("error", 0) + bo.get("timeout", 0) +
                                       bo.get("status", 0) + bo.get("unavailable", 0)) / legs)
            table.append({"mode": m, "case": c, "rps_ratio": med(rr), "rps_ratio_min": min(rr),
                          "rps_ratio_max": max(rr), "p99_ratio": med(pr), "p99_ratio_min": min(pr),
                          "p99_ratio_max": max(pr), "rps": med(rps), "p99_ms": med(p99),
                          "b_failed_pct": med(failed), "cpu_us": med(cpu), "cpu_ratio": med(cr),
                          "cpu_ratio_min": min(cr), "cpu_ratio_max": max(cr),
                          "ejections": max(ej)})
    with open(a.json, "w") as f:
        json.dump({"rounds": a.rounds, "duration_s": a.duration, "conns": a.conns,
                   "reference": ref, "warmups": warmups, "conc_warmups": concs, "runs": results, "table": table}, f,
                  indent=1)

    print("\nfan-out(3) a, b, c; b = two servers; wrk -t2 -c%d keep-alive, %d x %d s; ratios to "
          "%s of the same mode and round (median [min..max])" % (a.conns, a.rounds, a.duration, ref))
    print("| mode | case | req/s | req/s ratio | p99 ms | p99 ratio | fanoutd CPU us/req | CPU ratio "
          "| b legs failed | ejections |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print("| %s | %s | %.0f | %.3f [%.3f..%.3f] | %.2f | %.2f [%.2f..%.2f] | %.1f | %.3f [%.3f..%.3f] "
              "| %.1f%% | %d |" % (
                  t["mode"], t["case"], t["rps"], t["rps_ratio"], t["rps_ratio_min"],
                  t["rps_ratio_max"], t["p99_ms"], t["p99_ratio"], t["p99_ratio_min"],
                  t["p99_ratio_max"], t["cpu_us"], t["cpu_ratio"], t["cpu_ratio_min"],
                  t["cpu_ratio_max"], t["b_failed_pct"], t["ejections"]))
    if warmups:
        print("\nwarm-up (1 connection, sequential): answers not 200 or with Fanout-Partial "
              "until the ejection (goal: eject_after = 5 in mode all, 0 in mode first)")
        print("| mode | case | requests to ejection | bad answers | bad in the next 200 | ejections |")
        print("|---|---|---|---|---|---|")
        for w in warmups:
            print("| %s | %s | %s | %d | %d | %d |" % (w["mode"], w["case"], w["requests_to_eject"],
                                                   w["bad_before"], w["bad_in_200_after"],
                                                   w["ejections"]))
    if concs:
        print("\nwarm-up, mode all, %d keep-alive connections at once, until the ejection is seen "
              "in /metrics, then 1 s more" % a.conc_conns)
        print("| case | requests | bad answers | bad, requests started after the ejection was seen "
              "| b legs (whole warm-up) | ejections |")
        print("|---|---|---|---|---|---|")
        for w in concs:
            print("| %s | %d | %d | %d | %s | %d |" % (
                w["case"], w["requests"], w["bad_total"], w["bad_started_after"],
                " ".join("%s=%d" % kv for kv in sorted(w["b_outcomes"].items())), w["ejections"]))


if __name__ == "__main__":
    main()

