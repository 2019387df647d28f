//! The C ABI (`include/dlb.h`): a thin translation layer over [`crate::Balancer`].
//!
//! This is the only module with `#[unsafe(no_mangle)]` functions. It adds no behaviour of its
//! own: every function converts its arguments, calls the Rust API and converts the result.
//!
//! # Conventions (stated for C programmers at the top of `include/dlb.h`, from `cbindgen.toml`)
//!
//! * Every fallible function returns an [`lb_status`]: [`LB_OK`] or one of the stable
//!   `LB_ERR_*` codes. The detail of the last failure on the calling thread is kept in a
//!   thread-local and read with [`lb_last_error_message`].
//! * Pointer arguments are checked: a NULL where a value is required, or a string that is not
//!   valid UTF-8, gives [`LB_ERR_INVALID_ARGUMENT`] with a message naming the argument.
//!   A non-NULL pointer must point to memory valid for the access described (a NUL-terminated
//!   string, a buffer of `cap` bytes, one `size_t`...): that cannot be checked.
//! * Output strings go to a caller buffer `buf` of `cap` bytes followed by `size_t *len`.
//!   When `len` is not NULL it receives the full length of the text (without the NUL) on
//!   success and on [`LB_ERR_BUFFER_TOO_SMALL`]; the text and its NUL are written only when
//!   `cap >= len + 1`. `buf` may be NULL when `cap` is 0 (a size query). Outputs are written
//!   only on success (except `len` on [`LB_ERR_BUFFER_TOO_SMALL`], and the LSN of
//!   [`lb_record_lsn`] on [`LB_ERR_STORE`]).
//! * No function unwinds into C or aborts the process: every body runs behind one panic
//!   boundary (`ffi_boundary!`) that turns a panic into [`LB_ERR_PANIC`].
//! * No DSN is ever written into the last error: the DSNs handed out contain passwords.
//!
//! # Safety
//!
//! The `unsafe extern "C"` functions here are meant to be called from C. Their one safety
//! requirement, shared by all, is the pointer rule above: each non-NULL pointer argument must
//! be valid for the documented access for the duration of the call, and an `lb_balancer`
//! pointer must come from [`lb_balancer_new`] and not have been freed.
// The per-function `# Safety` sections clippy asks for would all repeat the module-level rule
// above (and would be copied into every declaration of the C header).
#![allow(clippy::missing_safety_doc)]
// C names (`lb_balancer`, `lb_status`): the header is what C programmers read.
#![allow(non_camel_case_types)]

#[macro_use]
pub(crate) mod boundary;
// One file per C "class": what the C API promises about it, and nothing else.
//   error     the thread's last error (lb_last_error_message/_length)
//   status    lb_status: LB_OK, LB_ERR_*, lb_status_str, lb_status_is_retryable
//   version   lb_version
//   balancer  lb_balancer: new/free, recording LSNs, failure reports, metrics and status text
//   route     lb_route: picks, the primary's DSN, LB_ROLE_*/LB_REASON_* and their names
//   logging   lb_set_log_callback, LB_LOG_*, the log queue (lb_log_queue_enable, lb_next_log)
//   events    host lifecycle events: lb_set_event_callback, lb_next_event
//   session   lb_is_plain_read: the statements after which a pooled connection needs no reset
// Declaration order is the order of the header's sections (the blank lines keep rustfmt from
// sorting them).
mod error;

mod status;

mod version;

mod balancer;

mod route;

mod dsn;

mod logging;

mod events;

mod session;

#[cfg(test)]
mod tests;

pub use self::balancer::*;
pub use self::dsn::*;
pub use self::error::*;
pub use self::events::*;
pub use self::logging::*;
pub use self::route::*;
pub use self::session::*;
pub use self::status::*;
pub use self::version::*;
