//! `lb_balancer`: the balancer handle and its routing functions.

use std::ffi::{CStr, c_char};
use std::time::Duration;

use super::boundary::{OutStr, arg_opt_str, arg_ref, arg_str};
use super::error::{
    Failure, LB_ERR_INVALID_ARGUMENT, LB_ERR_INVALID_CONFIG, LB_ERR_UNKNOWN_HOST, lb_status,
};
use crate::{Balancer, Config, Lsn, MAX_KEY_LEN, Reason, Role, Route};

/// Target role of a route: the primary.
pub const LB_ROLE_PRIMARY: u32 = 0;
/// Target role of a route: a streaming replica.
pub const LB_ROLE_REPLICA: u32 = 1;

/// Replica chosen by round-robin; the read had no sticking key.
pub const LB_REASON_ROUND_ROBIN: u32 = 0;
/// Replica chosen because the cached replay positions show it has replayed the key's LSN.
pub const LB_REASON_CAUGHT_UP_CACHED: u32 = 1;
/// Replica chosen after a live `pg_last_wal_replay_lsn()` check showed it caught up.
pub const LB_REASON_CAUGHT_UP_LIVE: u32 = 2;
/// Replica chosen by round-robin: the key has no recorded LSN (or it expired).
pub const LB_REASON_NO_LSN_RECORDED: u32 = 3;
/// Primary: no replicas are configured (load balancing off).
pub const LB_REASON_NO_REPLICAS_CONFIGURED: u32 = 4;
/// Primary: every replica is quarantined or not yet checked.
pub const LB_REASON_NO_HEALTHY_REPLICA: u32 = 5;
/// Primary: no replica has replayed the key's LSN yet.
pub const LB_REASON_NOT_CAUGHT_UP: u32 = 6;
/// Primary: the LSN store failed, so no replica can be proven fresh.
pub const LB_REASON_STORE_ERROR: u32 = 7;
/// Primary: the caller forced the primary for this key (`lb_force_primary()`).
pub const LB_REASON_FORCED_PRIMARY: u32 = 8;
/// Primary: a write.
pub const LB_REASON_WRITE: u32 = 9;
/// Primary: the picked replica could not hand out a connection.
pub const LB_REASON_REPLICA_UNAVAILABLE: u32 = 10;

/// Longest accepted sticking key, in bytes.
pub const LB_MAX_KEY_LENGTH: usize = 1024;
/// Longest LSN text (`"FFFFFFFF/FFFFFFFF"`), without the NUL: a buffer of
/// `LB_LSN_MAX_LENGTH + 1` bytes always holds an LSN.
pub const LB_LSN_MAX_LENGTH: usize = 17;

// The C constants are literals (cbindgen cannot evaluate casts); they must stay equal to the
// Rust values.
const _: () = {
    assert!(LB_ROLE_PRIMARY == Role::Primary as u32);
    assert!(LB_ROLE_REPLICA == Role::Replica as u32);
    assert!(LB_MAX_KEY_LENGTH == MAX_KEY_LEN);
    assert!(LB_LSN_MAX_LENGTH == Lsn::MAX_TEXT_LEN);
    let mut i = 0;
    while i < REASONS.len() {
        assert!(REASONS[i].0 as u32 == REASONS[i].1);
        i += 1;
    }
};

/// Every reason with its C constant and its `lb_reason_str()` text.
pub(crate) const REASONS: [(Reason, u32, &CStr); 11] = [
    (Reason::RoundRobin, LB_REASON_ROUND_ROBIN, c"round_robin"),
    (
        Reason::CaughtUpCached,
        LB_REASON_CAUGHT_UP_CACHED,
        c"caught_up_cached",
    ),
    (
        Reason::CaughtUpLive,
        LB_REASON_CAUGHT_UP_LIVE,
        c"caught_up_live",
    ),
    (
        Reason::NoLsnRecorded,
        LB_REASON_NO_LSN_RECORDED,
        c"no_lsn_recorded",
    ),
    (
        Reason::NoReplicasConfigured,
        LB_REASON_NO_REPLICAS_CONFIGURED,
        c"no_replicas_configured",
    ),
    (
        Reason::NoHealthyReplica,
        LB_REASON_NO_HEALTHY_REPLICA,
        c"no_healthy_replica",
    ),
    (
        Reason::NotCaughtUp,
        LB_REASON_NOT_CAUGHT_UP,
        c"not_caught_up",
    ),
    (Reason::StoreError, LB_REASON_STORE_ERROR, c"store_error"),
    (
        Reason::ForcedPrimary,
        LB_REASON_FORCED_PRIMARY,
        c"forced_primary",
    ),
    (Reason::Write, LB_REASON_WRITE, c"write"),
    (
        Reason::ReplicaUnavailable,
        LB_REASON_REPLICA_UNAVAILABLE,
        c"replica_unavailable",
    ),
];

