module github.com/dlb-project/dlb/bindings/go/dlbprom

go 1.19

// Versioned with the core module: tag bindings/go/dlbprom/vX.Y.Z beside bindings/go/vX.Y.Z,
// the same X.Y.Z (bindings/go/README.md). client_golang and its dependencies come from
// Debian's golang-*-dev packages here: the tests build in GOPATH mode against
// /usr/share/gocode (bindings/go/test.sh), so nothing in this file points at a machine.
require (
	github.com/dlb-project/dlb/bindings/go v0.3.0
	github.com/lib/pq v1.10.7 // the tests' driver
	github.com/prometheus/client_golang v1.14.0
	github.com/prometheus/client_model v0.3.0
	github.com/prometheus/common v0.39.0
)
