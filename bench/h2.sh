#!/usr/bin/env bash
# bench/h2.sh - HTTP/2 over TLS: req/s, p50/p99 and CPU per request, fanoutd / nginx,
# h2load as the load, interleaved rounds, GET / to the same fast upstream as proxy.sh.
#
#   bench/h2.sh [--fanoutd PATH] [--out DIR] [--shared DIR] [--quick] [--no-fanoutd]
#               [--rounds N] [--duration S] [--warmup S] [--requests N]
#               [--clients C] [--streams M] [--threads T] [--tls13-ciphers SUITE]
#
# Starts the fast "ok" nginx upstream (the shared servers.sh, as proxy.sh does), makes a
# throwaway self-signed certificate (openssl CLI, P-256, in a mktemp dir removed at exit)
# and gives it to both servers:
#   nginx    the shared proxies/nginx_proxy.conf (2 workers, access_log off, upstream
#            keepalive 256, HTTP/1.1 to the upstream) with its listen line turned into
#            `listen 127.0.0.1:$NGINX_H2_PORT ssl http2 backlog=4096;` + ssl_certificate(_key)
#            and `ssl_protocols TLSv1.2 TLSv1.3` (1.22's default stops at TLS 1.2; fanoutd,
#            OpenSSL's default, goes to 1.3: both then negotiate TLS 1.3, same cipher)
#   fanoutd  bench/lib.sh's proxy profile (workers = 2, access_log = off, ...) with
#            `listen = 127.0.0.1:$FANOUTD_PORT, 127.0.0.1:$FANOUTD_TLS_PORT tls`,
#            tls_cert, tls_key and http2 = on
# Then bench/h2_rounds.py runs, per round, fanoutd and nginx in turn (the order alternates
# every round):  h2load -t T -c C -m M -D S --warm-up-time W --log-file ... https://...:PORT/
# and prints req/s, p50/p99 (from h2load's per-request log), CPU us per request of each
# server (/proc, as bench/cpu_per_request.py), the per-round ratio fanoutd/nginx and the
# median.  Writes $OUT/h2.json and $OUT/raw/h2/.
# h2load offers only TLS_AES_128_GCM_SHA256 (--tls13-ciphers, default), so both servers
# run the same cipher whatever their own preference; --tls13-ciphers '' leaves h2load's
# default list and each server's choice.
#
# --no-fanoutd measures nginx alone (for a fanoutd without TLS/HTTP/2 yet).
# Default: 3 rounds x 10 s (+2 s warm-up) per server, c=32 m=8 t=2 (~1.5 min);
# --quick: 1 round x 3 s.
set -u
SKIP_FANOUTD=0
for arg in "$@"; do [[ $arg == --no-fanoutd ]] && SKIP_FANOUTD=1; done
source "$(dirname "$0")/lib.sh"
if ((SKIP_FANOUTD)); then
    stable_fanoutd() { :; }          # nothing to copy: fanoutd is not run
    FANOUTD=/bin/true
fi
bench_args h2 "$@"

export FANOUTD_TLS_PORT=${FANOUTD_TLS_PORT:-25091}   # fanoutd's `tls` listen address
export NGINX_H2_PORT=${NGINX_H2_PORT:-25085}         # nginx `listen ... ssl http2`

ROUNDS=3; DURATION=10; WARMUP=2; REQUESTS=0; CLIENTS=32; STREAMS=8; THREADS=2
CIPHERS=TLS_AES_128_GCM_SHA256
((QUICK)) && { ROUNDS=1; DURATION=3; WARMUP=1; }
set -- "${REST[@]+"${REST[@]}"}"
while (($#)); do
    case "$1" in
        --no-fanoutd) shift ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --streams) STREAMS=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --tls13-ciphers) CIPHERS=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