/// A load balancer over one PostgreSQL primary and its streaming replicas (opaque).
///
/// Thread-safe: one `lb_balancer` may be used from any number of threads at once, except that
/// `lb_balancer_free()` must not run concurrently with any other call on it. Created by
/// `lb_balancer_new()`, owned by the caller, released by `lb_balancer_free()`.
#[derive(Debug)]
pub struct lb_balancer {
    _private: [u8; 0],
}

/// Where a read or write was routed, and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct lb_route {
    /// `LB_ROLE_PRIMARY` or `LB_ROLE_REPLICA`.
    pub role: u32,
    /// One of the `LB_REASON_*` constants (new reasons may be added: treat an unknown one by
    /// its role).
    pub reason: u32,
}

impl From<&Route> for lb_route {
    fn from(r: &Route) -> lb_route {
        lb_route {
            role: r.role() as u32,
            reason: r.reason() as u32,
        }
    }
}

/// The balancer behind a handle.
///
/// # Safety
/// `lb` is NULL or came from `lb_balancer_new` and has not been freed.
unsafe fn balancer<'a>(lb: *const lb_balancer) -> Result<&'a Balancer, Failure> {
    // SAFETY: a live handle points to the `Balancer` boxed by `lb_balancer_new`.
    unsafe { arg_ref(lb.cast::<Balancer>(), "lb") }
}

/// A configuration string that will be copied into DSNs: it must not contain a NUL, which C
/// would take for the end of the DSN.
fn check_no_nul(config: &Config) -> Result<(), Failure> {
    let hosts = config.replicas.iter().flat_map(|r| r.hosts.iter());
    let fields = std::iter::once(("primary".to_string(), &config.primary)).chain(
        hosts
            .enumerate()
            .map(|(i, h)| (format!("replicas.hosts[{i}]"), h)),
    );
    for (field, value) in fields {
        if value.contains('\0') {
            return Err(Failure::new(
                LB_ERR_INVALID_CONFIG,
                format!("invalid configuration: {field}: contains a NUL character"),
            ));
        }
    }
    Ok(())
}

/// Creates a balancer from a JSON configuration and stores it in `*out`.
///
/// `config_json` is a NUL-terminated UTF-8 JSON document, e.g.
/// `{"primary": "host=db1 port=5432 user=app dbname=app",
///   "replicas": {"hosts": ["db2:5432", "db3:5432"]}}`; unknown fields are rejected.
/// On success `*out` receives a handle owned by the caller (free it with `lb_balancer_free()`);
/// on failure `*out` is left untouched.
///
/// Blocking: runs one health check of every host before returning, bounded by the
/// configuration's `probe_timeout_ms` (default 100 ms), then starts a background monitor
/// thread. A host that is down does not fail the call: replicas become eligible once the
/// monitor sees them healthy.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (NULL or non-UTF-8 `config_json`, NULL `out`),
/// `LB_ERR_INVALID_CONFIG` (the message names the offending field).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_balancer_new(
    config_json: *const c_char,
    out: *mut *mut lb_balancer,
) -> lb_status {
    ffi_boundary!("lb_balancer_new", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let json = unsafe { arg_str(config_json, "config_json") }?;
        if out.is_null() {
            return Err(Failure::new(
                LB_ERR_INVALID_ARGUMENT,
                "argument `out` is NULL",
            ));
        }
        let config = Config::from_json(json)?;
        check_no_nul(&config)?;
        let lb = Box::new(Balancer::new(config)?);
        unsafe { out.write(Box::into_raw(lb).cast::<lb_balancer>()) };
        Ok(())
    })
}

/// Stops the balancer's monitor thread, closes its connection pools and frees it. NULL is a
/// no-op. `lb` must not be used afterwards, and no other call on it may be running.
///
/// Fork: create balancers after `fork()`. In a child, a balancer inherited from the parent
/// must not be used; freeing it there releases nothing (the parent's connections stay open).
///
/// Blocking: waits for the monitor thread to exit (at most about one `probe_timeout_ms`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_balancer_free(lb: *mut lb_balancer) {
    ffi_boundary!("lb_balancer_free", (), {
        if !lb.is_null() {
            // SAFETY: a live handle owns the `Balancer` boxed by `lb_balancer_new`.
            drop(unsafe { Box::from_raw(lb.cast::<Balancer>()) });
        }
    })
}

