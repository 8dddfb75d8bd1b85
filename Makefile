# braid: build, test, install.
#
#   make                  libbraid.a, libbraid.so, libbraid-tsan.a, braid.pc,
#                         tools/braid-console (the live console)
#   make test             unit and integration tests: normal, ASan+UBSan, TSan,
#                         Valgrind; ends with "N passed, N failed"
#   make test-aarch64     the normal tests cross-built for aarch64, under qemu-user
#   make demo             build and run every example but the two servers
#                         (EXAMPLES: all but http_hello and mini_redis)
#   make soak             the randomized tests for longer (RELIABILITY.md)
#   make fuzz             libFuzzer on the scenario generator and mini_redis's
#                         parser, FUZZ_SECONDS each (clang; RELIABILITY.md)
#   make bench            build bench/braid-bench (run it: bench/README)
#   make compare          braid vs Tokio, Go and pthreads side by side, and
#                         mini_redis vs redis-server (bench/compare/README.md)
#   make test-builds      gcc and clang at -O0, -O2 (clang) and -O3 -flto
#                         (-Werror), each through the normal tests
#   make test-portable    the ucontext context switch through the normal and ASan tests
#   make lint             cppcheck and clang-tidy, clean
#   make man              man pages from include/braid.h into build/man/man3
#   make install PREFIX=/usr/local   headers, libraries, braid.pc, CMake package,
#                         man pages, the gdb extension (gdb/braid.py)
#
# WERROR=1 makes every warning an error, in the library, the tests, the
# examples and the console (CI builds so; test-builds and test-aarch64
# always do).
#
# Objects are compiled once with -fPIC and serve both libraries.  After
# compiling, each object's code sections are renamed to "braid_text", so
# that the linker gathers all of libbraid's code into one section bracketed
# by __start_braid_text/__stop_braid_text: the fault handler uses that range
# to refuse converting faults raised inside the runtime itself.

CC       ?= gcc
OBJCOPY  ?= objcopy
AR       ?= ar
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
INCDIR   ?= $(PREFIX)/include
DATADIR  ?= $(PREFIX)/share
MANDIR   ?= $(DATADIR)/man

