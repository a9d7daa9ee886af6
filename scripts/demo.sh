#!/usr/bin/env bash
# fanoutd in two minutes: install, build, run against local demo upstreams,
# proxy a request, fan one out, hang up on a slow one and watch it cancelled.
#
#   ./scripts/demo.sh
#
# Needs root (or sudo) the first time, for apt-get (scripts/deps.sh). Uses the
# loopback ports 18080 (fanoutd), 19901 (admin) and 19101-19104 (upstreams).
# Stops everything it started, by process id, however it ends.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

HOST=127.0.0.1
PORT=18080
ADMIN=19901
UPSTREAMS=(users=19101 orders=19102 recs=19103 slow=19104)
CONF=conf/demo.ini
BUILD=build

bold=
plain=
if [ -t 1 ]; then
	bold=$(printf '\033[1m')
	plain=$(printf '\033[0m')
fi

step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
say() { printf '    %s\n' "$*"; }
run() { printf '%s$ %s%s\n' "$bold" "$*" "$plain"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
indent() { sed 's/^/    /'; }

tmp=
up_pid=
fd_pid=
problems=()

stop_pid() {
	local pid=$1 _
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$fd_pid"
	stop_pid "$up_pid"
	[ -z "$tmp" ] || rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Is anything listening on HOST:PORT? Try to bind it, as the servers will.
port_busy() {
	python3 - "$HOST" "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s.
wait_for() {
	local secs=$1 what=$2 _
	shift 2
	for _ in $(seq 1 $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	printf '    (gave up waiting for %s after %s s)\n' "$what" "$secs"
	return 1
}

# The JSON access-log lines among fanoutd's stderr (access_log = - in demo.ini).
access_lines() { grep '^{' "$tmp/fanoutd.log" || true; }

# ---------------------------------------------------------------------------
step "1/7  Dependencies (scripts/deps.sh)"
scripts/deps.sh

step "2/7  Build into $BUILD/ (scripts/build.sh)"
scripts/build.sh "$BUILD"
FANOUTD="$ROOT/$BUILD/fanoutd"
[ -x "$FANOUTD" ] || die "no $FANOUTD after the build"
run "$BUILD/fanoutd -V"
"$FANOUTD" -V | indent
run "$BUILD/fanoutd -t -c $CONF"
"$FANOUTD" -t -c "$CONF" | indent

step "3/7  Start the demo upstreams and fanoutd"
busy=()
for p in "$PORT" "$ADMIN" "${UPSTREAMS[@]#*=}"; do
	port_busy "$p" && busy+=("$p")
done
if [ ${#busy[@]} -gt 0 ]; then
	die "port(s) ${busy[*]} on $HOST already in use; the demo needs $PORT, $ADMIN and ${UPSTREAMS[*]#*=} free.
  See what holds them with:  ss -ltnp"
fi

tmp=$(mktemp -d /tmp/fanoutd-demo.XXXXXX)
python3 scripts/demo_upstream.py --host "$HOST" "${UPSTREAMS[@]}" 2>"$tmp/upstream.log" &
up_pid=$!
for u in "${UPSTREAMS[@]}"; do
	wait_for 10 "upstream ${u%=*}" curl -sf -m 1 "http://$HOST:${u#*=}/" ||
		{ cat "$tmp/upstream.log" >&2; die "demo upstream ${u%=*} did not start"; }
done
say "demo upstreams (pid $up_pid): ${UPSTREAMS[*]}, answering /slow after 10 s"

run "$BUILD/fanoutd -c $CONF 2>fanoutd.log &"
"$FANOUTD" -c "$CONF" 2>"$tmp/fanoutd.log" &
fd_pid=$!
if ! wait_for 10 "fanoutd" curl -sf -m 1 "http://$HOST:$ADMIN/healthz"; then
	cat "$tmp/fanoutd.log" >&2
	die "fanoutd did not answer on http://$HOST:$ADMIN/healthz within 10 s"
fi
run "curl -s http://$HOST:$ADMIN/healthz"
curl -sS -m 2 "http://$HOST:$ADMIN/healthz" | indent
echo
say "fanoutd (pid $fd_pid) listens on $HOST:$PORT, admin on $HOST:$ADMIN"

# ---------------------------------------------------------------------------
step "4/7  A proxied request: route /api/users, mode proxy, one upstream"
run "curl -i http://$HOST:$PORT/api/users"
curl -sS -i -m 5 "http://$HOST:$PORT/api/users" | tr -d '\r' | indent ||
	problems+=("the proxied request failed")
say "(X-Request-Id was added by fanoutd; the upstream's JSON shows what it received)"

# ---------------------------------------------------------------------------
step "5/7  A fan-out request: route /api/profile, mode all over users, orders, recs"
run "curl -i http://$HOST:$PORT/api/profile"
curl -sS -m 5 -D "$tmp/profile.head" -o "$tmp/profile.body" \
	"http://$HOST:$PORT/api/profile" || true
tr -d '\r' <"$tmp/profile.head" | indent
python3 -m json.tool "$tmp/profile.body" 2>/dev/null | indent ||
	indent <"$tmp/profile.body"
if grep -q '^HTTP/[0-9.]* 501' "$tmp/profile.head"; then
	say "(501 mode_not_implemented: this build does not fan out yet; proxy mode and"
	say " cancellation work, mode all comes with the fan-out issue)"
fi
say "The same over HTTP/2 (h2c, prior knowledge): two streams on one connection (nghttp):"
run "nghttp -ns http://$HOST:$PORT/api/users http://$HOST:$PORT/api/profile"
if ! nghttp -ns -t 5 "http://$HOST:$PORT/api/users" "http://$HOST:$PORT/api/profile" \
	>"$tmp/h2.out" 2>&1; then
	problems+=("the HTTP/2 requests failed")
fi
grep -E '^ *(id|[0-9]+) ' "$tmp/h2.out" | indent

# ---------------------------------------------------------------------------
step "6/7  A slow request that the client abandons after 0.5 s"
say "/slow is answered by its upstream after 10 s; curl gives up after 0.5 s."
run "curl -m 0.5 -H 'X-Request-Id: demo-slow-1' http://$HOST:$PORT/slow"
curl -sS -m 0.5 -H 'X-Request-Id: demo-slow-1' "http://$HOST:$PORT/slow" 2>&1 | indent || true

echo
say "The upstream's side: fanoutd closed its upstream connection as soon as curl left,"
say "about 0.5 s after the request arrived, not 10 s:"
if wait_for 3 "upstream close" grep -q 'CONNECTION CLOSED' "$tmp/upstream.log"; then
	grep -E 'GET /slow|slow request' "$tmp/upstream.log" | indent
else
	grep -E 'GET /slow|slow request' "$tmp/upstream.log" | indent
	problems+=("the slow upstream did not see its connection closed within 3 s")
	say "!! the upstream did not see its connection closed within 3 s"
fi

echo
say "The access log line (status 499 = the client closed; cancel_reason client_closed):"
if wait_for 3 "access log" grep -q '"status":499' "$tmp/fanoutd.log"; then
	access_lines | grep '"status":499' | tail -n 1 |
		python3 -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=2))' |
		indent
	access_lines | grep '"status":499' | tail -n 1 | grep -q '"cancel_reason":"client_closed"' ||
		problems+=("the 499 access-log line has no cancel_reason client_closed")
else
	access_lines | indent
	problems+=("no access-log line with status 499 within 3 s")
	say "!! no access-log line with status 499"
fi

echo
say "/metrics: cancellations by reason, and nothing left in flight"
run "curl -s http://$HOST:$ADMIN/metrics | grep -E 'cancellations_total|in_flight|cancel_latency_seconds_(count|sum)'"
curl -sS -m 2 "http://$HOST:$ADMIN/metrics" >"$tmp/metrics" || true
grep -E '^fanoutd_(cancellations_total|requests_in_flight|upstream_transfers_in_flight|cancel_latency_seconds_(count|sum))' \
	"$tmp/metrics" | indent || problems+=("the cancellation metrics are missing from /metrics")

echo
say "The wasted-work ledger: how long the slow upstream worked for nobody before"
say "fanoutd stopped it (wasted_ms in the access log line above, summed here), and"
say "the bytes it had sent that were thrown away:"
run "curl -s http://$HOST:$ADMIN/metrics | grep -E 'upstream_wasted'"
grep -E '^fanoutd_upstream_wasted_(seconds|bytes)_total\{upstream="slow"' "$tmp/metrics" |
	indent || problems+=("the wasted-work ledger has nothing for upstream slow")
access_lines | grep '"status":499' | tail -n 1 | grep -q '"wasted_ms":' ||
	problems+=("the 499 access-log line has no wasted_ms")

# ---------------------------------------------------------------------------
step "7/7  SIGTERM: fanoutd drains and exits 0"
run "kill -TERM $fd_pid"
kill -TERM "$fd_pid"
if wait_for 15 "fanoutd exit" eval '! kill -0 '"$fd_pid"; then
	rc=0
	wait "$fd_pid" || rc=$?
else
	rc="still running after 15 s"
fi
fd_pid=
grep -v '^{' "$tmp/fanoutd.log" | tail -n 4 | indent
say "fanoutd exit status: $rc"
[ "$rc" = 0 ] || problems+=("fanoutd exit status after SIGTERM was $rc, not 0")

stop_pid "$up_pid"
up_pid=

echo
if [ ${#problems[@]} -gt 0 ]; then
	printf '%sdemo finished with problems:%s\n' "$bold" "$plain"
	printf '  - %s\n' "${problems[@]}"
	exit 1
fi
printf '%sdemo finished: everything it started is stopped.%s\n' "$bold" "$plain"
say "Next: ./scripts/test.sh runs every test; man -l man/fanoutd.8 documents the daemon."