for v in ROUNDS DURATION WARMUP REQUESTS CLIENTS STREAMS THREADS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} must be a number"
done
((ROUNDS >= 1 && ROUNDS <= 20 && DURATION >= 1 && DURATION <= 300)) || die "bounds: rounds 1..20, duration 1..300"
command -v h2load >/dev/null || die "h2load not found (apt-get install nghttp2-client)"
command -v nginx >/dev/null || die "nginx not found (apt-get install nginx)"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

RAW="$OUT/raw/h2"
mkdir -p "$RAW"

# ---- certificate: throwaway, self-signed, in a temp dir removed at exit ------------------
CERT_DIR=$(mktemp -d /tmp/fanoutd-h2-cert.XXXXXX) || die "mktemp failed"
trap 'stop_all; rm -rf "$CERT_DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$CERT_DIR/key.pem" -out "$CERT_DIR/cert.pem" >"$RAW/openssl.log" 2>&1 ||
    die "openssl could not make a certificate (see $RAW/openssl.log)"
CERT=$CERT_DIR/cert.pem KEY=$CERT_DIR/key.pem
log "certificate: $(openssl x509 -in "$CERT" -noout -subject -fingerprint -sha256 | tr '\n' ' ')"

# ---- the fast upstream (what proxy.sh proxies to) ----------------------------------------
require_free "$FAST_PORT" "$NGINX_H2_PORT"
((SKIP_FANOUTD)) || require_free "$FANOUTD_PORT" "$FANOUTD_TLS_PORT" "$FANOUTD_ADMIN_PORT"
BENCH_TMP="$RAW/servers" start_bg "shared servers.sh fast" "$RAW/servers.$(date +%H%M%S).log" \
    "$SHARED/servers.sh" --for "${HOLD_S:-1500}" fast
wait_port "$FAST_PORT" 30 || die "shared servers.sh did not bring up the fast upstream :$FAST_PORT"

# ---- nginx: the shared proxy config, listening with ssl http2 ------------------------------
ND="$RAW/nginx"
mkdir -p "$ND"
sed -e "s|@RUN@|$ND|g" -e "s|@FAST_PORT@|$FAST_PORT|g" -e "s|@SLOW_PORT@|$SLOW_PORT|g" \
    -e "s|@NGINX_PORT@|$NGINX_H2_PORT|g" "$SHARED/proxies/nginx_proxy.conf" >"$ND/nginx.conf.base"
grep -q "^        listen 127.0.0.1:$NGINX_H2_PORT backlog=4096;\$" "$ND/nginx.conf.base" ||
    die "the shared nginx_proxy.conf has no 'listen 127.0.0.1:PORT backlog=4096;' line any more"
sed -e "s|^        listen 127.0.0.1:$NGINX_H2_PORT backlog=4096;\$|        listen 127.0.0.1:$NGINX_H2_PORT ssl http2 backlog=4096;\\
        ssl_certificate $CERT;\\
        ssl_certificate_key $KEY;\\
        ssl_protocols TLSv1.2 TLSv1.3;|" \
    -e "s|^# nginx as the competitor reverse proxy|# (bench/h2.sh: TLS + HTTP/2 listen) nginx as the competitor reverse proxy|" \
    "$ND/nginx.conf.base" >"$ND/nginx.conf"
nginx -t -q -p "$ND/" -c "$ND/nginx.conf" -e "$ND/error.log" >"$ND/check.log" 2>&1 ||
    die "nginx -t rejected $ND/nginx.conf: $(cat "$ND/check.log")"
start_bg "nginx h2" "$ND/stderr.log" nginx -p "$ND/" -c "$ND/nginx.conf" -e "$ND/error.log"
wait_port "$NGINX_H2_PORT" 15 || die "nginx did not listen on :$NGINX_H2_PORT (see $ND)"

