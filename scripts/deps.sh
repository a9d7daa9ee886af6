#!/usr/bin/env bash
# Install what fanoutd needs to build and test, on Debian 12 (bookworm).
#
#   scripts/deps.sh
#
# Runs apt-get only when a package is missing, so a second run costs a
# dpkg-query and nothing more. Needs root; uses sudo when run as another user.
set -euo pipefail

PACKAGES=(
	# build
	build-essential autoconf automake libtool pkg-config
	libevent-dev libcurl4-openssl-dev libinih-dev libjansson-dev
	libsystemd-dev node-llhttp
	# TLS (libevent's bufferevent_openssl) and the HTTP/2 front end
	libssl-dev libnghttp2-dev
	# tests
	libcmocka-dev python3 curl ca-certificates mandoc
	clang libclang-rt-14-dev valgrind haproxy
	# promtool, to validate /metrics
	prometheus
	# nghttpd: an HTTP/2 (h2c) upstream; nghttp and h2load: HTTP/2 clients
	nghttp2-server nghttp2-client openssl
	# systemd-analyze, to check systemd/fanoutd.service
	systemd
)

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	log "all ${#PACKAGES[@]} packages already installed"
	exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
	die "apt-get not found: this script is for Debian 12; install by hand: ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
else
	die "missing packages (${missing[*]}) and not root, and sudo is not available: run this script as root"
fi

if [ -r /etc/os-release ]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
		log "warning: written for Debian 12, this is ${PRETTY_NAME:-unknown}"
	fi
fi

log "installing: ${missing[*]}"

# Packages with a service (haproxy) would start it on install. Nothing here
# wants that: tests start their own instances on loopback ports. A
# policy-rc.d that answers 101 tells invoke-rc.d not to start anything; put
# one in place only for the duration of the install, and only if none exists.
POLICY=/usr/sbin/policy-rc.d
policy_added=no
cleanup() {
	if [ "$policy_added" = yes ]; then
		"${SUDO[@]}" rm -f "$POLICY" || true
	fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
	printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 755 "$POLICY"
	policy_added=yes
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || die "still not installed: ${still[*]}"
log "done"
