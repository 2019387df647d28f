module dlb/bindings/go/dlbslog

go 1.19

// golang.org/x/exp comes from Debian's golang-golang-x-exp-dev: the tests build in GOPATH
// mode against /usr/share/gocode (bindings/go/test.sh).
require (
	dlb/bindings/go v0.0.0
	golang.org/x/exp v0.0.0-20221028150844-83b7d23a625f
)

replace dlb/bindings/go => ../
