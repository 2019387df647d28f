#!/usr/bin/env bash
# Tests of the Go (cgo) bindings (bindings/go) and the Go example (examples/go), against the
# real test cluster.
#
# Usage (from any directory): bash bindings/go/test.sh
#
# Steps: prerequisites (Go >= 1.19, pkg-config, lib/pq from Debian's
# golang-github-lib-pq-dev for the tests and the example, client_golang and x/exp for dlbprom
# and dlbslog), the go.mod files (no replace in the published modules, none but the binding's
# in the example: no machine's path), the test environment
# (scripts/testenv.sh up), `make install` into a temporary prefix (scripts/install.sh; its
# `dlb` command run with --version), the C
# example built with pkg-config against that installed copy and run, gofmt, go vet (every
# link mode), the go1.21 files (log/slog) type-checked against a stand-in of Go 1.21's
# log/slog (testdata/go121), `go test -race` linked through pkg-config against the installed
# copy (dlbprom and dlbslog in GOPATH mode over Debian's Go sources), the
# in-repository modes (-tags dlb_dev, -tags dlb_shared) with a quick run, a Go program outside
# this repository built with PKG_CONFIG_PATH set and one replace line (the module's
# published path standing for this checkout), then the example built and run against the
# cluster.
#
# Offline: lib/pq comes from Debian's source through a go.work generated in a temporary
# directory (gowork.sh, GOWORK), never through the committed go.mod files.
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
for f in /usr/share/gocode/src/github.com/prometheus/client_golang/prometheus/collector.go \
    /usr/share/gocode/src/golang.org/x/exp/slog/logger.go; do
    [[ -f $f ]] || bash scripts/bootstrap.sh || true
    [[ -f $f ]] || die "$f not found; run scripts/bootstrap.sh"
done
command -v flock >/dev/null 2>&1 || die "flock not found (package util-linux)"
command -v pkg-config >/dev/null 2>&1 || die "pkg-config not found; run scripts/bootstrap.sh"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[[ -n $go_minor && $go_minor -ge 19 ]] || die "Go >= 1.19 required (found $(go env GOVERSION))"

# Modules: nothing is downloaded (lib/pq and the binding come from local directories, named
# in a generated go.work below). Workspace mode takes no -mod=mod.
export GOFLAGS='' GOPROXY=off GOSUMDB=off CGO_ENABLED=1
if [[ -z ${GOCACHE-} ]]; then
    cache=$(go env GOCACHE 2>/dev/null || true)
    if [[ -z $cache || $cache == off ]]; then
        GOCACHE="${TMPDIR:-/tmp}/dlb-go-cache-$(id -u)"
        export GOCACHE
    fi
fi

TMP=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf -- "$TMP"' EXIT
# In a directory of its own: no build below $TMP may find it by walking up (the outside program).
mkdir "$TMP/gowork"
bash bindings/go/gowork.sh "$TMP/gowork/go.work"
export GOWORK="$TMP/gowork/go.work"
# The module's path (github.com/<org>/dlb/bindings/go: the org is a placeholder until the
# repository is published; bindings/go/README.md).
MODULE=$(sed -n 's/^module //p' bindings/go/go.mod)
[[ $MODULE == */bindings/go ]] || die "bindings/go/go.mod: module '$MODULE' does not end in /bindings/go"

