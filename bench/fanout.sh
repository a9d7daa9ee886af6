#!/usr/bin/env bash
# bench/fanout.sh - figure 2: fan-out(3) req/s, mode all with the JSON envelope, fanoutd vs
# the nginx+Lua aggregator (capture_multi, on_abort server) and vs the Go aggregator.
#
#   bench/fanout.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                   [--rounds N] [--duration S] [--conns "64"] [--no-ceiling]
#
# Starts the shared fan-out peers (fast JSON nginx upstream on three ports = legs a b c,
# slow upstream, nginx+Lua, Go; via the shared fanout/fan_servers.sh) and fanoutd with
# route /agg -> a, b, c (mode all, strip_prefix), then runs the shared fan_throughput.sh
# (wrk -t2 -c64 keep-alive on GET /agg/, targets rotated per round, plus wrk straight at
# leg a as the noise reference).  Ratios are per round, median over rounds.
# Writes $OUT/fan.json and prints the table.
# Default: 3 rounds x 10 s (~2.5 min); --quick: 1 round x 3 s.
set -u
source "$(dirname "$0")/lib.sh"
bench_args fanout "$@"

ROUNDS=3; DURATION=10; WARMUP=2; CONNS=64; CEIL=()
((QUICK)) && { ROUNDS=1; DURATION=3; WARMUP=1; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --no-ceiling) CEIL=(--no-ceiling); shift ;;
        *) die "unknown option $1" ;;
    esac
done

RAW="$OUT/raw/fan"
mkdir -p "$RAW"
start_peers fan
start_fanoutd proxy
body=$(curl -sS -m 5 "http://127.0.0.1:$FANOUTD_PORT/agg/") || die "fanoutd does not answer GET /agg/"
[[ $body == *'"a":'*'"leg":"a"'* && $body == *'"c":'*'"leg":"c"'* ]] ||
    die "fanoutd's /agg/ is not a 3-leg envelope: ${body:0:300}"
echo "$body" >"$RAW/fanoutd_envelope.json"
curl -sS -m 5 "http://127.0.0.1:$LUA_AGG_PORT/agg/" >"$RAW/nginx_lua_envelope.json" || true
curl -sS -m 5 "http://127.0.0.1:$GO_AGG_PORT/agg/" >"$RAW/go_envelope.json" || true

noise_probe "fan-out throughput"
log "shared fan_throughput.sh: nginx+Lua :$LUA_AGG_PORT, Go :$GO_AGG_PORT, fanoutd :$FANOUTD_PORT, c=$CONNS, $ROUNDS x ${DURATION}s"
BENCH_TMP="$RAW" timeout $((ROUNDS * 4 * (DURATION + 8) + 200)) \
    "$SHARED/fanout/fan_throughput.sh" --conns "$CONNS" --rounds "$ROUNDS" --duration "$DURATION" \
    --warmup "$WARMUP" "${CEIL[@]+"${CEIL[@]}"}" "$LUA_AGG_PORT" "$GO_AGG_PORT" "$FANOUTD_PORT" \
    >"$RAW/fan_throughput.txt" 2>"$RAW/fan_throughput.stderr"
rc=$?
fanoutd_alive "shared fan_throughput.sh (wrk -t2 -c$CONNS on GET /agg/)"
((rc == 0)) || log "fan_throughput.sh exited $rc (see $RAW/fan_throughput.stderr)"
grep -E '^round ' "$RAW/fan_throughput.txt" >&2

# and the libcurl floor x3 (bench/floor.c: CONNS handles on legs a, b, c in turn)
floor_args=()
build_floor && floor_args=(--floor "$FLOOR" --floor-u --floor-legs 3 --floor-url "http://127.0.0.1:$FAN_A_PORT/"
    --floor-url "http://127.0.0.1:$FAN_B_PORT/" --floor-url "http://127.0.0.1:$FAN_C_PORT/")
log "CPU per request: fanoutd vs nginx+Lua vs Go (proxy and legs' upstreams not counted) vs 3x the libcurl floor, c=$CONNS"
timeout $((ROUNDS * 4 * 40 + 60)) "$PY" "$BENCH_SRC/cpu_per_request.py" --rounds "$ROUNDS" \
    --duration $((QUICK ? 2 : 5)) --conns "$CONNS" --target "fanoutd=$FANOUTD_PORT/agg/" \
    --target "nginx_lua=$LUA_AGG_PORT/agg/" --target "go=$GO_AGG_PORT/agg/" \
    "${floor_args[@]+"${floor_args[@]}"}" --json "$OUT/fan_cpu.json" >"$RAW/cpu.txt" 2>"$RAW/cpu.stderr" ||
    log "cpu_per_request.py failed (see $RAW/cpu.stderr)"
fanoutd_alive "CPU per request (wrk on GET /agg/)"
cat "$RAW/cpu.txt" >&2
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics.txt" || true

results=$(ls "$RAW"/fan_throughput.*/results.jsonl 2>/dev/null | head -1)
[[ -n $results ]] || die "no results.jsonl from fan_throughput.sh (see $RAW/fan_throughput.stderr)"
"$PY" "$BENCH_SRC/report.py" fan "$results" --json "$OUT/fan.json"
