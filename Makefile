# pgburrow — one Makefile, no other build system.
#   make            build bin/pgburrow-relay and bin/pgburrow-agent
#   make test       install what is missing, build (normal + ASan/UBSan), run unit and integration
#                   tests (both builds), the basics under valgrind, and each fuzzer briefly
#   make demo       install, build, start a throwaway PostgreSQL + relay + agent on loopback
#   make demo-stop  stop the demo and remove its state
#   make bench      benchmark pgburrow against direct TLS and ssh -R (not a test)
#   make fuzz       run each libFuzzer harness for a bounded time

VERSION := 0.1.0
CC      ?= cc
PKGS    := libuv openssl msgpack inih
PY      := /usr/bin/python3

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -DPGB_VERSION='"$(VERSION)"' -I. $(WARN) -g -MMD -MP
OPT_CFLAGS  := -O2
SAN_CFLAGS  := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

# The build directory: build/release (default) or build/asan (SAN=1).
ifeq ($(SAN),1)
B        := build/asan
CFLAGS_ALL = $(BASE_CFLAGS) $(SAN_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = -fsanitize=address,undefined $(LDFLAGS)
else
B        := build/release
CFLAGS_ALL = $(BASE_CFLAGS) $(OPT_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(LDFLAGS)
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LIB_SRC   := $(wildcard common/*.c) $(wildcard proto/*.c)
RELAY_SRC := $(wildcard relay/*.c)
AGENT_SRC := $(wildcard agent/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)

LIB_OBJ   := $(LIB_SRC:%.c=$(B)/%.o)
RELAY_OBJ := $(RELAY_SRC:%.c=$(B)/%.o)
AGENT_OBJ := $(AGENT_SRC:%.c=$(B)/%.o)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all build build-asan unit unit-asan integration integration-asan valgrind test deps deps-test check-deps \
        demo demo-stop bench fuzz fuzz-build clean format check-format check-sqlstate check-cycles
.DEFAULT_GOAL := all

all: build
	@mkdir -p bin
	@cp -f build/release/bin/pgburrow-relay build/release/bin/pgburrow-agent bin/

# The daemons only: `make`, `make all` and `make demo` need nothing beyond the packages of
# `deploy/install-deps.sh build|demo`. Unit tests (cmocka) are built by the test targets.
build: $(B)/bin/pgburrow-relay $(B)/bin/pgburrow-agent

build-asan:
	@$(MAKE) --no-print-directory SAN=1 build

$(B)/lib.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@; $(AR) rcs $@ $^

$(B)/bin/pgburrow-relay: $(RELAY_OBJ) $(B)/lib.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

$(B)/bin/pgburrow-agent: $(AGENT_OBJ) $(B)/lib.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lm

# Role modules (all but main.o) are archived so that unit tests can link them too.
$(B)/relay.a: $(filter-out $(B)/relay/main.o,$(RELAY_OBJ))
	@mkdir -p $(@D)
	rm -f $@; $(AR) rcs $@ $^
$(B)/agent.a: $(filter-out $(B)/agent/main.o,$(AGENT_OBJ))
	@mkdir -p $(@D)
	rm -f $@; $(AR) rcs $@ $^

$(B)/tests/%: tests/unit/%.c $(B)/relay.a $(B)/agent.a $(B)/lib.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(PKG_CFLAGS) $(LDFLAGS_ALL) -o $@ $< $(B)/relay.a $(B)/agent.a $(B)/lib.a $(PKG_LIBS) -lcmocka -lm

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(PKG_CFLAGS) -c -o $@ $<

-include $(LIB_OBJ:.o=.d) $(RELAY_OBJ:.o=.d) $(AGENT_OBJ:.o=.d)

# ---- tests -------------------------------------------------------------------------------
deps:
	@sh deploy/install-deps.sh build
deps-test:
	@sh deploy/install-deps.sh test

# Fails when `make all` or `make demo` needs a package that `install-deps.sh build|demo` does
# not install (a header, library or program outside that list's dependency closure).
check-deps:
	@$(PY) tests/deps/check_deps.py

unit: build $(UNIT_BIN)
	@set -e; n=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t; n=$$((n+1)); done; \
	  [ $$n -gt 0 ] || { echo "no unit tests ran" >&2; exit 1; }

unit-asan:
	@$(MAKE) --no-print-directory SAN=1 unit

# TESTS=tests/integration/test_admin.py (files, or file::test) runs only those; PYTEST_ARGS adds
# pytest options (-x, -k EXPR, -s).
TESTS ?= tests/integration

integration: build
	PGBURROW_BIN=$(CURDIR)/build/release/bin $(PY) -m pytest -p no:cacheprovider -q $(TESTS) $(PYTEST_ARGS)

integration-asan:
	@$(MAKE) --no-print-directory SAN=1 build
	PGBURROW_BIN=$(CURDIR)/build/asan/bin PGBURROW_SANITIZER=1 $(PY) -m pytest -p no:cacheprovider -q $(TESTS) $(PYTEST_ARGS)

# The integration basics with both daemons under valgrind memcheck (about 30 s): any error or
# definite leak fails the test (tests/integration/harness.py, PGBURROW_VALGRIND).
valgrind: build
	PGBURROW_BIN=$(CURDIR)/build/release/bin PGBURROW_VALGRIND=1 $(PY) -m pytest -p no:cacheprovider -q tests/integration/test_basics.py $(PYTEST_ARGS)

# PostgreSQL's own regression, isolation and libpq_pipeline suites (Debian's source package,
# fetched and built once into build/transparency/), run directly and through relay + agent:
# any difference fails (tests/transparency/README.md). TRANSPARENCY_ARGS=--full: every test.
.PHONY: transparency
transparency: build
	PGBURROW_BIN=$(CURDIR)/build/release/bin $(PY) tests/transparency/transparency.py $(TRANSPARENCY_ARGS)

test: deps-test
	@$(MAKE) --no-print-directory check-deps
	@$(MAKE) --no-print-directory check-format
	@$(MAKE) --no-print-directory check-sqlstate
	@$(MAKE) --no-print-directory check-cycles
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory check-systemd
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory unit-asan
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory integration-asan
	@$(MAKE) --no-print-directory valgrind
	@$(MAKE) --no-print-directory transparency
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

# ---- demo and bench ------------------------------------------------------------------------
demo:
	@sh deploy/install-deps.sh demo
	@$(MAKE) --no-print-directory all
	@sh deploy/demo/demo.sh start

demo-stop:
	@sh deploy/demo/demo.sh stop

bench:
	@sh deploy/install-deps.sh bench
	@$(MAKE) --no-print-directory all
	$(PY) tests/bench/bench.py

# ---- fuzzing (clang libFuzzer) -------------------------------------------------------------
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_ROLE_SRC := $(filter-out agent/main.c relay/main.c,$(AGENT_SRC) $(RELAY_SRC))
build/fuzz/%: tests/fuzz/%.c $(LIB_SRC) $(FUZZ_ROLE_SRC)
	@mkdir -p $(@D)
	clang -std=c11 -D_GNU_SOURCE -DPGB_VERSION='"$(VERSION)"' -I. -g -O1 \
	  -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) -o $@ $^ $(PKG_LIBS) -lm
fuzz-build: $(FUZZ_BIN)
fuzz: fuzz-build
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- build/fuzz/corpus-$$n tests/fuzz/corpus/$$n; done

format:
	clang-format -i common/*.[ch] proto/*.[ch] relay/*.[ch] agent/*.[ch] tests/unit/*.c tests/fuzz/*.c
check-format:
	@clang-format --dry-run --Werror common/*.[ch] proto/*.[ch] relay/*.[ch] agent/*.[ch] \
	  tests/unit/*.c tests/fuzz/*.c || { echo "run 'make format'" >&2; exit 1; }

# SQLSTATEs are named in common/sqlstate.h; no five-character code literal elsewhere in C code.
check-sqlstate:
	@$(PY) tests/lint/check_sqlstate.py

# No two source files call each other in a loop (a module calls down, or is handed a callback).
check-cycles:
	@$(PY) tests/lint/check_cycles.py

# deploy/systemd/*.service: `systemd-analyze verify` silent and `systemd-analyze security`
# exposure at most 4.9 ("OK"), both offline; skipped, saying so, without systemd-analyze.
.PHONY: check-systemd
check-systemd: build
	@sh tests/lint/check_systemd.sh $(CURDIR)/$(B)/bin

# ---- install and Debian package ------------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=]: the daemons in $(SBINDIR), pgburrow-mkcerts in
# $(BINDIR), the man pages, the sample configurations as $(SYSCONFDIR)/pgburrow/*.ini.example and
# the systemd units (their paths rewritten for PREFIX) in $(UNITDIR). Needs only the build list.
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)

.PHONY: install deb
install: build
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(SYSCONFDIR)/pgburrow $(DESTDIR)$(UNITDIR)
	install -m 0755 $(B)/bin/pgburrow-relay $(B)/bin/pgburrow-agent $(DESTDIR)$(SBINDIR)/
	install -m 0755 deploy/certs/mkcerts.sh $(DESTDIR)$(BINDIR)/pgburrow-mkcerts
	install -m 0644 deploy/man/pgburrow-relay.8 deploy/man/pgburrow-agent.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 deploy/man/pgburrow-mkcerts.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 deploy/relay.ini $(DESTDIR)$(SYSCONFDIR)/pgburrow/relay.ini.example
	install -m 0644 deploy/agent.ini $(DESTDIR)$(SYSCONFDIR)/pgburrow/agent.ini.example
	for u in pgburrow-relay pgburrow-agent; do \
	  sed -e 's#^ExecStart=/usr/sbin/#ExecStart=$(SBINDIR)/#' \
	      -e 's#/etc/pgburrow/#$(SYSCONFDIR)/pgburrow/#g' deploy/systemd/$$u.service \
	    > $(DESTDIR)$(UNITDIR)/$$u.service && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service; done

# build/deb/pgburrow_$(VERSION)-1_ARCH.deb with debhelper, from a copy of the sources and
# deploy/debian/ (as debian/) in build/deb/src; installs the `deb` package list first.
deb:
	@sh deploy/install-deps.sh deb
	rm -rf build/deb && mkdir -p build/deb/src
	cp -a Makefile common proto relay agent deploy build/deb/src/
	cp -a deploy/debian build/deb/src/debian
	@v=$$(cd build/deb/src && dpkg-parsechangelog -S Version); [ "$$v" = "$(VERSION)" ] || \
	  { echo "deploy/debian/changelog is at $$v, the Makefile at $(VERSION)" >&2; exit 1; }
	cd build/deb/src && dpkg-buildpackage -b -us -uc
	lintian --allow-root --fail-on error build/deb/pgburrow_$(VERSION)_*.changes

clean:
	rm -rf build bin
