# bench/compare/table.awk: the markdown tables of bench/compare/run.sh, from
# its raw runs (build/compare/runs.tsv, tab-separated):
#
#   round  workload  runtime  status  rss_kb  other_cpu_ms  real_ms  result line
#
# status is ok, unsupported or FAILED:<why>.  Writes the ratios that the
# chart shows to the file `svgdata` (label, series, median, min, max).
# POSIX awk (runs under mawk).
#
# Ratio convention, the same for every row: braid's COST divided by the
# other runtime's, so that < 1 means braid is better.  A cost is a time per
# operation, a wall time, a latency or bytes; for rate rows (req/s) the cost
# is the time per request, so the ratio is other req/s / braid req/s.

BEGIN {
    FS = "\t"
    nrt = split("braid tokio go pthread", RT, " ")
    lbl["braid"] = lbl_braid; lbl["tokio"] = lbl_tokio; lbl["go"] = lbl_go; lbl["pthread"] = lbl_pthread
    # workload | result key | what | cost or rate | in the chart
    nm = 0
    M[++nm] = "spawn_many|ns_per_op|ns per spawn+join (pthread: N=100k)|cost|1"
    M[++nm] = "spawn_many_remote|ns_per_op|ns per task|cost|1"
    M[++nm] = "yield_many|ns_per_op|ns per yield|cost|1"
    M[++nm] = "ping_pong|ns_per_op|ns per round trip (pthread: N=100k)|cost|1"
    M[++nm] = "chained_spawn|ns_per_op|ns per spawn|cost|1"
    M[++nm] = "fib_spawn|wall_ms|wall ms|cost|1"
    M[++nm] = "sleep_many|wall_ms|wall ms|cost|1"
    M[++nm] = "sleep_many|late_mean_us|mean lateness µs|cost|1"
    M[++nm] = "sleep_many|late_max_us|max lateness µs|cost|0"
    M[++nm] = "idle_memory|bytes_per_task|bytes per task|cost|1"
    M[++nm] = "idle_memory|spawn_ms|spawn loop ms|cost|0"
    M[++nm] = "http_hello|rps|req/s|rate|1"
    M[++nm] = "http_hello|p99_us|p99 latency µs|cost|1"
    M[++nm] = "http_hello|p50_us|p50 latency µs|cost|0"
    M[++nm] = "http_hello|cpu_ns_per_req|server CPU ns per request|cost|1"
    M[++nm] = "http_hello|wrk_cpu_pct|wrk's CPU, % of one core|info|0"
    nw = split("spawn_many spawn_many_remote yield_many ping_pong chained_spawn fib_spawn sleep_many idle_memory http_hello", W, " ")
}

{
    r = $1; w = $2; rt = $3; st = $4
    seen[w] = 1
    if (!((w, r) in haveround)) { haveround[w, r] = 1; nround[w]++; roundlist[w, nround[w]] = r }
    runs[w, rt]++
    if (st == "unsupported") { unsup[w, rt] = 1; next }
    if (st != "ok") {
        fail[w, rt]++
        why = st; sub(/^FAILED:?/, "", why)
        failwhy[w, rt] = failwhy[w, rt] (failwhy[w, rt] == "" ? "" : ", ") "round " r ": " why
        next
    }
    ok[w, rt]++
    if ($5 != "") { nrss[w, rt]++; rss[w, rt, nrss[w, rt]] = $5 }
    if ($6 != "" && $7 != "" && $6 > 50 && $6 > 0.3 * ncpu * $7 && !((w, r) in dround)) { dround[w, r] = 1; disturbed[w]++ }
    n = split($8, f, " ")
    for (i = 1; i <= n; i++) {
        eq = index(f[i], "=")
        if (eq) val[w, rt, r, substr(f[i], 1, eq - 1)] = substr(f[i], eq + 1)
    }
}