# The version is the header's: BRAID_VERSION_MAJOR, _MINOR and _PATCH, which
# BRAID_VERSION_STRING (what braid_version() returns) must agree with.
version_part = $(shell sed -n 's/^.define BRAID_VERSION_$(1)  *\([0-9][0-9]*\)$$/\1/p' include/braid.h)
VERSION  := $(call version_part,MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
ifneq ($(VERSION),$(shell sed -n 's/^.define BRAID_VERSION_STRING  *"\(.*\)"$$/\1/p' include/braid.h))
$(error include/braid.h: BRAID_VERSION_STRING is not BRAID_VERSION_MAJOR.MINOR.PATCH ($(VERSION)))
endif
SOMAJOR  := 0

WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
BASEFLAGS:= -std=c11 -g -fPIC -fvisibility=hidden -fno-omit-frame-pointer -D_GNU_SOURCE \
            -Iinclude -iquote src $(WARN)
OPT      ?= -O2
WERR     := $(if $(filter 1,$(WERROR)),-Werror)
CFLAGS_LIB := $(BASEFLAGS) $(OPT) $(WERR) $(EXTRA_CFLAGS)

SAN_ASAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_TSAN := -fsanitize=thread

# src/unity.c includes every other src/*.c except fiber.c (see its comment).
LIB_C    := src/unity.c src/fiber.c src/arch/ctx.c
UNITY_PARTS := $(filter-out src/unity.c src/fiber.c,$(wildcard src/*.c))
ARCH     := $(shell $(CC) -dumpmachine | cut -d- -f1)
# PORTABLE=1 builds the ucontext context switch instead of the assembly.
ifeq ($(PORTABLE),1)
LIB_S    :=
CFLAGS_LIB += -DBRAID_PORTABLE_CTX
else ifeq ($(ARCH),x86_64)
LIB_S    := src/arch/ctx_x86_64_sysv_elf_gas.S
else ifeq ($(ARCH),aarch64)
LIB_S    := src/arch/ctx_aarch64_aapcs_elf_gas.S
else
LIB_S    :=
CFLAGS_LIB += -DBRAID_PORTABLE_CTX
endif
HDRS     := include/braid.h $(wildcard src/*.h) src/arch/ctx.h

B        := build
OBJS      = $(patsubst src/%.c,$(B)/$(1)/%.o,$(LIB_C)) $(patsubst src/%.S,$(B)/$(1)/%.o,$(LIB_S))

RENAME   := --rename-section .text=braid_text,alloc,load,readonly,code,contents \
            --rename-section .text.unlikely=braid_text,alloc,load,readonly,code,contents \
            --rename-section .text.hot=braid_text,alloc,load,readonly,code,contents \
            --rename-section .text.startup=braid_text,alloc,load,readonly,code,contents \
            --rename-section .text.exit=braid_text,alloc,load,readonly,code,contents

# An LTO object holds no code yet (objcopy refuses it): with -flto the code
# stays in .text, and isolate_faults converts no fault (src/panic.c).
RENAME_CMD = $(if $(findstring -flto,$(CFLAGS_LIB)),,$(OBJCOPY) $(RENAME) $@)
# What links an LTO library passes -flto too: clang hands its linker the
# LLVM plugin only then (gcc always hands it its own); the programs are
# then compiled for LTO as well, as a program built with -flto would be.
LTO_LINK := $(filter -flto%,$(OPT))

.PHONY: test-migrate all test test-aarch64 demo bench install clean check-tools examples man

all: $(B)/libbraid.a $(B)/libbraid.so $(B)/libbraid-tsan.a $(B)/braid.pc $(B)/tools/braid-console

# ---- library objects, per flavour ------------------------------------------------
# $(1): flavour directory, $(2): extra flags (sanitizers); fiber.c never gets
# sanitizer instrumentation (see src/fiber.h).
define flavour
$(B)/$(1)/%.o: src/%.c $(HDRS) | $(B)/$(1)/arch
	$$(CC) $$(CFLAGS_LIB) $(2) $$(if $$(filter src/fiber.c,$$<),-fno-sanitize=all) -c $$< -o $$@
	$$(RENAME_CMD)

$(B)/$(1)/unity.o: $(UNITY_PARTS)

$(B)/$(1)/%.o: src/%.S | $(B)/$(1)/arch
	$$(CC) $$(CFLAGS_LIB) -c $$< -o $$@
	$$(RENAME_CMD)

$(B)/$(1)/arch:
	mkdir -p $$@
endef

$(eval $(call flavour,obj,))
$(eval $(call flavour,asan,$(SAN_ASAN)))
$(eval $(call flavour,tsan,$(SAN_TSAN)))
# Fault injection (tests/test_faultinj.c): ASan+UBSan, so that LSan sees
# what a failed allocation, mapping or thread leaks.
$(eval $(call flavour,faultinj,$(SAN_ASAN) -DBRAID_FAULT_INJECTION))

$(B)/libbraid.a: $(call OBJS,obj)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/libbraid.so: $(call OBJS,obj) src/braid.map
	$(CC) $(LTO_LINK) -shared -Wl,-soname,libbraid.so.$(SOMAJOR) -Wl,--version-script,src/braid.map \
	    -o $(B)/libbraid.so.$(VERSION) $(call OBJS,obj) -lpthread
	ln -sf libbraid.so.$(VERSION) $(B)/libbraid.so.$(SOMAJOR)
	ln -sf libbraid.so.$(VERSION) $@

$(B)/libbraid-tsan.a: $(call OBJS,tsan)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/libbraid-asan.a: $(call OBJS,asan)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/libbraid-faultinj.a: $(call OBJS,faultinj)
	rm -f $@ && $(AR) rcs $@ $^

PC_SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCDIR@|$(INCDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' -e 's|@SOMAJOR@|$(SOMAJOR)|g' \
	    -e 's|@VMAJOR@|$(word 1,$(subst ., ,$(VERSION)))|g' -e 's|@VMINOR@|$(word 2,$(subst ., ,$(VERSION)))|g'

$(B)/braid.pc: braid.pc.in Makefile
	$(PC_SUBST) $< > $@

# ---- tests -------------------------------------------------------------------------
# test_faultinj.c needs the fault-injection library: it has its own
# configuration, faultinj (ASan+UBSan), and only that one.
# The documentation, build and packaging tests check files, the documented
# build command and the install, not code: the normal configuration only
# (not asan, tsan, aarch64, portable).
TOOL_TESTS := tests/test_docs.c tests/test_build.c tests/test_install.c
TEST_SRC  := $(filter-out tests/test_faultinj.c $(TOOL_TESTS),$(wildcard tests/test_*.c))
TEST_HDR  := tests/test.h tests/scenario.h fuzz/resp_check.h examples/mini_redis.c
EX_SRC    := $(wildcard examples/*.c)
TFLAGS    := -std=c11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -Iinclude -Wall -Wextra \
             -Wpedantic $(WERR)
# Tests may peek at internals (white-box tests of the wheel, the queues).
TFLAGS_WB := $(TFLAGS) -iquote src
# The examples as the guide builds them (docs/guide/README.md: the
# compiler's own C dialect, no -D_GNU_SOURCE: each says what it needs).
EXFLAGS   := -g -O1 -fno-omit-frame-pointer -Iinclude -Wall -Wextra -Wpedantic $(WERR)

# $(1): config, $(2): compile flags, $(3): library file, $(4): how to link it
define testcfg
$(B)/t-$(1)/%: tests/%.c $(TEST_HDR) $(3) | $(B)/t-$(1)
	$$(CC) $$(TFLAGS_WB) $$(LTO_LINK) $(2) $$< $(4) -o $$@ -lpthread

$(B)/t-$(1)/ex_%: examples/%.c $(3) | $(B)/t-$(1)
	$$(CC) $$(EXFLAGS) $$(LTO_LINK) $(2) $$< $(4) -o $$@ -lpthread

$(B)/t-$(1):
	mkdir -p $$@

TESTS_$(1) := $(patsubst tests/%.c,$(B)/t-$(1)/%,$(5)) \
              $(patsubst examples/%.c,$(B)/t-$(1)/ex_%,$(EX_SRC))
endef

# The plain-library-under-ASan and shared-library configurations check
# linkage and sanitizer detection, so they run a subset (no white-box tests:
# the shared library exports only the public API).
TEST_SUBSET := tests/test_basic.c tests/test_examples.c tests/test_panic.c

# Tests that run an example's binary (built next to them) as a server.
# tools/braid-console: the live console's client (plain C, no libbraid).
$(B)/tools/braid-console: tools/braid-console.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -g -D_GNU_SOURCE $(WARN) $(WERR) $< -o $@

# test_console runs it (found as ../tools/braid-console from the test),
# watching examples/console.c.
$(foreach c,normal asan tsan,$(eval $(B)/t-$(c)/test_console: $(B)/tools/braid-console \
    $(B)/t-$(c)/ex_console))

$(foreach c,normal asan tsan,$(foreach e,mini_redis http_hello,\
    $(eval $(B)/t-$(c)/test_$(e): $(B)/t-$(c)/ex_$(e))))

# tests/test_guide.c checks docs/guide/ against examples/ in this source
# tree, and runs the examples whose output the guide shows.
$(B)/%/test_guide: TFLAGS_WB += -DBRAID_SOURCE_DIR='"$(CURDIR)"'
$(foreach c,normal asan tsan,\
    $(eval $(B)/t-$(c)/test_guide: $(patsubst examples/%.c,$(B)/t-$(c)/ex_%,$(EX_SRC))))

$(eval $(call testcfg,normal,,$(B)/libbraid.a,$(B)/libbraid.a,$(TEST_SRC) $(TOOL_TESTS)))
# ASan+UBSan: the library instrumented too, to catch braid's own bugs ...
$(eval $(call testcfg,asan,$(SAN_ASAN),$(B)/libbraid-asan.a,$(B)/libbraid-asan.a,$(TEST_SRC)))
# ... and the ordinary library inside an ASan program, which must be clean
# on its own (sanitizers are detected at run time).
$(eval $(call testcfg,asanplain,-fsanitize=address,$(B)/libbraid.a,$(B)/libbraid.a,$(TEST_SUBSET)))
$(eval $(call testcfg,tsan,$(SAN_TSAN),$(B)/libbraid-tsan.a,$(B)/libbraid-tsan.a,$(TEST_SRC)))
$(eval $(call testcfg,faultinj,$(SAN_ASAN) -DBRAID_FAULT_INJECTION,$(B)/libbraid-faultinj.a,$(B)/libbraid-faultinj.a,tests/test_faultinj.c))
TESTS_faultinj := $(B)/t-faultinj/test_faultinj
SHARED_LINK := -L$(B) -Wl,-rpath,$(abspath $(B)) -lbraid
$(eval $(call testcfg,shared,,$(B)/libbraid.so,$$(SHARED_LINK),$(TEST_SUBSET)))

test: all man examples $(TESTS_normal) $(TESTS_asan) $(TESTS_asanplain) $(TESTS_tsan) $(TESTS_shared) \
      $(TESTS_faultinj)
	@tests/run-all.sh $(B)

# The multi-threaded randomized stress test (tests/test_stress_mt.c) for
# longer: SOAK_SECONDS (default 60) per worker count (2, 4, 8), plain and
# TSan builds, so about 6 minutes.  Each run prints its base seed.  Then
# the deterministic scenarios (tests/test_scenario.c): SOAK_SCENARIO_SEEDS
# (default 200000, about 2 minutes) plain from the first seed, then a
# quarter as many (the next ones) under ASan+UBSan (LSan checks leaks at
# exit).  The first seed is SOAK_SCENARIO_FIRST (or BRAID_SCENARIO_FIRST
# from the environment), else the time in seconds times 1000; it is
# printed, so that the same seeds can be run again.
SOAK_SECONDS ?= 60
SOAK_SCENARIO_SEEDS ?= 200000
SOAK_SCENARIO_FIRST ?= $(BRAID_SCENARIO_FIRST)
.PHONY: soak
soak: $(B)/t-normal/test_stress_mt $(B)/t-tsan/test_stress_mt $(B)/t-normal/test_scenario \
      $(B)/t-asan/test_scenario
	@set -e; for bin in $(filter %/test_stress_mt,$^); do for t in $$($$bin --list); do \
	    echo "== $$bin $$t ($(SOAK_SECONDS) s)"; \
	    BRAID_STRESS_SECONDS=$(SOAK_SECONDS) \
	    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1 \
	    timeout -k 10 $$(( $(SOAK_SECONDS) * 3 + 120 )) $$bin $$t; \
	done; done
	@set -e; n=$(SOAK_SCENARIO_SEEDS); first='$(SOAK_SCENARIO_FIRST)'; \
	[ -n "$$first" ] || first=$$(( $$(date +%s) * 1000 )); \
	echo "== scenario seeds from $$first (make soak SOAK_SCENARIO_FIRST=$$first runs them again)"; \
	echo "== $(B)/t-normal/test_scenario ($$n seeds)"; \
	BRAID_SCENARIO_FIRST=$$first BRAID_SCENARIO_SEEDS=$$n \
	    $(B)/t-normal/test_scenario scenario_seeds; \
	echo "== $(B)/t-asan/test_scenario ($$(( n / 4 )) seeds)"; \
	BRAID_SCENARIO_FIRST=$$(( first + n )) BRAID_SCENARIO_SEEDS=$$(( n / 4 )) \
	    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(B)/t-asan/test_scenario scenario_seeds

# ---- fuzzing, with clang's libFuzzer ------------------------------------------------------
# fuzz/fuzz_scenario.c drives the scenario generator (tests/scenario.h) from
# the fuzzer's bytes, in deterministic mode, under ASan+UBSan.  The library
# is built with clang, sanitizers and coverage into $(FUZZ_B), by a nested
# make.  New inputs go to $(FUZZ_B)/corpus-scenario; the seed corpus in
# fuzz/corpus/scenario is only read (tests/test_fuzz_corpus.c replays it
# in make test).  FUZZ_SECONDS (default 60) bounds the run.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= scenario resp
FUZZ_CC  ?= clang
FUZZ_B   := $(B)/fuzz
.PHONY: fuzz fuzz-build
fuzz-build:
	$(MAKE) CC=$(FUZZ_CC) B=$(FUZZ_B) EXTRA_CFLAGS=-fsanitize=fuzzer-no-link $(FUZZ_B)/libbraid-asan.a
	for t in $(FUZZ_TARGETS); do \
	    $(FUZZ_CC) $(TFLAGS) -iquote tests $(SAN_ASAN) -fsanitize=fuzzer fuzz/fuzz_$$t.c \
	        $(FUZZ_B)/libbraid-asan.a -o $(FUZZ_B)/fuzz_$$t -lpthread || exit 1; \
	done
# Each target for FUZZ_SECONDS; libFuzzer's last lines give the executions
# and coverage (cov: edges, ft: features).
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_B)/corpus-$$t; \
	    echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	    if ! $(FUZZ_B)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
	        $(FUZZ_B)/corpus-$$t fuzz/corpus/$$t >$(FUZZ_B)/fuzz_$$t.log 2>&1; then \
	        tail -n 60 $(FUZZ_B)/fuzz_$$t.log; exit 1; \
	    fi; \
	    grep -E '(INITED|DONE) |^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' \
	        $(FUZZ_B)/fuzz_$$t.log; \
	done

# ---- aarch64, under qemu-user ------------------------------------------------------------
# The plain configuration built with Debian's cross compiler (-Werror) and
# run under qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user
# libc6-dev-arm64-cross).  qemu-user does not run the children of an
# emulated program unless binfmt_misc is set up, so the tests start the
# programs built with them (examples, the console, themselves) under
# BRAID_TEST_RUNNER too (tests/test.h).
AARCH64_PREFIX ?= aarch64-linux-gnu-
test-aarch64:
	$(MAKE) CC=$(AARCH64_PREFIX)gcc OBJCOPY=$(AARCH64_PREFIX)objcopy AR=$(AARCH64_PREFIX)ar \
	    WERROR=1 B=build-aarch64 $(patsubst tests/%.c,build-aarch64/t-normal/%,$(TEST_SRC))
	@BRAID_TEST_CONFIGS=normal BRAID_TEST_EMULATED=1 \
	    BRAID_TEST_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" tests/run-all.sh build-aarch64

# ---- other compilers, optimisation levels, the portable context switch ------------------
# The code tests (not the documentation and packaging ones) of a
# configuration, for the targets below, which build in their own B.
CODE_TESTS_normal = $(filter-out $(patsubst tests/%.c,$(B)/t-normal/%,$(TOOL_TESTS)),$(TESTS_normal))
.PHONY: code-tests-normal code-tests-asan code-tests-shared test-builds test-portable
code-tests-normal: $(CODE_TESTS_normal)
code-tests-asan: $(TESTS_asan)
code-tests-shared: $(TESTS_shared)

# The library, tests and examples built warning-free (-Werror, and no
# warning at link time either) with gcc and clang at -O0 and at -O3 -flto,
# and with clang at -O2, each in its own directory (build-gcc-O0,
# build-gcc-lto, build-clang-O0, build-clang, build-clang-lto), and the
# normal and shared configurations' tests run against each.  clang's LTO
# objects are archived and linked through the LLVM gold plugin, which
# Debian's clang brings (llvm-14-linker-tools installs it for ar and ld
# too); gcc's through gcc-ar.
# A static -flto libbraid converts no fault, not even a stack overflow: its
# code is generated at link time into the program's .text, not braid_text,
# so the fault handler cannot tell it from the program's (src/panic.c) and
# lets the fault kill the process.  There the tests that overflow or fault
# skip (BRAID_TEST_NO_ISOLATION); the shared -flto libbraid.so, found by
# name, isolates them, and its configuration checks that.
TEST_BUILDS := gcc-O0:gcc:-O0 gcc-lto:gcc:-O3_-flto=auto clang-O0:clang:-O0 clang:clang:-O2 \
               clang-lto:clang:-O3_-flto
test-builds:
	@set -e; for b in $(TEST_BUILDS); do \
	    name=$${b%%:*}; rest=$${b#*:}; cc=$${rest%%:*}; opt=$$(echo "$${rest#*:}" | tr _ ' '); \
	    ar=ar; noiso=; [ "$$name" = gcc-lto ] && ar=gcc-ar; \
	    case $$opt in *-flto*) noiso=1 ;; esac; \
	    echo "== $$name: CC=$$cc OPT='$$opt'"; mkdir -p build-$$name; \
	    $(MAKE) -s --no-print-directory CC=$$cc AR=$$ar OPT="$$opt" WERROR=1 \
	        B=build-$$name build-$$name/libbraid.a build-$$name/libbraid.so \
	        code-tests-normal code-tests-shared >build-$$name/build.log 2>&1 \
	        || { cat build-$$name/build.log; exit 1; }; \
	    if grep -q 'warning:' build-$$name/build.log; then cat build-$$name/build.log; exit 1; fi; \
	    rc=0; BRAID_TEST_NO_ISOLATION=$$noiso BRAID_TEST_CONFIGS=normal \
	        tests/run-all.sh build-$$name >build-$$name/test.log || rc=$$?; \
	    BRAID_TEST_CONFIGS=shared tests/run-all.sh build-$$name >>build-$$name/test.log || rc=$$?; \
	    grep -v -e '^PASS' -e '^SKIP' build-$$name/test.log; [ $$rc -eq 0 ]; \
	done

# Every test again with BRAID_MIGRATE=1 (braid_config.migrate for every
# runtime), plain and under TSan; make test includes these two passes.
test-migrate: all $(TESTS_normal) $(TESTS_tsan)
	@BRAID_TEST_CONFIGS="migrate migrate-tsan" tests/run-all.sh $(B)

# The ucontext context switch (PORTABLE=1) through the normal and
# ASan+UBSan configurations, in build-portable.  Both targets print only
# failures and the tally (the full log: build-*/test.log).
test-portable:
	$(MAKE) -s --no-print-directory PORTABLE=1 B=build-portable code-tests-normal code-tests-asan
	@rc=0; BRAID_TEST_PORTABLE=1 BRAID_TEST_CONFIGS="normal asan" tests/run-all.sh build-portable >build-portable/test.log \
	    || rc=$$?; grep -v -e '^PASS' -e '^SKIP' build-portable/test.log; [ $$rc -eq 0 ]

# ---- static analysis -------------------------------------------------------------------
# cppcheck (warning, performance, portability; .cppcheck-suppressions) in the
# plain configuration and in the portable fault-injection one, and on the
# console and the examples; then clang-tidy (.clang-tidy) on every library
# source, the console and every example, each with the flags it is built
# with (the examples with the guide's).  Clean means silent (about two
# minutes).
LINT_SRC := $(filter-out src/unity.c,$(wildcard src/*.c)) src/arch/ctx.c
LINT_PROGS := tools/braid-console.c $(EX_SRC)
# One clang-tidy run for the file $$f with the compiler flags $(1).
TIDY = clang-tidy --quiet $$f -- $(1) 2>$(B)/tidy.err || rc=1; \
       grep -v 'warnings\? generated\.$$' $(B)/tidy.err >&2;
CPPCHECK := cppcheck --enable=warning,performance,portability --std=c11 --inline-suppr \
            --suppressions-list=.cppcheck-suppressions --error-exitcode=1 --quiet \
            --template='{file}:{line}: {severity} [{id}] {message}' \
            -Iinclude -Isrc -D_GNU_SOURCE -D__linux__ -D__GNUC__
.PHONY: lint
lint:
	@mkdir -p $(B)
	$(CPPCHECK) -D__x86_64__ $(LINT_SRC)
	$(CPPCHECK) -D__aarch64__ -DBRAID_PORTABLE_CTX -DBRAID_FAULT_INJECTION $(LINT_SRC)
	$(CPPCHECK) -D__x86_64__ $(LINT_PROGS)
	@# One file per run: clang-tidy 14's valist checker misreads va_start in
	@# every file after the first of a run (it keeps state across them).
	@rc=0; for f in $(LINT_SRC); do $(call TIDY,-std=c11 -D_GNU_SOURCE -Iinclude -iquote src) done; \
	for f in tools/braid-console.c; do $(call TIDY,-std=c11 -D_GNU_SOURCE) done; \
	for f in $(EX_SRC); do $(call TIDY,-Iinclude) done; \
	rm -f $(B)/tidy.err; exit $$rc

# ---- examples ------------------------------------------------------------------------
# make demo runs each example that ends by itself: not the servers, which
# serve until stopped (their tests drive them with real clients).
EXAMPLES := $(filter-out http_hello mini_redis,$(patsubst examples/%.c,%,$(EX_SRC)))
$(B)/ex/%: examples/%.c $(B)/libbraid.a | $(B)/ex
	$(CC) $(EXFLAGS) -O2 $(LTO_LINK) $< $(B)/libbraid.a -o $@ -lpthread
$(B)/ex:
	mkdir -p $@

examples: $(patsubst examples/%.c,$(B)/ex/%,$(EX_SRC))

demo: $(addprefix $(B)/ex/,$(EXAMPLES))
	@for e in $(EXAMPLES); do echo "== examples/$$e.c"; $(B)/ex/$$e || exit 1; done

# ---- benchmarks ------------------------------------------------------------------------
# bench/run.sh runs every workload several times and prints medians; one
# workload by hand: build/braid-bench <workload> [N] (see BENCHMARKS.md).
bench: $(B)/braid-bench $(B)/braid-micro $(B)/wake-placement
	@bench/run.sh $(B)/braid-bench
	@echo "microbenchmarks (one worker, warm):"
	@$(B)/braid-micro | sed 's/^/  /'

$(B)/braid-%: bench/braid_%.c $(B)/libbraid.a
	$(CC) -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Wall -Wextra $< $(B)/libbraid.a -o $@ -lpthread

# A diagnostic of the kernel, not of braid (see BENCHMARKS.md, "Variance").
$(B)/wake-placement: bench/wake_placement.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -O2 -Wall -Wextra $< -o $@ -lpthread

# Every workload side by side with Tokio, Go and plain pthreads, plus
# mini_redis against redis-server (bench/compare/run.sh; first run
# bench/compare/setup as root).  Writes bench/results/latest.md and
# latest.svg.  ROUNDS=5 by default, QUICK=1 for one round; more knobs in
# bench/compare/README.md.  compare-http: http_hello alone.
.PHONY: compare compare-http
compare:
	@bench/compare/run.sh
compare-http:
	@ONLY=http_hello OUT=bench/results/latest-http.md SVG= bench/compare/run.sh

# ---- man pages ------------------------------------------------------------------------
# One page per public function, generated from its comment in include/braid.h
# (tools/mangen.awk), plus braid(3), the overview.  Read one before
# installing: man -l build/man/man3/braid_spawn.3
MAN3 := $(B)/man/man3
man: $(MAN3)/braid.3
$(MAN3)/braid.3: include/braid.h tools/mangen.awk
	rm -rf $(MAN3) && mkdir -p $(MAN3)
	awk -v out=$(MAN3) -v version=$(VERSION) -f tools/mangen.awk include/braid.h include/braid.h

# ---- install ---------------------------------------------------------------------------
# Headers, both libraries (with the SONAME links), braid.pc, the CMake package
# (find_package(braid): braid::braid) and the man pages.  DESTDIR stages.
CMAKEDIR ?= $(LIBDIR)/cmake/braid
install: all man
	install -d $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
	    $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(MANDIR)/man3
	install -m 644 include/braid.h $(DESTDIR)$(INCDIR)/
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(B)/tools/braid-console $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(B)/libbraid.a $(B)/libbraid-tsan.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(B)/libbraid.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libbraid.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libbraid.so.$(SOMAJOR)
	ln -sf libbraid.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libbraid.so
	$(PC_SUBST) braid.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/braid.pc
	$(PC_SUBST) cmake/braidConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/braidConfig.cmake
	$(PC_SUBST) cmake/braidConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/braidConfigVersion.cmake
	install -m 644 $(MAN3)/*.3 $(DESTDIR)$(MANDIR)/man3/
	install -d $(DESTDIR)$(DATADIR)/braid/gdb $(DESTDIR)$(DATADIR)/gdb/auto-load$(LIBDIR)
	install -m 644 gdb/braid.py $(DESTDIR)$(DATADIR)/braid/gdb/
	install -m 644 gdb/braid.py \
	    $(DESTDIR)$(DATADIR)/gdb/auto-load$(LIBDIR)/libbraid.so.$(VERSION)-gdb.py

clean:
	rm -rf $(B) build-aarch64 build-portable $(foreach b,$(TEST_BUILDS),build-$(firstword $(subst :, ,$(b))))
