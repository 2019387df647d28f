//go:build dlb_shared

package dlb

// Dynamic linking, with `go build -tags dlb_shared`: libdlb.so from the repository's release
// build, found at run time through an rpath to that directory. For a libdlb.so installed
// elsewhere: CGO_LDFLAGS="-L/usr/local/lib -Wl,-rpath,/usr/local/lib" go build -tags dlb_shared
// (or no rpath and LD_LIBRARY_PATH / ldconfig).

// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -ldlb -Wl,-rpath,${SRCDIR}/../../target/release
import "C"
