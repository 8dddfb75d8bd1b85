# Generate section-3 man pages from include/braid.h:
#
#   awk -v out=DIR -v version=X.Y.Z -f tools/mangen.awk include/braid.h include/braid.h
#
# (the header twice: the first pass learns every public function's name, so
# that SEE ALSO can link only to pages that exist).  Writes DIR/NAME.3 for
# every BRAID_API function and DIR/braid.3, the overview: the header's
# opening comment and every function by section.
#
# The header's layout is the input format: a comment block directly above a
# declaration documents it; declarations that follow it line after line (the
# _until forms, try forms) share it.  Each page shows the whole group's
# prototypes, the comment as DESCRIPTION, and as NOTES the introduction of
# the section ("/* ----- Title ... */") and subsection ("/* ---- title ---")
# the function is declared in.  An undocumented function still gets a page
# (with no description): tests/test_docs.c is what rejects it, so that a
# merge never breaks the build over documentation.

function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }

# Comment text with the "/*", " * " and "*/" decoration removed, one line
# per source line, relative indentation kept.
function strip_comment_line(s) {
    sub(/^[ \t]*\/\*+ ?/, "", s)
    sub(/^[ \t]*\* ?/, "", s)
    sub(/[ \t]*\*\/[ \t]*$/, "", s)
    return s
}

