//! Routing: where a read goes. This is the only code on the pick path.
//!
//! A [`Router`] holds the current [`Snapshot`] of the replicas (published whole by the monitor
//! after every check, read through a hazard slot ([`crate::sync::published`]): no lock), a round-robin cursor striped
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
//! The monitor talks to the router through [`Router::publish`] (a new snapshot),
//! [`Router::take_refresh_request`] (whether a caller reported a failure) and what it learnt of
//! the primary ([`Router::set_primary_system`], [`Router::set_primary_timeline`]).

#[cfg(test)]
mod decision_tests;
mod options;
mod route;
mod snapshot;
mod sticky;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use log::debug;
use parking_lot::Mutex;

pub use self::options::PickOptions;
pub use self::route::Route;
pub(crate) use self::snapshot::{ReplicaState, Server, Snapshot};
use crate::config::{Config, NoCaughtUpPolicy};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::freshness::{self, Decision, Requirement};
pub use crate::labels::Reason;
use crate::labels::StoreOp;
use crate::lsn::{CausalToken, Lsn};
use crate::server::host::{Host, HostHandle, StripedHost};
use crate::sticking::{LsnStore, validate_key};
use crate::sync::instant::AtomicInstant;
use crate::sync::published::Published;
use crate::sync::stripe::{StripedCursor, stripe};

/// Cached replay positions are trusted for this many check intervals after the snapshot that
/// holds them (then sticky picks check live, or go to the primary).
const TRUSTED_CHECKS: u32 = 3;

/// A routing decision that may still need live checks ([`Router::plan`]).
pub(crate) enum Plan {
    /// Decided.
    Route(Route),
    /// A sticky read no cached position can serve: check these replicas live (in this order,
    /// the round-robin candidate first) for `req`.
    Live {
        req: Requirement,
        candidates: Vec<Arc<StripedHost>>,
    },
}

