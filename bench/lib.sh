# bench/lib.sh - helpers shared by fanoutd's bench scripts.  Sourced, not run.
#
# The peers (nginx proxy, nginx+Lua and Go fan-out aggregators), the upstreams and the
# load scripts come from the shared peer bench (../shared/bench next to the repository,
# override with --shared DIR or FANOUTD_BENCH_SHARED).  This file only:
#   - parses the options every script takes (bench_args),
#   - picks the ports (all 127.0.0.1, each overridable from the environment) and checks
#     they are free before anything is started,
#   - starts processes in the background and stops exactly those, by PID, on exit,
#   - renders fanoutd's configuration and starts fanoutd,
#   - starts the shared peers through the shared servers.sh / fanout/fan_servers.sh.
#
# Common options (bench_args):
#   --fanoutd PATH   the binary to measure (default: FANOUTD, else <repo>/fanoutd);
#                    a private copy is taken into the results dir so a rebuild in place
#                    during the run cannot change what is measured
#   --out DIR        results dir (default /tmp/fanoutd-bench-<date>-<time>)
#   --shared DIR     the shared peer bench (default <repo>/../shared/bench)
#   --quick          smoke test: short and fewer rounds (figures are not meaningful)

BENCH_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_SRC/.." && pwd)"
PY=${PY:-/usr/bin/python3}

# ---- ports: ours (25xxx/26xxx, below the ephemeral range) -------------------------------
# The shared bench defaults (18xxx/19xxx/28xxx/29xxx) are left to people running it by hand.
export FAST_PORT=${FAST_PORT:-26001}          # nginx "ok" upstream (shared upstreams/fast_nginx.conf)
export SLOW_PORT=${SLOW_PORT:-26002}          # slow_upstream.py (shared by proxy and fan-out phases)
export NGINX_PORT=${NGINX_PORT:-25081}        # nginx proxy peer (shared proxies/nginx_proxy.conf)
export HAPROXY_PORT=${HAPROXY_PORT:-25082}    # not started here; set so the shared lib.sh
export H2O_PORT=${H2O_PORT:-25083}            #   never mistakes one of our ports for them
export HAPROXY_AOC_PORT=${HAPROXY_AOC_PORT:-25084}
export FAN_A_PORT=${FAN_A_PORT:-26111}        # fast JSON upstream, legs a b c
export FAN_B_PORT=${FAN_B_PORT:-26112}
export FAN_C_PORT=${FAN_C_PORT:-26113}
export GO_AGG_PORT=${GO_AGG_PORT:-25191}      # Go net/http aggregator
export NODE_AGG_PORT=${NODE_AGG_PORT:-25192}  # (not started by our scripts)
export NODEF_AGG_PORT=${NODEF_AGG_PORT:-25193}
export LUA_AGG_PORT=${LUA_AGG_PORT:-25194}    # nginx+Lua capture_multi, on_abort server
export LUAN_AGG_PORT=${LUAN_AGG_PORT:-25195}  # the same nginx, no on_abort (not measured)
export FANOUTD_PORT=${FANOUTD_PORT:-25090}    # fanoutd under test
export FANOUTD_ADMIN_PORT=${FANOUTD_ADMIN_PORT:-25099}

BPIDS=()
BNAMES=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

bench_args() {   # bench_args NAME "$@"  -> sets FANOUTD OUT SHARED QUICK, REST=(...)
    BENCH_NAME=$1; shift
    FANOUTD=${FANOUTD:-$REPO_DIR/fanoutd}
    OUT=${OUT:-}
    SHARED=${FANOUTD_BENCH_SHARED:-$REPO_DIR/../shared/bench}
    QUICK=${QUICK:-0}
    REST=()
    while (($#)); do
        case "$1" in
            --fanoutd) FANOUTD=$2; shift 2 ;;
            --out) OUT=$2; shift 2 ;;
            --shared) SHARED=$2; shift 2 ;;
            --quick) QUICK=1; shift ;;
            -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
            *) REST+=("$1"); shift ;;
        esac
    done
    [[ -n $OUT ]] || OUT=/tmp/fanoutd-bench-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$OUT" || die "cannot create $OUT"
    OUT=$(cd "$OUT" && pwd)
    [[ -f $SHARED/lib.sh && -f $SHARED/fanout/fanlib.sh ]] ||
        die "shared peer bench not found at $SHARED (use --shared DIR)"
    SHARED=$(cd "$SHARED" && pwd)
    export FANOUTD OUT SHARED QUICK
    trap 'stop_all' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # our clients (wrk at c256, 10k sockets) need descriptors: soft := hard
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    [[ -x $FANOUTD ]] || die "fanoutd binary not found: $FANOUTD (use --fanoutd)"
    stable_fanoutd
}

