# bench/compare/svg.awk: the bar chart of bench/compare/run.sh's ratios, as
# a self-contained SVG on stdout.  Needs only a POSIX awk (mawk does).
#
#   awk -F'\t' -v title='...' -f bench/compare/svg.awk build/compare/ratios.tsv > latest.svg
#
# Input (written by table.awk), one line per bar:
#   label  series  median  min  max  kind
# median is a number, "FAILED" or "—".  Horizontal bars on a log2 axis grow
# from the line at 1.0 to the median ratio (braid's cost / the other's, so
# left of the line = braid better); a whisker spans min..max over the rounds.
# The axis spans at most 2^-CLAMP..2^CLAMP (-v CLAMP=4 by default: 1/16..16);
# bars beyond it stop at the edge and carry their value inside.

BEGIN { FS = "\t"; n = 0; lo = 1; hi = 1 }
{
    n++
    L[n] = $1; S[n] = $2; MED[n] = $3; MIN[n] = $4; MAX[n] = $5
    if (MED[n] + 0 > 0 && MED[n] !~ /[A-Z—]/) {
        if (MIN[n] + 0 > 0 && MIN[n] < lo) lo = MIN[n] + 0
        if (MAX[n] + 0 > hi) hi = MAX[n] + 0
    }
}
function lg2(x) { return log(x) / log(2) }
# x of ratio v, clamped to the axis (ratios beyond 2^+-CLAMP are drawn to
# the edge, marked and labelled with their value)
function xof(v) {
    if (lg2(v) < elo) return X0
    if (lg2(v) > ehi) return X1
    return X0 + (lg2(v) - elo) / (ehi - elo) * (X1 - X0)
}
function out(v) { return lg2(v) < elo || lg2(v) > ehi }
function fr(v) { return v >= 0.095 ? sprintf("%.2f", v) : sprintf("%.2g", v) }
function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
function colour(s) {
    if (s ~ /^Tokio/) return "#d9822b"
    if (s ~ /^Go/) return "#2b7bb9"
    return "#5a9e3a"
}
function tick(v) { return v >= 1 ? sprintf("%g", v) : sprintf("1/%g", 1 / v) }
END {
    elo = int(lg2(lo / 1.3)); if (lg2(lo / 1.3) < elo) elo--
    ehi = int(lg2(hi * 1.3)); if (lg2(hi * 1.3) > ehi) ehi++
    if (elo > -1) elo = -1
    if (ehi < 1) ehi = 1
    if (!CLAMP) CLAMP = 4
    if (elo < -CLAMP) elo = -CLAMP
    if (ehi > CLAMP) ehi = CLAMP
    W = 1000; X0 = 300; X1 = W - 170
    BH = 13; GAP = 3; GGAP = 12; TOP = 96
    # rows: a group per label
    y = TOP; ng = 0
    for (i = 1; i <= n; i++) {
        if (i == 1 || L[i] != L[i - 1]) { if (i > 1) y += GGAP; ng++; GY[ng] = y; GL[ng] = L[i] }
        Y[i] = y; y += BH + GAP
    }
    H = y + 50
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H
    printf "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H
    printf "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", 10, esc(title)
    printf "<text x=\"%d\" y=\"40\" fill=\"#444\">Bars: median of braid's cost / the other runtime's, pair by pair within a round; whiskers: min..max. Log scale.</text>\n", 10
    printf "<text x=\"%d\" y=\"56\" fill=\"#444\">Left of the 1.0 line braid is better (less time, latency or memory; for req/s rows: more requests per second).</text>\n", 10
    # legend
    lx = 10; nleg = 0
    for (i = 1; i <= n; i++) if (!(S[i] in inleg)) {
        inleg[S[i]] = 1
        leg = (S[i] ~ /^redis/ ? "mini_redis (braid) / " : "braid / ") S[i]
        printf "<rect x=\"%d\" y=\"64\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"75\">%s</text>\n", lx, colour(S[i]), lx + 16, esc(leg)
        lx += 16 + 7 * length(leg) + 40
    }
    # grid and axis
    for (e = elo; e <= ehi; e++) {
        v = 2 ^ e; x = xof(v)
        printf "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"%s\"/>\n", x, TOP - 8, x, H - 40, e == 0 ? "#000" : "#ddd", e == 0 ? "1.5" : "1"
        printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">%s</text>\n", x, H - 26, tick(v)
    }
    printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"end\" fill=\"#2a7a2a\">&#8592; braid better</text>\n", xof(1) - 6, H - 10
    printf "<text x=\"%.1f\" y=\"%d\" fill=\"#b03030\">braid worse &#8594;</text>\n", xof(1) + 6, H - 10
    for (g = 1; g <= ng; g++) {
        lab = GL[g]; sub(/ \(.*\)$/, "", lab)
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n", X0 - 8, GY[g] + BH, esc(lab)
    }
    for (i = 1; i <= n; i++) {
        yc = Y[i] + BH / 2
        if (MED[i] == "FAILED") {
            printf "<text x=\"%.1f\" y=\"%.1f\" fill=\"#c00000\" font-weight=\"bold\">FAILED (vs %s)</text>\n", xof(1) + 6, yc + 4, esc(S[i])
            continue
        }
        if (!(MED[i] + 0 > 0)) {
            printf "<text x=\"%.1f\" y=\"%.1f\" fill=\"#999\">— (%s: not implemented)</text>\n", xof(1) + 6, yc + 4, esc(S[i])
            continue
        }
        xm = xof(MED[i]); x1 = xof(1)
        printf "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%s, braid / %s: %.3f (min %.3f, max %.3f)</title></rect>\n", xm < x1 ? xm : x1, Y[i], (xm < x1 ? x1 - xm : xm - x1) + 0.5, BH, colour(S[i]), esc(L[i]), esc(S[i]), MED[i], MIN[i], MAX[i]
        xa = xof(MIN[i]); xb = xof(MAX[i])
        printf "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" stroke=\"#222\" fill=\"none\"/>\n", xa, yc, xb, xa, yc - 4, yc + 4, xb, yc - 4, yc + 4
        if (out(MED[i])) {
            # off the axis: a white label inside the bar, at the clipped end
            if (MED[i] < 1) printf "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"white\" font-weight=\"bold\">&#9664; %s</text>\n", X0 + 3, yc + 4, fr(MED[i])
            else printf "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\" fill=\"white\" font-weight=\"bold\">%s &#9654;</text>\n", X1 - 3, yc + 4, fr(MED[i])
        } else if (MED[i] < 1) printf "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n", (xa < xm ? xa : xm) - 4, yc + 4, fr(MED[i])
        else printf "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n", (xb > xm ? xb : xm) + 4, yc + 4, fr(MED[i])
    }
    print "</svg>"
}
