#!/usr/bin/env bash
# bench/curl_compare.sh - the same fanoutd source built against two libcurls, side by side
# in one interleaved run, with nginx as the peer (issue 11: libcurl 7.88.1 vs 8.14.1).
#
#   bench/curl_compare.sh --base PATH --new PATH [--new-libdir DIR] [--base-libdir DIR]
#                         [--out DIR] [--shared DIR] [--rounds N] [--duration S]
#                         [--requests N] [--no-perf] [--no-callgrind] [--quick]
#
#   --base PATH       fanoutd linked against the system libcurl (e.g. /tmp/b788/fanoutd)
#   --new PATH        fanoutd built against the other libcurl (e.g. /tmp/b814/fanoutd)
#   --new-libdir DIR  LD_LIBRARY_PATH for --new (e.g. /opt/curl814/usr/lib/x86_64-linux-gnu)
#
# Both fanoutds run the proxy profile of bench/lib.sh (workers = 2, access_log = off) at the
# same time, on FANOUTD_PORT (base) and NEW_PORT (new), in front of the shared fast nginx
# "ok" upstream; the shared nginx proxy is the peer.  Parts, each interleaved:
#   1. req/s, wrk -t2 at c=64 and c=256: the shared throughput.sh on nginx, base, new
#      (plus wrk straight at the upstream as the noise reference), order rotated each round
#   2. CPU us per request: cpu_per_request.py --target base --target new --target nginx
#   3. syscalls per request: perf stat -e syscalls:sys_enter_poll,... -p PID over a fixed
#      number of requests (h2load --h1 -n N -c 64), alternating base/new, 2 rounds
#   4. perf record -g -p PID, 6 s of wrk -c64 each (unless --no-perf)
#   5. curl_calls.py (instructions.py's callgrind method, plus instructions by object and
#      calls of malloc, poll, curl's printf... per request) on each binary (unless --no-callgrind)
# Writes everything under --out and prints a summary at the end.  Loopback only; every
# process started here is stopped by PID (lib.sh's stop_all).
set -u
source "$(dirname "$0")/lib.sh"

BASE=; NEW=; NEW_LIBDIR=; BASE_LIBDIR=
ROUNDS=3; DURATION=8; REQUESTS=60000; PERF=1; CALLGRIND=1
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
        --no-perf) PERF=0; shift ;;
        --no-callgrind) CALLGRIND=0; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ -x $BASE && -x $NEW ]] || die "need --base PATH and --new PATH (fanoutd binaries)"
