module github.com/dlb-project/dlb/examples/go

go 1.19

require (
	github.com/dlb-project/dlb/bindings/go v0.3.0
	github.com/lib/pq v1.10.7
)

// The one replace of a program outside the module's repository, until it is published
// (bindings/go/README.md): here, the binding beside this example. bindings/go/test.sh builds
// the example offline with Debian's lib/pq in a generated go.work (bindings/go/gowork.sh).
replace github.com/dlb-project/dlb/bindings/go => ../../bindings/go
