//! Test-only C entry points, for `ffi-tests/` (the `ffi-test-hooks` feature; not in
//! `include/dlb.h`: the tests declare them).

use std::ffi::c_char;

use crate::ffi::boundary::{arg_str, run};
use crate::ffi::lb_status;

/// Panics with `message` behind the C panic boundary, as a bug inside any `lb_*` function
/// would: returns `LB_ERR_PANIC`, with the message as the last error and in an error-level log
/// record, and prints nothing to stderr.
///
/// # Safety
/// `message` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_test_panic(message: *const c_char) -> lb_status {
    run(
        "lb_test_panic",
        move || -> Result<(), crate::ffi::Failure> {
            // SAFETY: as documented.
            let message = unsafe { arg_str(message, "message") }?;
            panic!("{message}")
        },
    )
}
