//! Routing: where a read goes. This is the only code on the pick path.
//!
//! A [`Router`] holds the current [`Snapshot`] of the replicas (published whole by the monitor
//! after every check, read under a crossbeam-epoch pin: no lock), a round-robin cursor striped
//! per thread, and the primary. A pick:
//!
//! 1. without a key: round-robin over the healthy replicas ([`Reason::RoundRobin`]), or the
//!    primary when none is healthy or none is configured;
//! 2. with a key: the key's entry is read from the [`LsnStore`]; a forced key or a store
//!    error means the primary, no LSN recorded round-robin ([`Reason::NoLsnRecorded`]), and
//!    an LSN a replica that has replayed it ([`sticky`]: cached positions first, then a live
//!    check within `sticky_check_budget_ms`), else the primary ([`Reason::NotCaughtUp`]) or
//!    [`Error::NoCaughtUpReplica`].
//!
//! The monitor talks to the router through two calls only: [`Router::publish`] (a new
//! snapshot) and [`Router::take_refresh_request`] (whether a caller reported a failure).

mod options;
mod route;
mod snapshot;
mod sticky;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use crossbeam::epoch::{self, Atomic, Owned};
use log::debug;
use parking_lot::Mutex;

pub use self::options::PickOptions;
pub use self::route::Route;
pub(crate) use self::snapshot::{ReplicaState, Server, Snapshot};
use crate::config::{Config, NoCaughtUpPolicy};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::host::{Host, StripedHost, nanos_since_epoch};
pub use crate::labels::Reason;
use crate::lsn::Lsn;
use crate::sticking::{LsnStore, Recorded, check_key};
use crate::stripe::StripedCursor;

/// Cached replay positions are trusted for this many check intervals after the snapshot that
/// holds them (then sticky picks check live, or go to the primary).
const TRUSTED_CHECKS: u32 = 3;

/// The routing state of one balancer: shared by callers (picks, failure reports), the monitor
/// (publishing) and the status report (reading).
pub(crate) struct Router {
    primary: Arc<StripedHost>,
    /// Replicas are configured (fixed or DNS): load balancing is on.
    lb_enabled: bool,
    snapshot: Atomic<Snapshot>,
    /// Orders snapshot publications (monitor vs `report_failure`); held for memory work only.
    publish_lock: Mutex<()>,
    cursor: StripedCursor,
    counters: Arc<Counters>,
    store: Arc<dyn LsnStore>,
    sticky_check_budget: Duration,
    no_caught_up: NoCaughtUpPolicy,
    /// A caller reported a failure since the monitor last asked (DNS refresh wanted).
    refresh_requested: AtomicBool,
    /// Wakes the monitor for an immediate check (merged with any pending one).
    wake: Sender<()>,
    /// The primary's `system_identifier` as last probed; 0 until known.
    primary_system: AtomicU64,
    /// When it last changed from one known value to another ([`nanos_since_epoch`]; 0: never).
    system_changed_at: AtomicU64,
    /// `sticky_ttl_s`: how long after such a change a key recorded before it may still exist.
    sticky_ttl: Duration,
    /// Where host events go (derived from each publication).
    pub(crate) events: Arc<Events>,
    /// Cached replay positions older than this (a few check intervals: the monitor is stuck or
    /// failing) are not trusted by sticky picks.
    trust_cache_for: Duration,
    /// Tests: the next monitor check panics.
    #[cfg(test)]
    pub(crate) panic_next_check: AtomicBool,
}

impl Router {
    pub(crate) fn new(
        config: &Config,
        primary: Arc<Host>,
        lb_enabled: bool,
        counters: Arc<Counters>,
        store: Arc<dyn LsnStore>,
        wake: Sender<()>,
    ) -> Router {
        Router {
            primary: StripedHost::new(primary),
            lb_enabled,
            snapshot: Atomic::new(Snapshot::default()),
            publish_lock: Mutex::new(()),
            cursor: StripedCursor::new(),
            counters,
            store,
            sticky_check_budget: Duration::from_millis(config.sticky_check_budget_ms),
            no_caught_up: config.no_caught_up_replica,
            refresh_requested: AtomicBool::new(false),
            wake,
            primary_system: AtomicU64::new(0),
            system_changed_at: AtomicU64::new(0),
            sticky_ttl: Duration::from_secs(config.sticky_ttl_s),
            events: Arc::new(Events::new()),
            trust_cache_for: config
                .check_interval()
                .saturating_mul(TRUSTED_CHECKS)
                .max(config.probe_timeout().saturating_mul(2 * TRUSTED_CHECKS)),
            #[cfg(test)]
            panic_next_check: AtomicBool::new(false),
        }
    }

    // ---- The pick path: no lock, no I/O (except a sticky pick's store read and live check).

    /// A route to the primary, counted under `reason`.
    #[inline]
    pub(crate) fn primary_route(&self, reason: Reason) -> Route {
        self.counters.count_pick(reason);
        Route {
            host: self.primary.handle(),
            reason,
            min_lsn: None,
        }
    }

