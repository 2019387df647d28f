//! `lb_status`: the status codes every fallible function returns, what each means, and which
//! are worth retrying.

use std::ffi::{CStr, c_char};

use crate::Error;

/// The result of every fallible `lb_*` function: `LB_OK` (0) or one of the `LB_ERR_*` codes.
/// Codes are stable and never reused; new ones may be added, so treat an unknown code as a
/// generic failure. The detail of a failure is in `lb_last_error_message()` on the same thread.
pub type lb_status = u32;

// The codes are typed `u32` rather than `lb_status` (the same type) only so that cbindgen
// emits them first in the header, before the type definitions.

/// Success (an `lb_status`, as are the `LB_ERR_*` codes below).
pub const LB_OK: u32 = 0;
/// An argument is NULL where a value is required, is not valid UTF-8, or is out of range.
/// The message names the argument.
pub const LB_ERR_INVALID_ARGUMENT: u32 = 1;
/// The configuration JSON is malformed or a field is invalid. The message names the field as
/// a JSON path (`pool.max_size`, `replicas.hosts[1]`).
pub const LB_ERR_INVALID_CONFIG: u32 = 2;
/// The output buffer cannot hold the text and its NUL. `*len` (when given) holds the length
/// needed, without the NUL; nothing else was written.
pub const LB_ERR_BUFFER_TOO_SMALL: u32 = 3;
/// The primary cannot be reached (connection refused, timed out, pool exhausted). Retryable.
pub const LB_ERR_PRIMARY_UNAVAILABLE: u32 = 4;
/// No replica has replayed the required LSN and the configuration says
/// `"no_caught_up_replica": "error"`. Retryable (or read from the primary).
pub const LB_ERR_NO_CAUGHT_UP_REPLICA: u32 = 5;
/// The LSN store failed. Retryable.
pub const LB_ERR_STORE: u32 = 6;
/// dlb panicked (a bug): the panic was caught and its message recorded as the last error.
/// The balancer is still usable.
pub const LB_ERR_PANIC: u32 = 7;
/// A string is not a valid `X/Y` LSN.
pub const LB_ERR_INVALID_LSN: u32 = 8;
/// A sticking key is empty or longer than `LB_MAX_KEY_LENGTH` bytes.
pub const LB_ERR_INVALID_KEY: u32 = 9;
/// A replica cannot be reached. Retryable.
pub const LB_ERR_REPLICA_UNAVAILABLE: u32 = 10;
/// A query dlb issued itself (such as reading the primary's WAL position) failed. Retryable.
pub const LB_ERR_QUERY: u32 = 11;
/// `lb_report_failure()` was given a DSN or `host:port` that is none of this balancer's hosts.
pub const LB_ERR_UNKNOWN_HOST: u32 = 12;
/// An error this version of the C API has no specific code for.
pub const LB_ERR_INTERNAL: u32 = 13;
/// `lb_set_log_callback()` cannot install its logger: other Rust code in the process already
/// installed a `log` logger.
pub const LB_ERR_LOGGER_UNAVAILABLE: u32 = 14;
/// The balancer was made by another process, before a `fork()`: calls that route or do I/O
/// refuse to run in the child (it has no monitor thread and would share the parent's
/// connections). Make a new balancer in the child.
pub const LB_ERR_FORKED: u32 = 15;

/// What the C API says about one status code.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusInfo {
    pub(crate) code: lb_status,
    /// The `lb_status_str()` text (NUL-terminated, static).
    pub(crate) text: &'static CStr,
    /// The `lb_status_is_retryable()` answer.
    pub(crate) retryable: bool,
}

impl StatusInfo {
    const fn new(code: lb_status, text: &'static CStr) -> StatusInfo {
        StatusInfo {
            code,
            text,
            retryable: false,
        }
    }

    const fn retryable(self) -> StatusInfo {
        StatusInfo {
            retryable: true,
            ..self
        }
    }
}

