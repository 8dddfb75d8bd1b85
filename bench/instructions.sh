#!/usr/bin/env bash
# Instructions per operation of braid's basic paths, counted by callgrind
# (repeatable even on a noisy machine).  Each microbenchmark of braid-micro
# runs at two sizes; the difference divided by the difference in operations
# leaves out start-up and teardown.  BRAID_VALGRIND=0 keeps braid from
# registering its stacks with Valgrind, so the counts are braid's own.
set -eu
BIN=${1:-build/braid-micro}
count() {
    BRAID_VALGRIND=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 |
        sed -n 's/.*refs: *//p' | tr -d ,
}
for name in spawn_join_inline chained_link yield_pair yield_alone mutex_uncontended; do
    small=$(count 10000 "$name")
    large=$(count 110000 "$name")
    ops=100000
    [ "$name" = yield_pair ] && ops=200000
    echo "$name: $(( (large - small) / ops )) instructions per operation"
done
