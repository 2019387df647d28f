//! The panic boundary every `extern "C"` function runs behind, and the argument helpers.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use super::error::{Failure, set_last_error};
use super::status::{
    LB_ERR_BUFFER_TOO_SMALL, LB_ERR_INVALID_ARGUMENT, LB_ERR_PANIC, LB_OK, lb_status,
};
use crate::redact::redact_text;

/// Runs a function body behind the panic boundary.
///
/// `ffi_boundary!("lb_name", Ret, { body })` evaluates `body` as a closure returning `Ret`
/// inside `catch_unwind` and converts the result with [`BoundaryOutput`]: a
/// `Result<(), Failure>` becomes an [`lb_status`] (recording the failure as the thread's last
/// error, prefixed with the function name), other types pass through. A panic is caught,
/// recorded as the last error, logged at error level (to the host's log callback, when one is
/// set) and answered with [`BoundaryOutput::on_panic`] (`LB_ERR_PANIC` for statuses); the
/// panic hook dlb installs keeps it off the host's stderr (see [`install_panic_hook`]).
/// Nothing unwinds into C.
macro_rules! ffi_boundary {
    ($func:literal, $ret:ty, $body:block) => {
        $crate::ffi::boundary::run($func, move || -> $ret { $body })
    };
}

/// What a body may return, and what C gets for it.
pub(crate) trait BoundaryOutput {
    /// The C return type.
    type C;
    /// Converts a normal return.
    fn finish(self, func: &'static str) -> Self::C;
    /// The value returned when the body panicked.
    fn on_panic() -> Self::C;
}

impl BoundaryOutput for Result<(), Failure> {
    type C = lb_status;

    fn finish(self, func: &'static str) -> lb_status {
        match self {
            Ok(()) => LB_OK,
            Err(f) => {
                set_last_error(format!("{func}: {}", f.message));
                f.status
            }
        }
    }

    fn on_panic() -> lb_status {
        LB_ERR_PANIC
    }
}

impl BoundaryOutput for () {
    type C = ();
    fn finish(self, _: &'static str) {}
    fn on_panic() {}
}

impl BoundaryOutput for usize {
    type C = usize;
    fn finish(self, _: &'static str) -> usize {
        self
    }
    fn on_panic() -> usize {
        0
    }
}

impl BoundaryOutput for bool {
    type C = bool;
    fn finish(self, _: &'static str) -> bool {
        self
    }
    fn on_panic() -> bool {
        false
    }
}

impl BoundaryOutput for *const c_char {
    type C = *const c_char;
    fn finish(self, _: &'static str) -> *const c_char {
        self
    }
    /// A static empty string: callers print these pointers without checking them.
    fn on_panic() -> *const c_char {
        c"".as_ptr()
    }
}

thread_local! {
    /// How many [`run`] calls are under way on this thread (a log callback may call back into
    /// dlb, so they nest): a panic now is the boundary's to report.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic caught by the boundary on this thread happened (`file:line:col`),
    /// noted by the hook for the log record.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks this thread as inside the boundary until dropped.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        let _ = INSIDE.try_with(|d| d.set(d.get() + 1));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Installs, once per process, a panic hook that stays silent for panics inside the boundary
/// (they become a status, the last error and a log record) and hands every other panic (dlb's
/// background threads, the host's own Rust code) to the hook in place before it, by default
/// the one that prints to stderr. A hook the host installs later replaces this one.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if INSIDE.try_with(|d| d.get() > 0).unwrap_or(false) {
                let at = info.location().map(ToString::to_string);
                let _ = LOCATION.try_with(|l| l.replace(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// Body of [`ffi_boundary!`].
pub(crate) fn run<T: BoundaryOutput>(func: &'static str, body: impl FnOnce() -> T) -> T::C {
    install_panic_hook();
    let _inside = Inside::enter();
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(out) => out.finish(func),
        Err(payload) => {
            let message = redact_text(panic_message(&*payload), &[]);
            set_last_error(format!("{func}: panic: {message}"));
            let at = LOCATION
                .try_with(|l| l.take())
                .ok()
                .flatten()
                .map_or_else(String::new, |at| format!(" at {at}"));
            // Still inside: a panic of the logger (or of a payload's destructor) is contained,
            // silently, here too.
            let _ = panic::catch_unwind(|| {
                log::error!(target: "dlb", "{func}: panic{at}: {message}");
            });
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            T::on_panic()
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

fn invalid(message: String) -> Failure {
    Failure::new(LB_ERR_INVALID_ARGUMENT, message)
}

/// A required reference argument. NULL gives `LB_ERR_INVALID_ARGUMENT` naming `name`.
///
/// # Safety
/// `p` is NULL or valid for reads of a `T` for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL pointers are valid per the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("argument `{name}` is NULL")))
}

/// A required NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    // SAFETY: as documented.
    unsafe { arg_opt_str(p, name) }?.ok_or_else(|| invalid(format!("argument `{name}` is NULL")))
}

/// An optional (NULL allowed) NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_opt_str<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map(Some).map_err(|e| {
        // The position only: the text may be a secret.
        invalid(format!(
            "argument `{name}` is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

/// An output string: a caller buffer of `cap` bytes and an optional length out-parameter.
pub(crate) struct OutStr {
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
    name: &'static str,
}

impl OutStr {
    /// Checks the buffer arguments before the call does anything: `buf` may be NULL only when
    /// `cap` is 0 (a size query).
    ///
    /// # Safety
    /// `buf` is NULL or valid for writes of `cap` bytes, and `len` is NULL or valid for a write
    /// of one `usize`, until [`OutStr::write`] returns.
    pub(crate) unsafe fn new(
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
        name: &'static str,
    ) -> Result<OutStr, Failure> {
        if buf.is_null() && cap != 0 {
            return Err(invalid(format!(
                "argument `{name}` is NULL but its capacity is {cap}"
            )));
        }
        Ok(OutStr {
            buf,
            cap,
            len,
            name,
        })
    }

    /// Stores the full length of `s` in `*len` (when given) and checks that `s` and its NUL
    /// fit. Writes nothing else: call it before any other output is written.
    pub(crate) fn fit(&self, s: &str) -> Result<(), Failure> {
        if !self.len.is_null() {
            // SAFETY: valid per `OutStr::new`'s contract.
            unsafe { self.len.write(s.len()) };
        }
        if s.len() < self.cap {
            return Ok(());
        }
        // The sizes only: never the text (a DSN has a password in it).
        Err(Failure::new(
            LB_ERR_BUFFER_TOO_SMALL,
            format!(
                "`{}` holds {} bytes; {} are needed ({} and the NUL)",
                self.name,
                self.cap,
                s.len() + 1,
                s.len()
            ),
        ))
    }

    /// Copies `s` and a NUL into the buffer. Call [`OutStr::fit`] first.
    pub(crate) fn write(&self, s: &str) {
        assert!(s.len() < self.cap, "OutStr::write without fit");
        // SAFETY: `buf` is non-NULL (cap > 0) and valid for `cap > s.len()` bytes per
        // `OutStr::new`'s contract; the source is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.buf.cast::<u8>(), s.len());
            self.buf.add(s.len()).write(0);
        }
    }

    /// [`OutStr::fit`] then [`OutStr::write`].
    pub(crate) fn put(&self, s: &str) -> Result<(), Failure> {
        self.fit(s)?;
        self.write(s);
        Ok(())
    }
}
