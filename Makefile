# dlb developer tasks.

SHELL := /bin/bash

.PHONY: bootstrap testenv-up testenv-down testenv-status

# Install missing prerequisites (PostgreSQL, Redis, gcc, make, valgrind, ...).
bootstrap:
	bash scripts/bootstrap.sh

# Start (or repair) the local test environment: PG primary + 2 replicas + Redis.
testenv-up:
	bash scripts/testenv.sh up

# Stop the test environment and remove its directory.
testenv-down:
	bash scripts/testenv.sh down

# Show what is running; fails unless everything is up.
testenv-status:
	bash scripts/testenv.sh status

.PHONY: install

# Installs bin/dlb, include/dlb.h, libdlb.a, libdlb.so (SONAME libdlb.so.0) and
# pkgconfig/dlb.pc under $(DESTDIR)$(PREFIX) (scripts/install.sh; builds the release library
# and command first, in $CARGO_TARGET_DIR when set).
PREFIX ?= /usr/local
DESTDIR ?=
install:
	bash scripts/install.sh "$(PREFIX)" "$(DESTDIR)"

.PHONY: demo test soak

# The main demo: a local primary + two replicas, routing shown live. Leaves nothing running.
demo:
	bash scripts/demo.sh

# Every check and test (installs prerequisites, starts the test environment).
test:
	bash scripts/test.sh

.PHONY: fuzz

# Long runs of the property tests ("fuzzing": src/fuzz_tests/, tests/fuzz_*.rs), optimized:
# CASES cases per property (`cargo test` runs 128 to 1024), repeated with new random inputs
# until DURATION seconds have passed (0: once). A failure prints the minimal input.
CASES ?= 20000
fuzz: DURATION ?= 0
fuzz:
	end=$$(( $$(date +%s) + $(DURATION) )); \
	while :; do \
		PROPTEST_CASES=$(CASES) cargo test --release --lib fuzz_tests || exit 1; \
		PROPTEST_CASES=$(CASES) cargo test --release --test fuzz_config --test fuzz_ffi || exit 1; \
		[[ $$(date +%s) -lt $$end ]] || break; \
	done

.PHONY: soak

# Chaos soak (tests/soak/, package dlb-soak): DURATION seconds of random faults (default 600) while workers
# check read-your-writes; fails on any stale read. SEED=N replays a run's fault choices.
SEED ?=
soak: DURATION ?= 600
soak:
	bash scripts/soak.sh $(DURATION) $(SEED)
