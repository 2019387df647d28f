#!/usr/bin/env bash
# Tests of the Go (cgo) bindings (bindings/go) and the Go example (examples/go), against the
# real test cluster.
#
# Usage (from any directory): bash bindings/go/test.sh
#
# Steps: prerequisites (Go >= 1.19, lib/pq from Debian's golang-github-lib-pq-dev for the
# tests and the example), the test environment (scripts/testenv.sh up), the release library
# (cargo build --release --lib), gofmt, go vet, `go test -race` (statically linked), a
# dynamically linked build (-tags dlb_shared) with a quick run, then the example built and
# run against the cluster.
#
# The tests take the cluster lock /tmp/dlb-tests.lock themselves (TestMain: only while
# tests run, not while go compiles) and leave both replicas running and replaying. The
# example runs under `flock /tmp/dlb-tests.lock`.
#
# Environment:
#   GO_TEST_FLAGS   extra flags for `go test` (e.g. "-run TestRoundRobin")
#   GOCACHE         Go build cache (default: go's own; a temporary one when it has none)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$ROOT"
LOCK=${DLB_TESTS_LOCK:-/tmp/dlb-tests.lock}
PQ=/usr/share/gocode/src/github.com/lib/pq

say() { printf 'go-bindings: %s\n' "$*"; }
die() {
    printf 'go-bindings: error: %s\n' "$*" >&2
    exit 1
}

# --- prerequisites --------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1 || [[ ! -f $PQ/conn.go ]]; then
    say "Go or lib/pq missing: running scripts/bootstrap.sh"
    bash scripts/bootstrap.sh || true
fi
command -v go >/dev/null 2>&1 || die "go not found; run scripts/bootstrap.sh (package golang-go)"
[[ -f $PQ/conn.go ]] ||
    die "lib/pq not found in $PQ; install it: apt-get install -y golang-github-lib-pq-dev"
command -v flock >/dev/null 2>&1 || die "flock not found (package util-linux)"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[[ -n $go_minor && $go_minor -ge 19 ]] || die "Go >= 1.19 required (found $(go env GOVERSION))"

# Modules: nothing is downloaded (lib/pq and the binding come from local directories).
export GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off CGO_ENABLED=1
if [[ -z ${GOCACHE-} ]]; then
    cache=$(go env GOCACHE 2>/dev/null || true)
    if [[ -z $cache || $cache == off ]]; then
        GOCACHE="${TMPDIR:-/tmp}/dlb-go-cache-$(id -u)"
        export GOCACHE
    fi
fi

TMP=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf -- "$TMP"' EXIT

# --- test environment and library -----------------------------------------------------------
say "test environment: scripts/testenv.sh up"
if ! bash scripts/testenv.sh up >"$TMP/testenv-up.log" 2>&1; then
    cat "$TMP/testenv-up.log" >&2
    die "scripts/testenv.sh up failed"
fi
eval "$(bash scripts/testenv.sh env)"
export DLB_GO_REQUIRE_CLUSTER=1

say "library: cargo build --release --lib"
if ! cargo build --release --lib >"$TMP/cargo.log" 2>&1; then
    cat "$TMP/cargo.log" >&2
    die "cargo build failed"
fi
[[ -f target/release/libdlb.a && -f target/release/libdlb.so ]] ||
    die "no libdlb.a/libdlb.so in target/release"

# --- static checks --------------------------------------------------------------------------
say "gofmt -l"
unformatted=$(gofmt -l bindings/go examples/go)
[[ -z $unformatted ]] || die "not gofmt-formatted (run gofmt -w): $unformatted"

say "go vet"
(cd bindings/go && go vet ./... && go vet -tags dlb_shared ./...)
(cd examples/go && go vet ./...)

# --- tests ----------------------------------------------------------------------------------
say "go test -race (libdlb.a)"
# shellcheck disable=SC2086 # GO_TEST_FLAGS is a list of flags
(cd bindings/go && go test -race -count=1 -v ${GO_TEST_FLAGS-} ./...)

say "go test -tags dlb_shared (libdlb.so)"
(cd bindings/go && go test -c -race -tags dlb_shared -o "$TMP/dlb_shared.test" .)
# Not `ldd | grep -q`: under pipefail, grep exiting at the first match can fail ldd (SIGPIPE).
linked=$(ldd "$TMP/dlb_shared.test")
grep -q "libdlb.so => .*/target/release/libdlb.so" <<<"$linked" ||
    die "the dlb_shared test binary does not load target/release/libdlb.so"
(cd bindings/go && "$TMP/dlb_shared.test" -test.count=1 \
    -test.run '^(TestVersion|TestNames|TestOpenInvalidConfig|TestArgumentErrors|TestClose|TestRoundRobin|TestBufferGrowth)$')

# --- example --------------------------------------------------------------------------------
say "examples/go: build and run"
(cd examples/go && go build -o "$TMP/dlb-example" .)
linked=$(ldd "$TMP/dlb-example" || true)
if grep -q libdlb <<<"$linked"; then
    die "examples/go is linked dynamically against libdlb; expected the static library"
fi
flock "$LOCK" "$TMP/dlb-example" -repo "go-test/$(date +%s)-$$" -tag v1.0.0

say "ok"
