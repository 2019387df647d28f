#!/usr/bin/env bash
# Builds the release library and the `dlb` command, and installs them for C and Go (cgo,
# through pkg-config) and operators:
#
#   $DESTDIR$PREFIX/bin/dlb               (the operators' command: dlb check, dlb watch)
#   $DESTDIR$PREFIX/include/dlb.h
#   $DESTDIR$PREFIX/lib/libdlb.a
#   $DESTDIR$PREFIX/lib/libdlb.so.X.Y.Z   (SONAME libdlb.so.X), libdlb.so.X -> it, libdlb.so -> it
#   $DESTDIR$PREFIX/lib/pkgconfig/dlb.pc  (Libs.private: what a static link needs)
#
# Usage: bash scripts/install.sh [PREFIX] [DESTDIR]   (or make install PREFIX=... DESTDIR=...)
# PREFIX defaults to /usr/local; DESTDIR (staging root, for packagers) to empty. LIBDIR,
# INCLUDEDIR and BINDIR in the environment override $PREFIX/lib, $PREFIX/include and
# $PREFIX/bin.
#
# The library and the command are taken from cargo's target directory: $CARGO_TARGET_DIR when set (relative to
# the repository's root, as cargo reads it from there), else target/.
#
# The native libraries of Libs.private come from rustc (--print native-static-libs), so they
# match the toolchain and target that built libdlb.a.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
PREFIX=${1:-${PREFIX:-/usr/local}}
DESTDIR=${2:-${DESTDIR:-}}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
BINDIR=${BINDIR:-$PREFIX/bin}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
[[ $PREFIX == /* ]] || {
    echo "install: PREFIX must be an absolute path (got '$PREFIX')" >&2
    exit 1
}

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
MAJOR=${VERSION%%.*}
[[ -n $VERSION ]] || {
    echo "install: no version in Cargo.toml" >&2
    exit 1
}

log=$(mktemp)
trap 'rm -f -- "$log"' EXIT
echo "install: cargo rustc --release --lib (dlb $VERSION)"
if ! cargo rustc --release --lib -- --print native-static-libs >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
native=$(sed -n 's/^.*native-static-libs: //p' "$log" | tail -n 1)
[[ -n $native ]] || {
    echo "install: rustc printed no native-static-libs" >&2
    exit 1
}
echo "install: cargo build --release -p dlb-cli (the dlb command)"
if ! cargo build --release -p dlb-cli --bin dlb >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi

lib="$DESTDIR$LIBDIR"
# Relative to ${prefix} when under it, so a staged tree can be moved as a whole.
pc_libdir=${LIBDIR/#"$PREFIX"/\$\{prefix\}}
pc_includedir=${INCLUDEDIR/#"$PREFIX"/\$\{prefix\}}
install -d "$DESTDIR$INCLUDEDIR" "$lib/pkgconfig" "$DESTDIR$BINDIR"
install -m 755 "$TARGET_DIR/release/dlb" "$DESTDIR$BINDIR/dlb"
install -m 644 include/dlb.h "$DESTDIR$INCLUDEDIR/dlb.h"
install -m 644 "$TARGET_DIR/release/libdlb.a" "$lib/libdlb.a"
install -m 755 "$TARGET_DIR/release/libdlb.so" "$lib/libdlb.so.$VERSION"
ln -sfn "libdlb.so.$VERSION" "$lib/libdlb.so.$MAJOR"
ln -sfn "libdlb.so.$MAJOR" "$lib/libdlb.so"
cat >"$lib/pkgconfig/dlb.pc" <<PC
prefix=$PREFIX
libdir=$pc_libdir
includedir=$pc_includedir

Name: dlb
Description: Client-side PostgreSQL load balancing: read/write split, lag-aware replicas, primary sticking
Version: $VERSION
Libs: -L\${libdir} -ldlb
Libs.private: $native
Cflags: -I\${includedir}
PC
echo "install: dlb $VERSION in $DESTDIR$PREFIX (pkg-config: $lib/pkgconfig/dlb.pc; command: $DESTDIR$BINDIR/dlb)"
