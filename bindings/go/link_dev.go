//go:build !dlb_shared

package dlb

// Static linking (the default): libdlb.a from the repository's release build
// (`cargo build --release --lib`), plus the native libraries Rust's standard library needs
// (rustc --print native-static-libs). To link a libdlb.a installed elsewhere, put its
// directory first: CGO_LDFLAGS="-L/opt/dlb/lib" go build (CGO_LDFLAGS comes before these
// flags on the linker's command line, so its -L directories are searched first).

// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -l:libdlb.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
