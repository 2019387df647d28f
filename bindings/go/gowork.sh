#!/usr/bin/env bash
# Writes a Go workspace file for building and testing this repository's Go modules offline:
# bindings/go and examples/go, with github.com/lib/pq (the tests' and the example's driver)
# taken from Debian's golang-github-lib-pq-dev source instead of the module proxy. The
# committed go.mod files name no directory of any machine; this file, generated where the
# caller says, is the only place that does.
#
# Usage: bash bindings/go/gowork.sh FILE
#   then GOWORK=FILE GOPROXY=off go test ./... (in bindings/go or examples/go). Workspace
#   mode takes no -mod=mod: leave GOFLAGS without it.
#
# Environment:
#   DLB_GO_PQ_DIR   lib/pq's source (default /usr/share/gocode/src/github.com/lib/pq)
set -euo pipefail

[[ $# -eq 1 ]] || {
    echo "usage: bash bindings/go/gowork.sh FILE" >&2
    exit 2
}
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
PQ=${DLB_GO_PQ_DIR:-/usr/share/gocode/src/github.com/lib/pq}
[[ -f $PQ/go.mod ]] || {
    echo "gowork: no lib/pq module in $PQ (apt-get install -y golang-github-lib-pq-dev)" >&2
    exit 1
}
cat >"$1" <<WORK
go 1.19

use (
	$ROOT/bindings/go
	$ROOT/examples/go
)

replace github.com/lib/pq => $PQ
WORK
