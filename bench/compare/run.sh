#!/usr/bin/env bash
# bench/compare/run.sh: braid side by side with Tokio, Go and plain pthreads
# on every workload of ../shared/bench/WORKLOADS.md, plus mini_redis against
# redis-server, in one run (`make compare`; issue 5).  See
# bench/compare/README.md for what it measures and how to read the table.
#
#   bench/compare/run.sh                    (make compare)
#   QUICK=1        one round of everything (development)
#   ROUNDS=5       rounds per workload.  The two million-task memory workloads
#                  (sleep_many, idle_memory) run HEAVY_ROUNDS (default ROUNDS)
#                  rounds, but rounds after HEAVY_MIN=3 only while the runs so
#                  far have taken less than HEAVY_BUDGET=540 s (time budget)
#   ONLY="ping_pong http_hello mini_redis"    a subset (default: all)
#   RUNTIMES="braid tokio go pthread"         a subset of the runtimes
#   OUT=bench/results/latest.md   SVG=bench/results/latest.svg  (SVG= : none)
#   TIMEOUT=180    seconds before one run is killed (and counted FAILED)
#   QUIET_WAIT=10  seconds to wait for an idle machine before each round of a
#                  workload; QUIET_BUDGET=90 caps the total wait
#   PORT_BASE=18080   http_hello ports: braid +0, Tokio +1, Go +2, pthread +3
#   ANCHOR_IDLE_SLEEP_MS   passed through to every runtime (idle_memory's S)
#   REDIS_N=200000 REDIS_CLIENTS=50   the redis-benchmark run
#   PREWARM=1      touch 4 GiB once before the runs (WORKLOADS.md, machine notes)
#
# Per workload, the runtimes run alternately: braid Tokio Go pthread, braid
# Tokio Go pthread, ...  Every run goes through build/compare/runone, which
# records its exit status, peak RSS (ru_maxrss) and CPU time.  Exit 3 with
# "unsupported=1" shows as "—"; any other non-zero exit (a failed check), a
# missing result line, a wrong n= or a timeout shows as FAILED.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-5}
if [ "$QUICK" = 1 ]; then ROUNDS=1; HEAVY_ROUNDS=1; : "${QUIET_WAIT:=2}"; fi
HEAVY_ROUNDS=${HEAVY_ROUNDS:-$ROUNDS}
HEAVY_MIN=${HEAVY_MIN:-3}
HEAVY_BUDGET=${HEAVY_BUDGET:-540}
QUIET_WAIT=${QUIET_WAIT:-10}
QUIET_BUDGET=${QUIET_BUDGET:-90}
ALL_WORKLOADS="spawn_many spawn_many_remote yield_many ping_pong chained_spawn fib_spawn sleep_many idle_memory http_hello mini_redis"
ONLY=${ONLY:-$ALL_WORKLOADS}
RUNTIMES=${RUNTIMES:-braid tokio go pthread}
OUT=${OUT:-bench/results/latest.md}
SVG=${SVG-bench/results/latest.svg}
TIMEOUT=${TIMEOUT:-180}
PORT_BASE=${PORT_BASE:-18080}
REDIS_N=${REDIS_N:-200000}
REDIS_CLIENTS=${REDIS_CLIENTS:-50}
B=$ROOT/build/compare
RAW=$B/runs.tsv
mkdir -p "$B" "$(dirname "$OUT")"

log() { echo "compare: $*" >&2; }
die() { log "$*"; exit 1; }
wants() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }
T_START=$(date +%s)

# ---- build --------------------------------------------------------------------------
declare -A CMD LABEL NOTE
NOTES=()
log "building braid (make build/braid-bench$(wants mini_redis && echo ' build/ex/mini_redis'))"
make -s build/braid-bench $(wants mini_redis && echo build/ex/mini_redis) >&2 || die "braid build failed"
cc -O2 -Wall -Wextra bench/compare/runone.c -o "$B/runone" || die "runone build failed"
cc -O2 -Wall -Wextra -shared -fPIC bench/compare/vmhwm.c -o "$B/vmhwm.so" || die "vmhwm.so build failed"
CMD[braid]=$ROOT/build/braid-bench
LABEL[braid]="braid"

