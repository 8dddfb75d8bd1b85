#!/usr/bin/env bash
# Run every test of every build configuration, each in its own process with
# a timeout.  Usage: tests/run-all.sh BUILD_DIR
# Prints one line per test and ends with "N passed, N failed[, N skipped]".
#
# Configurations: normal (the plain library), asan (library and tests with
# ASan+UBSan), asanplain (the plain library inside an ASan program), tsan
# (the TSan library), faultinj (the fault-injection sweep, ASan+UBSan),
# shared (libbraid.so), valgrind (the normal binaries
# under memcheck, leaks are errors), migrate and migrate-tsan (the normal
# and TSan binaries with BRAID_MIGRATE=1: every runtime's tasks migrate).  BRAID_TEST_JOBS runs tests in
# parallel; BRAID_TEST_FILTER keeps only tests whose "config/binary/test"
# matches the given regular expression; BRAID_TEST_CONFIGS lists the
# configurations to run; BRAID_TEST_RUNNER is a command every test binary
# runs under (an emulator: make test-aarch64).
set -u
B=${1:-build}
JOBS=${BRAID_TEST_JOBS:-2}
FILTER=${BRAID_TEST_FILTER:-.}
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
jobs="$log/jobs"
: >"$jobs"

read -r -a runner <<<"${BRAID_TEST_RUNNER:-}"
export BRAID_TEST_RUNNER
for cfg in ${BRAID_TEST_CONFIGS:-normal asan asanplain faultinj tsan shared valgrind migrate migrate-tsan}; do
    dir="$B/t-$cfg"
    case $cfg in migrate) dir="$B/t-normal" ;; migrate-tsan) dir="$B/t-tsan" ;; esac
    if [ "$cfg" = valgrind ]; then
        dir="$B/t-normal"
        if ! command -v valgrind >/dev/null; then
            echo "valgrind is not installed: that configuration is not run"
            continue
        fi
    fi
    [ -d "$dir" ] || continue
    for bin in "$dir"/test_*; do
        [ -x "$bin" ] || continue
        name=$(basename "$bin")
        # The plain-library-under-ASan and shared-library configurations
        # check linkage and detection, not every behaviour again.
        case "$cfg" in
            asanplain|shared) case $name in test_basic|test_examples|test_panic) ;; *) continue ;; esac ;;
            # What does not run tasks needs no second pass.
            migrate*) case $name in test_docs|test_build|test_install|test_guide) continue ;; esac ;;
        esac
        for t in $("${runner[@]}" "$bin" --list); do
            if [[ "$cfg/$name/$t" =~ $FILTER ]]; then
                printf '%s\t%s\t%s\n' "$cfg" "$bin" "$t" >>"$jobs"
            fi
        done
    done
done

export BRAID_TEST_LOG=$log
tr '\t' '\n' <"$jobs" | xargs -d '\n' -n 3 -P "$JOBS" "$here/run-one.sh" || true

pass=0 fail=0 skip=0
failed=()
for f in "$log"/*.result; do
    [ -e "$f" ] || continue
    case $(cat "$f") in
        pass) pass=$((pass + 1)) ;;
        skip) skip=$((skip + 1)) ;;
        *) fail=$((fail + 1)); failed+=("$(basename "$f" .result)") ;;
    esac
done
total=$(wc -l <"$jobs")
if [ $((pass + fail + skip)) -ne "$total" ]; then
    fail=$((fail + total - pass - fail - skip))
    failed+=("(some tests left no result)")
fi
if [ $fail -gt 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed[@]}"
fi
if [ $skip -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ $fail -eq 0 ]
