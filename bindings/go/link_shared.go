//go:build dlb_shared

package dlb

// In-repository development mode, dynamically linked, with `go build -tags dlb_shared`: the
// repository's header and its release build's libdlb.so, found at run time through an rpath
// to that directory.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -ldlb -Wl,-rpath,${SRCDIR}/../../target/release
import "C"
