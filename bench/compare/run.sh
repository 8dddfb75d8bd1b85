#!/usr/bin/env bash
# bench/compare/run.sh: http_hello for braid, Tokio and Go, side by side.
#
#   bench/compare/run.sh              (or: make compare-http)
#   ROUNDS=5      rounds (default 5); QUICK=1 runs one round
#   PORT_BASE=18080   braid uses PORT_BASE, Tokio +1, Go +2
#   OUT=bench/results/latest-http.md   where the table goes
#
# Builds the three binaries (braid: `make build/braid-bench`; Tokio: cargo
# --offline against Debian's crates, see bench/compare/setup; Go: standard
# library only, GOPROXY=off), then runs them alternately, braid Tokio Go
# braid Tokio Go ..., and prints a markdown table: median requests/s with
# min..max, median p50/p99 latency, median peak RSS of the server process,
# and the ratios braid/Tokio and braid/Go of requests/s computed pair by
# pair within a round.  "other CPU" in the per-run table is the CPU time the
# machine spent during a run outside the server and wrk (from /proc/stat
# minus the children's rusage, which includes the softirq time of loopback
# traffic processed in their context; the figure is rough, +-0.5 s): large
# values mean something else was running.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
[ "${QUICK:-0}" = 1 ] && ROUNDS=1
PORT_BASE=${PORT_BASE:-18080}
OUT=${OUT:-bench/results/latest-http.md}
B=$ROOT/build/compare
mkdir -p "$B" "$(dirname "$OUT")"

die() { echo "compare: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk is not installed (run bench/compare/setup as root)"

# ---- build ----
echo "== building braid (make build/braid-bench)" >&2
make -s build/braid-bench >&2 || die "braid build failed"
cc -O2 -Wall -Wextra -shared -fPIC bench/compare/vmhwm.c -o "$B/vmhwm.so" || die "vmhwm.so"

CARGO=${CARGO:-$(command -v cargo || true)}
[ -n "$CARGO" ] || CARGO=$HOME/.cargo/bin/cargo
[ -x "$CARGO" ] || CARGO=/usr/bin/cargo
[ -x "$CARGO" ] || die "no cargo (run bench/compare/setup as root)"
[ -f bench/compare/tokio/.cargo/config.toml ] ||
    die "bench/compare/tokio/.cargo/config.toml missing (run bench/compare/setup as root)"
RUSTC=${RUSTC:-$(dirname "$CARGO")/rustc}
[ -x "$RUSTC" ] || RUSTC=rustc
echo "== building Tokio ($("$CARGO" --version), $("$RUSTC" --version))" >&2
(cd bench/compare/tokio && RUSTC=$RUSTC "$CARGO" build --release --offline -q --target-dir "$B/tokio") ||
    die "tokio build failed"
TOKIO_VER=$(awk '/^name = "tokio"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' bench/compare/tokio/Cargo.lock)

command -v go >/dev/null || die "no go (run bench/compare/setup as root)"
GO_VER=$(go version | awk '{ sub(/^go/, "", $3); print $3 }')
echo "== building Go ($(go version))" >&2
(cd bench/compare/go && GOPROXY=off GOFLAGS=-mod=mod go build -o "$B/go-bench" .) || die "go build failed"

# ---- run ----
names=(braid tokio go)
labels=("braid" "Tokio $TOKIO_VER" "Go $GO_VER")
cmds=("env LD_PRELOAD=$B/vmhwm.so $ROOT/build/braid-bench" "$B/tokio/release/tokio-bench" "$B/go-bench")

# CPU seconds (user + sys) of this shell's waited-for children, from `times`
# (run in this shell, not in a subshell, whose children's times start at 0).
child_cpu() { times >"$B/times.txt"; awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } print s }' "$B/times.txt"; }
# busy CPU seconds of the whole machine since boot, from /proc/stat.
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / hz; exit }' /proc/stat; }

# Wait (up to QUIET_WAIT seconds, default 30) until the machine has been
# almost idle for one second, so that a round does not start in the middle
# of someone else's build.
wait_quiet() {
    local t=0 a b
    while [ "$t" -lt "${QUIET_WAIT:-30}" ]; do
        a=$(busy_cpu); sleep 1; b=$(busy_cpu)
        awk -v a="$a" -v b="$b" 'BEGIN { exit !(b - a < 0.2) }' && return 0
        t=$((t + 1))
    done
    echo "compare: the machine is still busy after ${QUIET_WAIT:-30} s; running anyway" >&2
}
# A run whose "other CPU" exceeds this many ms marks its round as disturbed.
NOISY_MS=${NOISY_MS:-2500}