/// Records the primary's current WAL insert position for `key` (call it after a write
/// commits) and writes that LSN, as `"X/Y"`, into `lsn_buf` (output string rules: see the top
/// of dlb.h).
/// For the next `sticky_ttl_s` seconds, sticky picks for `key` only return replicas that have
/// replayed it. A key's LSN never moves backwards. The LSN is also a causal token for
/// `lb_pick_replica_min_lsn()`.
///
/// The LSN is recorded even when `lsn_buf` turns out too small; a buffer of
/// `LB_LSN_MAX_LENGTH + 1` bytes always suffices.
///
/// Blocking: one round trip to the primary on a pooled connection (connecting first if needed,
/// up to `pool.checkout_timeout_ms`), plus the LSN store's write.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_KEY`, `LB_ERR_PRIMARY_UNAVAILABLE`,
/// `LB_ERR_QUERY`, `LB_ERR_STORE`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_record_lsn(
    lb: *const lb_balancer,
    key: *const c_char,
    lsn_buf: *mut c_char,
    lsn_cap: usize,
    lsn_len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_record_lsn", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_str(key, "key") }?;
        let out = unsafe { OutStr::new(lsn_buf, lsn_cap, lsn_len, "lsn_buf") }?;
        let lsn = lb.record_lsn(key)?;
        out.put(&lsn.to_string())
    })
}

/// Records an LSN the caller already has for `key`: a causal token carried in a header or a
/// job, or the result of its own `SELECT pg_current_wal_insert_lsn()`. `lsn` is `"X/Y"` (hex).
/// Same rules as `lb_record_lsn()`.
///
/// Does no database I/O; blocks only on the LSN store (never with the default in-memory one).
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_KEY`, `LB_ERR_INVALID_LSN`,
/// `LB_ERR_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_record_lsn_value(
    lb: *const lb_balancer,
    key: *const c_char,
    lsn: *const c_char,
) -> lb_status {
    ffi_boundary!("lb_record_lsn_value", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_str(key, "key") }?;
        let lsn: Lsn = unsafe { arg_str(lsn, "lsn") }?.parse()?;
        lb.record_lsn_value(key, lsn)?;
        Ok(())
    })
}

/// Sends every sticky read of `key` to the primary for `ttl_ms` milliseconds (data that must
/// never be read from a replica). Sticky picks of the key answer `LB_REASON_FORCED_PRIMARY`.
///
/// Does no database I/O; blocks only on the LSN store (never with the default in-memory one).
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (also for `ttl_ms` 0), `LB_ERR_INVALID_KEY`,
/// `LB_ERR_STORE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_force_primary(
    lb: *const lb_balancer,
    key: *const c_char,
    ttl_ms: u64,
) -> lb_status {
    ffi_boundary!("lb_force_primary", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_str(key, "key") }?;
        if ttl_ms == 0 {
            return Err(Failure::new(
                LB_ERR_INVALID_ARGUMENT,
                "argument `ttl_ms` is 0",
            ));
        }
        lb.force_primary(key, Duration::from_millis(ttl_ms))?;
        Ok(())
    })
}

/// Writes a route's DSN and, when asked, its role and reason: nothing unless the DSN fits.
fn put_route(route: &Route, dsn: &OutStr, out: *mut lb_route) -> Result<(), Failure> {
    dsn.fit(route.dsn())?;
    dsn.write(route.dsn());
    if !out.is_null() {
        // SAFETY: non-NULL `route` arguments are valid for a write per the module contract.
        unsafe { out.write(lb_route::from(route)) };
    }
    Ok(())
}

/// Picks where a read should go and writes the DSN to connect with into `dsn_buf` (output
/// string rules: see the top of dlb.h), and its role and reason into `*route` when `route` is
/// not NULL.
///
/// The DSN is the configured one with host and port replaced, **password included**: hand it
/// to the driver, never to a log. When no replica is healthy (or none is configured) the
/// primary's DSN is returned with the reason; that is not an error.
///
/// `key` NULL: plain round-robin over the healthy replicas; no lock, no I/O, never blocks.
/// `key` non-NULL (a sticking key, 1 to `LB_MAX_KEY_LENGTH` bytes): only replicas that have
/// replayed the key's recorded LSN. Blocking with a key: reads the LSN store and, when the
/// cached replay positions show no replica caught up, asks the replicas live, in parallel,
/// for at most `sticky_check_budget_ms` (default 100 ms) in total.
///
/// Every call is a new pick: after `LB_ERR_BUFFER_TOO_SMALL`, a retry with a larger buffer may
/// pick another host (whose DSN may have another length).
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_KEY`, `LB_ERR_NO_CAUGHT_UP_REPLICA`
/// (only with `"no_caught_up_replica": "error"`), `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_pick_replica(
    lb: *const lb_balancer,
    key: *const c_char,
    dsn_buf: *mut c_char,
    dsn_cap: usize,
    dsn_len: *mut usize,
    route: *mut lb_route,
) -> lb_status {
    ffi_boundary!("lb_pick_replica", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_opt_str(key, "key") }?;
        let dsn = unsafe { OutStr::new(dsn_buf, dsn_cap, dsn_len, "dsn_buf") }?;
        put_route(&lb.pick_replica(key)?, &dsn, route)
    })
}