function isort(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
}
function fr(x) { return x >= 0.095 ? sprintf("%.2f", x) : sprintf("%.2g", x) }
function median(a, n) { return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function fmt(x,    ax) {
    ax = x < 0 ? -x : x
    if (ax >= 100) return sprintf("%.0f", x)
    if (ax >= 10) return sprintf("%.1f", x)
    if (ax >= 1) return sprintf("%.2f", x)
    return sprintf("%.3f", x)
}
# median of key k of runtime rt over its good rounds: a number, "FAILED",
# "n/a" (ran, but does not report k) or "—" (unsupported or not run)
function cell(w, rt, k,    i, r, n, a) {
    if (fail[w, rt]) return "FAILED"
    if (!ok[w, rt]) return "—"
    n = 0
    for (i = 1; i <= nround[w]; i++) {
        r = roundlist[w, i]
        if ((w, rt, r, k) in val && val[w, rt, r, k] != "") a[++n] = val[w, rt, r, k] + 0
    }
    if (!n) return "n/a"
    isort(a, n)
    return fmt(median(a, n))
}
# ratio of braid's cost to rt's, pair by pair within a round; sets RMED,
# RMIN, RMAX and returns the cell text
function ratio(w, rt, k, kind, b,    i, r, n, a, x, y) {
    RMED = RMIN = RMAX = ""
    if (kind == "info") return ""
    if (fail[w, b] || fail[w, rt]) { RMED = "FAILED"; return "FAILED" }
    n = 0
    for (i = 1; i <= nround[w]; i++) {
        r = roundlist[w, i]
        if (!((w, b, r, k) in val) || !((w, rt, r, k) in val)) continue
        x = val[w, b, r, k] + 0; y = val[w, rt, r, k] + 0
        if (kind == "rate") { if (x > 0) a[++n] = y / x }
        else if (y > 0) a[++n] = x / y
    }
    if (!n) { RMED = "—"; return "—" }
    isort(a, n)
    RMED = median(a, n); RMIN = a[1]; RMAX = a[n]
    if (n == 1) return "**" fr(RMED) "**"
    return "**" fr(RMED) "** (" fr(RMIN) "–" fr(RMAX) ")"
}
function chart(label, series, kind) {
    if (RMED == "FAILED" || RMED == "—") printf "%s\t%s\t%s\t\t\t%s\n", label, series, RMED, kind > svgdata
    else printf "%s\t%s\t%.4f\t%.4f\t%.4f\t%s\n", label, series, RMED, RMIN, RMAX, kind > svgdata
}

END {
    printf "" > svgdata
    print "Ratios are **braid's cost / the other runtime's cost**, computed pair by pair within a round (median, and min–max over the rounds): **< 1 means braid is better** in every row. A cost is a time per operation, a wall time, a latency or bytes per task; for the req/s rows the cost is the time per request, so the ratio there is the other's req/s / braid's req/s. \"FAILED\": a run's own check failed (non-zero exit), it printed no result, a wrong n= or timed out (see \"every run\"); \"—\": not implemented (`unsupported=1`) or not run; pthread runs only the workloads WORKLOADS.md asks of it, with its own N."
    print ""
    printf "| workload | metric (medians) | %s | %s | %s | %s | braid / %s | braid / %s | rounds |\n", lbl["braid"], lbl["tokio"], lbl["go"], lbl["pthread"], lbl["tokio"], lbl["go"]
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nm; i++) {
        split(M[i], d, "|"); w = d[1]; k = d[2]
        if (!(w in seen)) continue
        rt_t = ratio(w, "tokio", k, d[4], "braid"); if (d[5]) chart(w " " d[3], lbl["tokio"], d[4])
        rt_g = ratio(w, "go", k, d[4], "braid"); if (d[5]) chart(w " " d[3], lbl["go"], d[4])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %d%s |\n", w, d[3], cell(w, "braid", k), cell(w, "tokio", k),
            cell(w, "go", k), cell(w, "pthread", k), rt_t, rt_g, nround[w], disturbed[w] ? " (" disturbed[w] " disturbed)" : ""
    }
    if ("mini_redis" in seen) {
        w = "mini_redis"
        print ""
        print "mini_redis (`build/ex/mini_redis --workers 2`) against redis-server (`--save '' --appendonly no`), `redis-benchmark -t set,get -P 1 -c 50 -n 200000 -q`, alternately. The ratio follows the convention above: redis-server's req/s / mini_redis's req/s, so < 1 means mini_redis is faster (the target, at least 80 % of redis-server's rate, is a ratio ≤ 1.25)."
        print ""
        print "| mini_redis | mini_redis (braid) | redis-server | mini_redis / redis-server | rounds |"
        print "|---|---:|---:|---:|---:|"
        split("set_rps|SET req/s;get_rps|GET req/s", mk, ";")
        for (j = 1; j <= 2; j++) {
            split(mk[j], d, "|")
            t = ratio(w, "redis", d[1], "rate", "braid"); chart("mini_redis " d[2], "redis-server", "rate")
            printf "| %s | %s | %s | %s | %d |\n", d[2], cell(w, "braid", d[1]), cell(w, "redis", d[1]), t, nround[w]
        }
        printf "| peak RSS kB (VmHWM at the end) | %s | %s | | |\n", lastrss(w, "braid"), lastrss(w, "redis")
    }
    print ""
    print "Peak RSS in kB, median over the good runs (the process's own VmHWM at exit; ru_maxrss where it does not report one):"
    print ""
    printf "| workload | %s | %s | %s | %s |\n", lbl["braid"], lbl["tokio"], lbl["go"], lbl["pthread"]
    print "|---|---:|---:|---:|---:|"
    for (i = 1; i <= nw; i++) {
        w = W[i]
        if (!(w in seen)) continue
        line = "| " w
        for (j = 1; j <= nrt; j++) line = line " | " rsscell(w, RT[j])
        print line " |"
    }
    nf = 0
    for (i = 1; i <= nw + 1; i++) {
        w = (i <= nw) ? W[i] : "mini_redis"
        for (j = 1; j <= nrt + 1; j++) {
            rt = (j <= nrt) ? RT[j] : "redis"
            if (fail[w, rt]) {
                if (!nf++) { print ""; print "Failures:"; print "" }
                printf "- %s, %s: %s\n", w, (rt in lbl) ? lbl[rt] : "redis-server", failwhy[w, rt]
            }
        }
    }
}
function rsscell(w, rt,    n, a, i) {
    if (fail[w, rt]) return "FAILED"
    n = nrss[w, rt]
    if (!n) return "—"
    for (i = 1; i <= n; i++) a[i] = rss[w, rt, i] + 0
    isort(a, n)
    return sprintf("%.0f", median(a, n))
}
function lastrss(w, rt) { return nrss[w, rt] ? rss[w, rt, nrss[w, rt]] : "—" }
