#!/usr/bin/env bash
# Runs the chaos soak (tests/soak/, package dlb-soak) against the test environment (started if needed):
# writers and readers doing read-your-writes on three balancers (embedded store, Redis, Redis
# Cluster + DNS discovery) while random faults hit the replicas, the primary, Redis and DNS.
# Fails on any stale read, a hang, no recovery, or an environment it cannot restore.
#
#   bash scripts/soak.sh [SECONDS [SEED]]     SECONDS of chaos (default 60); SEED from the clock
#
# It holds the cluster lock (/tmp/dlb-tests.lock) while it runs, as every suite that uses the
# environment does. `make soak DURATION=3600 [SEED=N]` runs it for an hour.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-60}
seed=${2-}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "soak.sh: SECONDS must be a positive whole number (got '$seconds')" >&2
    exit 64
fi
args=(--seconds "$seconds")
if [[ -n $seed ]]; then
    [[ $seed =~ ^[0-9]+$ ]] || {
        echo "soak.sh: SEED must be a whole number (got '$seed')" >&2
        exit 64
    }
    args+=(--seed "$seed")
fi

bash scripts/testenv.sh up >/dev/null
eval "$(bash scripts/testenv.sh env)"
# Built before the lock is taken: the lock is only held while the soak runs. `-o`: the soak
# (and the servers it restarts through testenv.sh) must not inherit the lock's descriptor, or a
# restarted primary would hold the lock for as long as it runs.
cargo build --quiet -p dlb-soak
flock -o "${DLB_TESTS_LOCK:-/tmp/dlb-tests.lock}" cargo run --quiet -p dlb-soak -- "${args[@]}"
