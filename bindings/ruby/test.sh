#!/usr/bin/env bash
# Tests of dlb's Ruby bindings (bindings/ruby), against the real test cluster.
#
# Usage (from any directory): bash bindings/ruby/test.sh
#
# Steps: the test environment (scripts/testenv.sh up, idempotent), the release library
# (cargo build --release --lib), `ruby -wc` of every Ruby file and the gemspec, RuboCop, the
# gem: `rake build` (pkg/dlb-VERSION.gem with the crate's sources) and `gem install --local`
# of it into a temporary GEM_HOME (its install step builds libdlb with cargo, in
# target/ruby-gem: a build directory of its own, so that the two builds of the same sources
# do not invalidate each other's dependencies), and again against an installed libdlb
# (`make install` into a temporary prefix, found with pkg-config: nothing built), then the minitest suite (bindings/ruby/test/*_test.rb)
# against that installed gem, the same handle lifecycle under GC.stress (test/gc_stress/),
# a short run of bench/pick.rb, examples/ruby/registry.rb and rack_app.rb, and the
# ActiveRecord example app (bindings/ruby/examples/rails_app.rb). Everything that uses the
# cluster holds the cluster lock (DLB_TESTS_LOCK, default /tmp/dlb-tests.lock, shared with
# the Rust, C and Go suites); tests pause and stop replicas and restore them, also on
# failure.
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
command -v rubocop >/dev/null 2>&1 || die "rubocop is not installed (run scripts/bootstrap.sh)"
command -v rake >/dev/null 2>&1 || die "rake is not installed (run scripts/bootstrap.sh)"
for lib in ffi pg minitest json connection_pool rack rack/test sidekiq active_support active_record; do
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
mapfile -t files < <(find "$RB" examples/ruby -path "$RB/ext/dlb/crate" -prune -o \
    \( -name '*.rb' -o -name '*.gemspec' -o -name Rakefile -o -name Gemfile \) -print | sort)
