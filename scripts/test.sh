#!/usr/bin/env bash
# Every test of fanoutd: install the dependencies, then
#   1. build build/ (-Werror) and run make check,
#   2. build build-asan/ (--enable-sanitizers, ASan + UBSan) and run make check
#      with two worker threads per daemon,
#   3. make distcheck from build/,
# and end with one line "N passed, N failed[, N skipped]". Exits non-zero
# when anything failed: a test that failed, or a stage that exited non-zero
# whatever its log says. Needs root (or sudo) the first time, for apt-get.
#
#   ./scripts/test.sh
#   ./scripts/test.sh --stress     (or FANOUTD_STRESS=1 ./scripts/test.sh)
#
# --stress is how the suite proves that no machine speed breaks it: build/
# only, then the integration tests with every daemon under valgrind while
# two CPU burners keep both cores busy. It is not part of CI's run (it takes
# far longer); run it by hand after changing a test or the harness.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

bold=
plain=
if [ -t 1 ]; then
	bold=$(printf '\033[1m')
	plain=$(printf '\033[0m')
fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }

stress=no
case "${1:-}" in
--stress) stress=yes ;;
"") [ -z "${FANOUTD_STRESS:-}" ] || stress=yes ;;
*) echo "usage: $0 [--stress]" >&2; exit 2 ;;
esac

jobs=$(nproc 2>/dev/null || echo 2)
check_tests=	# make check runs these only (TESTS=), when set
passed=0
failed=0
skipped=0
results=()	# one line per stage, for the summary

# result STAGE OUTCOME
result() { results+=("$(printf '%-44s %s' "$1" "$2")"); }

# count_log DIR: add the counts of DIR/test-suite.log to the totals.
count_log() {
	local log=$1/test-suite.log n
	[ -f "$log" ] || return 1
	for key in PASS XFAIL; do
		n=$(sed -n "s/^# $key: *\([0-9]*\).*/\1/p" "$log" | head -n 1)
		passed=$((passed + ${n:-0}))
	done
	for key in FAIL XPASS ERROR; do
		n=$(sed -n "s/^# $key: *\([0-9]*\).*/\1/p" "$log" | head -n 1)
		failed=$((failed + ${n:-0}))
	done
	n=$(sed -n 's/^# SKIP: *\([0-9]*\).*/\1/p' "$log" | head -n 1)
	skipped=$((skipped + ${n:-0}))
	return 0
}

# show_failures DIR: the summary of test-suite.log, then the log of every
# test that failed (FAIL, XPASS, ERROR), its last 200 lines.
show_failures() {
	local dir=$1 trs
	if [ -f "$dir/test-suite.log" ]; then
		printf -- '---- %s/test-suite.log\n' "$dir"
		sed -n '1,/^\.\. contents::/p' "$dir/test-suite.log" | grep -v '^\.\. contents::'
	fi
	while IFS= read -r trs; do
		printf -- '\n---- %s (last 200 lines)\n' "${trs%.trs}.log"
		tail -n 200 "${trs%.trs}.log" 2>/dev/null || echo "(no log)"
	done < <(find "$dir" -path "$dir/fanoutd-*" -prune -o -name '*.trs' \
	    -exec grep -lE '^:test-result: (FAIL|XPASS|ERROR)' {} + 2>/dev/null)
}

# check DIR LABEL [env...]: make check in DIR, counted and reported.
check() {
	local dir=$1 label=$2 rc
	shift 2
	local before
	rm -f "$dir/test-suite.log"
	step "make -C $dir check ($label)"
	env "$@" make -C "$dir" check ${check_tests:+TESTS="$check_tests"}
	rc=$?
	before=$failed
	if ! count_log "$dir"; then
		# No test-suite.log: the tests could not even be built.
		failed=$((failed + 1))
		result "make check ($label)" "FAILED before any test ran (exit $rc)"
		return
	fi
	if [ $rc -ne 0 ]; then
		show_failures "$dir"
		# A non-zero exit with no failure in the log is a failure too.
		[ "$failed" -gt "$before" ] || failed=$((failed + 1))
		result "make check ($label)" "FAILED (exit $rc)"
	elif [ "$failed" -gt "$before" ]; then
		show_failures "$dir"
		result "make check ($label)" "FAILED (exit 0, failures in the log)"
	else
		result "make check ($label)" "ok"
	fi
}

