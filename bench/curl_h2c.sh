#!/usr/bin/env bash
# bench/curl_h2c.sh - fanoutd with an h2c (HTTP/2 prior knowledge) upstream, the same source
# built against two libcurls, side by side (issue 11).  libcurl 7.88 cannot reuse an h2c
# connection, so upstream.c sets CURLOPT_FORBID_REUSE below 7.89: one new upstream
# connection per request.  From 7.89 on, the transfers share (multiplex) connections.
#
#   bench/curl_h2c.sh --base PATH --new PATH [--new-libdir DIR] [--base-libdir DIR]
#                     [--out DIR] [--rounds N] [--duration S] [--requests N]
#
# Starts its own nginx (1 worker, `listen 127.0.0.1:H2C_PORT http2;`, return 200 "ok";
# h2c only) in --out, then both fanoutds (proxy profile of lib.sh, upstream "fast" pointed
# at it with `http2 = prior-knowledge`), then: CPU us per request and req/s
# (cpu_per_request.py, wrk -t2 -c64, interleaved), syscalls per request over a fixed
# number of requests (perf stat, h2load --h1 -n N -c 64), and the upstream connections
# each fanoutd holds afterwards.  Loopback only; stops what it started by PID.
set -u
source "$(dirname "$0")/lib.sh"

BASE=; NEW=; NEW_LIBDIR=; BASE_LIBDIR=; ROUNDS=3; DURATION=5; REQUESTS=30000
args=()
while (($#)); do
    case "$1" in
        --base) BASE=$2; shift 2 ;;
        --new) NEW=$2; shift 2 ;;
        --new-libdir) NEW_LIBDIR=$2; shift 2 ;;
        --base-libdir) BASE_LIBDIR=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ -x $BASE && -x $NEW ]] || die "need --base PATH and --new PATH (fanoutd binaries)"
bench_args curl_h2c --fanoutd "$BASE" "${args[@]+"${args[@]}"}"
((${#REST[@]} == 0)) || die "unknown option ${REST[0]}"
H2C_PORT=${H2C_PORT:-26011}
NEW_PORT=${NEW_PORT:-25093}
NEW_ADMIN_PORT=${NEW_ADMIN_PORT:-25098}
RAW="$OUT/raw/curl_h2c"
mkdir -p "$RAW/nginx/logs"
cp -f "$NEW" "$OUT/bin/fanoutd-new" || die "cannot copy $NEW"

require_free "$H2C_PORT"
cat >"$RAW/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $RAW/nginx/nginx.pid;
error_log $RAW/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    server {
        listen 127.0.0.1:$H2C_PORT http2 backlog=4096;
        location / { return 200 "ok"; }
    }
}
EOF
start_bg "nginx h2c" "$RAW/nginx/stdout.log" nginx -p "$RAW/nginx" -c "$RAW/nginx/nginx.conf"
wait_port "$H2C_PORT" 15 || die "nginx h2c did not listen on :$H2C_PORT"

start_one() {    # NAME BIN PORT ADMIN LIBDIR -> ONE_PID
    local name=$1 bin=$2 port=$3 admin=$4 libdir=$5 cfg="$OUT/fanoutd-h2c-$1.ini"
    require_free "$port" "$admin"
    FANOUTD_PORT=$port FANOUTD_ADMIN_PORT=$admin fanoutd_config proxy "$cfg"
    sed -i "s|^url = http://127.0.0.1:$FAST_PORT\$|url = http://127.0.0.1:$H2C_PORT\nhttp2 = prior-knowledge|" "$cfg"
    grep -q '^http2 = prior-knowledge' "$cfg" || die "could not point $cfg at the h2c upstream"
    "$bin" -t -c "$cfg" >/dev/null 2>&1 || LD_LIBRARY_PATH=$libdir "$bin" -t -c "$cfg" ||
        die "fanoutd -t rejected $cfg"
    start_bg "fanoutd-h2c($name)" "$OUT/fanoutd-h2c-$name.log" env ${libdir:+LD_LIBRARY_PATH=$libdir} "$bin" -c "$cfg"
    ONE_PID=$LAST_PID
    wait_port "$port" 15 || die "fanoutd($name) did not listen on :$port"
    log "fanoutd-h2c($name) pid=$ONE_PID libcurl=$(readlink -f "$(grep -o '/[^ ]*libcurl\.so[^ ]*' "/proc/$ONE_PID/maps" | head -1)")"
}
start_one base "$FANOUTD" "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT" "$BASE_LIBDIR"; BASE_PID=$ONE_PID
start_one new "$OUT/bin/fanoutd-new" "$NEW_PORT" "$NEW_ADMIN_PORT" "$NEW_LIBDIR"; NEW_PID=$ONE_PID
for p in "$FANOUTD_PORT" "$NEW_PORT"; do
    curl -fsS -m 5 "http://127.0.0.1:$p/" >/dev/null || die "no 200 through :$p to the h2c upstream"
done

noise_probe "curl_h2c cpu"
timeout $((ROUNDS * 2 * 40 + 60)) "$PY" "$BENCH_SRC/cpu_per_request.py" --rounds "$ROUNDS" \
    --duration "$DURATION" --conns 64 --target "base=$FANOUTD_PORT" --target "new=$NEW_PORT" \
    --json "$OUT/h2c_cpu.json" >"$RAW/cpu.txt" 2>"$RAW/cpu.stderr" || log "cpu_per_request.py failed"
cat "$RAW/cpu.stderr" "$RAW/cpu.txt" >&2
for name in base new; do
    if [[ $name == base ]]; then pid=$BASE_PID; else pid=$NEW_PID; fi
    echo "$name upstream connections established: $(ss -Htnp state established "dport = :$H2C_PORT" | grep -c "pid=$pid,")" | tee -a "$OUT/h2c_conns.txt" >&2
done

EVENTS=syscalls:sys_enter_poll,syscalls:sys_enter_socket,syscalls:sys_enter_connect
EVENTS+=,syscalls:sys_enter_close,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_recvfrom
EVENTS+=,syscalls:sys_enter_sendto,raw_syscalls:sys_enter
for name in base new; do
    if [[ $name == base ]]; then pid=$BASE_PID port=$FANOUTD_PORT; else pid=$NEW_PID port=$NEW_PORT; fi
    timeout 120 perf stat -x, -e "$EVENTS" -p "$pid" -o "$RAW/syscalls.$name.csv" -- \
        timeout 100 h2load --h1 -n "$REQUESTS" -c 64 -t 2 "http://127.0.0.1:$port/" \
        >"$RAW/h2load.$name.txt" 2>&1 || log "perf stat / h2load failed ($name)"
    log "$name: $(grep -E '^requests:' "$RAW/h2load.$name.txt")"
    awk -F, -v n="$REQUESTS" -v who="$name" '/^[0-9]/ { printf "%s %s per request: %.2f\n", who, $3, $1 / n }' \
        "$RAW/syscalls.$name.csv" | tee -a "$OUT/h2c_syscalls.txt" >&2
done
log "done: $OUT"
