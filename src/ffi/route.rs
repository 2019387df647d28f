//! `lb_route`: picking where a read goes (or the primary's DSN for a write), and what a route
//! says: its role and reason.

use std::ffi::c_char;
use std::ptr;
use std::time::Duration;

use super::balancer::{balancer, lb_balancer};
use super::boundary::{OutStr, arg_opt_str, arg_str};
use super::error::Failure;
use super::status::{LB_ERR_BUFFER_TOO_SMALL, LB_ERR_INVALID_ARGUMENT, lb_status};
use crate::{CausalToken, NoCaughtUpPolicy, PickOptions, Reason, Role, Route};

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

// The C constants are literals (cbindgen cannot evaluate casts); they must stay equal to the
// Rust values.
const _: () = {
    assert!(LB_ROLE_PRIMARY == Role::Primary as u32);
    assert!(LB_ROLE_REPLICA == Role::Replica as u32);
    let mut i = 0;
    while i < REASONS.len() {
        assert!(REASONS[i].0 as u32 == REASONS[i].1);
        i += 1;
    }
};

/// Every reason with its C constant (the names come from [`Reason::as_str`]).
pub(crate) const REASONS: [(Reason, u32); Reason::ALL.len()] = [
    (Reason::RoundRobin, LB_REASON_ROUND_ROBIN),
    (Reason::CaughtUpCached, LB_REASON_CAUGHT_UP_CACHED),
    (Reason::CaughtUpLive, LB_REASON_CAUGHT_UP_LIVE),
    (Reason::NoLsnRecorded, LB_REASON_NO_LSN_RECORDED),
    (
        Reason::NoReplicasConfigured,
        LB_REASON_NO_REPLICAS_CONFIGURED,
    ),
    (Reason::NoHealthyReplica, LB_REASON_NO_HEALTHY_REPLICA),
    (Reason::NotCaughtUp, LB_REASON_NOT_CAUGHT_UP),
    (Reason::StoreError, LB_REASON_STORE_ERROR),
    (Reason::ForcedPrimary, LB_REASON_FORCED_PRIMARY),
    (Reason::Write, LB_REASON_WRITE),
    (Reason::ReplicaUnavailable, LB_REASON_REPLICA_UNAVAILABLE),
];

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
/// cached replay positions show no replica caught up, asks the replicas live, in parallel;
/// both together for at most `sticky_check_budget_ms` (default 100 ms) from the call's start
/// (a store that stopped answering included).
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
/// round-robin order, a replica that has replayed at least `min_lsn`, else the primary with
/// `LB_REASON_NOT_CAUGHT_UP` (or `LB_ERR_NO_CAUGHT_UP_REPLICA` under the `"error"` policy).
/// `min_lsn` is a token from `lb_record_token()` (`"v2:X/Y:T:S"`: a replica must also be on
/// the token's cluster and timeline; a token of another cluster or timeline gets the primary)
/// or a bare LSN `"X/Y"` (compared on the primary's current timeline).
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
        let token: CausalToken = unsafe { arg_str(min_lsn, "min_lsn") }?.parse()?;
        let dsn = unsafe { OutStr::new(dsn_buf, dsn_cap, dsn_len, "dsn_buf") }?;
        put_route(&lb.pick_replica_token(&token)?, &dsn, route)
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

/// The snake-case name of an `LB_REASON_*` value (`"round_robin"`, `"not_caught_up"`...), as
/// used in the metrics; `"unknown"` for a value this version does not know. Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn lb_reason_str(reason: u32) -> *const c_char {
    ffi_boundary!("lb_reason_str", *const c_char, {
        Reason::ALL
            .get(reason as usize)
            .map_or(c"unknown", |r| r.as_c_str())
            .as_ptr()
    })
}

