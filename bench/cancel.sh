#!/usr/bin/env bash
# bench/cancel.sh - figures 3 and 4: how long after the client's close() (a FIN) the
# upstream sees its own connection closed.
#
#   bench/cancel.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                   [--rounds R] [--n N] [--fan-n N] [--rate RPS] [--skip-loaded]
#
#   3.  proxy mode, fanoutd vs nginx (shared cancel_latency.sh, variant close, with the
#       direct client->slow-upstream floor): R rounds of N interleaved trials per target;
#   3b. the same under a background load of RATE req/s (default 5000) of GET / on
#       keep-alive connections, made by h2load --h1 --rps (50 clients x RATE/50 req/s,
#       open loop, bounded by -D).  Per round, the load is put on fanoutd while fanoutd's
#       trials run, then on nginx while nginx's trials run (order rotated per round), so
#       each is measured under its own 5k req/s;
#   4.  mode all over 3 slow legs, fanoutd vs the Go aggregator (shared fan_cancel.sh):
#       the latency of a trial is its last leg's.
# Each trial: GET /slow?ms=5000 (or /agg/slow...), close() after 200 ms; the slow
# upstream timestamps the FIN on CLOCK_MONOTONIC.  p99 is nearest-rank over the pooled
# trials (with n <= 100 it is the maximum); the noise is the min..max of per-round medians.
# Writes $OUT/cancel.json.  Default: R=3, N=35, fan N=20 (~4.5 min); --quick ~1 min.
set -u
source "$(dirname "$0")/lib.sh"
bench_args cancel "$@"

ROUNDS=3; N=35; FAN_N=20; RATE=5000; GAP=250; LOADED=1
((QUICK)) && { ROUNDS=1; N=8; FAN_N=5; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --n) N=$2; shift 2 ;;
        --fan-n) FAN_N=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --skip-loaded) LOADED=0; shift ;;
        *) die "unknown option $1" ;;
    esac
done
((ROUNDS >= 1 && ROUNDS <= 10 && N >= 1 && N <= 200 && FAN_N >= 1 && FAN_N <= 200)) ||
    die "bounds: rounds 1..10, n and fan-n 1..200"
((RATE >= 50 && RATE <= 50000)) || die "--rate must be 50..50000"
if ((LOADED)) && ! command -v h2load >/dev/null; then
    die "h2load not found (apt-get install nghttp2-client), or use --skip-loaded"
fi

RAW="$OUT/raw/cancel"
mkdir -p "$RAW"/{unloaded,loaded,fan}
start_peers proxy
start_peers go
start_fanoutd slowfan
[[ $(curl -sS -m 5 "http://127.0.0.1:$FANOUTD_PORT/slow?ms=1&id=check.1") == "slow ok" ]] ||
    die "fanoutd does not proxy /slow to the slow upstream"
body=$(curl -sS -m 5 "http://127.0.0.1:$FANOUTD_PORT/agg/slow?ms=1&id=check.2")
[[ $body == *'"s1":'*'"s2":'*'"s3":'* ]] || die "fanoutd /agg/slow is not a 3-leg envelope: ${body:0:300}"

cancel_run() {   # cancel_run DIR ARGS... : one shared cancel_latency.sh run into DIR
    local d=$1; shift
    mkdir -p "$d"
    BENCH_TMP="$d" timeout 600 "$SHARED/cancel_latency.sh" --variants close --gap-ms "$GAP" "$@" \
        >"$d/cancel.txt" 2>"$d/cancel.stderr" || log "cancel_latency.sh failed (see $d/cancel.stderr)"
    tail -1 "$d/cancel.txt" >&2
}

# ---- 3: proxy, unloaded -----------------------------------------------------------------
noise_probe "cancel proxy"
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then t=("$FANOUTD_PORT" "$NGINX_PORT"); else t=("$NGINX_PORT" "$FANOUTD_PORT"); fi
    log "cancel, proxy, round $r/$ROUNDS: $N trials per target (+ direct floor)"
    cancel_run "$RAW/unloaded/r$r" --n "$N" "${t[@]}"
    fanoutd_alive "cancel_latency.sh round $r"
