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
	libevent-dev libinih-dev libjansson-dev
	libsystemd-dev node-llhttp
	# TLS (libevent's bufferevent_openssl) and the HTTP/2 front end
	libssl-dev libnghttp2-dev
	# tests
	libcmocka-dev python3 python3-h2 python3-grpcio ca-certificates mandoc
	clang libclang-rt-14-dev valgrind haproxy
	# promtool, to validate /metrics
	prometheus
	# nghttpd: an HTTP/2 (h2c) upstream; nghttp and h2load: HTTP/2 clients
	nghttp2-server nghttp2-client openssl
	# systemd-analyze, to check systemd/fanoutd.service; procps for the
	# /bin/kill that the unit's ExecReload runs (a minimal Debian lacks it)
	systemd procps
)

# libcurl 8.14 (and the curl tool, which needs the libcurl4 of its own
# version). Debian 12 ships 7.88.1, which cannot reuse an h2c upstream
# connection and has no prompt per-stream reset; Debian's own
# bookworm-backports carries 8.14.1, the version Debian 13 ships. Only these
# packages come from backports: the suite is added at its default priority
# (100), so nothing else on the machine is upgraded from it.
CURL_PACKAGES=(libcurl4 libcurl4-openssl-dev curl)
CURL_MIN=8.14.0
BACKPORTS=bookworm-backports

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# True when package $1 is installed at version CURL_MIN or later.
new_enough() {
	local v
	installed "$1" || return 1
	v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || return 1
	dpkg --compare-versions "$v" ge "$CURL_MIN"
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done
old_curl=()
for p in "${CURL_PACKAGES[@]}"; do
	new_enough "$p" || old_curl+=("$p")
done

if [ ${#missing[@]} -eq 0 ] && [ ${#old_curl[@]} -eq 0 ]; then
	log "all $(( ${#PACKAGES[@]} + ${#CURL_PACKAGES[@]} )) packages already installed"
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

bookworm=no
if [ -r /etc/os-release ]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	if [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ]; then
		bookworm=yes
	else
		log "warning: written for Debian 12, this is ${PRETTY_NAME:-unknown}"
	fi
fi

log "installing: ${missing[*]} ${old_curl[*]}"

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

APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)

# On Debian 12 the curl packages come from bookworm-backports, named one by
# one (pkg/suite). Elsewhere (Debian 13 and later) the release has them.
curl_sel=("${old_curl[@]}")
if [ ${#old_curl[@]} -gt 0 ] && [ "$bookworm" = yes ]; then
	if ! grep -qsE "^[^#]*[[:space:]]$BACKPORTS([[:space:]]|\$)" \
	    /etc/apt/sources.list /etc/apt/sources.list.d/*.list &&
	   ! grep -qsE "^Suites:.*[[:space:]]$BACKPORTS([[:space:]]|\$)" \
	    /etc/apt/sources.list.d/*.sources; then
		log "adding $BACKPORTS to /etc/apt/sources.list.d (default priority)"
		printf '%s\n' \
		    "Types: deb" \
		    "URIs: http://deb.debian.org/debian" \
		    "Suites: $BACKPORTS" \
		    "Components: main" \
		    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" |
		    "${SUDO[@]}" tee "/etc/apt/sources.list.d/$BACKPORTS.sources" >/dev/null
	fi
	curl_sel=()
	for p in "${old_curl[@]}"; do
		curl_sel+=("$p/$BACKPORTS")
	done
fi

"${APT[@]}" update
"${APT[@]}" install --no-install-recommends "${missing[@]}" "${curl_sel[@]}"

still=()
for p in "${missing[@]}"; do
	installed "$p" || still+=("$p")
done
for p in "${CURL_PACKAGES[@]}"; do
	new_enough "$p" || still+=("$p (>= $CURL_MIN)")
done
[ ${#still[@]} -eq 0 ] || die "still not installed: ${still[*]}"
log "done"
