#!/usr/bin/env bash
# mini_redis (examples/mini_redis.c) against the real redis-server, the
# issue 4 part 7 measurement:
#
#   redis-benchmark -t set,get -P 1 -c 50 -n 200000 -q
#
# run against each server alternately, ROUNDS times.  Prints every run, the
# medians and the ratio mini_redis / redis-server (target: at least 0.8).
#
# Usage: bench/redis_compare.sh [MINI_REDIS_BINARY]   (default build/ex/mini_redis)
# Environment: ROUNDS (3), N (200000), CLIENTS (50), WORKERS (mini_redis
# --workers, 2), REDIS_PORT (6399: redis-server needs a fixed port).
set -euo pipefail

BIN=${1:-build/ex/mini_redis}
ROUNDS=${ROUNDS:-3}
N=${N:-200000}
CLIENTS=${CLIENTS:-50}
WORKERS=${WORKERS:-2}
REDIS_PORT=${REDIS_PORT:-6399}

for tool in redis-server redis-benchmark redis-cli; do
    command -v $tool >/dev/null || { echo "$tool is not installed (Debian: redis-server, redis-tools)"; exit 77; }
done
[ -x "$BIN" ] || { echo "$BIN is not built (make $BIN)"; exit 1; }

tmp=$(mktemp -d)
redis_pid= mini_pid=
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    [ -n "$mini_pid" ] && kill "$mini_pid" 2>/dev/null && wait "$mini_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$tmp/redis.log" &
redis_pid=$!
"$BIN" --port 0 --workers "$WORKERS" >"$tmp/mini.out" 2>"$tmp/mini.err" &
mini_pid=$!

for _ in $(seq 200); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && grep -q listening "$tmp/mini.out" && break
    sleep 0.05
done
mini_port=$(sed -n '1s/.*:\([0-9]*\)$/\1/p' "$tmp/mini.out")
[ -n "$mini_port" ] || { echo "mini_redis did not start"; cat "$tmp/mini.err"; exit 1; }
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "redis-server did not start"; exit 1; }

# One run: prints "SET_RATE GET_RATE".
run() {
    redis-benchmark -p "$1" -t set,get -P 1 -c "$CLIENTS" -n "$N" -q 2>&1 | tr '\r' '\n' |
        awk '/requests per second/ { r[$1] = $2 } END { printf "%s %s\n", r["SET:"], r["GET:"] }'
}

echo "redis-benchmark -t set,get -P 1 -c $CLIENTS -n $N -q; mini_redis --workers $WORKERS; $(nproc) CPUs"
: >"$tmp/redis.txt"
: >"$tmp/mini.txt"
for i in $(seq "$ROUNDS"); do
    r=$(run "$REDIS_PORT")
    m=$(run "$mini_port")
    echo "$r" >>"$tmp/redis.txt"
    echo "$m" >>"$tmp/mini.txt"
    printf 'round %d: redis-server SET %10s GET %10s | mini_redis SET %10s GET %10s\n' "$i" $r $m
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rs=$(cut -d' ' -f1 "$tmp/redis.txt" | median) rg=$(cut -d' ' -f2 "$tmp/redis.txt" | median)
ms=$(cut -d' ' -f1 "$tmp/mini.txt" | median) mg=$(cut -d' ' -f2 "$tmp/mini.txt" | median)
awk -v rs="$rs" -v rg="$rg" -v ms="$ms" -v mg="$mg" 'BEGIN {
    printf "median:  redis-server SET %.0f GET %.0f | mini_redis SET %.0f GET %.0f requests/s\n", rs, rg, ms, mg
    printf "ratio mini_redis / redis-server: SET %.2f  GET %.2f  both %.2f (target >= 0.80)\n",
        ms / rs, mg / rg, (ms + mg) / (rs + rg)
}'
