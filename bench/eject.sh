#!/usr/bin/env bash
# bench/eject.sh - fan-out(3) with a bad server behind leg b: req/s and p99 before and
# after passive ejection (issue 21), as ratios to the healthy case of the same round, and
# the failures clients saw while fanoutd ejected the bad server.
#
#   bench/eject.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                  [--rounds N] [--duration S] [--conns C]
#
# Starts the shared fast JSON nginx upstream twice (shared fanout/fan_servers.sh
# upstreams: legs a b c on 26111-26113, and a second copy on 26114-26116 whose "b" port
# 26115 is b's second healthy server), a black hole on 26122 (accepts, reads, never
# answers; ours, stdlib Python) and leaves 26121 free (connect refused).  One fanoutd
# (2 workers) serves a route per (mode, case): mode first, and mode all with
# partial = allow, over upstreams a, b_<case>, c.  b's servers:
#   hok2    the fast b (26112) and the second fast b (26115), both healthy: the reference
#   hok1    url = the fast b alone (one server), eject_after = 0: a one-server upstream
#           is a circuit breaker, and on a loaded box a stall of more than 200ms can
#           eject it (then every b leg is `unavailable` for 30s)
#   dead0   the fast b and the dead port, eject_after = 0 (passive health off: never ejects)
#   dead5   the same, eject_after = 5, eject_time = eject_time_max = 30m, warmed up
#           until fanoutd_upstream_ejections_total{upstream=...} is 1, then measured
#   bh0/bh5 as dead0/dead5 with the black hole instead of the dead port
# hok2 keeps the defaults (eject_after = 5, eject_time = 30s).  Every b upstream has
# timeout = 200ms and connect_timeout = 100ms; a and c keep 30s.  In mode first the b legs
# that go to the black hole are superseded (a and c answer first) before their timeout:
# cancelled legs do not count, so first/bh5 never ejects (it is measured as it is).
# The warm-up is one client on one keep-alive connection, one request at a time (so the
# count is exact: eject_after bad answers are the goal), then 200 requests more.  Two
# more mode-all upstreams like dead5 and bh5 (cases dead5c, bh5c) are only warmed up, with
# 16 keep-alive connections at once: the answers in flight when the ejection happens.
# Then wrk -t2 -c64 keep-alive (1 s warm-up + S s) on every route in turn, the order
# rotated each round; the b upstream's outcomes from /metrics before/after each run, and
# fanoutd's CPU (user + sys from /proc, helpers of cpu_per_request.py) per request.
# Writes $OUT/eject.json and $OUT/raw/eject/, prints the table.
# Default: 3 rounds x 5 s (~4.5 min); --quick: 1 round x 2 s.
set -u
source "$(dirname "$0")/lib.sh"
bench_args eject "$@"

