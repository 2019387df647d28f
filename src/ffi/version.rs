//! Library version.

use std::ffi::{CStr, c_char};

/// `CARGO_PKG_VERSION` with its NUL.
pub(crate) const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL"),
    };

/// The library's version, `"MAJOR.MINOR.PATCH"`: static and NUL-terminated, never free it.
/// Compare it with `LB_VERSION_MAJOR`/`MINOR`/`PATCH` to check that the header matches the
/// library linked at run time. Never blocks; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn lb_version() -> *const c_char {
    ffi_boundary!("lb_version", *const c_char, { VERSION.as_ptr() })
}