function roff_escape(s) {
    gsub(/\\/, "\\e", s)
    gsub(/-/, "\\-", s)
    if (s ~ /^[.']/)
        s = "\\&" s
    return s
}

# Comment text (lines joined by "\n") as roff: blank lines separate
# paragraphs, "- " starts a bullet, lines indented further are kept as they
# are (tables).
function to_roff(text,    n, lines, i, l, out, pre, bullet) {
    n = split(text, lines, "\n")
    out = ""; pre = 0; bullet = 0
    for (i = 1; i <= n; i++) {
        l = lines[i]
        if (trim(l) == "") {
            if (pre) { out = out ".fi\n"; pre = 0 }
            if (out != "") out = out ".PP\n"
            bullet = 0
            continue
        }
        if (l ~ /^ *- /) {
            if (pre) { out = out ".fi\n"; pre = 0 }
            sub(/^ *- /, "", l)
            out = out ".IP \\(bu 2\n" roff_escape(l) "\n"
            bullet = 1
            continue
        }
        if (l ~ /^  / && !bullet) {
            if (!pre) { out = out ".nf\n"; pre = 1 }
            out = out roff_escape(l) "\n"
            continue
        }
        if (pre) { out = out ".fi\n"; pre = 0 }
        if (bullet && l !~ /^ /) { out = out ".PP\n"; bullet = 0 }
        out = out roff_escape(trim(l)) "\n"
    }
    if (pre) out = out ".fi\n"
    return out
}

# The first sentence of a comment, for the NAME line.
function summary(text,    s, k) {
    s = text
    gsub(/\n/, " ", s)
    gsub(/[ \t]+/, " ", s)
    s = trim(s)
    k = match(s, /\. /)
    if (k > 0) s = substr(s, 1, k - 1)
    sub(/\.$/, "", s)
    return s
}

# A declaration as plain C: attribute macros dropped, whitespace folded.
function plain_proto(d) {
    gsub(/BRAID_API|BRAID_NORETURN|BRAID_PRINTF\([^)]*\)/, "", d)
    gsub(/[ \t]+/, " ", d)
    d = trim(d)
    sub(/ ;$/, ";", d)
    sub(/\( /, "(", d)
    return d
}

function proto_name(d,    s) {
    s = d
    gsub(/BRAID_PRINTF\([^)]*\)/, "", s)
    if (!match(s, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/))
        return ""
    s = substr(s, RSTART, RLENGTH)
    sub(/[ \t]*\($/, "", s)
    return s
}

function flush_group(    i, j, name, f, seen, r, t, s, text) {
    if (ngroup == 0)
        return
    text = group_comment
    # SEE ALSO: the group's other members, then the public functions the
    # comment names, in order.
    delete seen
    see = ""
    for (i = 1; i <= ngroup; i++) seen[group_name[i]] = 1
    t = text
    while (match(t, /braid_[A-Za-z0-9_]+\(\)/)) {
        r = substr(t, RSTART, RLENGTH - 2)
        t = substr(t, RSTART + RLENGTH)
        if ((r in public) && !(r in seen)) { seen[r] = 1; refs[++nrefs] = r }
    }
    for (i = 1; i <= ngroup; i++) {
        name = group_name[i]
        f = out "/" name ".3"
        print ".\\\" Generated from include/braid.h by tools/mangen.awk: edit the header." > f
        printf ".TH %s 3 \"\" \"braid %s\" \"braid manual\"\n", toupper(name), version > f
        print ".SH NAME" > f
        printf "%s", group_name[1] > f
        for (j = 2; j <= ngroup; j++) printf ", %s", group_name[j] > f
        s = summary(text)
        printf " \\- %s\n", roff_escape(s != "" ? s : "undocumented") > f
        print ".SH SYNOPSIS" > f
        print ".nf" > f
        print ".B #include <braid.h>" > f
        print ".PP" > f
        for (j = 1; j <= ngroup; j++) print ".B \"" group_proto[j] "\"" > f
        print ".fi" > f
        print ".PP" > f
        print "Link with \\fI\\-lbraid \\-lpthread\\fP (or \\fIpkg\\-config \\-\\-libs braid\\fP)." > f
        print ".SH DESCRIPTION" > f
        printf "%s", to_roff(text) > f
        if (section_text != "" || subsection_text != "") {
            print ".SH NOTES" > f
            if (section_text != "")
                printf "From the section \\(lq%s\\(rq of the header:\n.PP\n%s", roff_escape(section_title), to_roff(section_text) > f
            if (subsection_text != "")
                printf ".PP\nFrom the part \\(lq%s\\(rq:\n.PP\n%s", roff_escape(subsection_title), to_roff(subsection_text) > f
        }
        print ".SH SEE ALSO" > f
        for (j = 1; j <= ngroup; j++)
            if (j != i) printf ".BR %s (3),\n", group_name[j] > f
        for (j = 1; j <= nrefs; j++)
            if (refs[j] != name) printf ".BR %s (3),\n", refs[j] > f
        print ".BR braid (3)" > f
        close(f)
        section_names[section_title] = section_names[section_title] " " name
    }
    nrefs = 0
    ngroup = 0
}

function write_overview(    f, i, n, names, j) {
    f = out "/braid.3"
    print ".\\\" Generated from include/braid.h by tools/mangen.awk: edit the header." > f
    printf ".TH BRAID 3 \"\" \"braid %s\" \"braid manual\"\n", version > f
    print ".SH NAME" > f
    print "braid \\- Tokio\\-style tasks for C" > f
    print ".SH SYNOPSIS" > f
    print ".nf" > f
    print ".B #include <braid.h>" > f
    print ".fi" > f
    print ".PP" > f
    print "Link with \\fI\\-lbraid \\-lpthread\\fP (or \\fIpkg\\-config \\-\\-libs braid\\fP, or CMake's \\fBfind_package(braid)\\fP and the target \\fBbraid::braid\\fP)." > f
    print ".SH DESCRIPTION" > f
    printf "%s", to_roff(overview) > f
    print ".SH FUNCTIONS" > f
    for (i = 1; i <= nsections; i++) {
        n = split(section_names[section_order[i]], names, " ")
        if (n == 0) continue
        printf ".SS %s\n", roff_escape(section_order[i]) > f
        for (j = 1; j <= n; j++)
            printf ".BR %s (3)%s\n", names[j], j < n ? "," : "" > f
    }
    close(f)
}

# A finished comment block: a section or subsection introduction, the
# header's opening comment, or (the common case) a declaration's comment.
function end_comment(    n, lines, i, title, body) {
    n = split(comment, lines, "\n")
    if (comment_first ~ /^\/\* --------+[ \t]*$/) {           # /* ------ \n * Title
        flush_group()
        title = trim(lines[2]); body = ""
        for (i = 3; i <= n; i++)
            if (lines[i] !~ /^ *--------+ *$/)
                body = body (body == "" && trim(lines[i]) == "" ? "" : lines[i] "\n")
        section_title = title; section_text = body
        subsection_title = ""; subsection_text = ""
        section_order[++nsections] = title
        pending = ""
        return
    }
    if (comment_first ~ /^\/\* ---- /) {                   # /* ---- title ----
        flush_group()
        title = comment_first
        sub(/^\/\* -+ /, "", title); sub(/ -+.*$/, "", title)
        body = ""
        for (i = 2; i <= n; i++) body = body lines[i] "\n"
        subsection_title = title; subsection_text = body
        pending = ""
        return
    }
    if (overview == "" && nsections == 0) {
        overview = comment
        return
    }
    pending = comment
    pending_end = FNR
}

FNR == 1 { pass++ }

pass == 1 && /^BRAID_API/ { in_decl1 = 1; decl1 = "" }
pass == 1 && in_decl1 {
    decl1 = decl1 " " $0
    if ($0 ~ /;/) { public[proto_name(decl1)] = 1; in_decl1 = 0 }
    next
}
pass == 1 { next }

in_comment {
    comment = comment strip_comment_line($0) "\n"
    if ($0 ~ /\*\//) { in_comment = 0; sub(/\n$/, "", comment); end_comment() }
    next
}
/^[ \t]*\/\*/ {
    comment_first = $0
    comment = strip_comment_line($0)
    comment = comment == "" ? "" : comment "\n"
    if ($0 ~ /\*\/[ \t]*$/) { sub(/\n$/, "", comment); end_comment() }
    else in_comment = 1
    next
}
/^BRAID_API/ { in_decl = 1; decl = ""; decl_start = FNR }
in_decl {
    decl = decl " " $0
    if ($0 !~ /;/) next
    in_decl = 0
    if (decl_start == pending_end + 1) {
        flush_group()
        group_comment = pending
    } else if (!(ngroup > 0 && decl_start == last_decl_end + 1)) {
        flush_group()
        group_comment = ""
    }
    group_name[++ngroup] = proto_name(decl)
    group_proto[ngroup] = plain_proto(decl)
    last_decl_end = FNR
    next
}

END {
    flush_group()
    write_overview()
}
