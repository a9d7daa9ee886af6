#!/usr/bin/env bash
# bench/run_all.sh - every figure of the performance goals (issue 6), one table at the end.
#
#   bench/run_all.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick]
#                    [--only "proxy fanout cancel capacity"]
#
#   --fanoutd PATH  binary to measure (default <repo>/fanoutd); copied once to DIR/bin/
#                   and that copy is what every part runs (a rebuild in place cannot
#                   change it mid-run); its sha256 and git describe are in DIR/bin/
#   --out DIR       raw outputs and tables (default /tmp/fanoutd-bench-<date>-<time>)
#   --shared DIR    the shared peer bench (default <repo>/../shared/bench)
#   --quick         smoke test of every part (~2.5 min; the figures are not meaningful)
#
# Parts, in this order, each also runnable alone (same options):
#   proxy.sh     1. proxy req/s and p99, fanoutd / nginx, c=64 and c=256;
#                   CPU per request vs nginx and ÷ the libcurl floor (floor.c) (~4.5 min)
#   fanout.sh    2. fan-out(3) req/s, fanoutd / nginx+Lua and / Go; CPU per
#                   request vs them and ÷ 3x the libcurl floor                  (~3 min)
#   cancel.sh    3. FIN -> upstream closed, proxy, fanoutd vs nginx, idle and
#                   under 5k req/s; 4. FIN -> last of 3 legs, vs Go         (~4.5 min)
#   capacity.sh  5. RSS with 10k idle keep-alive connections; 6. 10k requests
#                   in flight to a slow upstream                              (~2.5 min)
# Every ratio is per interleaved round, median over >= 3 rounds, min..max shown.
# Writes DIR/table.md (also printed last), DIR/env.txt, DIR/noise.txt, DIR/<part>.txt,
# DIR/<part>.json and DIR/raw/.  Exit status: 0 when every part ran (goals may be
# missed), 1 when a part failed.
set -u
source "$(dirname "$0")/lib.sh"
ONLY="proxy fanout cancel capacity"
args=()
while (($#)); do
    case "$1" in
        --only) ONLY=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
bench_args run_all "${args[@]+"${args[@]}"}"
((${#REST[@]} == 0)) || die "unknown option ${REST[0]}"

t0=$SECONDS
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "fanoutd: $(tr '\n' ' ' <"$OUT/bin/fanoutd.txt")"
    echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)  wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)  h2load: $(h2load --version 2>&1 | head -1)"
    echo "go: $(go version 2>/dev/null)  python: $($PY -V 2>&1)  lua module: $(dpkg-query -W -f '${Version}' libnginx-mod-http-lua 2>/dev/null)"
    echo "shared bench: $SHARED"
    echo "RLIMIT_NOFILE (this shell, after raising soft to hard): $(ulimit -Sn)/$(ulimit -Hn)"
    echo "ports: fanoutd $FANOUTD_PORT admin $FANOUTD_ADMIN_PORT nginx $NGINX_PORT fast $FAST_PORT slow $SLOW_PORT" \
         "json a/b/c $FAN_A_PORT/$FAN_B_PORT/$FAN_C_PORT nginx+lua $LUA_AGG_PORT go $GO_AGG_PORT"
    echo "quick: $QUICK"
} | tee "$OUT/env.txt" >&2

sub=(--fanoutd "$FANOUTD" --out "$OUT" --shared "$SHARED")
((QUICK)) && sub+=(--quick)
failed=()
for part in $ONLY; do
    case "$part" in proxy | fanout | cancel | capacity) ;; *) die "unknown part $part" ;; esac
    log "=== $part ==="
    ts=$SECONDS
    if "$BENCH_SRC/$part.sh" "${sub[@]}" >"$OUT/$part.txt" 2>"$OUT/$part.stderr"; then
        log "=== $part done in $((SECONDS - ts)) s"
    else
        failed+=("$part")
        log "=== $part FAILED after $((SECONDS - ts)) s: $(grep -h 'ERROR' "$OUT/$part.stderr" | tail -2)"
    fi
done

"$PY" "$BENCH_SRC/report.py" table "$OUT" >"$OUT/table.md"
echo
echo "fanoutd bench, $(date -u +%F) ($(tr '\n' ' ' <"$OUT/bin/fanoutd.txt" | grep -o 'git: [^ ]*'), $(nproc) CPUs)"
cat "$OUT/table.md"
echo "run_all summary: out=$OUT parts=\"$ONLY\" failed=\"${failed[*]}\" elapsed=$((SECONDS - t0))s"
((${#failed[@]} == 0))
