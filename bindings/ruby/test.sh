#!/usr/bin/env bash
# Tests of dlb's Ruby bindings (bindings/ruby), against the real test cluster.
#
# Usage (from any directory): bash bindings/ruby/test.sh
#
# Steps: the test environment (scripts/testenv.sh up, idempotent), the release library
# (cargo build --release --lib), `ruby -wc` of every Ruby file and the gemspec, the minitest
# suite (bindings/ruby/test/*_test.rb), the same handle lifecycle under GC.stress
# (test/gc_stress/), a short run of bench/pick.rb and examples/ruby/registry.rb. Everything
# that uses the cluster holds the cluster lock /tmp/dlb-tests.lock (shared with the Rust, C
# and Go suites); the read-your-writes test pauses WAL replay on replica 2 and resumes it,
# also on failure.
#
# Environment:
#   DLB_RUBY_VERBOSE=1          print the read-your-writes counts
#   DLB_GC_STRESS_ITERATIONS    balancers dropped without close under GC.stress (default 6)
#   TESTOPTS                    extra minitest options (e.g. "--seed 42 -v")
#
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$ROOT"
RB=bindings/ruby
LOCK=${DLB_TESTS_LOCK:-/tmp/dlb-tests.lock}
LOGS=$(mktemp -d -p /tmp)
trap 'rm -rf -- "$LOGS"' EXIT

say() { printf 'ruby-bindings: %s\n' "$*"; }
die() {
    printf 'ruby-bindings: error: %s\n' "$*" >&2
    exit 1
}
# locked CMD...: CMD under the cluster lock (its children know it is held).
locked() {
    DLB_TESTS_LOCKED=1 flock "$LOCK" timeout --signal=TERM --kill-after=30 900 "$@"
}

command -v ruby >/dev/null 2>&1 || die "ruby is not installed (run scripts/bootstrap.sh)"
command -v flock >/dev/null 2>&1 || die "flock is not installed (util-linux)"
for lib in ffi pg minitest json; do
    ruby -e "require '$lib'" >/dev/null 2>&1 || die "ruby library '$lib' missing (run scripts/bootstrap.sh)"
done

say "test environment: scripts/testenv.sh up"
if ! bash scripts/testenv.sh up >"$LOGS/testenv.log" 2>&1; then
    cat "$LOGS/testenv.log" >&2
    die "scripts/testenv.sh up failed"
fi
eval "$(bash scripts/testenv.sh env)"

say "library: cargo build --release --lib"
if ! cargo build --release --lib >"$LOGS/cargo.log" 2>&1; then
    cat "$LOGS/cargo.log" >&2
    die "cargo build failed"
fi
export DLB_LIB_PATH="$ROOT/target/release/libdlb.so"
[[ -f $DLB_LIB_PATH ]] || die "no $DLB_LIB_PATH after cargo build"

say "syntax: ruby -wc"
mapfile -t files < <(find "$RB" examples/ruby -name '*.rb' -o -name '*.gemspec' | sort)
((${#files[@]} > 0)) || die "no Ruby files found"
for f in "${files[@]}"; do
    # -w: a warning (unused variable, shadowing, ...) fails the check too.
    out=$(ruby -wc "$f" 2>&1) || die "$f: $out"
    [[ $out == "Syntax OK" ]] || die "$f: $out"
done
say "${#files[@]} files OK"
(cd "$RB" && ruby -e 'spec = Gem::Specification.load("dlb.gemspec") or abort "cannot load dlb.gemspec"
                     spec.validate(false)
                     (spec.files - Dir["lib/**/*.rb"] - ["README.md"]).empty? or abort "gemspec files"') ||
    die "dlb.gemspec is invalid"

say "minitest suite (waiting for the cluster lock $LOCK)"
# shellcheck disable=SC2086 # TESTOPTS is a list of options
# The test files, then "--", then minitest's own options (left in ARGV for minitest/autorun).
locked ruby -w -I"$RB/lib" -I"$RB/test" \
    -e 'ARGV.slice!(0, (ARGV.index("--") || ARGV.size) + 1).each { |f| require File.expand_path(f) unless f == "--" }' \
    "$RB"/test/*_test.rb -- ${TESTOPTS:-} || die "minitest suite failed"

say "GC.stress run: handle lifecycle"
# shellcheck disable=SC2086
locked ruby -w -I"$RB/lib" -I"$RB/test" "$RB/test/gc_stress/lifecycle_test.rb" ${TESTOPTS:-} ||
    die "GC.stress run failed"

say "benchmark smoke run: bench/pick.rb"
DLB_BENCH_SECONDS=0.2 DLB_BENCH_ROUNDS=1 locked ruby -w "$RB/bench/pick.rb" || die "bench/pick.rb failed"

say "example: examples/ruby/registry.rb"
locked ruby -w -I"$RB/lib" examples/ruby/registry.rb || die "examples/ruby/registry.rb failed"

say "all passed"