/// `"primary"` or `"replica"` for `LB_ROLE_PRIMARY` / `LB_ROLE_REPLICA`; `"unknown"` otherwise.
/// Static; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn lb_role_str(role: u32) -> *const c_char {
    ffi_boundary!("lb_role_str", *const c_char, {
        Role::ALL
            .get(role as usize)
            .map_or(c"unknown", |r| r.as_c_str())
            .as_ptr()
    })
}

/// `lb_pick_opts.flags`: never block. No live replay check, and no read of an LSN store that
/// may block (Redis): a keyed read is routed from the cached replay positions only, and goes
/// to the primary (`LB_REASON_STORE_ERROR`) when the store would have to be asked.
pub const LB_PICK_CACHED_ONLY: u32 = 1;

/// `lb_pick_opts.no_caught_up`: the configuration's `no_caught_up_replica` (the default).
pub const LB_NO_CAUGHT_UP_DEFAULT: u32 = 0;
/// `lb_pick_opts.no_caught_up`: a read no replica can serve goes to the primary.
pub const LB_NO_CAUGHT_UP_PRIMARY: u32 = 1;
/// `lb_pick_opts.no_caught_up`: a read no replica can serve fails with
/// `LB_ERR_NO_CAUGHT_UP_REPLICA`.
pub const LB_NO_CAUGHT_UP_ERROR: u32 = 2;

/// Options of one pick (`lb_pick_replica_opts()`). Zero-initialise it, set `struct_size` to
/// `sizeof(lb_pick_opts)`, then the fields wanted: all zero means the defaults of
/// `lb_pick_replica()`. Fields may be appended in later versions (`struct_size` tells dlb
/// which a caller knows): dlb reads only `struct_size` bytes, takes the fields an older header
/// lacks as zero, and refuses a newer header's fields it does not know unless they are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct lb_pick_opts {
    /// `sizeof(lb_pick_opts)` as the caller compiled it.
    pub struct_size: u32,
    /// `LB_PICK_*` flags, or-ed (unknown bits are refused).
    pub flags: u32,
    /// A time budget for the pick's blocking work, in microseconds: the LSN store's read and
    /// the live replay checks end within it (each still within its own limit). When it runs
    /// out the read goes where an unprovable read goes (the primary, or the error). 0: no
    /// budget beyond those limits (use `LB_PICK_CACHED_ONLY` for "no time at all").
    pub budget_us: u64,
    /// `LB_NO_CAUGHT_UP_*`: what a read no replica can serve gets, for this call.
    pub no_caught_up: u32,
}

/// The size of `lb_pick_info.addr`: a `host:port` of up to 271 bytes and its NUL (DNS names
/// are at most 253 bytes).
pub const LB_ADDR_BUFFER_SIZE: usize = 272;

/// What a pick chose, with the host's identity (`lb_pick_replica_opts()`, `lb_primary_route()`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lb_pick_info {
    /// `LB_ROLE_PRIMARY` or `LB_ROLE_REPLICA`.
    pub role: u32,
    /// One of the `LB_REASON_*` constants.
    pub reason: u32,
    /// The host's id: the same for every route to this host while the balancer knows it,
    /// never reused within the process; host events carry it too. Key per-host pools on it.
    pub host_id: u64,
    /// `host:port` as the driver connects (IPv6 in brackets), NUL-terminated.
    pub addr: [c_char; LB_ADDR_BUFFER_SIZE],
}

impl Default for lb_pick_info {
    fn default() -> lb_pick_info {
        lb_pick_info {
            role: 0,
            reason: 0,
            host_id: 0,
            addr: [0; LB_ADDR_BUFFER_SIZE],
        }
    }
}

/// `sizeof(lb_pick_opts)` in its first version (dlb 0.3): the smallest `struct_size` taken.
/// Fields appended later are zero (their defaults) when a caller's struct is this old.
const PICK_OPTS_FIRST_SIZE: usize = 24;
const _: () = assert!(
    PICK_OPTS_FIRST_SIZE <= std::mem::size_of::<lb_pick_opts>()
        && std::mem::offset_of!(lb_pick_opts, struct_size) == 0
);

