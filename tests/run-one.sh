#!/usr/bin/env bash
# Run one test in its own process: tests/run-one.sh CONFIG BINARY TEST
# Prints PASS/FAIL/SKIP and writes the outcome to $BRAID_TEST_LOG (a
# directory) for run-all.sh.
set -u
cfg=$1 bin=$2 t=$3 log=${BRAID_TEST_LOG:-/tmp}
TIMEOUT=${BRAID_TEST_TIMEOUT:-300}
read -r -a prefix <<<"${BRAID_TEST_RUNNER:-}"
if [ "$cfg" = valgrind ]; then
    prefix=(valgrind -q --error-exitcode=9 --leak-check=full
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect)
    export BRAID_TEST_VALGRIND=1
fi
case $cfg in
    # detect_stack_use_after_return exercises the fake-stack handling of
    # braid's fiber switches.
    asan*|faultinj) export ASAN_OPTIONS=detect_stack_use_after_return=1:detect_leaks=1:abort_on_error=0:allocator_may_return_null=1 ;;
    tsan|migrate-tsan) export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1 ;;
esac
case $cfg in migrate*) export BRAID_MIGRATE=1 ;; esac
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
out="$log/$cfg.$(basename "$bin").$t"
start=$(date +%s%N)
timeout -k 10 "$TIMEOUT" "${prefix[@]}" "$bin" "$t" >"$out" 2>&1
rc=$?
secs=$(( ($(date +%s%N) - start) / 10000000 ))
secs="$((secs / 100)).$(printf %02d $((secs % 100)))"
if [ $rc -eq 0 ]; then
    echo "PASS $cfg $(basename "$bin") $t (${secs}s)"
    echo pass >"$out.result"
elif [ $rc -eq 77 ]; then
    echo "SKIP $cfg $(basename "$bin") $t: $(tail -n 1 "$out")"
    echo skip >"$out.result"
else
    echo "FAIL $cfg $(basename "$bin") $t (exit $rc, ${secs}s)"
    tail -n 40 "$out" | sed 's/^/    | /'
    echo fail >"$out.result"
fi