# Measure a private copy: the lead rebuilds <repo>/fanoutd in place during runs.
stable_fanoutd() {
    local copy="$OUT/bin/fanoutd"
    if [[ $FANOUTD != "$copy" ]]; then
        mkdir -p "$OUT/bin"
        cp -f "$FANOUTD" "$copy.tmp.$$" && mv -f "$copy.tmp.$$" "$copy" || die "cannot copy $FANOUTD"
        {
            echo "source: $FANOUTD"
            echo "sha256: $(sha256sum "$copy" | cut -d' ' -f1)"
            echo "version: $("$copy" -V 2>&1)"
            echo "git: $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo ?)"
            echo "copied: $(date -u +%FT%TZ)"
        } >"$OUT/bin/fanoutd.txt"
        FANOUTD=$copy
    fi
    if ldd "$FANOUTD" 2>/dev/null | grep -qiE 'libasan|libubsan|libtsan'; then
        log "WARNING: $FANOUTD is a sanitizer build; its figures are not representative"
    fi
}

# build_floor : compile bench/floor.c (the libcurl floor) into $OUT/bin/floor against the
# libcurl pkg-config finds (the one fanoutd is built against).  Sets FLOOR (empty when it
# cannot be built: the parts then run without the floor and say so).
build_floor() {
    FLOOR="$OUT/bin/floor"
    [[ -x $FLOOR && $FLOOR -nt $BENCH_SRC/floor.c ]] && return 0
    mkdir -p "$OUT/bin"
    # shellcheck disable=SC2046
    if ! gcc -O2 -o "$FLOOR.tmp.$$" "$BENCH_SRC/floor.c" $(pkg-config --cflags --libs libcurl) \
        2>"$OUT/bin/floor.build.log"; then
        log "WARNING: cannot build the libcurl floor (see $OUT/bin/floor.build.log); no floor figures"
        FLOOR=
        return 1
    fi
    mv -f "$FLOOR.tmp.$$" "$FLOOR"
    {
        echo "floor: built from $BENCH_SRC/floor.c, libcurl $(pkg-config --modversion libcurl)"
        echo "floor links: $(ldd "$FLOOR" | awk '/libcurl/{print $3}')"
        echo "fanoutd links: $(ldd "$FANOUTD" | awk '/libcurl/{print $3}')"
    } >>"$OUT/bin/fanoutd.txt"
}

# ---- processes --------------------------------------------------------------------------
start_bg() {     # start_bg NAME LOGFILE CMD... ; sets LAST_PID
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    BPIDS+=("$LAST_PID")
    BNAMES+=("$name")
    log "started $name pid=$LAST_PID"
}

stop_pid() {     # stop_pid PID NAME : TERM, up to 15 s, then KILL; only that PID
    local pid=$1 name=$2 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name pid=$pid ignored TERM for 15 s, sending KILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    log "stopped $name pid=$pid"
}