# summary: the stages, then "N passed, N failed[, N skipped]"; the exit status.
summary() {
	local line
	step "Summary"
	printf '  %s\n' "${results[@]}"
	line="$passed passed, $failed failed"
	[ "$skipped" -eq 0 ] || line="$line, $skipped skipped"
	echo
	echo "$line"
	[ "$failed" -eq 0 ]
}

# The stress run: build/ only, the integration tests with every daemon under
# valgrind, and two CPU burners (one per core of a 2-core machine) running
# all the while. The burners are ended by pid whatever happens.
stress_run() {
	local burners=() b
	# shellcheck disable=SC2317
	stop_burners() {
		for b in "${burners[@]}"; do
			kill "$b" 2>/dev/null && wait "$b" 2>/dev/null
		done
		burners=()
	}
	trap stop_burners EXIT
	command -v valgrind >/dev/null 2>&1 || {
		echo "test: --stress needs valgrind" >&2
		failed=$((failed + 1)); result "stress" "FAILED (no valgrind)"; return
	}
	step "Build build/ (scripts/build.sh build)"
	if ! scripts/build.sh build; then
		failed=$((failed + 1)); result "build (build/)" "FAILED"; return
	fi
	result "build (build/)" "ok"
	for _ in 1 2; do
		( trap 'exit 0' TERM; while :; do :; done ) &
		burners+=("$!")
	done
	step "stress: 2 CPU burners (pids ${burners[*]}), every daemon under valgrind"
	local t0=$SECONDS
	check_tests=$(cd tests/integration && ls test_*.py |
	    sed 's|^|tests/integration/|' | tr '\n' ' ')
	check build "integration tests, valgrind, 2 burners" \
		FANOUTD_TEST_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
		FANOUTD_TEST_STRESS=1
	stop_burners
	echo "stress: $((SECONDS - t0)) s"
}

step "Dependencies (scripts/deps.sh)"
if ! scripts/deps.sh; then
	echo "test: cannot install the dependencies" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

if [ "$stress" = yes ]; then
	stress_run
	summary
	exit
fi

# 1. The normal build, warnings as errors.
step "Build build/ (scripts/build.sh build)"
if scripts/build.sh build; then
	result "build (build/)" "ok"
	check build "build/"
	built=yes
else
	failed=$((failed + 1))
	result "build (build/)" "FAILED"
	built=no
fi

# 2. AddressSanitizer + UndefinedBehaviorSanitizer; any report aborts the
# process, so the test that started it fails. Every daemon runs two worker
# threads here (FANOUTD_TEST_WORKERS), the first run one: both shapes tested.
step "Build build-asan/ (scripts/build.sh build-asan --enable-sanitizers)"
if scripts/build.sh build-asan --enable-sanitizers; then
	result "build (build-asan/, ASan + UBSan)" "ok"
	check build-asan "build-asan/, ASan + UBSan, 2 workers" \
		FANOUTD_TEST_WORKERS=2 \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
	failed=$((failed + 1))
	result "build (build-asan/, ASan + UBSan)" "FAILED"
fi

# 3. The release tarball builds and passes its tests on its own.
if [ "$built" = yes ]; then
	step "make -C build distcheck"
	# -s and --quiet: the tarball's build and tests, without its command lines.
	if make -s -C build -j"$jobs" distcheck \
	    DISTCHECK_CONFIGURE_FLAGS="--enable-werror --quiet"; then
		result "make distcheck" "ok"
	else
		failed=$((failed + 1))
		result "make distcheck" "FAILED"
		# A failed distcheck leaves its tree behind; show its tests' logs.
		for d in build/fanoutd-*/_build/sub; do
			[ -d "$d" ] && show_failures "$d"
		done
	fi
else
	result "make distcheck" "not run (build/ failed)"
fi

summary
