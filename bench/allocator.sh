#!/usr/bin/env bash
# bench/allocator.sh - the same fanoutd binary with glibc malloc, jemalloc and mimalloc
# (LD_PRELOAD, nothing linked): CPU per request in proxy mode and fan-out(3), and RSS after
# a load phase and an idle phase (issue 22, part 3).
#
#   bench/allocator.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                      [--rounds N] [--duration S] [--load S] [--idle S]
#                      [--jemalloc LIB] [--mimalloc LIB]
#
# Starts the shared fast "ok" nginx upstream (servers.sh fast) and the fast JSON nginx on
# three ports (fanout/fan_servers.sh upstreams), then three fanoutd processes from one
# binary and one configuration (lib.sh's proxy profile, workers = 2), each on its own
# ports: glibc on FANOUTD_PORT (25090, admin 25099), jemalloc on ALLOC_JE_PORT (25093,
# admin 25098), mimalloc on ALLOC_MI_PORT (25094, admin 25096).  It checks in
# /proc/PID/maps that each preloaded library is mapped.
#   CPU: cpu_per_request.py --rotate, wrk -t2 -c64 keep-alive, on GET / (proxy) and then
#        GET /agg/ (fan-out, 3 legs), the three in turn in every round, order rotated;
#        ratios to glibc per round (X / glibc: below 1 is cheaper than glibc).
#   RSS: VmRSS and RssAnon fresh (before any load), then for each allocator in turn:
#        wrk -c64 on / for LOAD/2 s and on /agg/ for LOAD/2 s, IDLE s with no load, RSS.
# Default: 5 rounds x 5 s, load 20 s, idle 10 s (~6 min); --quick: 1 round x 2 s, 4 s, 3 s.
# Writes $OUT/allocator.json, $OUT/allocator_{proxy,fan}_cpu.json, $OUT/raw/allocator/,
# and prints the table (report.py allocator).
set -u
source "$(dirname "$0")/lib.sh"
bench_args allocator "$@"

export ALLOC_JE_PORT=${ALLOC_JE_PORT:-25093} ALLOC_JE_ADMIN_PORT=${ALLOC_JE_ADMIN_PORT:-25098}
export ALLOC_MI_PORT=${ALLOC_MI_PORT:-25094} ALLOC_MI_ADMIN_PORT=${ALLOC_MI_ADMIN_PORT:-25096}
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
MIMALLOC=$(ls /usr/lib/x86_64-linux-gnu/libmimalloc.so.2* 2>/dev/null | head -1)
ROUNDS=5; DURATION=5; LOAD=20; IDLE=10
((QUICK)) && { ROUNDS=1; DURATION=2; LOAD=4; IDLE=3; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --load) LOAD=$2; shift 2 ;;
        --idle) IDLE=$2; shift 2 ;;
        --jemalloc) JEMALLOC=$2; shift 2 ;;
        --mimalloc) MIMALLOC=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ -f $JEMALLOC ]] || die "jemalloc not found at $JEMALLOC (apt-get install libjemalloc2, or --jemalloc LIB)"
[[ -n $MIMALLOC && -f $MIMALLOC ]] || die "mimalloc not found (apt-get install libmimalloc2.0, or --mimalloc LIB)"

RAW="$OUT/raw/allocator"
mkdir -p "$RAW"
hold=${HOLD_S:-1500}
require_free "$FAST_PORT" "$FAN_A_PORT" "$FAN_B_PORT" "$FAN_C_PORT" "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT" \
    "$ALLOC_JE_PORT" "$ALLOC_JE_ADMIN_PORT" "$ALLOC_MI_PORT" "$ALLOC_MI_ADMIN_PORT"
port_up "$SLOW_PORT" || require_free "$SLOW_PORT"

BENCH_TMP="$OUT/raw/servers" start_bg "shared servers.sh" "$OUT/servers-allocator.$(date +%H%M%S).log" \
    "$SHARED/servers.sh" --for "$hold" fast
wait_port "$FAST_PORT" 30 || die "shared servers.sh did not bring up :$FAST_PORT"
BENCH_TMP="$OUT/raw/fanservers" start_bg "shared fan_servers.sh" "$OUT/servers-allocator-fan.$(date +%H%M%S).log" \
    "$SHARED/fanout/fan_servers.sh" --for "$hold" upstreams
for p in "$FAN_A_PORT" "$FAN_B_PORT" "$FAN_C_PORT"; do
    wait_port "$p" 60 || die "shared fan_servers.sh did not bring up :$p"
done

