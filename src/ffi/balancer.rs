//! `lb_balancer`: the handle's life cycle (new, free), recording LSNs, failure reports and
//! the health and metrics reports. Picks and what they return are in `route.rs`.

use std::ffi::c_char;
use std::time::Duration;

use super::boundary::{OutStr, arg_ref, arg_str};
use super::error::Failure;
use super::status::{
    LB_ERR_INVALID_ARGUMENT, LB_ERR_INVALID_CONFIG, LB_ERR_UNKNOWN_HOST, lb_status,
};
use crate::{Balancer, Config, Lsn, MAX_KEY_LEN};

/// Longest accepted sticking key, in bytes.
pub const LB_MAX_KEY_LENGTH: usize = 1024;
/// Longest LSN text (`"FFFFFFFF/FFFFFFFF"`), without the NUL: a buffer of
/// `LB_LSN_MAX_LENGTH + 1` bytes always holds an LSN.
pub const LB_LSN_MAX_LENGTH: usize = 17;

// The C constants are literals (cbindgen cannot evaluate paths); they must stay equal to the
// Rust values.
const _: () = {
    assert!(LB_MAX_KEY_LENGTH == MAX_KEY_LEN);
    assert!(LB_LSN_MAX_LENGTH == Lsn::MAX_TEXT_LEN);
};

/// A load balancer over one PostgreSQL primary and its streaming replicas (opaque).
///
/// Thread-safe: one `lb_balancer` may be used from any number of threads at once, except that
/// `lb_balancer_free()` must not run concurrently with any other call on it. Created by
/// `lb_balancer_new()`, owned by the caller, released by `lb_balancer_free()`.
#[derive(Debug)]
pub struct lb_balancer {
    _private: [u8; 0],
}

/// The balancer behind a handle.
///
/// # Safety
/// `lb` is NULL or came from `lb_balancer_new` and has not been freed.
pub(crate) unsafe fn balancer<'a>(lb: *const lb_balancer) -> Result<&'a Balancer, Failure> {
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
/// Blocking: runs one health check of every host before returning (the replicas, then the
/// primary, each bounded by the configuration's `probe_timeout_ms`, default 100 ms), then
/// starts a background monitor thread. A host that is down does not fail the call: replicas
/// become eligible once the monitor sees them healthy.
///
/// With the default embedded LSN store (`"lsn_store"` absent), recorded LSNs protect reads of
/// this process only; a warning says so once per process (configure the Redis store, or carry
/// the LSN as a causal token, for several processes).
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
        let embedded = matches!(config.lsn_store, crate::LsnStoreConfig::Memory {});
        let lb = Box::new(Balancer::new(config)?);
        if embedded {
            warn_embedded_store_once();
        }
        unsafe { out.write(Box::into_raw(lb).cast::<lb_balancer>()) };
        Ok(())
    })
}

/// Logs, once per process, that the embedded LSN store only protects this process's own reads:
/// C callers are often multi-process servers (Puma, Unicorn, Sidekiq, several instances).
fn warn_embedded_store_once() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        log::warn!(target: "dlb", "the embedded LSN store protects read-your-writes within this process only: with several worker processes or instances, configure \"lsn_store\": {{\"redis\": ...}} or carry the LSN as a causal token");
    });
}

/// Stops the balancer's monitor thread, closes its connection pools and frees it. NULL is a
/// no-op. `lb` must not be used afterwards, and no other call on it may be running.
///
/// Fork: create balancers after `fork()`. In a child, a balancer inherited from the parent
/// must not be used; freeing it there releases nothing (the parent's connections stay open).
///
/// Blocking: returns once the monitor thread has exited and the pools are closed, without
/// waiting for a probe, live check or connect in progress (they end on their own threads,
/// within their own timeouts, even on a host that vanished). Longer only when a DNS exchange or
/// the LSN store's housekeeping is running (each bounded by its timeout).
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
/// For at least the next `sticky_ttl_s` seconds, sticky picks for `key` only return replicas
/// that have replayed it. A key's LSN never moves backwards, and a force on the key
/// (`lb_force_primary()`) is neither ended nor shortened by it. The LSN is also a causal token
/// for `lb_pick_replica_min_lsn()`.
///
/// The LSN is recorded even when `lsn_buf` turns out too small; a buffer of
/// `LB_LSN_MAX_LENGTH + 1` bytes always suffices.
///
/// `LB_ERR_STORE` comes after the LSN was read: the write happened at that LSN, only storing
/// it failed. Unlike the general rule, the LSN is then written to `lsn_buf` and `*lsn_len` as
/// on success (when it fits; otherwise `*lsn_len` only): carry it as a causal token
/// (`lb_pick_replica_min_lsn()`), or retry with `lb_record_lsn_value()`.
///
/// Blocking: one round trip to the primary on a pooled connection (connecting first if needed,
/// up to `pool.checkout_timeout_ms`), plus the LSN store's write.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_KEY`, `LB_ERR_PRIMARY_UNAVAILABLE`,
/// `LB_ERR_QUERY`, `LB_ERR_STORE` (with the LSN, see above), `LB_ERR_BUFFER_TOO_SMALL`.
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
        match lb.record_lsn(key) {
            Ok(lsn) => out.put(&lsn.to_string()),
            Err(e) => {
                if let Some(lsn) = e.lsn() {
                    // The store error is what the caller must see, whether the LSN fits or not.
                    let _ = out.put(&lsn.to_string());
                }
                Err(e.into())
            }
        }
    })
}

