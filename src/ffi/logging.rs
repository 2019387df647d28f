//! Routing dlb's `log` records into the host program's logger: through a callback, or a
//! queue the host polls (`lb_next_log()`) from a thread of its own.
//!
//! `log::set_logger` can be called once per process, so a forwarding logger is installed on the
//! first `lb_set_log_callback()` and stays; the callback it forwards to is swapped under a
//! mutex. The mutex is never held while the callback runs: a record takes a reference to the
//! current sink, unlocks, then calls it, so a callback may log or call back into dlb freely.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use super::boundary::OutStr;
use super::error::Failure;
use super::status::{LB_ERR_INVALID_ARGUMENT, LB_ERR_LOGGER_UNAVAILABLE, lb_status};
use crate::sync::queue::Queue;

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

/// How many records the log queue holds; when it is full the oldest is dropped and the next
/// record taken counts the drops in its `"dropped"` field.
pub const LB_LOG_QUEUE_CAPACITY: usize = 4096;

/// One record waiting in the log queue.
struct Queued {
    level: Level,
    target: String,
    message: String,
}

/// The log queue (made on first use) and its level filter (a `LevelFilter` as `usize`; 0 when
/// the queue is off).
static QUEUE: OnceLock<Queue<Queued>> = OnceLock::new();
static QUEUE_FILTER: AtomicUsize = AtomicUsize::new(0);

fn queue() -> &'static Queue<Queued> {
    QUEUE.get_or_init(|| Queue::new(LB_LOG_QUEUE_CAPACITY))
}

/// `target` without dlb's own module path: `"dlb"` for dlb's records, the origin otherwise.
fn origin(target: &str) -> &str {
    if target == "dlb" || target.starts_with("dlb::") {
        "dlb"
    } else {
        target
    }
}

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
        if record.level() as usize <= QUEUE_FILTER.load(Ordering::Relaxed) {
            queue().push(Queued {
                level: record.level(),
                target: origin(record.target()).to_string(),
                message: record.args().to_string(),
            });
        }
        // The guard is a temporary: the lock is released at the end of this statement.
        let Some(sink) = SINK.lock().clone() else {
            return;
        };
        if record.level() > sink.filter {
            return;
        }
        let text = match origin(record.target()) {
            "dlb" => record.args().to_string(),
            target => format!("{target}: {}", record.args()),
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
        let filter = level_arg(level_filter)?;
        let sink = match cb {
            Some(callback) if filter != LevelFilter::Off => Some(Arc::new(Sink {
                callback,
                user: user as usize,
                filter,
            })),
            _ => None,
        };
        if !install() {
            return match sink {
                None => Ok(()),
                Some(_) => Err(unavailable()),
            };
        }
        let old = std::mem::replace(&mut *SINK.lock(), sink);
        update_max_level();
        if let Some(old) = old {
            let nested = IN_CALLBACK.try_with(|d| d.get() > 0).unwrap_or(true);
            if !nested {
                wait_unused(&old);
            }
        }
        Ok(())
    })
}

/// The `level_filter` argument.
fn level_arg(level_filter: u32) -> Result<LevelFilter, Failure> {
    self::level_filter(level_filter).ok_or_else(|| {
        Failure::new(
            LB_ERR_INVALID_ARGUMENT,
            format!(
                "argument `level_filter` is {level_filter}; expected {LB_LOG_OFF} (off) to \
                 {LB_LOG_TRACE} (trace)"
            ),
        )
    })
}

/// Installs the forwarding logger (once per process); false when another logger was first.
fn install() -> bool {
    *INSTALLED.get_or_init(|| ::log::set_logger(&FORWARDER).is_ok())
}

fn unavailable() -> Failure {
    Failure::new(
        LB_ERR_LOGGER_UNAVAILABLE,
        "another `log` logger is already installed in this process",
    )
}

/// The `log` crate's maximum level: the more verbose of the callback's and the queue's.
fn update_max_level() {
    let sink = SINK.lock().as_ref().map_or(LevelFilter::Off, |s| s.filter);
    let queue = match QUEUE_FILTER.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        n => level_filter(n as u32).unwrap_or(LevelFilter::Off),
    };
    ::log::set_max_level(sink.max(queue));
}

/// Puts dlb's log records of level `level_filter` and more severe (`LB_LOG_ERROR` = 1 ..
/// `LB_LOG_TRACE` = 5) into a process-wide queue, taken with `lb_next_log()`: for runtimes
/// that cannot take calls from threads they did not create. `LB_LOG_OFF` (0) turns the queue
/// off and empties it (and ends every `lb_next_log()` wait). Independent of
/// `lb_set_log_callback()`: a record may go to both. The queue holds `LB_LOG_QUEUE_CAPACITY`
/// records; when it is full the oldest is dropped (logging never waits for a reader).
///
/// Thread-safe. Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (`level_filter` above `LB_LOG_TRACE`),
/// `LB_ERR_LOGGER_UNAVAILABLE` (another `log` logger is installed in this process).
#[unsafe(no_mangle)]
pub extern "C" fn lb_log_queue_enable(level_filter: u32) -> lb_status {
    ffi_boundary!("lb_log_queue_enable", Result<(), Failure>, {
        let filter = level_arg(level_filter)?;
        if !install() {
            return match filter {
                LevelFilter::Off => Ok(()),
                _ => Err(unavailable()),
            };
        }
        QUEUE_FILTER.store(filter as usize, Ordering::Relaxed);
        update_max_level();
        if filter == LevelFilter::Off {
            queue().clear();
            queue().wake();
        }
        Ok(())
    })
}

/// Takes the next record from the log queue (`lb_log_queue_enable()`) and writes it as one
/// JSON object into `buf` (output string rules: see the top of dlb.h):
/// `{"level":"warn","level_num":2,"target":"dlb","message":"replica db2:5432 quarantined: lag
/// (...)","dropped":0}`. `"target"` is `"dlb"`, or the Rust library the record comes from
/// (`"r2d2"`); `"dropped"` counts the records dropped before this one. Messages never contain
/// a password. Structured host state (address, reason, lag) comes with host events
/// (`lb_next_event()`).
///
/// Blocking: waits up to `timeout_ms` milliseconds (0: does not wait) for a record; with none,
/// returns `LB_OK` with an empty string (`*len` 0). `lb_wake_log_waiters()` and
/// `lb_log_queue_enable(LB_LOG_OFF)` end every wait at once: keep the timeout short (100 ms,
/// say) so a draining thread notices that it should stop, and never holds up process exit.
///
/// On `LB_ERR_BUFFER_TOO_SMALL` the record stays first in the queue: retry with `*len + 1`
/// bytes.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_next_log(
    timeout_ms: u32,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_next_log", Result<(), Failure>, {
        // SAFETY: pointer arguments follow the module contract.
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let taken = queue().take(timeout, |r, dropped| {
            let json = serde_json::json!({
                "level": r.level.as_str().to_ascii_lowercase(),
                "level_num": r.level as u32,
                "target": r.target,
                "message": r.message,
                "dropped": dropped,
            });
            out.put(&json.to_string())
        })?;
        match taken {
            Some(()) => Ok(()),
            None => out.put(""),
        }
    })
}

/// Ends every `lb_next_log()` waiting now (they return no record). Never blocks.
#[unsafe(no_mangle)]
pub extern "C" fn lb_wake_log_waiters() {
    ffi_boundary!("lb_wake_log_waiters", (), { queue().wake() })
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
