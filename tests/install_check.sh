#!/usr/bin/env bash
# What make install delivers, checked the way a user of braid meets it:
#
#   tests/install_check.sh BUILD_DIR CHECK
#
# installs BUILD_DIR's libraries with make install PREFIX=<fresh temporary
# directory> and runs CHECK, one of:
#   pkgconfig-shared, pkgconfig-static   build tests/install/hello.c with
#                                        pkg-config's flags, run it
#   cmake-shared, cmake-static           the same through find_package(braid)
#                                        (tests/install/CMakeLists.txt)
#   exports       libbraid.so's SONAME, its links, and its dynamic symbols:
#                 exactly the BRAID_API functions of include/braid.h
#   man           man braid_spawn (and every function's page) through MANPATH
# Exits 0 (pass), 77 (a tool it needs is not installed, unless
# BRAID_REQUIRE_TOOLS=1) or 1.  Run from the
# source tree (tests/test_install.c does, for the test runner).
set -euo pipefail
B=$1 check=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
CC=${CC:-cc}

fail() { echo "FAIL: $*" >&2; exit 1; }
# A missing tool skips the check, unless BRAID_REQUIRE_TOOLS=1 says the
# machine must have them all (as CI's does).
need() {
    command -v "$1" >/dev/null && return
    [ "${BRAID_REQUIRE_TOOLS:-}" = 1 ] && fail "$1 is not installed (BRAID_REQUIRE_TOOLS=1)"
    echo "skipped: $1 is not installed"
    exit 77
}

# Concurrent checks share BUILD_DIR: one make at a time (nothing should
# need rebuilding, but if something does, it is built once).
install_braid() {
    unset MAKEFLAGS MFLAGS MAKELEVEL
    if ! flock "$B/.install.lock" make -s --no-print-directory B="$B" PREFIX="$prefix" install \
        >"$tmp/install.log" 2>&1; then
        cat "$tmp/install.log" >&2
        fail "make install failed"
    fi
}

# The program runs, and is linked against libbraid.so.0 (shared) or holds
# braid itself (static).
run_hello() {
    local exe=$1 kind=$2 needed
    needed=$(readelf -d "$exe" | grep -c 'NEEDED.*libbraid' || true)
    if [ "$kind" = shared ]; then
        [ "$needed" = 1 ] || fail "$exe does not need libbraid.so"
        readelf -d "$exe" | grep -q 'NEEDED.*\[libbraid\.so\.0\]' || fail "$exe needs no libbraid.so.0"
    else
        [ "$needed" = 0 ] || fail "$exe needs libbraid.so: not linked statically"
    fi
    LD_LIBRARY_PATH=$prefix/lib "$exe" >"$tmp/out" || fail "$exe failed"
    grep -q "7 squared is 49" "$tmp/out" || fail "unexpected output: $(cat "$tmp/out")"
    cat "$tmp/out"
}

src=tests/install/hello.c
case $check in
pkgconfig-shared|pkgconfig-static)
    need pkg-config
    install_braid
    export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
    [ "$(pkg-config --modversion braid)" = "$(sed -n 's/^#define BRAID_VERSION_STRING "\(.*\)"$/\1/p' include/braid.h)" ] ||
        fail "pkg-config --modversion braid: $(pkg-config --modversion braid)"
    if [ "$check" = pkgconfig-shared ]; then
        # shellcheck disable=SC2046
        $CC -std=c11 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags braid) "$src" \
            -o "$tmp/hello" $(pkg-config --libs braid)
        run_hello "$tmp/hello" shared
    else
        # shellcheck disable=SC2046
        $CC -std=c11 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags braid) "$src" \
            -o "$tmp/hello" -Wl,-Bstatic $(pkg-config --static --libs braid) -Wl,-Bdynamic
        run_hello "$tmp/hello" static
    fi
    ;;
cmake-shared|cmake-static)
    need cmake
    install_braid
    static=OFF
    [ "$check" = cmake-static ] && static=ON
    if ! cmake -S tests/install -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" \
        -DBRAID_USE_STATIC_LIBS=$static -DCMAKE_C_COMPILER="$CC" >"$tmp/cmake.log" 2>&1 ||
       ! cmake --build "$tmp/build" >>"$tmp/cmake.log" 2>&1; then
        cat "$tmp/cmake.log" >&2
        fail "the CMake project did not build"
    fi
    run_hello "$tmp/build/hello" "${check#cmake-}"
    ;;
exports)
    need nm
    install_braid
    lib=$prefix/lib
    [ "$(readlink "$lib/libbraid.so")" = "$(readlink "$lib/libbraid.so.0")" ] &&
        [ -f "$lib/$(readlink "$lib/libbraid.so.0")" ] || fail "libbraid.so links"
    readelf -d "$lib/libbraid.so" | grep -q 'SONAME.*\[libbraid\.so\.0\]' || fail "SONAME"
    # Defined dynamic symbols, less the version node (BRAID_0, an absolute
    # symbol of the version script): the __start_/__stop_braid_text
    # symbols the linker makes are hidden (src/panic.c) and must not show.
    nm -D --defined-only "$lib/libbraid.so" | awk '$2 != "A" { print $3 }' | sed 's/@.*//' |
        sort >"$tmp/exported"
    awk '/^BRAID_API/,/;/' include/braid.h | tr '\n' ' ' | tr ';' '\n' |
        sed -e 's/BRAID_PRINTF([^)]*)//' -e 's/(.*//' | awk 'NF { print $NF }' | tr -d '*' |
        sort >"$tmp/declared"
    [ -s "$tmp/declared" ] || fail "no declaration found in include/braid.h"
    if ! diff "$tmp/declared" "$tmp/exported" >"$tmp/diff"; then
        echo "< declared in include/braid.h only, > exported by libbraid.so only:" >&2
        cat "$tmp/diff" >&2
        fail "libbraid.so exports something else than the public API"
    fi
    echo "$(wc -l <"$tmp/exported") symbols exported, all declared BRAID_API"
    ;;
man)
    install_braid
    n=0
    for f in $(awk '/^BRAID_API/,/;/' include/braid.h | tr '\n' ' ' | tr ';' '\n' |
               sed -e 's/BRAID_PRINTF([^)]*)//' -e 's/(.*//' | awk 'NF { print $NF }' | tr -d '*'); do
        [ -s "$prefix/share/man/man3/$f.3" ] || fail "no man page for $f installed"
        n=$((n + 1))
    done
    need man
    page=$(MANPATH=$prefix/share/man man -w braid_spawn)
    [ "$page" = "$prefix/share/man/man3/braid_spawn.3" ] || fail "man -w braid_spawn: $page"
    MANPATH=$prefix/share/man MANWIDTH=80 man braid_spawn 2>/dev/null >"$tmp/page"
    grep -q "int braid_spawn(braid_task \*out, braid_fn fn, void \*arg);" "$tmp/page" ||
        fail "man braid_spawn shows no prototype"
    grep -q "Task only" "$tmp/page" || fail "man braid_spawn shows no description"
    echo "$n man pages installed; man braid_spawn works"
    ;;
*)
    fail "unknown check $check"
    ;;
esac