stop_all() {
    local i
    for ((i = ${#BPIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${BPIDS[$i]}" "${BNAMES[$i]}"
    done
    BPIDS=()
    BNAMES=()
}

stop_named() {   # stop_named PID : stop one of ours and forget it
    local i pid=$1 keep_p=() keep_n=()
    for ((i = 0; i < ${#BPIDS[@]}; i++)); do
        if [[ ${BPIDS[$i]} == "$pid" ]]; then
            stop_pid "$pid" "${BNAMES[$i]}"
        else
            keep_p+=("${BPIDS[$i]}"); keep_n+=("${BNAMES[$i]}")
        fi
    done
    BPIDS=("${keep_p[@]}"); BNAMES=("${keep_n[@]}")
}

# ---- ports ------------------------------------------------------------------------------
port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 secs=${2:-15} i
    for ((i = 0; i < secs * 20; i++)); do
        port_up "$port" && return 0
        sleep 0.05
    done
    return 1
}

port_owner() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o '(("[^"]*"' | tr -d '("' | sort -u | tr '\n' ' '
}

require_free() { # require_free PORT... : refuse to start if someone else holds a port
    local p
    for p in "$@"; do
        if [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; then
            die "127.0.0.1:$p is already taken by '$(port_owner "$p")'; stop it or move our ports (env, see bench/README.md)"
        fi
    done
}

# ---- noise probe ------------------------------------------------------------------------
noise_probe() {  # noise_probe LABEL : CPU busy % of the whole box over 2 s, load average
    local a b busy idle
    read -r -a a </proc/stat
    sleep 2
    read -r -a b </proc/stat
    busy=$(((b[1] + b[2] + b[3] + b[6] + b[7]) - (a[1] + a[2] + a[3] + a[6] + a[7])))
    idle=$(((b[4] + b[5]) - (a[4] + a[5])))
    echo "$(date +%H:%M:%S) $1: cpu_busy=$((100 * busy / (busy + idle + 1)))% loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" |
        tee -a "$OUT/noise.txt" >&2
}

# ---- fanoutd ----------------------------------------------------------------------------
# fanoutd_config PROFILE FILE : the configuration measured, in fanoutd.ini(5) format
#   proxy    / -> fast upstream, /slow -> slow upstream (mode proxy); /agg -> a,b,c (all)
#   slowfan  as proxy, but /agg -> three legs to the slow upstream (mode all), for the
#            "FIN -> last of 3 legs closed" figure (/agg/slow?... -> /slow?... x3)
# fanoutd_config_head : the [server] and [admin] sections every bench config shares
fanoutd_config_head() {
    cat <<EOF
[server]
listen = 127.0.0.1:$FANOUTD_PORT
workers = ${FANOUTD_WORKERS:-2}
access_log = off
log_level = warn
max_connections = ${FANOUTD_MAX_CONNECTIONS:-10000}
keepalive_timeout = 120s
header_timeout = 30s
drain_timeout = 2s

[admin]
listen = 127.0.0.1:$FANOUTD_ADMIN_PORT

EOF
}

fanoutd_config() {
    local profile=$1 file=$2 agg
    case "$profile" in
        proxy) agg="a, b, c" ;;
        slowfan) agg="s1, s2, s3" ;;
        *) die "unknown fanoutd profile $profile" ;;
    esac
    {
        echo "; generated by bench/lib.sh (profile $profile)"
        fanoutd_config_head
    } >"$file"
    cat >>"$file" <<EOF
[upstream "fast"]
url = http://127.0.0.1:$FAST_PORT
timeout = 30s
[upstream "slow"]
url = http://127.0.0.1:$SLOW_PORT
timeout = 60s
[upstream "a"]
url = http://127.0.0.1:$FAN_A_PORT
timeout = 30s
[upstream "b"]
url = http://127.0.0.1:$FAN_B_PORT
timeout = 30s
[upstream "c"]
url = http://127.0.0.1:$FAN_C_PORT
timeout = 30s
[upstream "s1"]
url = http://127.0.0.1:$SLOW_PORT
timeout = 60s
[upstream "s2"]
url = http://127.0.0.1:$SLOW_PORT
timeout = 60s
[upstream "s3"]
url = http://127.0.0.1:$SLOW_PORT
timeout = 60s

[route "root"]
match = /
mode = proxy
upstreams = fast
deadline = 60s

[route "slow"]
match = /slow
mode = proxy
upstreams = slow
deadline = 60s

[route "agg"]
match = /agg
strip_prefix = yes
mode = all
upstreams = $agg
deadline = 60s
EOF
}

# start_fanoutd PROFILE : render the config, check it, start fanoutd on $FANOUTD_PORT.
# Sets FANOUTD_PID.  fanoutd raises its own RLIMIT_NOFILE soft limit to the hard limit.
start_fanoutd() {
    local profile=$1 cfg="$OUT/fanoutd-$1.ini"
    require_free "$FANOUTD_PORT" "$FANOUTD_ADMIN_PORT"
    fanoutd_config "$profile" "$cfg"
    "$FANOUTD" -t -c "$cfg" >"$OUT/fanoutd-$profile.check" 2>&1 ||
        die "fanoutd -t rejected $cfg: $(cat "$OUT/fanoutd-$profile.check")"
    FANOUTD_LOG="$OUT/fanoutd-$profile.$(date +%H%M%S).$RANDOM.log"
    start_bg "fanoutd($profile)" "$FANOUTD_LOG" "$FANOUTD" -c "$cfg"
    FANOUTD_PID=$LAST_PID
    wait_port "$FANOUTD_PORT" 15 || die "fanoutd did not listen on :$FANOUTD_PORT (see $OUT/fanoutd-$profile.*.log)"
    log "fanoutd pid=$FANOUTD_PID nofile=$(awk '/Max open files/{print $4"/"$5}' "/proc/$FANOUTD_PID/limits")"
}

fanoutd_alive() {  # fanoutd_alive WHAT : die with a precise message if fanoutd is gone
    if ! kill -0 "$FANOUTD_PID" 2>/dev/null; then
        wait "$FANOUTD_PID" 2>/dev/null
        local rc=$?
        die "fanoutd pid=$FANOUTD_PID exited (status $rc) during: $1 - last log lines: $(tail -3 "$FANOUTD_LOG" | tr '\n' ' ') ($FANOUTD_LOG)"
    fi
}

stop_fanoutd() { [[ -n ${FANOUTD_PID:-} ]] && stop_named "$FANOUTD_PID"; FANOUTD_PID=; }

# ---- shared peers -----------------------------------------------------------------------
# start_peers proxy|fan|goonly : start the shared servers we need, bounded in time, through
# the shared servers.sh / fan_servers.sh (they stop what they started when we TERM them).
#   proxy : fast "ok" nginx upstream, slow upstream, nginx proxy
#   fan   : fast JSON nginx upstream (3 ports), slow upstream, nginx+Lua, Go aggregator
#   go    : slow upstream, Go aggregator (and the JSON upstream it checks at start)
start_peers() {
    local what=$1 hold=${HOLD_S:-1500}
    case "$what" in
        proxy)
            require_free "$FAST_PORT" "$SLOW_PORT" "$NGINX_PORT"
            BENCH_TMP="$OUT/raw/servers" start_bg "shared servers.sh" "$OUT/servers-proxy.$(date +%H%M%S).log" \
                "$SHARED/servers.sh" --for "$hold" nginx
            for p in "$FAST_PORT" "$SLOW_PORT" "$NGINX_PORT"; do
                wait_port "$p" 30 || die "shared servers.sh did not bring up :$p (see $OUT/servers-proxy.*.log)"
            done ;;
        fan | go)
            local ports=("$FAN_A_PORT" "$FAN_B_PORT" "$FAN_C_PORT" "$GO_AGG_PORT") args=(go)
            [[ $what == fan ]] && { ports+=("$LUA_AGG_PORT" "$LUAN_AGG_PORT"); args+=(lua); }
            port_up "$SLOW_PORT" || ports+=("$SLOW_PORT")
            require_free "${ports[@]}"
            # the Go fixture is built once into $OUT/raw/fanservers/bin (go build, offline)
            BENCH_TMP="$OUT/raw/fanservers" start_bg "shared fan_servers.sh" "$OUT/servers-$what.$(date +%H%M%S).log" \
                "$SHARED/fanout/fan_servers.sh" --for "$hold" "${args[@]}"
            for p in "${ports[@]}" "$SLOW_PORT"; do
                wait_port "$p" 120 || die "shared fan_servers.sh did not bring up :$p (see $OUT/servers-$what.*.log)"
            done ;;
        *) die "unknown peers $what" ;;
    esac
    sleep 0.5
}