done

# ---- 3b: proxy, under a background load -------------------------------------------------
loaded_run() {   # loaded_run ROUND PORT NAME
    local r=$1 port=$2 name=$3 d="$RAW/loaded/r$1_$3" dur h i
    mkdir -p "$d"
    dur=$((N * GAP / 1000 + 6))
    start_bg "h2load->$name" "$d/h2load.txt" timeout $((dur + 30)) \
        h2load --h1 -c 50 -t 1 --rps $((RATE / 50)) -D "$dur" "http://127.0.0.1:$port/"
    h=$LAST_PID
    sleep 1.5                        # let the load settle before the first trial
    cancel_run "$d" --no-baseline --n "$N" "$port"
    for ((i = 0; i < (dur + 30) * 10; i++)); do kill -0 "$h" 2>/dev/null || break; sleep 0.1; done
    stop_named "$h"
    "$PY" - "$d/h2load.txt" "$r" "$name" "$RATE" >"$d/load.json" <<'EOF'
import json, re, sys
txt = open(sys.argv[1]).read()
out = {"round": int(sys.argv[2]), "target": sys.argv[3], "asked_rps": int(sys.argv[4])}
m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", txt)
if m:
    out["seconds"], out["rps"] = float(m.group(1)), float(m.group(2))
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
              r"(\d+) errored, (\d+) timeout", txt)
if m:
    for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"), m.groups()):
        out[k] = int(v)
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt)
if m:
    out["status"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m.groups())))
m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", txt)
if m:
    out["req_time_min_max_mean"] = list(m.groups())
if "rps" not in out:
    out["error"] = "no h2load summary: " + txt[-300:].replace("\n", " ")
print(json.dumps(out))
EOF
    log "load on $name: $(cat "$d/load.json")"
}
if ((LOADED)); then
    noise_probe "cancel proxy under load"
    for ((r = 1; r <= ROUNDS; r++)); do
        log "cancel, proxy under ${RATE} req/s, round $r/$ROUNDS"
        if ((r % 2)); then
            loaded_run "$r" "$FANOUTD_PORT" fanoutd; fanoutd_alive "loaded cancel round $r"
            loaded_run "$r" "$NGINX_PORT" nginx
        else
            loaded_run "$r" "$NGINX_PORT" nginx
            loaded_run "$r" "$FANOUTD_PORT" fanoutd; fanoutd_alive "loaded cancel round $r"
        fi
    done
fi

# ---- 4: fan-out, last of 3 legs ---------------------------------------------------------
noise_probe "cancel fan-out"
log "cancel, fan-out: shared fan_cancel.sh, $ROUNDS rounds x $FAN_N trials: Go vs fanoutd (+ direct floor)"
BENCH_TMP="$RAW/fan" timeout 900 "$SHARED/fanout/fan_cancel.sh" --n "$FAN_N" --rounds "$ROUNDS" \
    --gap-ms "$GAP" "$GO_AGG_PORT" "$FANOUTD_PORT" >"$RAW/fan/fan_cancel.txt" 2>"$RAW/fan/fan_cancel.stderr" ||
    log "fan_cancel.sh failed (see $RAW/fan/fan_cancel.stderr)"
fanoutd_alive "fan_cancel.sh"
tail -1 "$RAW/fan/fan_cancel.txt" >&2
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics.txt" || true

fan_trials=$(ls "$RAW"/fan/fan_cancel.*/trials.jsonl 2>/dev/null | head -1)
args=(--unloaded "$RAW/unloaded")
((LOADED)) && args+=(--loaded "$RAW/loaded")
[[ -n $fan_trials ]] && args+=(--fan "$fan_trials")
"$PY" "$BENCH_SRC/report.py" cancel "${args[@]}" --json "$OUT/cancel.json"