for rt in $RUNTIMES; do
    case $rt in
    braid) ;;
    tokio)
        LABEL[tokio]="Tokio"
        CARGO=${CARGO:-$(command -v cargo || true)}
        [ -n "$CARGO" ] || CARGO=$HOME/.cargo/bin/cargo
        [ -x "$CARGO" ] || CARGO=/usr/bin/cargo
        RUSTC=${RUSTC:-$(dirname "$CARGO")/rustc}
        [ -x "$RUSTC" ] || RUSTC=rustc
        if [ ! -x "$CARGO" ] || [ ! -f bench/compare/tokio/.cargo/config.toml ]; then
            NOTES+=("**Tokio: not built** (no cargo or no bench/compare/tokio/.cargo/config.toml: run bench/compare/setup as root).")
            continue
        fi
        TOKIO_VER=$(awk '/^name = "tokio"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' bench/compare/tokio/Cargo.lock)
        LABEL[tokio]="Tokio ${TOKIO_VER}"
        log "building Tokio ($("$CARGO" --version), $("$RUSTC" --version))"
        if (cd bench/compare/tokio && RUSTC=$RUSTC "$CARGO" build --release --offline -q --target-dir "$B/tokio"); then
            CMD[tokio]=$B/tokio/release/tokio-bench
            NOTE[tokio]="Tokio $TOKIO_VER ($("$RUSTC" --version | cut -d' ' -f1-2), release, LTO, multi-thread runtime, 2 workers)"
        else
            NOTES+=("**Tokio: build FAILED**; its column is empty.")
        fi ;;
    go)
        LABEL[go]="Go"
        if ! command -v go >/dev/null; then
            NOTES+=("**Go: not built** (no go: run bench/compare/setup as root).")
            continue
        fi
        GO_VER=$(go version | awk '{ sub(/^go/, "", $3); print $3 }')
        LABEL[go]="Go $GO_VER"
        log "building Go ($(go version))"
        if (cd bench/compare/go && GOPROXY=off GOFLAGS=-mod=mod go build -o "$B/go-bench" .); then
            CMD[go]=$B/go-bench
            NOTE[go]="Go $GO_VER (GOMAXPROCS=2)"
        else
            NOTES+=("**Go: build FAILED**; its column is empty.")
        fi ;;
    pthread)
        LABEL[pthread]="pthread"
        if [ ! -f bench/compare/pthread/pthread_bench.c ]; then
            NOTES+=("pthread: no bench/compare/pthread/pthread_bench.c yet; its column is empty.")
            continue
        fi
        log "building pthread baseline"
        if cc -O2 -pthread bench/compare/pthread/pthread_bench.c -o "$B/pthread-bench"; then
            CMD[pthread]=$B/pthread-bench
            NOTE[pthread]="plain pthreads (gcc -O2)"
        else
            NOTES+=("**pthread: build FAILED**; its column is empty.")
        fi ;;
    *) die "unknown runtime $rt (braid tokio go pthread)" ;;
    esac
done
RTS=()
for rt in braid tokio go pthread; do case " $RUNTIMES " in *" $rt "*) RTS+=("$rt") ;; esac; done
log "build done in $(( $(date +%s) - T_START )) s"

# ---- helpers --------------------------------------------------------------------------
# busy CPU seconds of the whole machine since boot, from /proc/stat.
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / hz; exit }' /proc/stat; }
NCPU=$(nproc)
# Wait (up to QUIET_WAIT s, and QUIET_BUDGET s over the whole run) until the
# machine has been almost idle for one second, so that a round does not start
# in the middle of someone else's build.
QUIET_SPENT=0
wait_quiet() {
    local t=0 a b
    while [ "$t" -lt "$QUIET_WAIT" ] && [ "$QUIET_SPENT" -lt "$QUIET_BUDGET" ]; do
        a=$(busy_cpu); sleep 1; b=$(busy_cpu)
        QUIET_SPENT=$((QUIET_SPENT + 1)); t=$((t + 1))
        awk -v a="$a" -v b="$b" 'BEGIN { exit !(b - a < 0.2) }' && return 0
    done
    [ "$QUIET_WAIT" -gt 0 ] && log "the machine is busy; running anyway"
}