/// The routing state of one balancer: shared by callers (picks, failure reports), the monitor
/// (publishing) and the status report (reading).
pub(crate) struct Router {
    primary: Arc<StripedHost>,
    /// Replicas are configured (fixed or DNS): load balancing is on.
    lb_enabled: bool,
    snapshot: Published<Snapshot>,
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
    /// The primary's timeline as last read (a probe, or with a recorded LSN); 0 while unknown:
    /// before the first answer, and from a failed primary probe to the next answer (a failover
    /// may be under way: no position can be proven, sticky reads go to the primary).
    primary_timeline: AtomicU32,
    /// Held by writers of `primary_timeline` (memory only): the highest timeline seen in the
    /// current cluster, so that an old server's answer arriving late never lowers it.
    timeline_writer: Mutex<u32>,
    /// When it last changed from one known value to another.
    system_changed_at: AtomicInstant,
    /// `sticky_ttl_s`: how long after such a change a key recorded before it may still exist.
    sticky_ttl: Duration,
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
            snapshot: Published::new(Snapshot::default()),
            publish_lock: Mutex::new(()),
            cursor: StripedCursor::new(),
            counters,
            store,
            sticky_check_budget: Duration::from_millis(config.sticky_check_budget_ms),
            no_caught_up: config.no_caught_up_replica,
            refresh_requested: AtomicBool::new(false),
            wake,
            primary_system: AtomicU64::new(0),
            primary_timeline: AtomicU32::new(0),
            timeline_writer: Mutex::new(0),
            system_changed_at: AtomicInstant::default(),
            sticky_ttl: Duration::from_secs(config.sticky_ttl_s),
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
            requirement: None,
        }
    }

    /// Where a read for `key` goes (see the module notes), live checks included (on the
    /// replicas' live checkers, within `sticky_check_budget_ms`). A sticky pick is timed
    /// (`sticky_pick_duration_seconds`) with three clock readings in all: its start (which is
    /// also the store read's start and the budget's), the store read's end (which also dates
    /// the cache's age), and its end.
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    #[inline]
    pub(crate) fn pick(&self, key: Option<&str>, opts: &PickOptions) -> Result<Route> {
        if key.is_none() {
            return Ok(self.round_robin(Reason::RoundRobin));
        }
        let start = Instant::now();
        let deadline = self.pick_deadline(opts, start);
        let route = self
            .plan_from(key, None, opts, deadline, start)
            .and_then(|plan| self.finish(plan, opts, deadline));
        self.counters.sticky_pick_latency.observe(start.elapsed());
        route
    }

    /// Where a read for `key` that also carries a causal `token` goes: one pick, for a replica
    /// that has replayed both the key's recorded LSN and the token (the newer of the two; see
    /// [`freshness::with_token`]), live checks included, bounded and timed as [`Router::pick`].
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn pick_key_token(
        &self,
        key: &str,
        token: &CausalToken,
        opts: &PickOptions,
    ) -> Result<Route> {
        let start = Instant::now();
        let deadline = self.pick_deadline(opts, start);
        let route = self
            .plan_from(Some(key), Some(token), opts, deadline, start)
            .and_then(|plan| self.finish(plan, opts, deadline));
        self.counters.sticky_pick_latency.observe(start.elapsed());
        route
    }

    /// A replica that has replayed at least `min_lsn`, in round-robin order among those that
    /// have: cached positions first (no I/O), then live checks within the budget.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn pick_min_lsn(&self, min_lsn: Lsn, opts: &PickOptions) -> Result<Route> {
        let bare = CausalToken {
            lsn: min_lsn,
            timeline: 0,
            system_id: 0,
        };
        self.pick_token(&bare, opts)
    }

    /// Where a read for `key` goes, without live checks: a route, or the replicas to check
    /// live (the caller checks them: `read_conn` on the very connections that serve the read).
    /// The store's read ends by `deadline` (the pick's budget) at the latest.
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn plan(
        &self,
        key: Option<&str>,
        opts: &PickOptions,
        deadline: Option<Instant>,
    ) -> Result<Plan> {
        self.plan_from(key, None, opts, deadline, Instant::now())
    }

    /// [`Router::plan`] from `start` (now: the store read's start), for a read that also
    /// carries `token` when given (with a key: see [`freshness::with_token`]).
    fn plan_from(
        &self,
        key: Option<&str>,
        token: Option<&CausalToken>,
        opts: &PickOptions,
        deadline: Option<Instant>,
        start: Instant,
    ) -> Result<Plan> {
        let Some(key) = key else {
            return match token {
                Some(token) => self.plan_token(token, opts, start),
                None => Ok(Plan::Route(self.round_robin(Reason::RoundRobin))),
            };
        };
        validate_key(key)?;
        if opts.cached_only && !self.store.never_blocks() {
            debug!(target: "dlb", "sticky pick goes to the primary: cached only, and the LSN store may block");
            return Ok(Plan::Route(self.primary_route(Reason::StoreError)));
        }
        // Read before the store: a change seen while the store answers makes this pick
        // conservative, never the other way round.
        let mut ctx = freshness::Context {
            lb_enabled: self.lb_enabled,
            unknown_cluster: self.primary_system() == 0,
            unknown_timeline: self.primary_timeline() == 0,
            cluster_changed: self.cluster_changed_within_ttl(start),
            store_lost: false,
        };
        let timeline = self.primary_timeline();
        let stored = self.store_key(key);
        let got = self.store.get_by(&stored, deadline);
        let now = Instant::now();
        self.counters.store_latency[StoreOp::Get as usize].observe(now - start);
        // After the store read: the read that finds a key missing may be the one that notices
        // the loss.
        ctx.store_lost = self.store_lost_within_ttl(now);
        let mut decision = freshness::decide(got, ctx, timeline);
        if let Some(token) = token {
            decision = freshness::with_token(
                decision,
                token,
                self.primary_system(),
                timeline,
                ctx.lb_enabled,
            );
        }
        let route = match decision {
            Decision::StoreError => {
                self.counters.count(&self.counters.store_errors);
                debug!(target: "dlb", "sticky pick falls back to the primary: the LSN store failed");
                self.primary_route(Reason::StoreError)
            }
            Decision::Forced => self.primary_route(Reason::ForcedPrimary),
            Decision::AnyReplica => self.round_robin(Reason::NoLsnRecorded),
            Decision::NotProvable(lsn) => self.not_caught_up_by(lsn, opts)?,
            Decision::Prove(req) => return self.plan_for(req, opts, now),
        };
        Ok(Plan::Route(route))
    }

    /// [`Router::plan`] for a causal token: see [`freshness::token_requirement`].
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn plan_token(
        &self,
        token: &CausalToken,
        opts: &PickOptions,
        now: Instant,
    ) -> Result<Plan> {
        match freshness::token_requirement(token, self.primary_system(), self.primary_timeline()) {
            Some(req) => self.plan_for(req, opts, now),
            None if !self.lb_enabled => Ok(Plan::Route(
                self.primary_route(Reason::NoReplicasConfigured),
            )),
            None => self.not_caught_up_by(token.lsn, opts).map(Plan::Route),
        }
    }

    /// A replica that proves `token` (see [`Router::plan_token`]), live checks included.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(crate) fn pick_token(&self, token: &CausalToken, opts: &PickOptions) -> Result<Route> {
        let deadline = opts.deadline();
        let plan = self.plan_token(token, opts, Instant::now())?;
        self.finish(plan, opts, deadline)
    }

    /// [`Router::plan`] for a sticky read that needs `req`: a replica whose cached position
    /// proves it (no I/O), or the replicas to check live (none when the budget is zero, the
    /// call is cached only or the primary's timeline is unknown: then the primary or the
    /// error). `now`: the current time, to date the cached positions.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    fn plan_for(&self, req: Requirement, opts: &PickOptions, now: Instant) -> Result<Plan> {
        if !self.lb_enabled {
            return Ok(Plan::Route(
                self.primary_route(Reason::NoReplicasConfigured),
            ));
        }
        if req.timeline == 0 {
            return self.not_caught_up_by(req.lsn, opts).map(Plan::Route);
        }
        let (cached, candidates) = self.with_snapshot(|s| {
            let fresh = s
                .published_at
                .is_some_and(|t| now.saturating_duration_since(t) <= self.trust_cache_for);
            match fresh
                .then(|| sticky::cached(s, &self.cursor, req))
                .flatten()
            {
                Some(host) => (Some(host), Vec::new()),
                None if self.sticky_check_budget.is_zero() || opts.cached_only => {
                    (None, Vec::new())
                }
                None => (None, sticky::candidates(s, &self.cursor)),
            }
        });
        if let Some(host) = cached {
            return Ok(Plan::Route(self.sticky_route(
                host,
                Reason::CaughtUpCached,
                req,
            )));
        }
        if candidates.is_empty() {
            return self.not_caught_up_by(req.lsn, opts).map(Plan::Route);
        }
        Ok(Plan::Live { req, candidates })
    }

    /// Runs a plan's live checks on the replicas' live checkers, within
    /// `sticky_check_budget_ms` and by `deadline` (the pick's budget) at the latest.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    fn finish(&self, plan: Plan, opts: &PickOptions, deadline: Option<Instant>) -> Result<Route> {
        match plan {
            Plan::Route(route) => Ok(route),
            Plan::Live { req, candidates } => {
                let deadline = self.live_deadline(deadline);
                match sticky::live(&candidates, req, deadline, &self.counters) {
                    Some(host) => Ok(self.sticky_route(host, Reason::CaughtUpLive, req)),
                    None => self.not_caught_up_by(req.lsn, opts),
                }
            }
        }
    }

    /// A route to a replica proven to satisfy `req`, counted under `reason`.
    pub(crate) fn sticky_route(
        &self,
        host: Arc<HostHandle>,
        reason: Reason,
        req: Requirement,
    ) -> Route {
        self.counters.count_pick(reason);
        Route {
            host,
            reason,
            requirement: Some(req),
        }
    }

    /// When the live checks of a sticky read that must be done by `deadline` (the pick's,
    /// [`Router::pick_deadline`]) end: `sticky_check_budget_ms` from now at most, and
    /// `deadline` at the latest. One rule for `pick_replica` and `read_conn`.
    pub(crate) fn live_deadline(&self, deadline: Option<Instant>) -> Instant {
        let own = Instant::now() + self.sticky_check_budget;
        deadline.map_or(own, |d| d.min(own))
    }

    /// When a keyed pick that starts at `start` must be done with its blocking work (the LSN
    /// store's read, then live checks): `sticky_check_budget_ms` after `start`, or the call's
    /// own budget when that ends first. `None` (no budget of the call, and a zero
    /// `sticky_check_budget_ms`: no live checks): the store read has its own limit only
    /// (`op_timeout_ms`). A store that stopped answering (a black-holed Redis) then costs a
    /// keyed pick its budget, not the store's op timeout.
    pub(crate) fn pick_deadline(&self, opts: &PickOptions, start: Instant) -> Option<Instant> {
        let own = (!self.sticky_check_budget.is_zero())
            .then(|| start.checked_add(self.sticky_check_budget))
            .flatten();
        match (opts.deadline_from(start), own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How old the last check may be before sticky picks stop trusting cached replay
    /// positions (and the status report calls the balancer `degraded`).
    pub(crate) fn trust_cache_for(&self) -> Duration {
        self.trust_cache_for
    }

    /// Round-robin over the healthy replicas: no lock, no I/O.
    #[inline]
    fn round_robin(&self, reason: Reason) -> Route {
        let at = stripe();
        let picked = self.with_snapshot(|s| match s.eligible.len() {
            0 => None,
            n => Some(s.eligible[self.cursor.next_at(at) % n].handle_at(at)),
        });
        match picked {
            Some(host) => {
                self.counters.count_pick_at(at, reason);
                Route {
                    host,
                    reason,
                    requirement: None,
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
            // A storm of reports about a replica already out publishes nothing (a publication
            // interrupts every running thread of the process: `membarrier`). Under the lock: a
            // publication after it leaves the replica out anyway (`reported_since`).
            let snap = self.with_snapshot(|s| {
                s.eligible
                    .iter()
                    .any(|e| Arc::ptr_eq(e.host(), &host))
                    .then(|| s.without(&host))
            });
            if let Some(snap) = snap {
                self.swap(snap);
            }
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
    /// ring the replicas a caller reported failing since then. `changes` sees the replaced
    /// snapshot and the new one under the publication lock (the monitor derives host events
    /// there, and delivers them after this returns, outside the lock).
    pub(crate) fn publish<T>(
        &self,
        mut snap: Snapshot,
        probe_start: Instant,
        changes: impl FnOnce(&Snapshot, &Snapshot) -> T,
    ) -> T {
        let _g = self.publish_lock.lock();
        snap.eligible.retain(|h| !h.reported_since(probe_start));
        let changed = self.with_snapshot(|old| changes(old, &snap));
        self.swap(snap);
        changed
    }

    /// Records the primary's `system_identifier` (from a probe, or read with a recorded LSN).
    /// A change from one known value to another (a cluster swapped behind the primary's
    /// address) starts a `sticky_ttl_s` window in which keys with nothing recorded in the new
    /// cluster go to the primary.
    pub(crate) fn set_primary_system(&self, system_id: u64) {
        let old = self.primary_system.swap(system_id, Ordering::AcqRel);
        if old != 0 && old != system_id {
            // Another cluster: its timelines have nothing to do with the old one's.
            let mut highest = self.timeline_writer.lock();
            *highest = 0;
            self.primary_timeline.store(0, Ordering::Release);
            drop(highest);
            self.system_changed_at.set(Instant::now());
        }
    }

    /// Records the primary's timeline (from a probe, or read with a recorded LSN; 0: the
    /// primary's probe failed, so its timeline is unknown until it answers again). A timeline
    /// the router had not seen wakes the monitor, so that the replicas are probed against it.
    pub(crate) fn set_primary_timeline(&self, timeline: u32) {
        let mut highest = self.timeline_writer.lock();
        let before = *highest;
        if timeline != 0 && timeline < before {
            // A cluster's timeline only grows: an older one is an old server still answering
            // (a connection that outlived a failover); the newer answer stands.
            debug!(target: "dlb", "ignoring timeline {timeline} of the primary: {before} seen already");
            return;
        }
        let old = self.primary_timeline.swap(timeline, Ordering::AcqRel);
        *highest = before.max(timeline);
        drop(highest);
        // A new timeline after a known one (perhaps with an unknown one between: the primary's
        // probe failing during the failover).
        let changed = timeline != 0 && before != 0 && timeline != before;
        if changed {
            log::warn!(target: "dlb", "the primary is on timeline {timeline} (was {before}): a failover; positions are compared on the new timeline only");
        }
        if timeline != 0 && old != timeline {
            let _ = self.wake.try_send(());
        }
    }

    /// The primary's timeline as last read (0: unknown).
    pub(crate) fn primary_timeline(&self) -> u32 {
        self.primary_timeline.load(Ordering::Acquire)
    }

    /// The name `key` is stored under: recorded LSNs are kept per cluster (the primary's
    /// `system_identifier`, as 16 hex digits, then `:`), so that positions of one cluster are
    /// never compared with another's.
    pub(crate) fn store_key(&self, key: &str) -> String {
        store_key(self.primary_system(), key)
    }

    fn cluster_changed_within_ttl(&self, now: Instant) -> bool {
        self.system_changed_at.within(self.sticky_ttl, now)
    }

    /// Whether the LSN store lost entries less than `sticky_ttl_s` ago
    /// ([`LsnStore::last_loss`]).
    fn store_lost_within_ttl(&self, now: Instant) -> bool {
        self.store
            .last_loss()
            .is_some_and(|t| now.saturating_duration_since(t) < self.sticky_ttl)
    }

    /// Whether a caller reported a failure since the last call (clears the request).
    pub(crate) fn take_refresh_request(&self) -> bool {
        self.refresh_requested.swap(false, Ordering::Relaxed)
    }

    // ---- Readers.

    /// Runs `f` on the current snapshot: no lock, no atomic read-modify-write (see
    /// [`crate::sync::published`]).
    #[inline]
    pub(crate) fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        self.snapshot.read(f)
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
        self.snapshot.replace(snap);
    }
}

/// The name `key` is stored under in the cluster `system_id` (see [`Router::store_key`]).
pub(crate) fn store_key(system_id: u64, key: &str) -> String {
    // Written out by hand: `format!` costs a tenth of a cached sticky pick here (it grows its
    // buffer and formats through `fmt::Write`).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(17 + key.len());
    for shift in (0..16).rev() {
        s.push(char::from(HEX[((system_id >> (shift * 4)) & 0xf) as usize]));
    }
    s.push(':');
    s.push_str(key);
    s
}

#[cfg(test)]
mod tests {
    /// The stored form is shared by every process and version using one store: it must not
    /// change (16 lower-case hex digits of the system identifier, `:`, the key).
    #[test]
    fn store_key_is_the_padded_hex_system_id_then_the_key() {
        for (id, key) in [
            (0u64, "k"),
            (0x1a2b, "repo:a/b"),
            (u64::MAX, ""),
            (7714497192365327392, "ü:x"),
        ] {
            assert_eq!(super::store_key(id, key), format!("{id:016x}:{key}"));
        }
    }
}
