#!/usr/bin/env bash
# The dlb demo: installs what is missing, starts a local PostgreSQL primary + two streaming
# replicas (on their own ports, separate from the test environment), runs the narrated Rust
# example, and stops everything again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DLB_TESTENV_DIR=/tmp/dlb-demo
export DLB_TESTENV_PG_PORT="${DLB_DEMO_PG_PORT:-57432}"
export DLB_TESTENV_REDIS_PORT="${DLB_DEMO_REDIS_PORT:-58379}"
# Only what the demo shows: no second cluster, Redis or TLS cluster.
export DLB_TESTENV_ONLY_PG=1

bash scripts/bootstrap.sh
echo "==> building the demo"
cargo build --quiet --example demo
echo "==> starting a local primary and two replicas"
trap 'echo "==> stopping the demo cluster"; bash scripts/testenv.sh down >/dev/null 2>&1 || true' EXIT
bash scripts/testenv.sh up
eval "$(bash scripts/testenv.sh env)"
cargo run --quiet --example demo
