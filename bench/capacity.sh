#!/usr/bin/env bash
# bench/capacity.sh - figures 5 and 6: memory with many idle keep-alive connections, and
# many requests in flight at once.
#
#   bench/capacity.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                     [--conns N] [--rounds R] [--inflight N] [--ms MS] [--no-nginx]
#
#   5. bench/idle_rss.py: N (default 10000) idle keep-alive connections, each after one
#      GET / through the proxy; VmRSS of fanoutd (goal <= 40 MiB), R rounds; the nginx
#      proxy (master + 2 workers, worker_connections 8192 each) is measured alongside as
#      a reference, rounds interleaved.
#   6. bench/inflight.py: N (default 10000) requests GET /slow?ms=5000 in flight at once
#      through fanoutd to the slow upstream; counts statuses and errors, samples the peak
#      in flight (fanoutd /metrics), the slow upstream's connections and fanoutd's fds.
#      5000 ms rather than 2000: the Python client needs ~2 s on this box to open 10k
#      connections, so with 2000 ms the first answers would leave before the last
#      requests arrive.  Run twice: after the idle test, when fanoutd also holds idle
#      upstream connections (6b), and on a fresh fanoutd (6, the figure).
# Order: 5 then 6b on one fresh fanoutd, then 6 on another fresh fanoutd, both with the
# bench configuration (max_connections = 10000, the default, split between 2 workers).
# fanoutd raises its own RLIMIT_NOFILE soft limit to the hard limit (shown in the log and
# in capacity.txt); our clients do the same.  A proxied request in flight holds two
# descriptors in fanoutd (client + upstream connection), so N in flight needs 2N + a few.
# Default ~2.5 min; --quick: 2000 connections, 1 round, 2000 ms.
set -u
source "$(dirname "$0")/lib.sh"
bench_args capacity "$@"

CONNS=10000; ROUNDS=3; INFLIGHT=10000; MS=5000; NGINX_REF=1
((QUICK)) && { CONNS=2000; ROUNDS=1; INFLIGHT=2000; MS=2000; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --conns) CONNS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --inflight) INFLIGHT=$2; shift 2 ;;
        --ms) MS=$2; shift 2 ;;
        --no-nginx) NGINX_REF=0; shift ;;
        *) die "unknown option $1" ;;
    esac
done

RAW="$OUT/raw/capacity"
mkdir -p "$RAW"
start_peers proxy
start_fanoutd proxy
lim=$(awk '/Max open files/{print $4"/"$5}' "/proc/$FANOUTD_PID/limits")
{
    echo "fanoutd pid=$FANOUTD_PID RLIMIT_NOFILE soft/hard=$lim (fanoutd raises soft to hard itself)"
    echo "our shell: soft $(ulimit -Sn) hard $(ulimit -Hn); /proc/sys/fs/nr_open $(cat /proc/sys/fs/nr_open)"
    echo "max_connections=${FANOUTD_MAX_CONNECTIONS:-10000} (bench/lib.sh)"
} | tee "$RAW/capacity.txt" >&2

inflight_run() {  # inflight_run LABEL JSON
    noise_probe "in flight ($1)"
    timeout 300 "$PY" "$BENCH_SRC/inflight.py" --port "$FANOUTD_PORT" --n "$INFLIGHT" --ms "$MS" \
        --slow-port "$SLOW_PORT" --admin-port "$FANOUTD_ADMIN_PORT" --pid "$FANOUTD_PID" \
        --label "$1" --json "$2" 2>&1 | tee -a "$RAW/inflight.txt" >&2
    fanoutd_alive "inflight.py ($INFLIGHT requests to /slow?ms=$MS in flight, $1)"
}
fanoutd_log_summary() {
    log "fanoutd log $FANOUTD_LOG (warn and above): $(wc -l <"$FANOUTD_LOG") lines; most frequent:"
    cut -c1-200 "$FANOUTD_LOG" | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -5 >&2
}

# 5: idle keep-alive connections on a fresh fanoutd, nginx alongside (rounds interleaved)
noise_probe "idle RSS"
targets=(--target "fanoutd:$FANOUTD_PORT")
((NGINX_REF)) && targets+=(--target "nginx:$NGINX_PORT")
timeout 600 "$PY" "$BENCH_SRC/idle_rss.py" "${targets[@]}" --conns "$CONNS" --rounds "$ROUNDS" \
    --json "$OUT/idle_rss.json" 2>&1 | tee "$RAW/idle_rss.txt" >&2
fanoutd_alive "idle_rss.py ($CONNS idle keep-alive connections)"

# 6b: in flight on that same fanoutd, which now also holds idle upstream connections
inflight_run "after the idle test" "$OUT/inflight_warm.json"
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics_1.txt" || true
fanoutd_log_summary
stop_fanoutd

# 6: in flight on a fresh fanoutd (the figure)
start_fanoutd proxy
inflight_run "fresh fanoutd" "$OUT/inflight.json"
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics_2.txt" || true
fanoutd_log_summary
