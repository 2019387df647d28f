module dlb/bindings/go/dlbprom

go 1.19

// client_golang and its dependencies come from Debian's golang-*-dev packages: the tests
// build in GOPATH mode against /usr/share/gocode (bindings/go/test.sh). A program using
// modules requires github.com/prometheus/client_golang normally.
require (
	dlb/bindings/go v0.0.0
	github.com/lib/pq v1.10.7 // the tests' driver
	github.com/prometheus/client_golang v1.14.0
	github.com/prometheus/client_model v0.3.0
	github.com/prometheus/common v0.39.0
)

replace dlb/bindings/go => ../