# start_alloc NAME PORT ADMIN_PORT PRELOAD : one fanoutd, the proxy profile on PORT
ALLOCS=(glibc jemalloc mimalloc)
declare -A APORT APID ALIB
start_alloc() {
    local name=$1 port=$2 admin=$3 lib=$4 cfg="$OUT/fanoutd-alloc-$1.ini" logf
    FANOUTD_PORT=$port FANOUTD_ADMIN_PORT=$admin fanoutd_config proxy "$cfg"
    "$FANOUTD" -t -c "$cfg" >"$RAW/$name.check" 2>&1 || die "fanoutd -t rejected $cfg: $(cat "$RAW/$name.check")"
    logf="$OUT/fanoutd-alloc-$name.$(date +%H%M%S).log"
    if [[ -n $lib ]]; then
        start_bg "fanoutd($name)" "$logf" env LD_PRELOAD="$lib" "$FANOUTD" -c "$cfg"
    else
        start_bg "fanoutd($name)" "$logf" "$FANOUTD" -c "$cfg"
    fi
    APID[$name]=$LAST_PID APORT[$name]=$port ALIB[$name]=${lib:-glibc}
    wait_port "$port" 15 || die "fanoutd($name) did not listen on :$port (see $logf)"
    if [[ -n $lib ]] && ! grep -qF "$(readlink -f "$lib")" "/proc/$LAST_PID/maps"; then
        die "fanoutd($name) pid=$LAST_PID does not map $lib: LD_PRELOAD not applied"
    fi
    if [[ -z $lib ]] && grep -qE 'jemalloc|mimalloc|tcmalloc' "/proc/$LAST_PID/maps"; then
        die "fanoutd(glibc) pid=$LAST_PID maps another allocator"
    fi
}
start_alloc glibc "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT" ""
start_alloc jemalloc "$ALLOC_JE_PORT" "$ALLOC_JE_ADMIN_PORT" "$JEMALLOC"
start_alloc mimalloc "$ALLOC_MI_PORT" "$ALLOC_MI_ADMIN_PORT" "$MIMALLOC"

alive() {
    local a
    for a in "${ALLOCS[@]}"; do
        kill -0 "${APID[$a]}" 2>/dev/null || die "fanoutd($a) pid=${APID[$a]} exited during: $1"
    done
}
rss_of() {  # rss_of PID -> "VmRSS_KiB RssAnon_KiB"
    awk '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} END{print r+0, a+0}' "/proc/$1/status"
}

for a in "${ALLOCS[@]}"; do
    curl -fsS -m 5 -o /dev/null "http://127.0.0.1:${APORT[$a]}/" || die "fanoutd($a) does not answer GET /"
    body=$(curl -sS -m 5 "http://127.0.0.1:${APORT[$a]}/agg/") || die "fanoutd($a) does not answer GET /agg/"
    [[ $body == *'"leg":"a"'* && $body == *'"leg":"c"'* ]] || die "fanoutd($a)'s /agg/ is not a 3-leg envelope: ${body:0:200}"
done
sleep 1
{
    for a in "${ALLOCS[@]}"; do echo "$a ${APID[$a]} ${ALIB[$a]} fresh $(rss_of "${APID[$a]}")"; done
} >"$RAW/rss.txt"

targets() {  # targets PATH -> --target NAME=PORT/PATH for each allocator
    local a
    for a in "${ALLOCS[@]}"; do printf -- '--target\n%s=%s%s\n' "$a" "${APORT[$a]}" "$1"; done
}
noise_probe "allocator CPU per request"
for what in proxy fan; do
    path=/; [[ $what == fan ]] && path=/agg/
    log "CPU per request, $what (GET $path): glibc vs jemalloc vs mimalloc, c=64, $ROUNDS x ${DURATION}s, order rotated"
    mapfile -t targ < <(targets "$path")
    timeout $((ROUNDS * 3 * (DURATION + 40) + 60)) "$PY" "$BENCH_SRC/cpu_per_request.py" --rotate \
        --rounds "$ROUNDS" --duration "$DURATION" --conns 64 "${targ[@]}" \
        --json "$OUT/allocator_${what}_cpu.json" >"$RAW/cpu_$what.txt" 2>"$RAW/cpu_$what.stderr" ||
        die "cpu_per_request.py failed (see $RAW/cpu_$what.stderr)"
    alive "CPU per request ($what)"
    cat "$RAW/cpu_$what.stderr" >&2
done

noise_probe "allocator RSS"
for a in "${ALLOCS[@]}"; do
    log "RSS $a: load ${LOAD}s (/ then /agg/, wrk -t2 -c64), then ${IDLE}s idle"
    echo "$a ${APID[$a]} ${ALIB[$a]} before_load $(rss_of "${APID[$a]}")" >>"$RAW/rss.txt"
    timeout $((LOAD + 30)) wrk -t2 -c64 -d$(((LOAD + 1) / 2))s "http://127.0.0.1:${APORT[$a]}/" >"$RAW/rss_load_$a.txt" 2>&1
    timeout $((LOAD + 30)) wrk -t2 -c64 -d$((LOAD / 2))s "http://127.0.0.1:${APORT[$a]}/agg/" >>"$RAW/rss_load_$a.txt" 2>&1
    echo "$a ${APID[$a]} ${ALIB[$a]} after_load $(rss_of "${APID[$a]}")" >>"$RAW/rss.txt"
    sleep "$IDLE"
    alive "RSS phase ($a)"
    echo "$a ${APID[$a]} ${ALIB[$a]} idle $(rss_of "${APID[$a]}")" >>"$RAW/rss.txt"
done
cat "$RAW/rss.txt" >&2

"$PY" "$BENCH_SRC/report.py" allocator "$OUT" --json "$OUT/allocator.json" \
    --load "$LOAD" --idle "$IDLE"