    /// Where a read for `key` goes (see the module notes).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn pick(&self, key: Option<&str>, opts: &PickOptions) -> Result<Route> {
        let Some(key) = key else {
            return Ok(self.round_robin(Reason::RoundRobin));
        };
        check_key(key)?;
        let deadline = opts.deadline();
        // While the primary's cluster is unknown (it has not answered yet), a key recorded by
        // another instance cannot be found: no replica can be proven fresh.
        let unknown_cluster = self.primary_system() == 0;
        let recorded = if opts.cached_only && !self.store.never_blocks() {
            debug!(target: "dlb", "sticky pick goes to the primary: cached only, and the LSN store may block");
            return Ok(self.primary_route(Reason::StoreError));
        } else {
            self.store.get_by(&self.store_key(key), deadline)
        };
        match recorded {
            Err(e) => {
                self.counters.count(&self.counters.store_errors);
                debug!(target: "dlb", "sticky pick falls back to the primary: {e}");
                Ok(self.primary_route(Reason::StoreError))
            }
            Ok(Recorded { forced: true, .. }) => Ok(self.primary_route(Reason::ForcedPrimary)),
            Ok(Recorded { lsn, .. }) if unknown_cluster && self.lb_enabled => {
                self.not_caught_up_by(lsn.unwrap_or(Lsn::from_u64(0)), opts)
            }
            Ok(Recorded { lsn: Some(lsn), .. }) => self.pick_min_lsn_by(lsn, opts, deadline),
            // Nothing recorded in this cluster: but a key recorded in the previous one (behind
            // the same primary address) may still be alive, and cannot be compared here.
            Ok(Recorded { lsn: None, .. }) if self.cluster_changed_within_ttl() => {
                Ok(self.primary_route(Reason::NotCaughtUp))
            }
            Ok(Recorded { lsn: None, .. }) => Ok(self.round_robin(Reason::NoLsnRecorded)),
        }
    }

    /// A replica that has replayed at least `min_lsn`, in round-robin order among those that
    /// have: cached positions first (no I/O), then live checks within the budget.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn pick_min_lsn(&self, min_lsn: Lsn, opts: &PickOptions) -> Result<Route> {
        self.pick_min_lsn_by(min_lsn, opts, opts.deadline())
    }

    /// [`Router::pick_min_lsn`] with the live checks ending by `deadline` at the latest.
    fn pick_min_lsn_by(
        &self,
        min_lsn: Lsn,
        opts: &PickOptions,
        deadline: Option<Instant>,
    ) -> Result<Route> {
        if !self.lb_enabled {
            return Ok(self.primary_route(Reason::NoReplicasConfigured));
        }
        let found = self
            .with_snapshot(|s| {
                let fresh = s
                    .published_at
                    .is_some_and(|t| t.elapsed() <= self.trust_cache_for);
                if fresh {
                    sticky::cached(s, &self.cursor, min_lsn)
                } else {
                    None
                }
            })
            .map(|host| (host, Reason::CaughtUpCached))
            .or_else(|| {
                let candidates = self.with_snapshot(|s| s.eligible.clone());
                let budget = match deadline {
                    _ if opts.cached_only => Duration::ZERO,
                    Some(d) => self
                        .sticky_check_budget
                        .min(d.saturating_duration_since(Instant::now())),
                    None => self.sticky_check_budget,
                };
                sticky::live(candidates, min_lsn, budget, &self.counters)
                    .map(|host| (host, Reason::CaughtUpLive))
            });
        match found {
            Some((host, reason)) => {
                self.counters.count_pick(reason);
                Ok(Route {
                    host,
                    reason,
                    min_lsn: Some(min_lsn),
                })
            }
            None => self.not_caught_up_by(min_lsn, opts),
        }
    }

    /// Round-robin over the healthy replicas: no lock, no I/O.
    #[inline]
    fn round_robin(&self, reason: Reason) -> Route {
        let picked = self.with_snapshot(|s| match s.eligible.len() {
            0 => None,
            n => Some(s.eligible[self.cursor.next() % n].handle()),
        });
        match picked {
            Some(host) => {
                self.counters.count_pick(reason);
                Route {
                    host,
                    reason,
                    min_lsn: None,
                }
            }
            None if self.lb_enabled => self.primary_route(Reason::NoHealthyReplica),
            None => self.primary_route(Reason::NoReplicasConfigured),
        }
    }

    // ---- Reports from callers.

    /// A caller saw a network error on `dsn_or_addr` (a DSN as handed out, or `host:port`).
    /// A replica leaves the rotation at once, until a probe that starts later succeeds; the
    /// monitor is woken (and asked for a DNS refresh). Returns whether the host is known.
    /// Never blocks on I/O.
    pub(crate) fn report_failure(&self, dsn_or_addr: &str) -> bool {
        let matches = |h: &Host| h.dsn == dsn_or_addr || h.addr == dsn_or_addr;
        let replica = self.with_snapshot(|snap| {
            snap.replicas
                .iter()
                .find(|r| matches(&r.host))
                .map(|r| r.host.clone())
        });
        let known = replica.is_some() || matches(&self.primary);
        if let Some(host) = replica {
            host.mark_reported();
            let _g = self.publish_lock.lock();
            let snap = self.with_snapshot(|s| s.without(&host));
            self.swap(snap);
            self.refresh_requested.store(true, Ordering::Relaxed);
        }
        if known {
            self.counters.count(&self.counters.reported_failures);
            let _ = self.wake.try_send(());
        }
        known
    }

    // ---- The monitor's interface.

    /// Publishes a snapshot built from probes that started at `probe_start`, leaving out of the
    /// ring the replicas a caller reported failing since then.
    /// The host events this publication makes are delivered after it, outside the lock.
    pub(crate) fn publish(&self, mut snap: Snapshot, probe_start: Instant) {
        let g = self.publish_lock.lock();
        snap.eligible.retain(|h| !h.reported_since(probe_start));
        let happened = self.with_snapshot(|old| events::diff(old, &snap));
        self.swap(snap);
        drop(g);
        self.events.deliver(happened);
    }

    /// Records the primary's `system_identifier` (from a probe, or read with a recorded LSN).
    /// A change from one known value to another (a cluster swapped behind the primary's
    /// address) starts a `sticky_ttl_s` window in which keys with nothing recorded in the new
    /// cluster go to the primary.
    pub(crate) fn set_primary_system(&self, system_id: u64) {
        let old = self.primary_system.swap(system_id, Ordering::AcqRel);
        if old != 0 && old != system_id {
            self.system_changed_at
                .store(nanos_since_epoch(Instant::now()), Ordering::Release);
        }
    }

    /// The name `key` is stored under: recorded LSNs are kept per cluster (the primary's
    /// `system_identifier`, as 16 hex digits, then `:`), so that positions of one cluster are
    /// never compared with another's.
    pub(crate) fn store_key(&self, key: &str) -> String {
        store_key(self.primary_system(), key)
    }

    fn cluster_changed_within_ttl(&self) -> bool {
        match self.system_changed_at.load(Ordering::Acquire) {
            0 => false,
            at => {
                let now = nanos_since_epoch(Instant::now());
                now.saturating_sub(at)
                    < u64::try_from(self.sticky_ttl.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }

    /// Whether a caller reported a failure since the last call (clears the request).
    pub(crate) fn take_refresh_request(&self) -> bool {
        self.refresh_requested.swap(false, Ordering::Relaxed)
    }

    // ---- Readers.

    /// Runs `f` on the current snapshot without taking a lock (epoch-pinned read).
    #[inline]
    pub(crate) fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let guard = epoch::pin();
        let ptr = self.snapshot.load(Ordering::Acquire, &guard);
        // SAFETY: the pointer is set in `Router::new` and only ever replaced by `swap`, which
        // defers the old value's destruction until no pinned reader can see it.
        f(unsafe { ptr.deref() })
    }

    /// The primary's `system_identifier` as last probed (0: unknown).
    pub(crate) fn primary_system(&self) -> u64 {
        self.primary_system.load(Ordering::Relaxed)
    }

    /// What a sticky read that no replica can serve gets: the primary, or the error.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn not_caught_up(&self, min_lsn: Lsn) -> Result<Route> {
        self.not_caught_up_by(min_lsn, &PickOptions::default())
    }

    /// [`Router::not_caught_up`] under the policy of `opts`, when it sets one.
    fn not_caught_up_by(&self, min_lsn: Lsn, opts: &PickOptions) -> Result<Route> {
        match opts.no_caught_up.unwrap_or(self.no_caught_up) {
            NoCaughtUpPolicy::Primary => Ok(self.primary_route(Reason::NotCaughtUp)),
            NoCaughtUpPolicy::Error => Err(Error::NoCaughtUpReplica { min_lsn }),
        }
    }

    /// The primary host.
    pub(crate) fn primary(&self) -> &Arc<Host> {
        self.primary.host()
    }

    fn swap(&self, snap: Snapshot) {
        let guard = epoch::pin();
        let old = self
            .snapshot
            .swap(Owned::new(snap), Ordering::AcqRel, &guard);
        // SAFETY: `old` is unlinked; readers pinned before the swap may still use it, so it is
        // destroyed only after every such guard is gone.
        unsafe { guard.defer_destroy(old) };
    }
}

/// The name `key` is stored under in the cluster `system_id` (see [`Router::store_key`]).
pub(crate) fn store_key(system_id: u64, key: &str) -> String {
    format!("{system_id:016x}:{key}")
}

impl Drop for Router {
    fn drop(&mut self) {
        // SAFETY: we own `self`, so no other thread can be reading the snapshot.
        unsafe {
            let ptr = self.snapshot.load(Ordering::Acquire, epoch::unprotected());
            if !ptr.is_null() {
                drop(ptr.into_owned());
            }
        }
    }
}