check_h2() {   # check_h2 NAME PORT : GET / over TLS must be HTTP/2 200 "ok"
    local got
    got=$(curl -sS -m 5 --cacert "$CERT" --http2 -o "$RAW/check.$1.body" \
        -w '%{http_version} %{http_code}' "https://127.0.0.1:$2/" 2>&1)
    [[ $got == "2 200" && $(cat "$RAW/check.$1.body") == ok ]] ||
        die "$1 does not answer GET / over TLS with HTTP/2 200 ok (curl: '$got', body: '$(head -c 200 "$RAW/check.$1.body")')"
    log "$1 :$2 answers GET / over h2: $got"
}
check_h2 nginx "$NGINX_H2_PORT"

# ---- fanoutd: lib.sh's proxy profile, plus a tls listen address --------------------------
targets=()
if ((SKIP_FANOUTD)); then
    log "--no-fanoutd: measuring nginx alone"
else
    cfg="$OUT/fanoutd-h2.ini"
    fanoutd_config proxy "$cfg.base"
    sed -e "s|^listen = 127.0.0.1:$FANOUTD_PORT\$|listen = 127.0.0.1:$FANOUTD_PORT, 127.0.0.1:$FANOUTD_TLS_PORT tls\\
tls_cert = $CERT\\
tls_key = $KEY\\
http2 = on|" -e "s|(profile proxy)|(profile proxy) + TLS/HTTP2 by bench/h2.sh|" "$cfg.base" >"$cfg"
    grep -q "^http2 = on" "$cfg" || die "could not add the tls listen address to $cfg"
    "$FANOUTD" -t -c "$cfg" >"$OUT/fanoutd-h2.check" 2>&1 ||
        die "fanoutd -t rejected the TLS/HTTP2 config (does this fanoutd have issue 10's TLS front end?): $(cat "$OUT/fanoutd-h2.check"); use --no-fanoutd to measure nginx alone"
    FANOUTD_LOG="$OUT/fanoutd-h2.$(date +%H%M%S).$RANDOM.log"
    start_bg "fanoutd(h2)" "$FANOUTD_LOG" "$FANOUTD" -c "$cfg"
    FANOUTD_PID=$LAST_PID
    wait_port "$FANOUTD_TLS_PORT" 15 || die "fanoutd did not listen on :$FANOUTD_TLS_PORT (see $FANOUTD_LOG)"
    check_h2 fanoutd "$FANOUTD_TLS_PORT"
    targets+=(--target "fanoutd=https://127.0.0.1:$FANOUTD_TLS_PORT/")
fi
targets+=(--target "nginx=https://127.0.0.1:$NGINX_H2_PORT/")

# ---- rounds --------------------------------------------------------------------------------
noise_probe "h2 throughput"
per=$((REQUESTS ? 120 : DURATION + WARMUP + 15))
log "h2_rounds.py: ${targets[*]}, $ROUNDS rounds, h2load -t$THREADS -c$CLIENTS -m$STREAMS" \
    "$( ((REQUESTS)) && echo "-n $REQUESTS" || echo "-D $DURATION --warm-up-time $WARMUP")"
timeout $((ROUNDS * 2 * per + 60)) "$PY" "$BENCH_SRC/h2_rounds.py" "${targets[@]}" \
    --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --requests "$REQUESTS" \
    --clients "$CLIENTS" --streams "$STREAMS" --threads "$THREADS" --tls13-ciphers "$CIPHERS" --raw "$RAW" \
    --json "$OUT/h2.json" | tee "$RAW/rounds.txt"
rc=${PIPESTATUS[0]}
if ((!SKIP_FANOUTD)); then
    fanoutd_alive "h2load rounds over TLS"
    curl -s -m 5 "http://127.0.0.1:$FANOUTD_ADMIN_PORT/metrics" >"$RAW/fanoutd_metrics.txt" || true
    est=$(ss -Htnp state established "dport = :$FAST_PORT" 2>/dev/null | grep -c "pid=$FANOUTD_PID,")
    log "fanoutd's connections to the upstream after the run: $est established"
fi
((rc == 0)) || log "h2_rounds.py exited $rc (see $RAW/rounds.txt and $RAW/h2load.*.txt)"
log "results: $OUT/h2.json, raw: $RAW"
exit "$rc"
