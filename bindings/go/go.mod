module dlb/bindings/go

go 1.19

// Only the tests use lib/pq (to read rows on the DSNs the balancer hands out); the dlb
// package itself uses the standard library only. The replace points at Debian's
// golang-github-lib-pq-dev source, so nothing is downloaded (GOPROXY=off works).
require github.com/lib/pq v1.10.7

replace github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