/// As `lb_pick_replica()` with a key, for a causal token the caller carried: picks, in
/// round-robin order, a replica that has replayed at least `min_lsn` (`"X/Y"`), else the
/// primary with `LB_REASON_NOT_CAUGHT_UP` (or `LB_ERR_NO_CAUGHT_UP_REPLICA` under the `"error"`
/// policy).
///
/// Blocking: only when the cached replay positions show no replica caught up, it asks the
/// replicas live for at most `sticky_check_budget_ms` in total.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_LSN`, `LB_ERR_NO_CAUGHT_UP_REPLICA`,
/// `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_pick_replica_min_lsn(
    lb: *const lb_balancer,
    min_lsn: *const c_char,
    dsn_buf: *mut c_char,
    dsn_cap: usize,
    dsn_len: *mut usize,
    route: *mut lb_route,
) -> lb_status {
    ffi_boundary!("lb_pick_replica_min_lsn", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let min_lsn: Lsn = unsafe { arg_str(min_lsn, "min_lsn") }?.parse()?;
        let dsn = unsafe { OutStr::new(dsn_buf, dsn_cap, dsn_len, "dsn_buf") }?;
        put_route(&lb.pick_replica_min_lsn(min_lsn)?, &dsn, route)
    })
}

/// Writes the primary's DSN (for writes; **password included**) into `buf`. Counts as a
/// routing decision with `LB_REASON_WRITE` in the metrics. Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_primary_dsn(
    lb: *const lb_balancer,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_primary_dsn", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        out.put(lb.primary().dsn())
    })
}

/// Tells the balancer that the caller saw a network error on a host, given by its DSN exactly
/// as handed out or by its `"host:port"`. A replica leaves the rotation at once, until a probe
/// that starts after this call succeeds; the monitor re-checks every host at once (throttled)
/// and, with DNS discovery, refreshes the list. Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_UNKNOWN_HOST` (not one of this balancer's hosts;
/// the message does not repeat the argument, which may hold a password).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_report_failure(
    lb: *const lb_balancer,
    dsn: *const c_char,
) -> lb_status {
    ffi_boundary!("lb_report_failure", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let dsn = unsafe { arg_str(dsn, "dsn") }?;
        if lb.report_failure(dsn) {
            Ok(())
        } else {
            Err(Failure::new(
                LB_ERR_UNKNOWN_HOST,
                "`dsn` is neither the DSN nor the host:port of one of this balancer's hosts",
            ))
        }
    })
}

/// Writes every metric in the Prometheus text exposition format (names prefixed `dlb_`) into
/// `buf`. Contains no secrets. Counters move between calls, so after `LB_ERR_BUFFER_TOO_SMALL`
/// retry with some slack. Never blocks on I/O.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_metrics_text(
    lb: *const lb_balancer,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_metrics_text", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        out.put(&lb.metrics_text())
    })
}

/// Writes a JSON health report into `buf`: the primary and every replica (`addr`, redacted
/// `dsn`, `state`, quarantine `reason`, `replay_lsn`, `lag_bytes`, `lag_seconds`,
/// `last_error`, pool sizes), `primary_lsn`, `checks` and `healthy_replicas`. Contains no
/// password. It changes between calls, so after `LB_ERR_BUFFER_TOO_SMALL` retry with some
/// slack. Never blocks on I/O.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_status_json(
    lb: *const lb_balancer,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_status_json", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        out.put(&lb.status().to_json())
    })
}

/// The snake-case name of an `LB_REASON_*` value (`"round_robin"`, `"not_caught_up"`...), as
/// used in the metrics; `"unknown"` for a value this version does not know. Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn lb_reason_str(reason: u32) -> *const c_char {
    ffi_boundary!("lb_reason_str", *const c_char, {
        REASONS
            .iter()
            .find(|(_, code, _)| *code == reason)
            .map_or(c"unknown", |(_, _, name)| name)
            .as_ptr()
    })
}

/// `"primary"` or `"replica"` for `LB_ROLE_PRIMARY` / `LB_ROLE_REPLICA`; `"unknown"` otherwise.
/// Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn lb_role_str(role: u32) -> *const c_char {
    ffi_boundary!("lb_role_str", *const c_char, {
        match role {
            LB_ROLE_PRIMARY => c"primary",
            LB_ROLE_REPLICA => c"replica",
            _ => c"unknown",
        }
        .as_ptr()
    })
}