/// Every status code, indexed by its value: the one list `lb_status_str()` and
/// `lb_status_is_retryable()` read. A code is retryable exactly when a retryable
/// [`crate::Error`] maps to it (a unit test checks it).
pub(crate) const STATUSES: [StatusInfo; 16] = [
    StatusInfo::new(LB_OK, c"ok"),
    StatusInfo::new(LB_ERR_INVALID_ARGUMENT, c"invalid argument"),
    StatusInfo::new(LB_ERR_INVALID_CONFIG, c"invalid configuration"),
    StatusInfo::new(LB_ERR_BUFFER_TOO_SMALL, c"buffer too small"),
    StatusInfo::new(LB_ERR_PRIMARY_UNAVAILABLE, c"primary unavailable").retryable(),
    StatusInfo::new(LB_ERR_NO_CAUGHT_UP_REPLICA, c"no caught-up replica").retryable(),
    StatusInfo::new(LB_ERR_STORE, c"LSN store error").retryable(),
    StatusInfo::new(LB_ERR_PANIC, c"panic in dlb"),
    StatusInfo::new(LB_ERR_INVALID_LSN, c"invalid LSN"),
    StatusInfo::new(LB_ERR_INVALID_KEY, c"invalid key"),
    StatusInfo::new(LB_ERR_REPLICA_UNAVAILABLE, c"replica unavailable").retryable(),
    StatusInfo::new(LB_ERR_QUERY, c"query failed").retryable(),
    StatusInfo::new(LB_ERR_UNKNOWN_HOST, c"unknown host"),
    StatusInfo::new(LB_ERR_INTERNAL, c"internal error"),
    StatusInfo::new(LB_ERR_LOGGER_UNAVAILABLE, c"logger unavailable"),
    StatusInfo::new(LB_ERR_FORKED, c"balancer made before a fork"),
];

// The table is indexed by code: codes are dense, from 0, in order.
const _: () = {
    let mut i = 0;
    while i < STATUSES.len() {
        assert!(STATUSES[i].code as usize == i);
        i += 1;
    }
};

/// The table's entry for `status`, if this version knows it.
fn status_info(status: lb_status) -> Option<&'static StatusInfo> {
    STATUSES.get(usize::try_from(status).ok()?)
}

/// The C status of a crate error. Every variant is listed (no wildcard): a new one must be
/// given a code of its own (never by reusing one), or `LB_ERR_INTERNAL` explicitly.
pub(crate) fn status_of(e: &Error) -> lb_status {
    match e {
        Error::Config { .. } => LB_ERR_INVALID_CONFIG,
        Error::InvalidLsn { .. } => LB_ERR_INVALID_LSN,
        Error::InvalidKey { .. } => LB_ERR_INVALID_KEY,
        Error::PrimaryUnavailable { .. } => LB_ERR_PRIMARY_UNAVAILABLE,
        Error::ReplicaUnavailable { .. } => LB_ERR_REPLICA_UNAVAILABLE,
        Error::NoCaughtUpReplica { .. } => LB_ERR_NO_CAUGHT_UP_REPLICA,
        Error::Store { .. } => LB_ERR_STORE,
        Error::Query { .. } => LB_ERR_QUERY,
        Error::Forked { .. } => LB_ERR_FORKED,
    }
}

/// A short static description of `status` (`"ok"`, `"invalid argument"`, ...), or
/// `"unknown status"` for a code this version does not know. Never NULL; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn lb_status_str(status: lb_status) -> *const c_char {
    ffi_boundary!("lb_status_str", *const c_char, {
        status_info(status)
            .map_or(c"unknown status", |s| s.text)
            .as_ptr()
    })
}

/// True when a call that failed with `status` may succeed if retried later (the cluster can
/// change state): `LB_ERR_PRIMARY_UNAVAILABLE`, `LB_ERR_NO_CAUGHT_UP_REPLICA`, `LB_ERR_STORE`,
/// `LB_ERR_REPLICA_UNAVAILABLE` and `LB_ERR_QUERY`.
#[unsafe(no_mangle)]
pub extern "C" fn lb_status_is_retryable(status: lb_status) -> bool {
    ffi_boundary!("lb_status_is_retryable", bool, {
        status_info(status).is_some_and(|s| s.retryable)
    })
}