((${#files[@]} > 0)) || die "no Ruby files found"
for f in "${files[@]}"; do
    # -w: a warning (unused variable, shadowing, ...) fails the check too.
    out=$(ruby -wc "$f" 2>&1) || die "$f: $out"
    [[ $out == "Syntax OK" ]] || die "$f: $out"
done
say "${#files[@]} files OK"
(cd "$RB" && ruby -e 'spec = Gem::Specification.load("dlb.gemspec") or abort "cannot load dlb.gemspec"
                     spec.validate(false)
                     missing = Dir["lib/**/*.rb"] + ["ext/dlb/extconf.rb", "README.md"] - spec.files
                     missing.empty? or abort "gemspec files lack #{missing}"') ||
    die "dlb.gemspec is invalid"

say "lint: rubocop"
(cd "$RB" && rubocop --format quiet) || die "rubocop found offenses (cd $RB && rubocop)"

say "gem: rake build, gem install --local into a temporary GEM_HOME (cargo builds libdlb)"
(cd "$RB" && rake build >"$LOGS/gem-build.log" 2>&1) || { cat "$LOGS/gem-build.log" >&2; die "rake build failed"; }
GEM_FILE="$RB/pkg/dlb-$(ruby -I"$RB/lib" -rdlb/version -e 'print DLB::VERSION').gem"
[[ -f $GEM_FILE ]] || die "rake build made no $GEM_FILE"
export GEM_HOME="$LOGS/gems"
SYSTEM_GEM_PATH=$(env -u GEM_HOME gem env gempath)
GEM_PATH="$GEM_HOME:$SYSTEM_GEM_PATH"
export GEM_PATH
# The installed gem must find its own library: no override, no repository path.
if ! env -u DLB_LIB_PATH CARGO_TARGET_DIR="$ROOT/target/ruby-gem" nice -n 10 gem install --local --no-document "$GEM_FILE" \
    >"$LOGS/gem-install.log" 2>&1; then
    cat "$LOGS/gem-install.log" >&2
    die "gem install of $GEM_FILE failed"
fi
export DLB_TEST_GEM_HOME="$GEM_HOME"

say "gem: install against an installed libdlb (make install into a temporary prefix, found with pkg-config)"
PREFIX_DIR="$LOGS/prefix"
if ! nice -n 10 make install PREFIX="$PREFIX_DIR" >"$LOGS/make-install.log" 2>&1; then
    cat "$LOGS/make-install.log" >&2
    die "make install failed"
fi
PC_GEM_HOME="$LOGS/gems-pkg-config"
if ! env -u DLB_LIB_PATH PKG_CONFIG_PATH="$PREFIX_DIR/lib/pkgconfig" GEM_HOME="$PC_GEM_HOME" \
    GEM_PATH="$PC_GEM_HOME:$SYSTEM_GEM_PATH" gem install --local --no-document "$GEM_FILE" >"$LOGS/gem-install-pc.log" 2>&1; then
    cat "$LOGS/gem-install-pc.log" >&2
    die "gem install of $GEM_FILE against the installed libdlb failed"
fi
grep -q "using the installed libdlb" "$LOGS/gem-install-pc.log" "$PC_GEM_HOME"/extensions/*/*/dlb-*/gem_make.out 2>/dev/null ||
    die "gem install did not use the installed libdlb (pkg-config)"
# Loaded from the prefix, with no pkg-config at run time (the path was recorded at install).
env -u DLB_LIB_PATH -u PKG_CONFIG_PATH GEM_HOME="$PC_GEM_HOME" GEM_PATH="$PC_GEM_HOME:$SYSTEM_GEM_PATH" \
    ruby -e 'require "dlb"
             DLB.library_path.start_with?(ARGV[0]) or abort "libdlb loaded from #{DLB.library_path}, not #{ARGV[0]}"
             DLB::Balancer.open(primary: ENV.fetch("DLB_TEST_PRIMARY")) { |lb| lb.primary_dsn }' "$PREFIX_DIR/lib" ||
    die "the gem installed against the prefix does not load its libdlb"

say "minitest suite (waiting for the cluster lock $LOCK)"
# shellcheck disable=SC2086 # TESTOPTS is a list of options
# The test files, then "--", then minitest's own options (left in ARGV for minitest/autorun).
# Against the installed gem: no -I of lib/, no DLB_LIB_PATH.
locked env -u DLB_LIB_PATH ruby -w -I"$RB/test" \
    -e 'ARGV.slice!(0, (ARGV.index("--") || ARGV.size) + 1).each { |f| require File.expand_path(f) unless f == "--" }' \
    "$RB"/test/*_test.rb -- ${TESTOPTS:-} || die "minitest suite failed"

say "GC.stress run: handle lifecycle"
# shellcheck disable=SC2086
locked env -u DLB_LIB_PATH ruby -w -I"$RB/test" "$RB/test/gc_stress/lifecycle_test.rb" ${TESTOPTS:-} ||
    die "GC.stress run failed"

say "benchmark smoke run: bench/pick.rb"
DLB_BENCH_SECONDS=0.2 DLB_BENCH_ROUNDS=1 locked ruby -w "$RB/bench/pick.rb" || die "bench/pick.rb failed"

say "examples: examples/ruby/registry.rb, examples/ruby/rack_app.rb, $RB/examples/rails_app.rb"
locked ruby -w -I"$RB/lib" examples/ruby/registry.rb || die "examples/ruby/registry.rb failed"
locked ruby -w -I"$RB/lib" examples/ruby/rack_app.rb || die "examples/ruby/rack_app.rb failed"
# (The suite's active_record_test.rb runs it without dlb too.)
locked ruby -w -I"$RB/lib" "$RB/examples/rails_app.rb" || die "$RB/examples/rails_app.rb failed"

say "all passed"
