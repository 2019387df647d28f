module github.com/dlb-project/dlb/bindings/go

go 1.19

// Only the tests use lib/pq (to read rows on the DSNs the balancer hands out); the dlb
// package itself uses the standard library only. bindings/go/test.sh runs the tests offline
// with Debian's golang-github-lib-pq-dev source in a generated go.work (gowork.sh): this file
// is the one `go get` reads, with no path of any machine in it.
require github.com/lib/pq v1.10.7