# N per workload and runtime (WORKLOADS.md's defaults; pthread uses 100,000
# for spawn_many and ping_pong).
n_for() {
    case $1/$2 in
    spawn_many/pthread | ping_pong/pthread) echo 100000 ;;
    spawn_many/* | spawn_many_remote/* | ping_pong/* | sleep_many/* | idle_memory/*) echo 1000000 ;;
    yield_many/* | chained_spawn/*) echo 1000 ;;
    fib_spawn/*) echo 25 ;;
    http_hello/*) echo "" ;;
    esac
}

: >"$RAW"
# record ROUND WORKLOAD RUNTIME STATUS RSS_KB OTHER_MS REAL_MS LINE
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

declare -A UNSUP
# One run of workload $2 by runtime $3 in round $1.
run_one() {
    local r=$1 w=$2 rt=$3 n port rc line st rss other real cpu b0 b1 pre=()
    n=$(n_for "$w" "$rt")
    if [ "$w" = http_hello ]; then
        case $rt in braid) port=$PORT_BASE ;; tokio) port=$((PORT_BASE + 1)) ;;
                    go) port=$((PORT_BASE + 2)) ;; *) port=$((PORT_BASE + 3)) ;; esac
        n=$port
    fi
    # braid-bench does not print its peak RSS: the shim does, at exit.
    [ "$rt" = braid ] && pre=(env LD_PRELOAD="$B/vmhwm.so")
    b0=$(busy_cpu)
    "$B/runone" "$B/rep.txt" "$TIMEOUT" "${pre[@]}" "${CMD[$rt]}" "$w" "$n" >"$B/out.txt" 2>"$B/err.txt"
    rc=$?
    b1=$(busy_cpu)
    line=$(grep -m1 "^workload=$w\( \|$\)" "$B/out.txt")
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$B/rep.txt"; }
    rss=$(get maxrss_kb) cpu=$(get cpu_ms) real=$(get real_ms)
    other=$(awk -v a="$b0" -v b="$b1" -v c="${cpu:-0}" 'BEGIN { printf "%.0f", (b - a) * 1000 - c }')
    # Peak RSS: the process's own VmHWM (WORKLOADS.md: rss_kb= in its line,
    # or from the shim on stderr), else ru_maxrss from runone (for
    # http_hello that would include wrk, so it is not used there).
    local own
    own=$(grep -ho ' rss_kb=[0-9]*' "$B/out.txt" | head -1 | cut -d= -f2)
    [ -n "$own" ] || own=$(grep -ho '^rss_kb=[0-9]*' "$B/err.txt" | tail -1 | cut -d= -f2)
    if [ -n "$own" ]; then rss=$own; elif [ "$w" = http_hello ]; then rss=; fi
    if [ "$rc" = 3 ] && grep -q ' unsupported=1' <<<"$line"; then
        st=unsupported; UNSUP[$w/$rt]=1
    elif [ "$(get timeout)" = 1 ]; then
        st="FAILED:timeout_${TIMEOUT}s"
    elif [ "$rc" != 0 ]; then
        st="FAILED:exit_$rc"
    elif [ -z "$line" ]; then
        st="FAILED:no_result_line"
    elif [ "$w" != http_hello ] && ! grep -q " n=$n\( \|$\)" <<<"$line"; then
        st="FAILED:wrong_n"
    else
        st=ok
    fi
    record "$r" "$w" "$rt" "$st" "${rss:-}" "$other" "${real:-}" "$line"
    printf 'round %s %-17s %-7s %-12s rss_kb=%-8s other_cpu_ms=%-5s %s\n' "$r" "$w" "$rt" "$st" \
        "${rss:-?}" "$other" "$(sed 's/^workload=[^ ]* //' <<<"$line")" >&2
    case $st in FAILED*) sed 's/^/    | /' "$B/err.txt" | tail -5 >&2 ;; esac
}

# ---- mini_redis against redis-server --------------------------------------------------
redis_pid= mini_pid=
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    [ -n "$mini_pid" ] && kill "$mini_pid" 2>/dev/null && wait "$mini_pid" 2>/dev/null
    redis_pid= mini_pid=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
vmhwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# One redis-benchmark run against port $4, recorded as workload mini_redis,
# runtime $2 (redis or braid), process $3.
redis_run() {
    local r=$1 rt=$2 pid=$3 port=$4 b0 b1 st line set get
    b0=$(busy_cpu)
    timeout "$TIMEOUT" redis-benchmark -p "$port" -t set,get -P 1 -c "$REDIS_CLIENTS" -n "$REDIS_N" -q \
        >"$B/redis-out.txt" 2>&1
    rc=$?
    b1=$(busy_cpu)
    tr '\r' '\n' <"$B/redis-out.txt" | awk '/requests per second/ { r[$1] = $2 }
        END { printf "%s %s\n", r["SET:"], r["GET:"] }' >"$B/redis-rates.txt"
    read -r set get <"$B/redis-rates.txt"
    line="workload=mini_redis set_rps=${set:-} get_rps=${get:-}"
    if ! kill -0 "$pid" 2>/dev/null; then st="FAILED:server_died"
    elif [ "$rc" != 0 ]; then st="FAILED:redis-benchmark_exit_$rc"
    elif [ -z "${set:-}" ] || [ -z "${get:-}" ]; then st="FAILED:no_rates"
    else st=ok; fi
    # other CPU is not separable here (server and client both run); record 0.
    record "$r" mini_redis "$rt" "$st" "$(vmhwm "$pid")" "" "" "$line"
    printf 'round %s %-17s %-7s %-12s SET %s GET %s req/s\n' "$r" mini_redis "$rt" "$st" "${set:-?}" "${get:-?}" >&2
}

run_redis() {
    local port mini_port i
    for t in redis-server redis-benchmark redis-cli; do
        command -v $t >/dev/null || { NOTES+=("**mini_redis: not run**: $t is not installed (run bench/compare/setup as root)."); return; }
    done
    port=16379
    while ! port_free "$port"; do port=$((port + 1)); done
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --logfile "$B/redis.log" &
    redis_pid=$!
    build/ex/mini_redis --port 0 --workers 2 >"$B/mini.out" 2>"$B/mini.err" &
    mini_pid=$!
    for i in $(seq 200); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && grep -q listening "$B/mini.out" && break
        sleep 0.05
    done
    mini_port=$(sed -n '1s/.*:\([0-9]*\)$/\1/p' "$B/mini.out")
    REDIS_VER=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
    if [ -z "$mini_port" ] || ! redis-cli -p "$port" ping >/dev/null 2>&1; then
        log "mini_redis or redis-server did not start"; cat "$B/mini.err" "$B/redis.log" >&2
        record 1 mini_redis braid "FAILED:did_not_start" "" "" "" ""
        cleanup; return
    fi
    for r in $(seq "$ROUNDS"); do
        wait_quiet
        redis_run "$r" redis "$redis_pid" "$port"
        redis_run "$r" braid "$mini_pid" "$mini_port"
    done
    cleanup
}

# ---- run ------------------------------------------------------------------------------
if [ -n "${ANCHOR_IDLE_SLEEP_MS:-}" ]; then export ANCHOR_IDLE_SLEEP_MS; fi
if [ "${PREWARM:-0}" = 1 ]; then log "prewarming 4 GiB"; "${CMD[braid]}" prewarm 4096 >/dev/null 2>&1; fi
if wants http_hello && ! command -v wrk >/dev/null; then
    NOTES+=("**http_hello: not run**: wrk is not installed (run bench/compare/setup as root).")
    ONLY=$(sed 's/\bhttp_hello\b//' <<<"$ONLY")
fi
T_RUN=$(date +%s)
for w in $ONLY; do
    if [ "$w" = mini_redis ]; then run_redis; continue; fi
    case " $ALL_WORKLOADS " in *" $w "*) ;; *) die "unknown workload $w" ;; esac
    rounds=$ROUNDS
    case $w in sleep_many | idle_memory) [ "$rounds" -gt "$HEAVY_ROUNDS" ] && rounds=$HEAVY_ROUNDS ;; esac
    for r in $(seq "$rounds"); do
        case $w in sleep_many | idle_memory)
            now=$(date +%s)
            if [ "$r" -gt "$HEAVY_MIN" ] && [ $((now - T_RUN + ${last_round:-0})) -gt "$HEAVY_BUDGET" ]; then
                NOTES+=("$w: $((r - 1)) rounds instead of $rounds, to stay within the time budget (HEAVY_BUDGET=$HEAVY_BUDGET s of runs).")
                log "$w: stopping after $((r - 1)) rounds (time budget)"
                break
            fi ;;
        esac
        t_round=$(date +%s)
        wait_quiet
        for rt in "${RTS[@]}"; do
            [ -n "${CMD[$rt]:-}" ] || continue
            [ -n "${UNSUP[$w/$rt]:-}" ] && continue  # said so in round 1
            run_one "$r" "$w" "$rt"
        done
        last_round=$(($(date +%s) - t_round))
    done
done
T_END=$(date +%s)
log "runs took $((T_END - T_RUN)) s (whole script so far $((T_END - T_START)) s)"

# ---- tables ---------------------------------------------------------------------------
dirty=$(git diff --quiet HEAD -- src include bench examples 2>/dev/null || echo ' (with uncommitted changes)')
{
    if [ "$(echo $ONLY)" = "$ALL_WORKLOADS" ]; then echo "# braid vs Tokio vs Go: \`make compare\`"
    else echo "# braid vs Tokio vs Go: $(echo $ONLY)"; fi
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty."
    echo "Machine: $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)."
    tc="braid: gcc $(gcc -dumpfullversion) -O2, 2 workers (http_hello: braid_config.migrate)"
    for rt in tokio go pthread; do [ -n "${NOTE[$rt]:-}" ] && tc="$tc; ${NOTE[$rt]}"; done
    wants http_hello && tc="$tc; $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    wants mini_redis && [ -n "${REDIS_VER:-}" ] && tc="$tc; redis-server $REDIS_VER"
    echo "Toolchains: $tc."
    rtxt="Rounds: $ROUNDS per workload (sleep_many and idle_memory: $HEAVY_ROUNDS, or at least $HEAVY_MIN if the time budget runs out); in each round the runtimes run one after the other (braid, Tokio, Go, pthread; mini_redis: redis-server, then mini_redis). The runs took $((T_END - T_RUN)) s."
    [ "$QUICK" = 1 ] && rtxt="Rounds: **1 (QUICK=1, for development only)**; the runtimes run one after the other (braid, Tokio, Go, pthread; mini_redis: redis-server, then mini_redis). The runs took $((T_END - T_RUN)) s."
    echo "$rtxt"
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "$n"; done
    echo
    awk -F'\t' -v lbl_braid="${LABEL[braid]}" -v lbl_tokio="${LABEL[tokio]:-Tokio}" -v lbl_go="${LABEL[go]:-Go}" \
        -v lbl_pthread="${LABEL[pthread]:-pthread}" -v svgdata="$B/ratios.tsv" -v ncpu="$NCPU" \
        -f bench/compare/table.awk "$RAW"
    echo
    echo "<details><summary>every run</summary>"
    echo
    echo "\"other CPU\": CPU time the machine spent during the run outside the benchmark process and its children (from /proc/stat; rough, and on loopback workloads it includes softirq work); a run with more than 30 % of the machine's CPU elsewhere counts as disturbed."
    echo
    echo "| round | workload | runtime | status | peak RSS kB | other CPU ms | result |"
    echo "|---:|---|---|---|---:|---:|---|"
    awk -F'\t' '{ l = $8; sub(/^workload=[^ ]* ?/, "", l); printf "| %s | %s | %s | %s | %s | %s | `%s` |\n", $1, $2, $3, $4, $5, $6, l }' "$RAW"
    echo
    echo "</details>"
} >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cat "$OUT"
if [ -n "$SVG" ]; then
    awk -F'\t' -v title="braid / other runtime, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null)$dirty, $ROUNDS round(s)" \
        -f bench/compare/svg.awk "$B/ratios.tsv" >"$SVG.tmp" && mv "$SVG.tmp" "$SVG" && log "wrote $OUT and $SVG"
else
    log "wrote $OUT"
fi
