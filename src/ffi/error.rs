//! The thread-local last error: the message of the last failed call on each thread.

use std::cell::RefCell;
use std::ffi::c_char;

use super::status::{lb_status, status_of};
use crate::Error;

/// A failed call: its status and the message recorded as the thread's last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: lb_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: lb_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    /// The crate's messages never contain a password (see [`crate::Error`]).
    fn from(e: Error) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error (NULs are escaped: the C copy must not end
/// early).
pub(crate) fn set_last_error(message: String) {
    let message = if message.contains('\0') {
        message.replace('\0', "\\0")
    } else {
        message
    };
    // Fails only while the thread is being torn down; there is nobody left to read it then.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = message);
}

fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    let mut f = Some(f);
    let mut call = |s: &str| (f.take().expect("called once"))(s);
    match LAST_ERROR.try_with(|e| call(&e.borrow())) {
        Ok(r) => r,
        // The thread is being torn down: no message.
        Err(_) => call(""),
    }
}

/// Copies the message of the last failed `lb_*` call on the calling thread into `buf`, always
/// NUL-terminated when `cap > 0`, truncated (at a UTF-8 character boundary) when it does not
/// fit. Returns the message's full length without the NUL, so a return value `>= cap` means
/// the copy was truncated (as with `snprintf`); 0 when no call on this thread has failed.
///
/// The message stays until the next failure on the same thread: successful calls do not clear
/// it, so read it right after the failing call. It never contains a password. `buf` may be
/// NULL when `cap` is 0. Never blocks; never fails.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_last_error_message(buf: *mut c_char, cap: usize) -> usize {
    ffi_boundary!("lb_last_error_message", usize, {
        with_last_error(|msg| {
            if buf.is_null() || cap == 0 {
                return msg.len();
            }
            let mut n = msg.len().min(cap - 1);
            while !msg.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: `buf` is valid for `cap > n` bytes per the module contract; the source
            // is a distinct Rust allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
            msg.len()
        })
    })
}

/// Length in bytes (without the NUL) of the calling thread's last error message: a buffer of
/// `lb_last_error_length() + 1` bytes holds it whole. Never blocks; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn lb_last_error_length() -> usize {
    ffi_boundary!("lb_last_error_length", usize, { with_last_error(str::len) })
}
