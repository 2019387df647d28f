//go:build dlb_dev && !dlb_shared

package dlb

// In-repository development mode, with `go build -tags dlb_dev`: the repository's header and
// its release build's libdlb.a (`cargo build --release --lib`), linked statically, plus the
// native libraries Rust's standard library needs (rustc --print native-static-libs). The
// archive is named by its path, which any linker takes.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: ${SRCDIR}/../../target/release/libdlb.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
