#!/usr/bin/env bash
# Run every workload of braid-bench several times and print the median of
# each (`make bench`).  BENCH_RUNS sets the runs per workload (default 5; the
# two million-task memory workloads and http_hello run at most 3 times);
# BENCH_ONLY limits the workloads (space-separated names); BENCH_PREWARM=1
# touches 4 GiB first.
set -u
BIN=${1:-build/braid-bench}
RUNS=${BENCH_RUNS:-5}
ONLY=${BENCH_ONLY:-"spawn_many spawn_many_remote yield_many ping_pong mpsc chained_spawn fib_spawn sleep_many idle_memory http_hello"}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# WORKLOADS.md suggests touching 4 GiB once first.  On this VM that made the
# small workloads slower for a while (the freed memory goes back to the
# host and is faulted in afresh), so it is optional here.
[ "${BENCH_PREWARM:-0}" = 1 ] && "$BIN" prewarm 4096 2>/dev/null

# "median min max" of the numbers on stdin
stats() { sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'; }

printf '%-18s %4s %11s %11s %24s  %s\n' workload runs "median ms" "median ns" "ns/op min..max" "last run's extras"
for w in $ONLY; do
    runs=$RUNS
    case $w in sleep_many|idle_memory|http_hello) [ "$runs" -gt 3 ] && runs=3 ;; esac
    if [ "$w" = http_hello ] && ! command -v wrk >/dev/null; then
        echo "http_hello: skipped (wrk is not installed: apt-get install wrk)"
        continue
    fi
    walls=() nss=() last=""
    for _ in $(seq "$runs"); do
        line=$("$BIN" "$w") || { echo "$w: FAILED"; continue 2; }
        walls+=("$(sed -n 's/.*wall_ms=\([^ ]*\).*/\1/p' <<<"$line")")
        nss+=("$(sed -n 's/.*ns_per_op=\([^ ]*\).*/\1/p' <<<"$line")")
        last=$(sed 's/.*ns_per_op=[^ ]*//' <<<"$line")
    done
    read -r wmed _ _ <<<"$(printf '%s\n' "${walls[@]}" | stats)"
    read -r nmed nmin nmax <<<"$(printf '%s\n' "${nss[@]}" | stats)"
    printf '%-18s %4s %11s %11s %24s %s\n' "$w" "$runs" "$wmed" "$nmed" "$nmin..$nmax" "$last"
done
