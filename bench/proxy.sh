#!/usr/bin/env bash
# bench/proxy.sh - figure 1: proxy req/s, fanoutd / nginx, wrk -t2 keep-alive, GET / to the
# fast nginx upstream, at c=64 and c=256, with the p99 of each.
#
#   bench/proxy.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                  [--rounds N] [--duration S] [--no-ceiling]
#
# Starts the shared peers (fast "ok" nginx upstream, slow upstream, nginx proxy, via the
# shared servers.sh) and fanoutd (workers = 2, access_log = off, log_level = warn; see
# bench/lib.sh), then runs the shared throughput.sh on [nginx, fanoutd] plus wrk straight
# at the upstream (the ceiling, a noise reference).  Targets are rotated every round, so
# the ratio fanoutd/nginx is taken per round and the median over rounds is reported.
# Also snapshots fanoutd's upstream connections after the run (connection reuse).
# Writes $OUT/proxy.json (read by bench/report.py) and prints the table.
# Default: 3 rounds x 10 s per target and conns (~4 min); --quick: 1 round x 3 s.
set -u
source "$(dirname "$0")/lib.sh"
bench_args proxy "$@"

ROUNDS=3; DURATION=10; WARMUP=2; CEIL=()
((QUICK)) && { ROUNDS=1; DURATION=3; WARMUP=1; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --no-ceiling) CEIL=(--no-ceiling); shift ;;
        *) die "unknown option $1" ;;
    esac
done

RAW="$OUT/raw/proxy"
mkdir -p "$RAW"
start_peers proxy
start_fanoutd proxy
curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$FANOUTD_PORT/" || die "fanoutd does not answer GET /"
curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || die "nginx proxy does not answer GET /"

noise_probe "proxy throughput"
log "shared throughput.sh: nginx :$NGINX_PORT vs fanoutd :$FANOUTD_PORT, c=64/256, $ROUNDS x ${DURATION}s"
BENCH_TMP="$RAW" timeout $((ROUNDS * 3 * 2 * (DURATION + 8) + 200)) \
    "$SHARED/throughput.sh" --conns "64 256" --rounds "$ROUNDS" --duration "$DURATION" \
    --warmup "$WARMUP" "${CEIL[@]+"${CEIL[@]}"}" "$NGINX_PORT" "$FANOUTD_PORT" \
    >"$RAW/throughput.txt" 2>"$RAW/throughput.stderr"
rc=$?
fanoutd_alive "shared throughput.sh (wrk -t2 -c64/-c256 on GET /)"
((rc == 0)) || log "throughput.sh exited $rc (see $RAW/throughput.stderr)"
grep -E '^round ' "$RAW/throughput.txt" >&2

# CPU per request (steadier than req/s on a shared box): fanoutd's threads vs nginx's workers,
# and the libcurl floor (bench/floor.c: 64 handles GETting the same fast upstream) in each round
floor_args=()
build_floor && floor_args=(--floor "$FLOOR" --floor-u --floor-url "http://127.0.0.1:$FAST_PORT/")
log "CPU per request: fanoutd vs nginx vs the libcurl floor, c=64, $ROUNDS x $((QUICK ? 2 : 5))s"
timeout $((ROUNDS * 3 * 40 + 60)) "$PY" "$BENCH_SRC/cpu_per_request.py" --rounds "$ROUNDS" \
    --duration $((QUICK ? 2 : 5)) --conns 64 --target "fanoutd=$FANOUTD_PORT" \
    --target "nginx=$NGINX_PORT" "${floor_args[@]+"${floor_args[@]}"}" \
    --json "$OUT/proxy_cpu.json" >"$RAW/cpu.txt" 2>"$RAW/cpu.stderr" ||
    log "cpu_per_request.py failed (see $RAW/cpu.stderr)"
fanoutd_alive "CPU per request (wrk -t2 -c64 on GET /)"
cat "$RAW/cpu.txt" >&2

# upstream connection reuse: fanoutd's connections to the fast upstream right after the run
est=$(ss -Htnp state established "dport = :$FAST_PORT" 2>/dev/null | grep -c "pid=$FANOUTD_PID,")

echo "{\"fanoutd_upstream_established\": $est}" >"$RAW/connections.json"
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics.txt" || true

results=$(ls "$RAW"/throughput.*/results.jsonl 2>/dev/null | head -1)
[[ -n $results ]] || die "no results.jsonl from throughput.sh (see $RAW/throughput.stderr)"
"$PY" "$BENCH_SRC/report.py" proxy "$results" --connections "$RAW/connections.json" \
    --json "$OUT/proxy.json"