/// The largest `struct_size` taken: a struct from a newer header is read when the fields this
/// version does not know are zero; beyond this size `struct_size` is taken for garbage.
const PICK_OPTS_MAX_SIZE: usize = 1024;

/// The options behind `opts` (NULL: the defaults).
///
/// Reads `struct_size` alone first, then exactly `min(struct_size, sizeof)` bytes (the
/// rest zero): a struct from an older, smaller header is never read past its end. Bytes past
/// `sizeof` (a newer header's fields) must be zero: an option this version does not know is
/// refused, never ignored.
///
/// # Safety
/// `opts` is NULL or valid for reads of `struct_size` bytes (at least its first field).
unsafe fn pick_options(opts: *const lb_pick_opts) -> Result<PickOptions, Failure> {
    if opts.is_null() {
        return Ok(PickOptions::default());
    }
    let bad = |m: String| Failure::new(LB_ERR_INVALID_ARGUMENT, m);
    // SAFETY: `opts` is valid for reads of its first field, `struct_size` (offset 0), per the
    // contract above; nothing more is read before its value is checked.
    let size = unsafe { opts.cast::<u32>().read_unaligned() } as usize;
    let ours = std::mem::size_of::<lb_pick_opts>();
    if !(PICK_OPTS_FIRST_SIZE..=PICK_OPTS_MAX_SIZE).contains(&size) {
        return Err(bad(format!(
            "argument `opts`: struct_size is {size}; expected sizeof(lb_pick_opts) ({ours}, \
             or from {PICK_OPTS_FIRST_SIZE} to {PICK_OPTS_MAX_SIZE} for other versions of \
             dlb.h)"
        )));
    }
    let mut o = lb_pick_opts::default();
    // SAFETY: `opts` is valid for reads of `size` bytes (the contract), `o` for writes of
    // `ours`; the copy is at most both.
    unsafe {
        ptr::copy_nonoverlapping(
            opts.cast::<u8>(),
            ptr::addr_of_mut!(o).cast::<u8>(),
            size.min(ours),
        );
    }
    if size > ours {
        // SAFETY: as above, bytes `ours..size` of the caller's struct are readable.
        let newer = unsafe { std::slice::from_raw_parts(opts.cast::<u8>().add(ours), size - ours) };
        if let Some(i) = newer.iter().position(|&b| b != 0) {
            return Err(bad(format!(
                "argument `opts`: byte {} is set, past the fields this version of dlb knows \
                 (sizeof(lb_pick_opts) is {ours}): an option it cannot honour",
                ours + i
            )));
        }
    }
    if o.flags & !LB_PICK_CACHED_ONLY != 0 {
        return Err(bad(format!(
            "argument `opts`: unknown flags 0x{:x}",
            o.flags & !LB_PICK_CACHED_ONLY
        )));
    }
    let mut p = PickOptions::default().cached_only(o.flags & LB_PICK_CACHED_ONLY != 0);
    if o.budget_us > 0 {
        p = p.budget(Duration::from_micros(o.budget_us));
    }
    match o.no_caught_up {
        LB_NO_CAUGHT_UP_DEFAULT => {}
        LB_NO_CAUGHT_UP_PRIMARY => p = p.no_caught_up(NoCaughtUpPolicy::Primary),
        LB_NO_CAUGHT_UP_ERROR => p = p.no_caught_up(NoCaughtUpPolicy::Error),
        n => {
            return Err(bad(format!(
                "argument `opts`: no_caught_up is {n}; expected 0 to 2"
            )));
        }
    }
    Ok(p)
}

