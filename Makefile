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

.PHONY: demo test soak

# The main demo: a local primary + two replicas, routing shown live. Leaves nothing running.
demo:
	bash scripts/demo.sh

# Every check and test (installs prerequisites, starts the test environment).
test:
	bash scripts/test.sh

# Chaos soak (examples/soak.rs): DURATION seconds of random faults (default 600) while workers
# check read-your-writes; fails on any stale read. SEED=N replays a run's fault choices.
DURATION ?= 600
SEED ?=
soak:
	bash scripts/soak.sh $(DURATION) $(SEED)
