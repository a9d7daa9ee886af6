#!/usr/bin/env bash
# Out-of-tree build of fanoutd.
#
#   scripts/build.sh DIR [configure arguments...]
#
# Regenerates the build system in the source tree when configure is missing
# or older than configure.ac / Makefile.am, configures DIR with --enable-werror
# plus the arguments given (again only when they changed), and runs make.
# Environment: CC, CFLAGS and the like reach configure as usual; MAKEFLAGS too.
set -euo pipefail

die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'build: %s\n' "$*"; }

[ $# -ge 1 ] || die "usage: scripts/build.sh DIR [configure arguments...]"
builddir=$1
shift

srcdir=$(cd "$(dirname "$0")/.." && pwd)

# A VPATH build needs an unconfigured source tree: configure refuses to run
# otherwise, and make would pick up the in-tree objects and headers.
if [ -e "$srcdir/config.status" ]; then
	die "$srcdir has an in-tree build (config.status).
  Out-of-tree builds need a clean source tree. Run
      make -C '$srcdir' distclean
  and then this script again."
fi

# Regenerate configure and Makefile.in when missing or stale.
stale=no
for f in configure Makefile.in; do
	[ -e "$srcdir/$f" ] || stale=yes
done
if [ "$stale" = no ]; then
	for input in configure.ac Makefile.am; do
		if [ "$srcdir/$input" -nt "$srcdir/configure" ] ||
		    [ "$srcdir/$input" -nt "$srcdir/Makefile.in" ]; then
			stale=yes
		fi
	done
fi
if [ "$stale" = yes ]; then
	log "autoreconf -fi in $srcdir"
	(cd "$srcdir" && autoreconf -fi) || die "autoreconf failed"
fi

mkdir -p "$builddir"
builddir=$(cd "$builddir" && pwd)
[ "$builddir" != "$srcdir" ] || die "DIR must not be the source tree itself"

# Configure again only when needed: no config.status yet, other arguments
# than last time, or a configure newer than the last run.
args=(--enable-werror "$@")
stamp="$builddir/.build-args"
want=$(printf '%q ' "${args[@]}" "CC=${CC:-}" "CFLAGS=${CFLAGS:-}")
if [ ! -e "$builddir/config.status" ] || [ ! -e "$stamp" ] ||
    [ "$(cat "$stamp")" != "$want" ] ||
    [ "$srcdir/configure" -nt "$builddir/config.status" ]; then
	log "configure ${args[*]} (in $builddir)"
	rm -f "$stamp"
	(cd "$builddir" && "$srcdir/configure" "${args[@]}") ||
		die "configure failed; see $builddir/config.log"
	printf '%s' "$want" >"$stamp"
fi

jobs=$(nproc 2>/dev/null || echo 2)
log "make -j$jobs (in $builddir)"
make -C "$builddir" -j"$jobs" || die "make failed in $builddir"
log "built $builddir/fanoutd"
