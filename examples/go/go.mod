module dlb/examples/go

go 1.19

require (
	dlb/bindings/go v0.0.0
	github.com/lib/pq v1.10.7
)

// The binding lives in this repository; lib/pq is Debian's golang-github-lib-pq-dev, so
// nothing is downloaded (GOPROXY=off works).
replace (
	dlb/bindings/go => ../../bindings/go
	github.com/lib/pq => /usr/share/gocode/src/github.com/lib/pq
)