/// As `lb_record_lsn()`, writing a causal token into `token_buf`: `"v2:X/Y:T:S"` (the LSN,
/// the primary's timeline in decimal, its `system_identifier` as 16 hex digits), at most
/// `LB_TOKEN_MAX_LEN` bytes. Carry it to the reads that must see the write and pass it to
/// `lb_pick_replica_min_lsn()`: unlike a bare LSN, it is never compared with a position of
/// another cluster or of another timeline (after a failover). On `LB_ERR_STORE` the token is
/// still written (the write happened; only its recording failed).
///
/// Blocking: as `lb_record_lsn()`.
///
/// Errors: as `lb_record_lsn()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_record_token(
    lb: *const lb_balancer,
    key: *const c_char,
    token_buf: *mut c_char,
    token_cap: usize,
    token_len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_record_token", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_str(key, "key") }?;
        let out = unsafe { OutStr::new(token_buf, token_cap, token_len, "token_buf") }?;
        match lb.record_token(key) {
            Ok(token) => out.put(&token.to_string()),
            Err(e) => {
                if let Some(lsn) = e.lsn() {
                    let _ = out.put(&lsn.to_string());
                }
                Err(e.into())
            }
        }
    })
}

/// Longest text `lb_record_token()` writes (without the terminating NUL): 48
/// (`CausalToken::MAX_TEXT_LEN`; a test holds the two equal).
pub const LB_TOKEN_MAX_LEN: usize = 48;

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
/// The force is kept apart from the key's recorded LSN: it never erases it (when the force
/// ends, sticky picks still wait for a replica that replayed the LSN), and nothing shortens
/// it (a later `lb_record_lsn()` or a shorter force leaves its end as it is; a longer one
/// extends it). Any `ttl_ms` up to `UINT64_MAX` is accepted; over 10 years it counts as 10
/// years.
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

/// Writes every metric in the Prometheus text exposition format into `buf` (names prefixed
/// with the configuration's `metrics.prefix`, default `dlb_`; its `metrics.labels` on every
/// series). Contains no secrets. Counters move between calls, so after `LB_ERR_BUFFER_TOO_SMALL`
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

/// Writes every metric as JSON into `buf`: the typed snapshot `lb_metrics_text()` is
/// rendered from (its shape's `version`, `picks`, `quarantines`, `readmissions`, `counters`,
/// `primary_up`, `healthy_replicas`, `last_check_age_seconds`, per-replica `replicas` and
/// per-host `pools`, and the latency histograms `probe_seconds`, `live_check_seconds`,
/// `store_operation_seconds`, `sticky_pick_seconds` with cumulative `buckets` of `le`
/// seconds, `count` and `sum_seconds`). An unknown value (a lag, the age before the first
/// check) is `null`. Contains no secrets. Counters move between calls, so after
/// `LB_ERR_BUFFER_TOO_SMALL` retry with some slack. Never blocks on I/O.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_metrics_json(
    lb: *const lb_balancer,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_metrics_json", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        out.put(&lb.metrics().to_json())
    })
}

/// Writes a JSON health report into `buf`: its shape's `version`, the overall `status` (`ok`,
/// `degraded`, `down`), `primary_state` and `primary_error`, the primary and every replica
/// (`addr`, redacted `dsn`, `state`, quarantine `reason`, `replay_lsn`, `lag_bytes`,
/// `lag_seconds`, `last_error`, pool sizes, and who answered: `server_addr`,
/// `system_identifier`, `timeline`), `primary_lsn`, `checks`, `last_check_age_ms`,
/// `last_check_at`, `check_interval_ms` and `healthy_replicas` (docs/operations.md, "Status"). Contains no
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

/// Writes the LSN currently recorded for `key` (forced or not), as `"X/Y"`, into `lsn_buf`
/// (output string rules: see the top of dlb.h); an empty string (`*lsn_len` 0) when nothing is
/// recorded or the entry expired. A buffer of `LB_LSN_MAX_LENGTH + 1` bytes always suffices.
///
/// Blocking: reads the LSN store only (never blocks with the default in-memory one).
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_INVALID_KEY`, `LB_ERR_STORE`, `LB_ERR_FORKED`,
/// `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_recorded_lsn(
    lb: *const lb_balancer,
    key: *const c_char,
    lsn_buf: *mut c_char,
    lsn_cap: usize,
    lsn_len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_recorded_lsn", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_str(key, "key") }?;
        let out = unsafe { OutStr::new(lsn_buf, lsn_cap, lsn_len, "lsn_buf") }?;
        let lsn = lb.recorded_lsn(key)?;
        out.put(&lsn.map(|l| l.to_string()).unwrap_or_default())
    })
}