/// Writes a route's DSN and, when asked, what it chose: nothing unless both fit.
fn put_info(route: &Route, dsn: &OutStr, out: *mut lb_pick_info) -> Result<(), Failure> {
    let addr = route.addr().as_bytes();
    if addr.len() >= LB_ADDR_BUFFER_SIZE {
        return Err(Failure::new(
            LB_ERR_BUFFER_TOO_SMALL,
            format!(
                "the host's address is {} bytes long; lb_pick_info.addr holds {}",
                addr.len(),
                LB_ADDR_BUFFER_SIZE - 1
            ),
        ));
    }
    dsn.fit(route.dsn())?;
    dsn.write(route.dsn());
    if !out.is_null() {
        let mut info = lb_pick_info {
            role: route.role() as u32,
            reason: route.reason() as u32,
            host_id: route.host_id(),
            ..lb_pick_info::default()
        };
        for (d, s) in info.addr.iter_mut().zip(addr) {
            *d = *s as c_char;
        }
        // SAFETY: non-NULL `info` arguments are valid for a write per the module contract.
        unsafe { out.write(info) };
    }
    Ok(())
}

/// `lb_pick_replica()` (`min_lsn` NULL) or `lb_pick_replica_min_lsn()` (`key` NULL, `min_lsn`
/// a causal token) with per-call options `opts` (NULL: the defaults; see `lb_pick_opts`),
/// writing the DSN into `dsn_buf` and, when `info` is not NULL, the role, reason, host id and
/// address into `*info`. With both `key` and `min_lsn` (since 0.3): one pick for a read that
/// must see both the key's recorded writes and the token's, a replica that has replayed the
/// newer of the two (a forced key or a store failure: the primary, as for the key alone; a
/// token of another cluster or timeline: as for the token alone).
///
/// Blocking: as `lb_pick_replica()`, within `opts->budget_us` when set; never with
/// `LB_PICK_CACHED_ONLY`.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (also: a bad `opts`),
/// `LB_ERR_INVALID_KEY`, `LB_ERR_INVALID_LSN`, `LB_ERR_NO_CAUGHT_UP_REPLICA`,
/// `LB_ERR_BUFFER_TOO_SMALL`, `LB_ERR_FORKED`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_pick_replica_opts(
    lb: *const lb_balancer,
    key: *const c_char,
    min_lsn: *const c_char,
    opts: *const lb_pick_opts,
    dsn_buf: *mut c_char,
    dsn_cap: usize,
    dsn_len: *mut usize,
    info: *mut lb_pick_info,
) -> lb_status {
    ffi_boundary!("lb_pick_replica_opts", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let key = unsafe { arg_opt_str(key, "key") }?;
        let min_lsn = unsafe { arg_opt_str(min_lsn, "min_lsn") }?;
        let opts = unsafe { pick_options(opts) }?;
        let dsn = unsafe { OutStr::new(dsn_buf, dsn_cap, dsn_len, "dsn_buf") }?;
        let route = match (key, min_lsn) {
            (Some(key), Some(token)) => {
                lb.pick_replica_key_token_with(key, &token.parse::<CausalToken>()?, &opts)?
            }
            (_, Some(token)) => lb.pick_replica_token_with(&token.parse::<CausalToken>()?, &opts)?,
            (key, None) => lb.pick_replica_with(key, &opts)?,
        };
        put_info(&route, &dsn, info)
    })
}

/// `lb_primary_dsn()` with the primary's role, reason (`LB_REASON_WRITE`), host id and address
/// in `*info` (when not NULL). Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_primary_route(
    lb: *const lb_balancer,
    dsn_buf: *mut c_char,
    dsn_cap: usize,
    dsn_len: *mut usize,
    info: *mut lb_pick_info,
) -> lb_status {
    ffi_boundary!("lb_primary_route", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let lb = unsafe { balancer(lb) }?;
        let dsn = unsafe { OutStr::new(dsn_buf, dsn_cap, dsn_len, "dsn_buf") }?;
        put_info(&lb.primary(), &dsn, info)
    })
}