ROUNDS=3; DURATION=5; WARMUP=1; CONNS=64
((QUICK)) && { ROUNDS=1; DURATION=2; WARMUP=1; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

export FAN_A2_PORT=${FAN_A2_PORT:-26114}      # second copy of the fast JSON upstream;
export FAN_B2_PORT=${FAN_B2_PORT:-26115}      #   its "b" port is b's second server
export FAN_C2_PORT=${FAN_C2_PORT:-26116}
export EJECT_DEAD_PORT=${EJECT_DEAD_PORT:-26121}   # nothing listens: connect refused
export EJECT_BH_PORT=${EJECT_BH_PORT:-26122}       # black hole: accepts, never answers

RAW="$OUT/raw/eject"
mkdir -p "$RAW"
hold=${HOLD_S:-1500}
require_free "$FAN_A_PORT" "$FAN_B_PORT" "$FAN_C_PORT" "$FAN_A2_PORT" "$FAN_B2_PORT" "$FAN_C2_PORT" \
    "$EJECT_DEAD_PORT" "$EJECT_BH_PORT" "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT"
port_up "$SLOW_PORT" || require_free "$SLOW_PORT"

BENCH_TMP="$OUT/raw/fanservers" start_bg "shared fan_servers.sh" "$OUT/servers-eject.$(date +%H%M%S).log" \
    "$SHARED/fanout/fan_servers.sh" --for "$hold" upstreams
for p in "$FAN_A_PORT" "$FAN_B_PORT" "$FAN_C_PORT" "$SLOW_PORT"; do
    wait_port "$p" 60 || die "shared fan_servers.sh did not bring up :$p"
done
FAN_A_PORT=$FAN_A2_PORT FAN_B_PORT=$FAN_B2_PORT FAN_C_PORT=$FAN_C2_PORT BENCH_TMP="$OUT/raw/fanservers2" \
    start_bg "shared fan_servers.sh (2nd copy)" "$OUT/servers-eject2.$(date +%H%M%S).log" \
    "$SHARED/fanout/fan_servers.sh" --for "$hold" upstreams
for p in "$FAN_A2_PORT" "$FAN_B2_PORT" "$FAN_C2_PORT"; do
    wait_port "$p" 60 || die "the second fast JSON upstream did not come up on :$p"
done

cat >"$RAW/blackhole.py" <<'EOF'
# accepts every connection, reads and discards, never answers; closes when the peer does
import selectors, socket, sys, time
port, hold = int(sys.argv[1]), float(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(4096)
ls.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(ls, selectors.EVENT_READ)
end = time.monotonic() + hold
accepted = 0
while time.monotonic() < end:
    for key, _ in sel.select(1.0):
        if key.fileobj is ls:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            accepted += 1
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        else:
            try:
                d = key.fileobj.recv(65536)
            except OSError:
                d = b""
            if not d:
                sel.unregister(key.fileobj)
                key.fileobj.close()
print("blackhole: accepted %d" % accepted, flush=True)
EOF
start_bg "black hole :$EJECT_BH_PORT" "$RAW/blackhole.log" "$PY" "$RAW/blackhole.py" "$EJECT_BH_PORT" "$hold"
wait_port "$EJECT_BH_PORT" 10 || die "black hole did not listen on :$EJECT_BH_PORT"

# ---- fanoutd: one process, a route per (mode, case) ---------------------------------------
CASES="hok2 hok1 dead0 dead5 bh0 bh5"
MODES="first all"
CONC="dead5c bh5c"      # mode all, warm-up only: 16 connections at once
PAIRS="$(for m in $MODES; do for c in $CASES; do echo "${m}_$c"; done; done) $(for c in $CONC; do echo "all_$c"; done)"
cfg="$OUT/fanoutd-eject.ini"
{
    echo "; generated by bench/eject.sh"
    fanoutd_config_head
    cat <<EOF
[upstream "a"]
url = http://127.0.0.1:$FAN_A_PORT
timeout = 30s
[upstream "c"]
url = http://127.0.0.1:$FAN_C_PORT
timeout = 30s
EOF
    fb="http://127.0.0.1:$FAN_B_PORT"
    for mc in $PAIRS; do
        m=${mc%%_*} c=${mc#*_}
        echo "[upstream \"b_$mc\"]"
        case $c in
            hok2) echo "servers = $fb, http://127.0.0.1:$FAN_B2_PORT" ;;
            hok1) echo "url = $fb" ;;
            dead*) echo "servers = $fb, http://127.0.0.1:$EJECT_DEAD_PORT" ;;
            bh*) echo "servers = $fb, http://127.0.0.1:$EJECT_BH_PORT" ;;
        esac
        case $c in
            hok1 | *0) echo "eject_after = 0" ;;
            *5 | *5c) printf 'eject_after = 5\neject_time = 30m\neject_time_max = 30m\n' ;;
        esac
        printf 'timeout = 200ms\nconnect_timeout = 100ms\n'
    done
    for mc in $PAIRS; do
        m=${mc%%_*} c=${mc#*_}
        printf '\n[route "%s"]\nmatch = /%s-%s\nstrip_prefix = yes\nmode = %s\n' "$mc" "$m" "$c" "$m"
        printf 'upstreams = a, b_%s, c\ndeadline = 60s\n' "$mc"
        [[ $m == all ]] && echo "partial = allow"
    done
} >"$cfg"
"$FANOUTD" -t -c "$cfg" >"$OUT/fanoutd-eject.check" 2>&1 ||
    die "fanoutd -t rejected $cfg: $(cat "$OUT/fanoutd-eject.check")"
FANOUTD_LOG="$OUT/fanoutd-eject.$(date +%H%M%S).log"
start_bg "fanoutd(eject)" "$FANOUTD_LOG" "$FANOUTD" -c "$cfg"
FANOUTD_PID=$LAST_PID
wait_port "$FANOUTD_PORT" 15 || die "fanoutd did not listen on :$FANOUTD_PORT (see $FANOUTD_LOG)"
wait_port "$FANOUTD_ADMIN_PORT" 15 || die "fanoutd's admin did not listen on :$FANOUTD_ADMIN_PORT"

noise_probe "eject"
timeout $((ROUNDS * 12 * (DURATION + WARMUP + 6) + 600)) \
    "$PY" "$BENCH_SRC/eject_rounds.py" --port "$FANOUTD_PORT" --admin "$FANOUTD_ADMIN_PORT" \
    --modes "$MODES" --cases "$CASES" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --conns "$CONNS" --lua "$SHARED/wrk_json.lua" --raw "$RAW" --json "$OUT/eject.json" \
    --fanoutd-pid "$FANOUTD_PID" --conc-cases "$CONC" --conc-conns 16
rc=$?
fanoutd_alive "eject rounds"
curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics.txt" || true
exit $rc
