#!/usr/bin/env bash
# Runs every check and test of dlb: shellcheck of the shell scripts, formatting, clippy, rustdoc,
# Rust unit and integration tests against a real PostgreSQL primary + two streaming replicas and
# Redis (scripts/testenv.sh), the `dlb` command's tests (cli/), promtool on the alert rules of docs/operations.md, a 60 s chaos soak (scripts/soak.sh), and the C ABI tests (ffi-tests/run.sh, under AddressSanitizer and
# valgrind).
#
# Installs missing Debian prerequisites first (scripts/bootstrap.sh). The test environment is
# stopped at the end if this script started it (set DLB_KEEP_TESTENV=1 to keep it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "prerequisites"
bash scripts/bootstrap.sh

step "shellcheck"
# Every shell script of the repository (testenv.sh's sourced parts on their own too; -x follows
# the `source` lines). Build output directories are skipped.
mapfile -t shell_scripts < <(find scripts ffi-tests bindings .ci \( -name build -o -name target \) -prune -o \
    -type f \( -name '*.sh' -o -path .ci/run \) -print | sort)
shellcheck -x "${shell_scripts[@]}"
echo "shellcheck: ${#shell_scripts[@]} scripts clean"

step "test environment"
started=0
if ! bash scripts/testenv.sh status >/dev/null 2>&1; then
    started=1
fi
bash scripts/testenv.sh up
if [[ $started == 1 && ${DLB_KEEP_TESTENV:-0} != 1 ]]; then
    trap 'bash scripts/testenv.sh down >/dev/null 2>&1 || true' EXIT
fi
eval "$(bash scripts/testenv.sh env)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets -- -D warnings
# The test-only C entry points (ffi-tests/run.sh builds with them).
cargo clippy --all-targets --features ffi-test-hooks -- -D warnings
# The `dlb` command (cli/, its own package so that its terminal UI stays out of the library).
cargo clippy -p dlb-cli --all-targets -- -D warnings
# The chaos soak (tests/soak/, its own package: a test tool with its own arguments and report).
cargo clippy -p dlb-soak --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "cargo test"
# The property tests (fuzzing) draw from one fixed seed here, so that the test command is
# repeatable; `make fuzz` draws new inputs every run.
PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-20261201} cargo test --all-targets
cargo test --doc

step "dlb command (cli/: check and watch against the cluster, watch driven in tmux)"
cargo test -p dlb-cli

step "alert rules of docs/operations.md (promtool check rules)"
bash scripts/check-alert-rules.sh

step "Rust example (examples/registry.rs)"
flock "${DLB_TESTS_LOCK:-/tmp/dlb-tests.lock}" cargo run --quiet --example registry

step "chaos soak, 60 s (tests/soak/)"
# Read-your-writes under random faults; takes the cluster lock itself while it runs.
bash scripts/soak.sh 60

if [[ -f ffi-tests/run.sh ]]; then
    step "C ABI tests (static and shared, ASan and valgrind)"
    bash ffi-tests/run.sh
fi

# Go (cgo) and Ruby (FFI) bindings, against the same cluster, with their examples.
for lang in go ruby; do
    if [[ -f bindings/$lang/test.sh ]]; then
        step "$lang bindings"
        bash "bindings/$lang/test.sh"
    fi
done

step "all tests passed"
