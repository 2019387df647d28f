//go:build !dlb_dev && !dlb_shared

package dlb

// The default: an installed dlb (`make install PREFIX=...`), found through pkg-config's
// dlb.pc (set PKG_CONFIG_PATH to $PREFIX/lib/pkgconfig for a prefix pkg-config does not
// search). It links libdlb.so (SONAME libdlb.so.0): at run time the loader must find it
// (ldconfig, LD_LIBRARY_PATH, or an rpath given with CGO_LDFLAGS). Inside this repository,
// build with -tags dlb_dev instead (see link_dev.go).

// #cgo pkg-config: dlb
import "C"
