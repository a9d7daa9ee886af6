#!/usr/bin/env python3
"""bench/report.py - fanoutd's bench figures from the raw outputs, and the goal table.

  report.py proxy   RESULTS.jsonl [--connections FILE] --json OUT.json
  report.py fan     RESULTS.jsonl --json OUT.json
  report.py cancel  --unloaded DIR --loaded DIR --fan TRIALS.jsonl --json OUT.json
  report.py table   RESULTS_DIR            (the final table, from the *.json of each part)
  report.py allocator RESULTS_DIR --json OUT.json [--load S --idle S]   (bench/allocator.sh)

RESULTS.jsonl / trials.jsonl are the raw files written by the shared peer bench's
throughput.sh / fan_throughput.sh / cancel_latency.sh / fan_cancel.sh.

Method: every ratio is taken per round between two targets measured in the same
interleaved round, then the median over rounds is reported with its min..max.  Latency
percentiles are nearest-rank over the pooled trials (so with n <= 100 the p99 is the
largest sample); the noise shown for them is the min..max of the per-round medians.
Stdlib only.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

NAN = float("nan")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(vals, p):
    v = sorted(vals)
    if not v:
        return NAN
    return v[max(1, math.ceil(p / 100.0 * len(v))) - 1]


def mmm(vals):
    """median, min, max, n of a list (NaN when empty)"""
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"med": NAN, "min": NAN, "max": NAN, "n": 0}
    return {"med": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def errors(w):
    return sum(w.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_status",
                                     "err_timeout"))


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=lambda x: None)
        f.write("\n")


# ---- wrk runs ---------------------------------------------------------------------------
def wrk_targets(rows, roles):
    """rows of one conns value -> {role: {"rps": mmm, "p99_ms": mmm, ...}, per-round dict}"""
    out, per_round = {}, {}
    for role, port in roles.items():
        rs = [r for r in rows if r["port"] == port and r.get("wrk")]
        for r in rs:
            per_round.setdefault(r["round"], {})[role] = r
        cpu = [r["cpu_target_s"] * 1e6 / r["wrk"]["requests"] for r in rs
               if r.get("cpu_target_s") is not None and r["wrk"].get("requests")]
        out[role] = {
            "rps": mmm([r["wrk"]["rps"] for r in rs]),
            "p50_ms": mmm([r["wrk"]["p50_us"] / 1e3 for r in rs]),
            "p99_ms": mmm([r["wrk"]["p99_us"] / 1e3 for r in rs]),
            "errors": sum(errors(r["wrk"]) for r in rs),
            "requests": sum(r["wrk"].get("requests", 0) for r in rs),
            "cpu_us_per_req": mmm(cpu),
            "rounds": [round(r["wrk"]["rps"]) for r in sorted(rs, key=lambda r: r["round"])],
        }
    return out, per_round


def ratio_over_rounds(per_round, a, b, key=lambda r: r["wrk"]["rps"]):
    vals = [key(d[a]) / key(d[b]) for _, d in sorted(per_round.items())
            if a in d and b in d and key(d[b])]
    return mmm(vals)


def cmd_proxy(a):
    rows = load(a.results)
    fport, nport, cport = (int(os.environ["FANOUTD_PORT"]), int(os.environ["NGINX_PORT"]),
                           int(os.environ["FAST_PORT"]))
    res = {"kind": "proxy", "source": a.results, "conns": {}}
    for conns in sorted({r["conns"] for r in rows}):
        rs = [r for r in rows if r["conns"] == conns]
        t, pr = wrk_targets(rs, {"fanoutd": fport, "nginx": nport, "ceiling": cport})
        t["ratio_rps"] = ratio_over_rounds(pr, "fanoutd", "nginx")
        t["ratio_p99"] = ratio_over_rounds(pr, "fanoutd", "nginx", key=lambda r: r["wrk"]["p99_us"])
        t["nginx_over_ceiling"] = ratio_over_rounds(pr, "nginx", "ceiling")
        res["conns"][str(conns)] = t
    if a.connections and os.path.exists(a.connections):
        with open(a.connections) as f:
            res["connections"] = json.load(f)
    dump(res, a.json)
    print_proxy(res)


def fmt_m(m, f="%.0f", unit=""):
    if not m or not m["n"]:
        return "n/a"
    if m["n"] == 1:
        return (f % m["med"]) + unit
    return "%s%s (%s..%s)" % (f % m["med"], unit, f % m["min"], f % m["max"])


def print_proxy(res):
    print("| conns | target | req/s median (min..max) | p50 ms | p99 ms median (min..max) | errors |")
    print("|---|---|---|---|---|---|")
    for c, t in res["conns"].items():
        for role in ("fanoutd", "nginx", "ceiling"):
            if t[role]["rps"]["n"]:
                print("| %s | %s | %s | %.2f | %s | %d |" % (
                    c, role, fmt_m(t[role]["rps"]), t[role]["p50_ms"]["med"],
                    fmt_m(t[role]["p99_ms"], "%.2f"), t[role]["errors"]))
        print("| %s | **fanoutd/nginx** | **x%s** | | p99 x%s | |" % (
            c, fmt_m(t["ratio_rps"], "%.2f"), fmt_m(t["ratio_p99"], "%.2f")))
    if "connections" in res:
        print("fanoutd upstream connections after the run: %s" % json.dumps(res["connections"]))
    print("proxy summary: " + "; ".join(
        "c%s fanoutd/nginx=x%.2f p99 %.2f/%.2f ms" % (
            c, t["ratio_rps"]["med"], t["fanoutd"]["p99_ms"]["med"], t["nginx"]["p99_ms"]["med"])
        for c, t in res["conns"].items()))


def cmd_fan(a):
    rows = load(a.results)
    roles = {"fanoutd": int(os.environ["FANOUTD_PORT"]), "nginx_lua": int(os.environ["LUA_AGG_PORT"]),
             "go": int(os.environ["GO_AGG_PORT"]), "ceiling": int(os.environ["FAN_A_PORT"])}
    res = {"kind": "fan", "source": a.results, "conns": {}}
    for conns in sorted({r["conns"] for r in rows}):
        rs = [r for r in rows if r["conns"] == conns]
        t, pr = wrk_targets(rs, roles)
        t["ratio_lua"] = ratio_over_rounds(pr, "fanoutd", "nginx_lua")
        t["ratio_go"] = ratio_over_rounds(pr, "fanoutd", "go")
        t["lua_over_ceiling3"] = mmm([d["nginx_lua"]["wrk"]["rps"] * 3 / d["ceiling"]["wrk"]["rps"]
                                      for d in pr.values() if "nginx_lua" in d and "ceiling" in d])
        res["conns"][str(conns)] = t
    dump(res, a.json)
    print("| conns | target | req/s median (min..max) | p50 ms | p99 ms median (min..max) | CPU us/req (target) | errors |")
    print("|---|---|---|---|---|---|---|")
    for c, t in res["conns"].items():
        for role in ("fanoutd", "nginx_lua", "go", "ceiling"):
            if t[role]["rps"]["n"]:
                print("| %s | %s | %s | %.2f | %s | %s | %d |" % (
                    c, role, fmt_m(t[role]["rps"]), t[role]["p50_ms"]["med"],
                    fmt_m(t[role]["p99_ms"], "%.2f"), fmt_m(t[role]["cpu_us_per_req"]),
                    t[role]["errors"]))
        print("| %s | **fanoutd/nginx+Lua** | **x%s** | | | | |" % (c, fmt_m(t["ratio_lua"], "%.2f")))
        print("| %s | **fanoutd/Go** | **x%s** | | | | |" % (c, fmt_m(t["ratio_go"], "%.2f")))
    print("fan summary: " + "; ".join("c%s fanoutd/lua=x%.2f fanoutd/go=x%.2f" % (
        c, t["ratio_lua"]["med"], t["ratio_go"]["med"]) for c, t in res["conns"].items()))


# ---- cancel trials ----------------------------------------------------------------------
def outcome(t):
    """-> ("cancelled", last-leg latency us) | ("served", None) | ("missing"|"pending", None)"""
    legs = t.get("upstreams") or []
    if not legs:
        return "missing", None
    lat = []
    for u in legs:
        closed_first = u.get("t_close_ns") is not None and (
            u.get("t_done_ns") is None or u["t_close_ns"] < u["t_done_ns"])
        if u["state"] == "cancelled" or closed_first:
            lat.append((u["t_close_ns"] - t["t_client_close_ns"]) / 1e3)
        elif u["state"] == "pending":
            return "pending", None
        else:
            return "served", None
    return "cancelled", max(lat)


def cancel_stats(trials, rounds_key):
    """trials of one target -> dict with pooled median/p99 (us) and per-round medians"""
    lat, per_round, kinds, nlegs = [], {}, {}, []
    for t in trials:
        k, v = outcome(t)
        kinds[k] = kinds.get(k, 0) + 1
        nlegs.append(len(t.get("upstreams") or []))
        if v is not None:
            lat.append(v)
            per_round.setdefault(rounds_key(t), []).append(v)
    return {"n": len(trials), "cancelled": len(lat), "never": kinds.get("served", 0) + kinds.get("pending", 0),
            "missing": kinds.get("missing", 0), "median_us": statistics.median(lat) if lat else NAN,
            "p99_us": pct(lat, 99), "max_us": max(lat) if lat else NAN,
            "round_medians_us": mmm([statistics.median(v) for v in per_round.values()]),
            "per_round_median_us": {str(k): statistics.median(v) for k, v in sorted(per_round.items())},
            "legs_per_trial": statistics.median(nlegs) if nlegs else 0,
            "rounds": len(per_round)}


def by_port(trials):
    out = {}
    for t in trials:
        out.setdefault(t["port"], []).append(t)
    return out


def round_files(d):
    """DIR/rN/<script>.<pid>/trials.jsonl -> trials tagged with round N"""
    trials = []
    for f in sorted(glob.glob(os.path.join(d, "r*", "*", "trials.jsonl"))):
        rnd = int(os.path.basename(os.path.dirname(os.path.dirname(f)))[1:].split("_")[0])
        for t in load(f):
            t["round"] = rnd
            trials.append(t)
    return trials


def cmd_cancel(a):
    fport, nport, sport, gport = (int(os.environ[k]) for k in
                                  ("FANOUTD_PORT", "NGINX_PORT", "SLOW_PORT", "GO_AGG_PORT"))
    res = {"kind": "cancel"}
    rk = lambda t: t.get("round", 1)  # noqa: E731
    if a.unloaded:
        bp = by_port(round_files(a.unloaded))
        res["unloaded"] = {name: cancel_stats(bp.get(p, []), rk) for name, p in
                           (("fanoutd", fport), ("nginx", nport), ("direct", sport))}
    if a.loaded:
        bp = by_port(round_files(a.loaded))
        res["loaded"] = {name: cancel_stats(bp.get(p, []), rk) for name, p in
                         (("fanoutd", fport), ("nginx", nport))}
        loads = []
        for f in sorted(glob.glob(os.path.join(a.loaded, "r*", "load.json"))):
            with open(f) as fh:
                loads.append(json.load(fh))
        res["loaded"]["load"] = loads
    if a.fan:
        bp = by_port(load(a.fan))
        res["fan"] = {name: cancel_stats(bp.get(p, []), rk) for name, p in
                      (("fanoutd", fport), ("go", gport), ("direct", sport))}
    dump(res, a.json)
    print("| figure | target | n | cancelled | never | median us | p99 us (nearest rank) | per-round medians us min..max |")
    print("|---|---|---|---|---|---|---|---|")
    for fig in ("unloaded", "loaded", "fan"):
        for name, s in res.get(fig, {}).items():
            if name == "load" or not s["n"]:
                continue
            print("| %s | %s | %d | %d | %d | %.0f | %.0f | %s |" % (
                fig, name, s["n"], s["cancelled"], s["never"] + s["missing"], s["median_us"],
                s["p99_us"], fmt_m(s["round_medians_us"])))
    for l in res.get("loaded", {}).get("load", []):
        print("background load: %s" % json.dumps(l))


# ---- the goal table ---------------------------------------------------------------------
def jload(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def round_ratio(f, peer):
    """' (min..max)' of the per-round ratios of medians, when both have them"""
    a, b = f.get("per_round_median_us") or {}, peer.get("per_round_median_us") or {}
    r = [a[k] / b[k] for k in a if k in b and b[k]]
    return " (rounds %.2f..%.2f)" % (min(r), max(r)) if len(r) > 1 else ""


def ok(b):
    return "n/a" if b is None else ("yes" if b else "**NO**")


def floor_row(row, cpu, label, goal, limit, name="floor"):
    """fanoutd's CPU per request over the libcurl floor's (x legs) of the same rounds
    (name "floor_u": the floor driving curl as fanoutd does, floor.c -u)"""
    fl = cpu.get("floor")
    if not fl or name not in cpu["median"]:
        return
    m, f = cpu["median"]["fanoutd"], cpu["median"][name]
    r = dict(f["base_over_this"], n=len(cpu["rounds"][name]))
    per = statistics.median(x["per_transfer_us"] for x in cpu["rounds"][name])
    row(label, "%.1f us" % m["total_us"],
        "floor %s%.1f us (%.1f + %.1f; %d handles, libcurl %s, %d URL%s)" % (
            "%d x %.1f = " % (fl["legs"], per) if fl["legs"] != 1 else "", f["total_us"],
            f["user_us"], f["sys_us"], cpu["conns"], fl["curl"], len(fl["urls"]),
            "s" if len(fl["urls"]) > 1 else ""),
        "x" + fmt_m(r, "%.2f"), goal, (r["n"] and r["med"] <= limit) if limit else None)


def ceiling_rows(row, cpu):
    """What no fanoutd that drives libcurl can beat, from the same rounds: the CPU ratio
    to nginx+Lua if fanoutd's CPU per request were the floor's (3 transfers, no front end,
    no code of its own), and the req/s ratio to Go it would then reach: fanoutd's req/s
    x its box CPU per request / (3x floor + what the rest of the box spent per request),
    the box as busy as it was.  The rest is the least of the round's targets (wrk and the
    upstreams cost a little more behind some aggregators than others): the bound is the
    most generous to fanoutd"""
    rs = cpu["rounds"]
    if "floor" not in rs or "box_us" not in rs["fanoutd"][0]:
        return
    fl = rs["floor"]
    if "nginx_lua" in rs:
        v = [f["total_us"] / p["total_us"] for f, p in zip(fl, rs["nginx_lua"]) if p["total_us"]]
        row("   3x floor ÷ nginx+Lua (fanoutd at no cost)", "",
            "fanoutd's own budget at x1.50: %.1f us" % statistics.median(
                1.5 * p["total_us"] - f["total_us"] for f, p in zip(fl, rs["nginx_lua"])),
            "x" + fmt_m(mmm(v), "%.2f"), "", None)
    if "go" in rs:
        names = [n for n in rs if "box_us" in rs[n][0]]
        rest = [min(rs[n][i]["rest_us"] for n in names) for i in range(len(fl))]
        ceil = [f["rps"] * f["box_us"] / (b["total_us"] + r)
                for f, b, r in zip(rs["fanoutd"], fl, rest)]
        v = [c / g["rps"] for c, g in zip(ceil, rs["go"]) if g["rps"]]
        m = statistics.median
        row("   req/s ÷ Go at 3x floor (fanoutd at no cost)",
            "%.0f req/s (%.1f + rest %.1f us)" % (m(ceil), m(b["total_us"] for b in fl),
                                                 m(rest)),
            "Go %.0f req/s (CPU rounds; measured x%.2f)" % (
                m(g["rps"] for g in rs["go"]),
                m(f["rps"] / g["rps"] for f, g in zip(rs["fanoutd"], rs["go"]))),
            "x" + fmt_m(mmm(v), "%.2f"), "", None)


def cmd_table(a):
    d = a.dir
    rows = []

    def row(fig, fan, peer, ratio, goal, met):
        rows.append((fig, fan, peer, ratio, goal, ok(met)))

    px = jload(d, "proxy.json")
    if px:
        for c in ("64", "256"):
            t = px["conns"].get(c)
            if not t:
                continue
            r = t["ratio_rps"]
            row("1. proxy req/s, c=%s" % c, fmt_m(t["fanoutd"]["rps"]), "nginx " + fmt_m(t["nginx"]["rps"]),
                "x" + fmt_m(r, "%.2f"), ">= 1.00", r["n"] and r["med"] >= 1.0)
            fp, np_ = t["fanoutd"]["p99_ms"], t["nginx"]["p99_ms"]
            row("   p99 latency, c=%s" % c, fmt_m(fp, "%.2f", " ms"), "nginx " + fmt_m(np_, "%.2f", " ms"),
                "x" + fmt_m(t["ratio_p99"], "%.2f"), "<= nginx", fp["n"] and fp["med"] <= np_["med"])
            e = t["fanoutd"]["errors"]
            if e:
                row("   wrk errors, c=%s" % c, str(e), "nginx %d" % t["nginx"]["errors"], "", "0", False)
    cpu = jload(d, "proxy_cpu.json")
    if cpu:
        m = cpu["median"]
        row("   CPU per request, c=%s" % cpu["conns"],
            "%.1f us (%.1f user + %.1f sys)" % (m["fanoutd"]["total_us"], m["fanoutd"]["user_us"],
                                               m["fanoutd"]["sys_us"]),
            "nginx %.1f us (%.1f + %.1f)" % (m["nginx"]["total_us"], m["nginx"]["user_us"],
                                             m["nginx"]["sys_us"]),
            "x" + fmt_m(dict(m["nginx"]["base_over_this"], n=len(cpu["rounds"]["nginx"])), "%.2f"),
            "", None)
        floor_row(row, cpu, "   CPU per request ÷ libcurl floor", "<= 1.40", 1.40)
        floor_row(row, cpu, "   ÷ floor -u (curl driven as fanoutd does)", "", None, "floor_u")
    fan = jload(d, "fan.json")
    if fan:
        for c, t in fan["conns"].items():
            r1, r2 = t["ratio_lua"], t["ratio_go"]
            row("2. fan-out(3) req/s, c=%s" % c, fmt_m(t["fanoutd"]["rps"]),
                "nginx+Lua " + fmt_m(t["nginx_lua"]["rps"]), "x" + fmt_m(r1, "%.2f"), ">= 1.25",
                r1["n"] and r1["med"] >= 1.25)
            row("   vs Go", "", "Go " + fmt_m(t["go"]["rps"]), "x" + fmt_m(r2, "%.2f"), ">= 2.00",
                r2["n"] and r2["med"] >= 2.0)
            row("   p99 latency", fmt_m(t["fanoutd"]["p99_ms"], "%.2f", " ms"),
                "Lua %s / Go %s" % (fmt_m(t["nginx_lua"]["p99_ms"], "%.2f", " ms"),
                                    fmt_m(t["go"]["p99_ms"], "%.2f", " ms")), "", "", None)
    fcpu = jload(d, "fan_cpu.json")
    if fcpu:
        m = fcpu["median"]
        for peer, label in (("nginx_lua", "nginx+Lua"), ("go", "Go")):
            if peer in m:
                row("   CPU per request vs %s" % label,
                    "%.1f us (%.1f user + %.1f sys)" % (
                        m["fanoutd"]["total_us"], m["fanoutd"]["user_us"], m["fanoutd"]["sys_us"]),
                    "%s %.1f us (%.1f + %.1f)" % (label, m[peer]["total_us"], m[peer]["user_us"],
                                                 m[peer]["sys_us"]),
                    "x" + fmt_m(dict(m[peer]["base_over_this"], n=len(fcpu["rounds"][peer])),
                                "%.2f"), "", None)
        floor_row(row, fcpu, "   CPU per request ÷ 3x floor", "", None)
        floor_row(row, fcpu, "   ÷ 3x floor -u", "", None, "floor_u")
        ceiling_rows(row, fcpu)
    cn = jload(d, "cancel.json")

    def lat_rows(label, f, peer, peer_name, p99_goal=2000):
        if not f or not f["n"]:
            return
        never = f["never"] + f["missing"]
        row(label + " median", "%.0f us %s" % (f["median_us"], "(rounds " + fmt_m(f["round_medians_us"]) + ")"),
            "%s %.0f us (rounds %s)" % (peer_name, peer["median_us"], fmt_m(peer["round_medians_us"])) if peer else "",
            ("x%.2f%s" % (f["median_us"] / peer["median_us"], round_ratio(f, peer))) if peer and peer["median_us"] else "",
            "<= %s's" % peer_name if peer else "", (f["median_us"] <= peer["median_us"] and never == 0) if peer else None)
        row(label + " p99", "%.0f us (n=%d, never cancelled %d)" % (f["p99_us"], f["n"], never),
            "%s %.0f us (n=%d)" % (peer_name, peer["p99_us"], peer["n"]) if peer else "", "",
            "<= 2 ms", f["p99_us"] <= p99_goal and never == 0)
    if cn:
        u = cn.get("unloaded", {})
        lat_rows("3. FIN -> upstream closed, proxy:", u.get("fanoutd"), u.get("nginx"), "nginx")
        lo = cn.get("loaded", {})
        lat_rows("   same, 5k req/s background:", lo.get("fanoutd"), lo.get("nginx"), "nginx")
        fn = cn.get("fan", {})
        lat_rows("4. FIN -> last of 3 legs closed:", fn.get("fanoutd"), fn.get("go"), "Go")
    rss = jload(d, "idle_rss.json")
    if rss and rss.get("fanoutd"):
        f = rss["fanoutd"]
        peer = rss.get("nginx")
        row("5. RSS, %d idle keep-alive conns" % f["conns_target"],
            fmt_m(f["rss_mib"], "%.1f", " MiB") + " (fresh, before round 1: %.1f MiB)" % f.get("fresh_base_rss_mib", f["base_rss_mib"]["min"]),
            ("nginx, master+workers " + fmt_m(peer["rss_mib"], "%.1f", " MiB")) if peer else "",
            "", "<= 40 MiB", f["rss_mib"]["n"] and f["rss_mib"]["max"] <= 40)
        row("   5b. connections held (of %d)" % f["conns_target"], fmt_m(f["held"]),
            ("nginx " + fmt_m(peer["held"])) if peer else "", "", "all", f["held"]["min"] >= f["conns_target"])
    for fname, label in (("inflight.json", "6. %d in flight, /slow?ms=%d, fresh fanoutd"),
                         ("inflight_warm.json", "   6b. %d in flight (ms=%d) after the idle test")):
        inf = jload(d, fname)
        if not inf:
            continue
        st = inf["statuses"]
        okn = st.get("200", 0)
        bad = {k: v for k, v in st.items() if k != "200"}
        bad.update(inf.get("errors") or {})
        lat = inf.get("latency_s") or {}
        row(label % (inf["n"], inf["ms"]),
            "%d x 200, not 200/errors: %s" % (okn, json.dumps(bad, sort_keys=True) if bad else "none"),
            "peak in flight %s, peak fds %s, max latency %.1f s, all done in %.1f s" % (
                int(inf["peak_in_flight"]) if inf.get("peak_in_flight") is not None else "?",
                inf.get("peak_proxy_fds", "?"), lat.get("max") or 0, inf["elapsed_s"]),
            "", "all answered, no errors", okn == inf["n"])
    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(6)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(HEAD, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |")
    # noise
    if px:
        for c, t in px["conns"].items():
            if t["ceiling"]["rps"]["n"]:
                print("noise: wrk straight at the upstream (ceiling), c=%s: %s req/s over the rounds; "
                      "nginx/ceiling x%s" % (c, fmt_m(t["ceiling"]["rps"]), fmt_m(t["nginx_over_ceiling"], "%.2f")))
    if fan and fan["conns"].get("64", {}).get("ceiling", {}).get("rps", {}).get("n"):
        print("noise: fan ceiling (one fast leg direct), c=64: %s req/s" % fmt_m(fan["conns"]["64"]["ceiling"]["rps"]))
    if px and "connections" in px:
        print("fanoutd upstream connections to the fast upstream after the proxy run: %s" % json.dumps(px["connections"]))
    if cn:
        for l in cn.get("loaded", {}).get("load", []):
            print("background load (h2load): %s" % json.dumps(l, sort_keys=True))
    nf = os.path.join(d, "noise.txt")
    if os.path.exists(nf):
        with open(nf) as f:
            for line in f:
                print("noise probe: " + line.rstrip())


def cmd_allocator(a):
    """allocator.sh: CPU per request by allocator, ratios to glibc per round, and RSS"""
    res = {"kind": "allocator", "load_s": a.load, "idle_s": a.idle, "cpu": {}, "rss": {}}
    allocs = []
    for what in ("proxy", "fan"):
        cpu = jload(a.dir, "allocator_%s_cpu.json" % what)
        if not cpu:
            continue
        rr = cpu["rounds"]
        allocs = allocs or list(rr)
        base = {x["round"]: x["total_us"] for x in rr["glibc"]}
        ubase = {x["round"]: x["user_us"] for x in rr["glibc"]}
        res["cpu"][what] = {n: {"total_us": mmm([x["total_us"] for x in rr[n]]),
                                "user_us": mmm([x["user_us"] for x in rr[n]]),
                                "sys_us": mmm([x["sys_us"] for x in rr[n]]),
                                "over_glibc": mmm([x["total_us"] / base[x["round"]] for x in rr[n]
                                                   if base.get(x["round"])]),
                                "user_over_glibc": mmm([x["user_us"] / ubase[x["round"]] for x in rr[n]
                                                        if ubase.get(x["round"])]),
                                "requests": sum(x["requests"] for x in rr[n])}
                            for n in rr}
    rf = os.path.join(a.dir, "raw", "allocator", "rss.txt")
    if os.path.exists(rf):
        with open(rf) as f:
            for line in f:
                name, pid, lib, phase, rss, anon = line.split()
                res["rss"].setdefault(name, {"lib": lib})[phase] = {"vmrss_kib": int(rss),
                                                                   "rssanon_kib": int(anon)}
        allocs = allocs or list(res["rss"])
    dump(res, a.json)

    def mib(name, phase, key="vmrss_kib"):
        v = res["rss"].get(name, {}).get(phase)
        return "%.1f" % (v[key] / 1024.0) if v else "n/a"

    print("| allocator | proxy CPU us/req (min..max) | proxy ÷ glibc, per round | user only ÷ glibc | "
          "fan-out(3) CPU us/req | fan-out ÷ glibc, per round | user only ÷ glibc | VmRSS MiB fresh | "
          "after %d s load | after %d s idle | RssAnon MiB idle |" % (a.load, a.idle))
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in allocs:
        cells = []
        for what in ("proxy", "fan"):
            c = res["cpu"].get(what, {}).get(n)
            cells += ([fmt_m(c["total_us"], "%.1f"), "x" + fmt_m(c["over_glibc"], "%.3f"),
                       "x" + fmt_m(c["user_over_glibc"], "%.3f")] if c else ["n/a"] * 3)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % tuple(
            [n] + cells + [mib(n, "fresh"), mib(n, "after_load"), mib(n, "idle"),
                           mib(n, "idle", "rssanon_kib")]))
    for what in ("proxy", "fan"):
        c = res["cpu"].get(what)
        if c:
            print("allocator %s: rounds %d, " % (what, c[allocs[0]]["total_us"]["n"]) + "; ".join(
                "%s %.1f us (%.1f user + %.1f sys) x%.3f" % (
                    n, c[n]["total_us"]["med"], c[n]["user_us"]["med"], c[n]["sys_us"]["med"],
                    c[n]["over_glibc"]["med"]) for n in allocs if n in c))


HEAD = ("figure", "fanoutd", "peer / detail", "ratio (median, min..max over rounds)", "goal", "met")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy"); p.add_argument("results"); p.add_argument("--connections"); p.add_argument("--json", required=True)
    p = sub.add_parser("fan"); p.add_argument("results"); p.add_argument("--json", required=True)
    p = sub.add_parser("cancel"); p.add_argument("--unloaded"); p.add_argument("--loaded"); p.add_argument("--fan"); p.add_argument("--json", required=True)
    p = sub.add_parser("table"); p.add_argument("dir")
    p = sub.add_parser("allocator"); p.add_argument("dir"); p.add_argument("--json", required=True)
    p.add_argument("--load", type=int, default=0); p.add_argument("--idle", type=int, default=0)
    a = ap.parse_args()
    {"proxy": cmd_proxy, "fan": cmd_fan, "cancel": cmd_cancel, "table": cmd_table,
     "allocator": cmd_allocator}[a.cmd](a)


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()
