module github.com/dlb-project/dlb/bindings/go/dlbslog

go 1.19

// Versioned with the core module: tag bindings/go/dlbslog/vX.Y.Z beside bindings/go/vX.Y.Z,
// the same X.Y.Z (bindings/go/README.md). golang.org/x/exp comes from Debian's
// golang-golang-x-exp-dev here: the tests build in GOPATH mode against /usr/share/gocode
// (bindings/go/test.sh).
require (
	github.com/dlb-project/dlb/bindings/go v0.3.0
	golang.org/x/exp v0.0.0-20221028150844-83b7d23a625f
)