RAW=$B/http-runs.tsv
: >"$RAW"
for r in $(seq "$ROUNDS"); do
    wait_quiet
    for i in 0 1 2; do
        port=$((PORT_BASE + i))
        child_cpu >"$B/c0.txt"; c0=$(cat "$B/c0.txt") b0=$(busy_cpu)
        ${cmds[$i]} http_hello "$port" >"$B/out.txt" 2>"$B/err.txt"
        rc=$?
        child_cpu >"$B/c1.txt"; c1=$(cat "$B/c1.txt") b1=$(busy_cpu)
        line=$(grep '^workload=http_hello' "$B/out.txt")
        rss=$(grep -o 'rss_kb=[0-9]*' "$B/out.txt" "$B/err.txt" | head -1 | cut -d= -f2)
        other=$(awk -v a="$b0" -v b="$b1" -v c="$c0" -v d="$c1" 'BEGIN { printf "%.0f", ((b - a) - (d - c)) * 1000 }')
        if [ $rc != 0 ] || [ -z "$line" ]; then
            echo "round $r ${names[$i]}: FAILED (exit $rc)" >&2
            sed 's/^/  /' "$B/err.txt" >&2
            continue
        fi
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "${names[$i]}" "$(get rps)" "$(get p50_us)" \
            "$(get p99_us)" "$(get errors)" "${rss:-0}" "$other" >>"$RAW"
        printf 'round %s %-6s rps=%s p50_us=%s p99_us=%s errors=%s rss_kb=%s other_cpu_ms=%s\n' "$r" \
            "${names[$i]}" "$(get rps)" "$(get p50_us)" "$(get p99_us)" "$(get errors)" "${rss:-?}" "$other" >&2
    done
done

# ---- table ----
# "median min max" of the numbers on stdin
stats() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "- - -"; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'; }
col() { awk -F'\t' -v rt="$1" -v c="$2" '$2 == rt { print $c }' "$RAW"; }
# braid's column c divided by runtime $1's, per round where both ran
# (quiet=1: only rounds in which no run was disturbed)
ratio() { awk -F'\t' -v rt="$1" -v c="$2" -v quiet="${3:-0}" -v noisy="$NOISY_MS" '
    $2 == "braid" { b[$1] = $c } $2 == rt { o[$1] = $c } $8 > noisy { bad[$1] = 1 }
    END { for (r in b) if ((r in o) && o[r] > 0 && !(quiet && (r in bad))) printf "%.3f\n", b[r] / o[r] }' "$RAW"; }

{
    echo "# http_hello: braid vs Tokio vs Go"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src include bench 2>/dev/null || echo ' (with uncommitted changes)'); machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)."
    echo "Toolchains: gcc $(gcc -dumpfullversion) -O2; Tokio $TOKIO_VER ($("$RUSTC" --version | cut -d' ' -f1-2), release, LTO); $(go version | cut -d' ' -f3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)."
    echo "Workload: ../shared/bench/WORKLOADS.md \"http_hello\": \`wrk -t1 -c64 -d5s --latency\` on loopback, 2 server workers; $ROUNDS round(s), run in the order braid, Tokio, Go each round."
    echo
    echo "| runtime | median req/s | min..max req/s | median p50 µs | median p99 µs | errors | median peak RSS kB |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for i in 0 1 2; do
        read -r rm rmin rmax <<<"$(col "${names[$i]}" 3 | stats)"
        read -r p50 _ _ <<<"$(col "${names[$i]}" 4 | stats)"
        read -r p99 _ _ <<<"$(col "${names[$i]}" 5 | stats)"
        read -r rss _ _ <<<"$(col "${names[$i]}" 7 | stats)"
        errs=$(col "${names[$i]}" 6 | awk '{ s += $1 } END { print s + 0 }')
        echo "| ${labels[$i]} | $rm | $rmin..$rmax | $p50 | $p99 | $errs | $rss |"
    done
    echo
    echo "| ratio, pair by pair within a round | median | min | max |"
    echo "|---|---:|---:|---:|"
    for i in 1 2; do
        read -r m lo hi <<<"$(ratio "${names[$i]}" 3 | stats)"
        echo "| req/s braid / ${labels[$i]} (higher is better) | $m | $lo | $hi |"
    done
    for i in 1 2; do
        read -r m lo hi <<<"$(ratio "${names[$i]}" 5 | stats)"
        echo "| p99 braid / ${labels[$i]} (lower is better) | $m | $lo | $hi |"
    done
    quiet=$(awk -F'\t' -v noisy="$NOISY_MS" '{ r[$1] = 1 } $8 > noisy { bad[$1] = 1 }
        END { for (x in r) if (!(x in bad)) n++; print n + 0 }' "$RAW")
    if [ "$quiet" -gt 0 ] && [ "$quiet" -lt "$ROUNDS" ]; then
        for i in 1 2; do
            read -r m lo hi <<<"$(ratio "${names[$i]}" 3 1 | stats)"
            echo "| req/s braid / ${labels[$i]}, quiet rounds only ($quiet of $ROUNDS) | $m | $lo | $hi |"
        done
    fi
    echo
    echo "Quiet rounds (no run with more than $NOISY_MS ms of other CPU): $quiet of $ROUNDS."
    echo
    echo "<details><summary>every run</summary>"
    echo
    echo "| round | runtime | req/s | p50 µs | p99 µs | errors | peak RSS kB | other CPU ms |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RAW"
    echo
    echo "\"other CPU\": CPU time spent during the run outside the server and wrk (rough: +-0.5 s, and softirq work done while a CPU idles counts here), out of 2 CPUs x ~5.1 s; a round with a run above $NOISY_MS ms counts as disturbed (\"quiet rounds only\" leaves those out)."
    echo "</details>"
} >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cat "$OUT"