# --- go.mod files: what `go get` reads names no directory of this machine -------------------
say "go.mod files: no replace in the published modules, one for the binding in the example"
for mod in bindings/go/go.mod bindings/go/dlbprom/go.mod bindings/go/dlbslog/go.mod; do
    if grep -n '^[[:space:]]*replace\b\|=>' "$mod"; then
        die "$mod has a replace directive: published modules carry none (tests use $GOWORK)"
    fi
    sub=${mod#bindings/go}
    sub=${sub%/go.mod}
    [[ $(sed -n 's/^module //p' "$mod") == "$MODULE$sub" ]] || die "$mod: module is not $MODULE$sub"
done
replaces=$(grep '=>' examples/go/go.mod || true)
[[ $replaces == "replace $MODULE => ../../bindings/go" ]] ||
    die "examples/go/go.mod: expected only 'replace $MODULE => ../../bindings/go', got: $replaces"

# --- test environment and the installed library ---------------------------------------------
say "test environment: scripts/testenv.sh up"
if ! bash scripts/testenv.sh up >"$TMP/testenv-up.log" 2>&1; then
    cat "$TMP/testenv-up.log" >&2
    die "scripts/testenv.sh up failed"
fi
eval "$(bash scripts/testenv.sh env)"
export DLB_GO_REQUIRE_CLUSTER=1

PREFIX="$TMP/prefix"
say "make install PREFIX=$PREFIX"
if ! make --no-print-directory install PREFIX="$PREFIX" >"$TMP/install.log" 2>&1; then
    cat "$TMP/install.log" >&2
    die "make install failed"
fi
target_dir=${CARGO_TARGET_DIR:-target}
[[ -f $target_dir/release/libdlb.a && -f $target_dir/release/libdlb.so ]] ||
    die "no libdlb.a/libdlb.so in $target_dir/release"
# The operators' command comes with it (issue 27: make install left it out).
dlb_version=$("$PREFIX/bin/dlb" --version) || die "no working dlb command in $PREFIX/bin"
[[ $dlb_version == "dlb $(sed -n 's/^version = "\(.*\)"$/\1/p' cli/Cargo.toml)" ]] ||
    die "installed dlb --version says '$dlb_version', not cli/Cargo.toml's version"
# What a user of the installed copy sets: pkg-config's search path, and the loader's for a
# prefix it does not search.
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" LD_LIBRARY_PATH="$PREFIX/lib"
# Go's build cache is not keyed on pkg-config's output (seen with Go 1.19): the binding
# compiled by an earlier run of this script, from the same checkout, kept that run's -L (a
# temporary prefix deleted since) and the link failed, "cannot find -ldlb". CGO_CFLAGS is part
# of the key: naming this run's prefix there compiles the binding anew (the rest stays cached).
export CGO_CFLAGS="${CGO_CFLAGS:--g -O2} -I$PREFIX/include"
soname=$(readelf -d "$PREFIX/lib/libdlb.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[[ $soname == libdlb.so.0 ]] || die "installed libdlb.so has SONAME '$soname', expected libdlb.so.0"
# loads_installed BINARY: the binary loads libdlb.so.0 from the prefix.
loads_installed() {
    local linked
    # Not `ldd | grep -q`: under pipefail, grep exiting at the first match can fail ldd.
    linked=$(ldd "$1")
    grep -q "libdlb.so.0 => $PREFIX/lib/libdlb.so.0" <<<"$linked" ||
        die "$1 does not load $PREFIX/lib/libdlb.so.0: $linked"
}
example_config="{\"primary\": \"$DLB_TEST_PRIMARY\", \"replicas\": {\"hosts\": [\"${DLB_TEST_REPLICAS//,/\", \"}\"]}}"

say "examples/c against the installed copy (pkg-config)"
# shellcheck disable=SC2046 # pkg-config prints a list of flags
${CC:-cc} -std=c99 -Wall -Wextra -Werror $(pkg-config --cflags dlb) -o "$TMP/dlb_example" \
    examples/c/dlb_example.c $(pkg-config --libs dlb)
loads_installed "$TMP/dlb_example"
flock "$LOCK" "$TMP/dlb_example" "$example_config" >"$TMP/c-example.log" ||
    { cat "$TMP/c-example.log" >&2; die "examples/c failed"; }

# --- static checks --------------------------------------------------------------------------
say "gofmt -l"
unformatted=$(gofmt -l bindings/go examples/go)
[[ -z $unformatted ]] || die "not gofmt-formatted (run gofmt -w): $unformatted"

say "go vet"
(cd bindings/go && go vet ./... && go vet -tags dlb_dev ./... && go vet -tags dlb_shared ./...)
(cd examples/go && go vet ./...)

# --- tests ----------------------------------------------------------------------------------
say "go1.21 files: type-checked against a stand-in of Go 1.21's log/slog"
# Go 1.19 never compiles the files under the go1.21 build constraint (log/slog). -tags go1.21
# selects them (and drops their !go1.21 twins); GOPATH mode finds log/slog in testdata/go121
# (declarations of Go 1.21's API, no code) as GOROOT has none; vet type-checks the package and
# its tests. A wrong name or signature (x/exp/slog's ErrorLevel, LogAttrs without a context)
# fails here.
mkdir -p "$TMP/gopath/src/${MODULE%/go}"
ln -s "$ROOT/bindings/go" "$TMP/gopath/src/$MODULE"
go121=$(grep -rl --include='*.go' '^//go:build go1\.21$' bindings/go)
[[ -n $go121 ]] || die "no go1.21 file found: the check would prove nothing"
(cd "$TMP/gopath/src/$MODULE" && GO111MODULE=off GOWORK=off \
    GOPATH="$ROOT/bindings/go/testdata/go121:$TMP/gopath:/usr/share/gocode" \
    go vet -tags go1.21 . ./dlbslog ./dlbsql ./dlbprom)

say "go test -race (the installed libdlb.so, through pkg-config)"
(cd bindings/go && go test -c -race -o "$TMP/dlb.test" .)
loads_installed "$TMP/dlb.test"
# shellcheck disable=SC2086 # GO_TEST_FLAGS is a list of flags
(cd bindings/go && go test -race -count=1 -v ${GO_TEST_FLAGS-} ./...)

say "dlbprom, dlbslog: go test -race in GOPATH mode (client_golang, x/exp/slog from Debian)"
# Their third-party modules are Debian's golang-*-dev sources under /usr/share/gocode, which
# GOPATH mode reads as they are (no module proxy here); the binding is linked in beside them
# ($TMP/gopath, above).
(cd "$TMP/gopath/src/$MODULE" && GO111MODULE=off GOWORK=off \
    GOPATH="$TMP/gopath:/usr/share/gocode" go vet ./dlbprom ./dlbslog &&
    GO111MODULE=off GOWORK=off GOPATH="$TMP/gopath:/usr/share/gocode" \
        flock "$LOCK" go test -race -count=1 -v ./dlbprom ./dlbslog)

quick='^(TestVersion|TestNames|TestOpenInvalidConfig|TestArgumentErrors|TestClose|TestRoundRobin|TestBufferGrowth)$'
say "in-repository modes: -tags dlb_dev (target/release/libdlb.a), -tags dlb_shared (libdlb.so)"
(cd bindings/go && go test -c -tags dlb_dev -o "$TMP/dlb_dev.test" .)
linked=$(ldd "$TMP/dlb_dev.test" || true)
if grep -q libdlb <<<"$linked"; then
    die "the dlb_dev test binary loads a libdlb.so; expected target/release/libdlb.a linked in"
fi
(cd bindings/go && "$TMP/dlb_dev.test" -test.count=1 -test.run "$quick")
(cd bindings/go && go test -c -race -tags dlb_shared -o "$TMP/dlb_shared.test" .)
linked=$(LD_LIBRARY_PATH='' ldd "$TMP/dlb_shared.test")
grep -q "libdlb.so.0 => .*/target/release/libdlb.so" <<<"$linked" ||
    die "the dlb_shared test binary does not load target/release/libdlb.so: $linked"
(cd bindings/go && LD_LIBRARY_PATH='' "$TMP/dlb_shared.test" -test.count=1 -test.run "$quick")

say "a Go program outside this repository: PKG_CONFIG_PATH and the one replace of publishing"
# What bindings/go/README.md tells a user: require the module at the release's version and,
# until the repository is published, one replace line for it (the line `go get` makes
# unnecessary). No go.work, no other replace: lib/pq, which only the binding's tests import,
# is not needed to build it.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
mkdir -p "$TMP/outside"
cat >"$TMP/outside/go.mod" <<MOD
module example.com/outside

go 1.19

require $MODULE v$version

replace $MODULE => $ROOT/bindings/go
MOD
cat >"$TMP/outside/main.go" <<GO
package main

import (
	"fmt"

	dlb "$MODULE"
)

func main() { fmt.Println("dlb", dlb.Version()) }
GO
[[ $(grep -c '=>' "$TMP/outside/go.mod") == 1 ]] || die "the outside program has more than one replace"
# A cache of its own: only PKG_CONFIG_PATH distinguishes this build from the same one in an
# earlier run (see CGO_CFLAGS above). env -i: no GOFLAGS or GOPATH of this script, and no
# workspace (GOWORK=off, the go.work above is not the program's).
(cd "$TMP/outside" && env -i PATH="$PATH" HOME="${HOME:-$TMP}" GOCACHE="$TMP/outside-cache" \
    GOWORK=off GOFLAGS=-mod=mod GOPROXY=off PKG_CONFIG_PATH="$PKG_CONFIG_PATH" go build -o outside .)
loads_installed "$TMP/outside/outside"
got=$("$TMP/outside/outside")
[[ $got == "dlb $version" ]] ||
    die "the outside program printed '$got'"

# --- example --------------------------------------------------------------------------------
say "examples/go: build and run"
(cd examples/go && go build -o "$TMP/dlb-example" .)
loads_installed "$TMP/dlb-example"
flock "$LOCK" "$TMP/dlb-example" -repo "go-test/$(date +%s)-$$" -tag v1.0.0

say "ok"
