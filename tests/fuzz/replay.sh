#!/bin/sh
# Replay the fuzz corpora (seeds and every crash input ever found) through
# the fuzz targets' code, built without libFuzzer. A crash or a sanitizer
# report fails the test.
srcdir=${FANOUTD_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
./tests/fuzz/replay_config "$srcdir/tests/fuzz/corpus/config" || exit 1
./tests/fuzz/replay_request "$srcdir/tests/fuzz/corpus/request" || exit 1
./tests/fuzz/replay_h2 "$srcdir/tests/fuzz/corpus/h2" || exit 1
./tests/fuzz/replay_envelope "$srcdir/tests/fuzz/corpus/envelope" || exit 1