bench_args curl_compare --fanoutd "$BASE" "${args[@]+"${args[@]}"}"
((QUICK)) && { ROUNDS=1; DURATION=3; REQUESTS=20000; }
((${#REST[@]} == 0)) || die "unknown option ${REST[0]}"

NEW_PORT=${NEW_PORT:-25093}
NEW_ADMIN_PORT=${NEW_ADMIN_PORT:-25098}
RAW="$OUT/raw/curl_compare"
mkdir -p "$RAW" "$OUT/bin"
cp -f "$NEW" "$OUT/bin/fanoutd-new" || die "cannot copy $NEW"
BASE_BIN=$FANOUTD NEW_BIN=$OUT/bin/fanoutd-new
{
    echo "base: $BASE sha256 $(sha256sum "$BASE_BIN" | cut -d' ' -f1) libdir ${BASE_LIBDIR:-system}"
    echo "new:  $NEW sha256 $(sha256sum "$NEW_BIN" | cut -d' ' -f1) libdir ${NEW_LIBDIR:-system}"
} >"$OUT/bin/binaries.txt"

# start_one NAME BIN PORT ADMIN LIBDIR -> sets ONE_PID; checks which libcurl it mapped
start_one() {
    local name=$1 bin=$2 port=$3 admin=$4 libdir=$5 cfg="$OUT/fanoutd-$1.ini" logf
    require_free "$port" "$admin"
    FANOUTD_PORT=$port FANOUTD_ADMIN_PORT=$admin fanoutd_config proxy "$cfg"
    logf="$OUT/fanoutd-$name.log"
    if [[ -n $libdir ]]; then
        start_bg "fanoutd($name)" "$logf" env LD_LIBRARY_PATH="$libdir" "$bin" -c "$cfg"
    else
        start_bg "fanoutd($name)" "$logf" "$bin" -c "$cfg"
    fi
    ONE_PID=$LAST_PID
    wait_port "$port" 15 || die "fanoutd($name) did not listen on :$port (see $logf)"
    local lib
    lib=$(grep -o '/[^ ]*libcurl\.so[^ ]*' "/proc/$ONE_PID/maps" | sort -u | head -1)
    log "fanoutd($name) pid=$ONE_PID port=$port libcurl=$(readlink -f "$lib")"
    echo "$name pid=$ONE_PID port=$port libcurl=$(readlink -f "$lib")" >>"$OUT/bin/binaries.txt"
}

start_peers proxy
start_one base "$BASE_BIN" "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT" "$BASE_LIBDIR"
BASE_PID=$ONE_PID
start_one new "$NEW_BIN" "$NEW_PORT" "$NEW_ADMIN_PORT" "$NEW_LIBDIR"
NEW_PID=$ONE_PID
for p in "$FANOUTD_PORT" "$NEW_PORT" "$NGINX_PORT"; do
    curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$p/" || die "nothing answers GET / on :$p"
done

# ---- 1. req/s ---------------------------------------------------------------------------
noise_probe "curl_compare throughput"
log "throughput.sh: nginx :$NGINX_PORT, base :$FANOUTD_PORT, new :$NEW_PORT; c=64/256, $ROUNDS x ${DURATION}s"
BENCH_TMP="$RAW" timeout $((ROUNDS * 4 * 2 * (DURATION + 8) + 200)) \
    "$SHARED/throughput.sh" --conns "64 256" --rounds "$ROUNDS" --duration "$DURATION" \
    --warmup 2 "$NGINX_PORT" "$FANOUTD_PORT" "$NEW_PORT" \
    >"$RAW/throughput.txt" 2>"$RAW/throughput.stderr" || log "throughput.sh failed (see $RAW)"
grep -E '^round ' "$RAW/throughput.txt" >&2

# ---- 2. CPU per request -----------------------------------------------------------------
noise_probe "curl_compare cpu"
timeout $((ROUNDS * 3 * 40 + 60)) "$PY" "$BENCH_SRC/cpu_per_request.py" --rounds "$ROUNDS" \
    --duration $((QUICK ? 2 : 5)) --conns 64 --target "base=$FANOUTD_PORT" \
    --target "new=$NEW_PORT" --target "nginx=$NGINX_PORT" --json "$OUT/cpu.json" \
    >"$RAW/cpu.txt" 2>"$RAW/cpu.stderr" || log "cpu_per_request.py failed (see $RAW/cpu.stderr)"
cat "$RAW/cpu.stderr" "$RAW/cpu.txt" >&2

# ---- 3. syscalls per request over a fixed number of requests ------------------------------
EVENTS=syscalls:sys_enter_poll,syscalls:sys_enter_ppoll,syscalls:sys_enter_epoll_wait
EVENTS+=,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
EVENTS+=,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev
EVENTS+=,syscalls:sys_enter_readv,syscalls:sys_enter_getsockopt,syscalls:sys_enter_getsockname
EVENTS+=,syscalls:sys_enter_getpeername,syscalls:sys_enter_clock_gettime,raw_syscalls:sys_enter
noise_probe "curl_compare syscalls"
for ((r = 1; r <= 2; r++)); do
    order=(base new); ((r % 2 == 0)) && order=(new base)
    for name in "${order[@]}"; do
        if [[ $name == base ]]; then pid=$BASE_PID port=$FANOUTD_PORT; else pid=$NEW_PID port=$NEW_PORT; fi
        timeout 120 perf stat -x, -e "$EVENTS" -p "$pid" -o "$RAW/syscalls.$name.$r.csv" -- \
            timeout 100 h2load --h1 -n "$REQUESTS" -c 64 -t 2 "http://127.0.0.1:$port/" \
            >"$RAW/h2load.$name.$r.txt" 2>&1 || log "perf stat / h2load failed ($name round $r)"
        log "syscalls $name round $r: $(grep -E '^requests:' "$RAW/h2load.$name.$r.txt")"
    done
done
"$PY" - "$RAW" "$REQUESTS" <<'EOF' | tee "$OUT/syscalls.txt" >&2
import csv, glob, os, re, sys, statistics
raw, n = sys.argv[1], int(sys.argv[2])
per = {}
for f in sorted(glob.glob(os.path.join(raw, "syscalls.*.csv"))):
    name = os.path.basename(f).split(".")[1]
    h = open(f.replace("syscalls.", "h2load.").replace(".csv", ".txt")).read()
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", h)
    done = int(m.group(2)) if m else n
    for row in csv.reader(l for l in open(f) if l.strip() and not l.startswith("#")):
        try:
            v = float(row[0])
        except ValueError:
            continue
        per.setdefault(name, {}).setdefault(row[2].split(":")[-1], []).append(v / max(done, 1))
names = sorted(per)
events = list(per[names[0]]) if names else []
print("| syscall per request (median of 2 rounds) | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for e in events:
    print("| %s | %s |" % (e, " | ".join("%.2f" % statistics.median(per[k].get(e, [0])) for k in names)))
EOF

# ---- 4. perf record ---------------------------------------------------------------------
if ((PERF)); then
    for name in base new; do
        if [[ $name == base ]]; then pid=$BASE_PID port=$FANOUTD_PORT; else pid=$NEW_PID port=$NEW_PORT; fi
        timeout 60 perf record -F 999 -g -p "$pid" -o "$RAW/perf.$name.data" -- \
            timeout 30 wrk -t2 -c64 -d6s "http://127.0.0.1:$port/" >"$RAW/perf.$name.wrk.txt" 2>&1 ||
            log "perf record failed ($name)"
        perf report -i "$RAW/perf.$name.data" --no-children --sort dso --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -15 >"$RAW/perf.$name.dso.txt"
        perf report -i "$RAW/perf.$name.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -60 >"$RAW/perf.$name.sym.txt"
        perf report -i "$RAW/perf.$name.data" --children --sort sym --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -80 >"$RAW/perf.$name.children.txt"
        log "perf $name: $(head -5 "$RAW/perf.$name.dso.txt" | tr -s ' ' | tr '\n' ';')"
    done
fi

# ---- 5. callgrind -----------------------------------------------------------------------
if ((CALLGRIND)); then
    stop_all    # free the cores for valgrind; it starts its own fanoutd and fake upstream
    for name in base new; do
        if [[ $name == base ]]; then bin=$BASE_BIN lib=$BASE_LIBDIR; else bin=$NEW_BIN lib=$NEW_LIBDIR; fi
        # instructions.py's method (callgrind, short and long run), plus instructions by
        # object and call counts of malloc/poll/printf... per request: curl_calls.py
        timeout 900 env ${lib:+LD_LIBRARY_PATH=$lib} "$PY" "$BENCH_SRC/curl_calls.py" \
            --fanoutd "$bin" --requests "$((QUICK ? 500 : 2000))" --top 30 --keep "$RAW/callgrind.$name" \
            >"$OUT/instructions.$name.txt" 2>"$RAW/instructions.$name.stderr" ||
            log "curl_calls.py failed ($name, see $RAW/instructions.$name.stderr)"
        head -1 "$OUT/instructions.$name.txt" >&2
    done
fi
log "done: $OUT"
