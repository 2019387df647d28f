//! Routing dlb's `log` records into the host program's logger.
//!
//! `log::set_logger` can be called once per process, so a forwarding logger is installed on the
//! first `lb_set_log_callback()` and stays; the callback it forwards to is swapped under a
//! mutex. The mutex is never held while the callback runs: a record takes a reference to the
//! current sink, unlocks, then calls it, so a callback may log or call back into dlb freely.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use super::error::Failure;
use super::status::{LB_ERR_INVALID_ARGUMENT, LB_ERR_LOGGER_UNAVAILABLE, lb_status};

/// Log level filter: nothing.
pub const LB_LOG_OFF: u32 = 0;
/// Log level: errors.
pub const LB_LOG_ERROR: u32 = 1;
/// Log level: warnings (a replica quarantined, a primary check failed...).
pub const LB_LOG_WARN: u32 = 2;
/// Log level: information (start-up, a replica healthy or re-admitted...).
pub const LB_LOG_INFO: u32 = 3;
/// Log level: debugging detail (every check's outcome).
pub const LB_LOG_DEBUG: u32 = 4;
/// Log level: tracing.
pub const LB_LOG_TRACE: u32 = 5;

const _: () = {
    assert!(LB_LOG_ERROR == Level::Error as u32);
    assert!(LB_LOG_WARN == Level::Warn as u32);
    assert!(LB_LOG_INFO == Level::Info as u32);
    assert!(LB_LOG_DEBUG == Level::Debug as u32);
    assert!(LB_LOG_TRACE == Level::Trace as u32);
};

/// A log callback: `level` is one of `LB_LOG_ERROR` .. `LB_LOG_TRACE`, `msg` a NUL-terminated
/// UTF-8 message valid only during the call (copy it to keep it), `user` the pointer given to
/// `lb_set_log_callback()`.
///
/// It is called from whichever thread logs, dlb's background threads included, possibly from
/// several threads at once: it must be thread-safe and should return quickly. It may call
/// dlb functions. It must not unwind (no C++ exception or longjmp out of it).
pub type lb_log_callback =
    Option<unsafe extern "C" fn(level: u32, msg: *const c_char, user: *mut c_void)>;

struct Sink {
    callback: unsafe extern "C" fn(u32, *const c_char, *mut c_void),
    /// The caller's `user` pointer, opaque to us.
    user: usize,
    filter: LevelFilter,
}

/// The current sink. Records clone the `Arc` and call it unlocked; replacing it waits until
/// no clone of the old one is left (no call to the old callback in flight).
static SINK: Mutex<Option<Arc<Sink>>> = Mutex::new(None);

/// Result of the one `log::set_logger` call.
static INSTALLED: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// Depth of callbacks running on this thread: replacing the sink from inside a callback
    /// must not wait for itself.
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
}

struct Forwarder;

static FORWARDER: Forwarder = Forwarder;

impl Log for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // The guard is a temporary: the lock is released at the end of this statement.
        let Some(sink) = SINK.lock().clone() else {
            return;
        };
        if record.level() > sink.filter {
            return;
        }
        let target = record.target();
        let text = if target == "dlb" || target.starts_with("dlb::") {
            record.args().to_string()
        } else {
            format!("{target}: {}", record.args())
        };
        let text = CString::new(text).unwrap_or_else(|e| {
            let escaped = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\\0");
            CString::new(escaped).expect("NULs escaped")
        });
        let _ = IN_CALLBACK.try_with(|d| d.set(d.get() + 1));
        // SAFETY: the callback and `user` are what the host registered, with the contract of
        // `lb_log_callback`; `text` outlives the call.
        unsafe {
            (sink.callback)(
                record.level() as u32,
                text.as_ptr(),
                sink.user as *mut c_void,
            )
        };
        let _ = IN_CALLBACK.try_with(|d| d.set(d.get() - 1));
    }

    fn flush(&self) {}
}

fn level_filter(level: u32) -> Option<LevelFilter> {
    Some(match level {
        LB_LOG_OFF => LevelFilter::Off,
        LB_LOG_ERROR => LevelFilter::Error,
        LB_LOG_WARN => LevelFilter::Warn,
        LB_LOG_INFO => LevelFilter::Info,
        LB_LOG_DEBUG => LevelFilter::Debug,
        LB_LOG_TRACE => LevelFilter::Trace,
        _ => return None,
    })
}

/// Routes dlb's log records of level `level_filter` and more severe (`LB_LOG_ERROR` = 1 ..
/// `LB_LOG_TRACE` = 5; `LB_LOG_OFF` = 0 for none) to `cb`, with `user` passed through
/// untouched. A NULL `cb` (or `LB_LOG_OFF`) turns forwarding off. Messages never contain a
/// password. Records from other Rust libraries linked into dlb (the connection pool) come with
/// their origin as a prefix (`"r2d2: ..."`).
///
/// Process-wide: one callback for every balancer. The callback in place before the call is not
/// running any more, and will not be called again, when this returns (unless this is called
/// from inside a callback, where that cannot be waited for), so its `user` data may then be
/// released. Thread-safe. Blocks only while a call to the previous callback finishes.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (`level_filter` above `LB_LOG_TRACE`),
/// `LB_ERR_LOGGER_UNAVAILABLE` (other Rust code in this process installed a `log` logger
/// first; dlb's records go to that one).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_set_log_callback(
    level_filter: u32,
    cb: lb_log_callback,
    user: *mut c_void,
) -> lb_status {
    ffi_boundary!("lb_set_log_callback", Result<(), Failure>, {
        let Some(filter) = self::level_filter(level_filter) else {
            return Err(Failure::new(
                LB_ERR_INVALID_ARGUMENT,
                format!(
                    "argument `level_filter` is {level_filter}; expected {LB_LOG_OFF} (off) to \
                     {LB_LOG_TRACE} (trace)"
                ),
            ));
        };
        let sink = match cb {
            Some(callback) if filter != LevelFilter::Off => Some(Arc::new(Sink {
                callback,
                user: user as usize,
                filter,
            })),
            _ => None,
        };
        let installed = *INSTALLED.get_or_init(|| ::log::set_logger(&FORWARDER).is_ok());
        if !installed {
            return match sink {
                None => Ok(()),
                Some(_) => Err(Failure::new(
                    LB_ERR_LOGGER_UNAVAILABLE,
                    "another `log` logger is already installed in this process",
                )),
            };
        }
        let max = sink.as_ref().map_or(LevelFilter::Off, |s| s.filter);
        let old = std::mem::replace(&mut *SINK.lock(), sink);
        ::log::set_max_level(max);
        if let Some(old) = old {
            let nested = IN_CALLBACK.try_with(|d| d.get() > 0).unwrap_or(true);
            if !nested {
                wait_unused(&old);
            }
        }
        Ok(())
    })
}

/// Waits until `sink` is referenced only by `sink` (no record is calling it any more).
fn wait_unused(sink: &Arc<Sink>) {
    let mut spins = 0u32;
    while Arc::strong_count(sink) > 1 {
        if spins < 1000 {
            spins += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
