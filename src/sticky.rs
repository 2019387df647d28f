//! Primary sticking: record a key's write position, and only read from replicas that have
//! replayed it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam::channel;
use log::debug;

use crate::balancer::{Balancer, Shared};
use crate::config::{MAX_KEY_LEN, NoCaughtUpPolicy};
use crate::error::{Error, Result};
use crate::host::{HostRef, Striped};
use crate::lsn::Lsn;
use crate::route::{Reason, Route};

/// Stored in place of an LSN to force the primary for a key (no replica reaches it).
const FORCE_PRIMARY: Lsn = Lsn::from_u64(u64::MAX);

const LIVE_SQL: &str = "SELECT pg_last_wal_replay_lsn()::text";

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            reason: "key is empty".into(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey {
            reason: format!(
                "key is {} bytes long; the limit is {MAX_KEY_LEN}",
                key.len()
            ),
        });
    }
    Ok(())
}

impl Balancer {
    /// Records the primary's current WAL insert position for `key` (call it after a write
    /// commits) and returns it. Later sticky reads for `key` only go to replicas that have
    /// replayed at least this position, for `sticky_ttl_s`. A key's LSN never moves backwards.
    /// The returned LSN is also a causal token (see [`Balancer::pick_replica_min_lsn`]).
    ///
    /// Blocks for one round trip to the primary (`SELECT pg_current_wal_insert_lsn()`) on a
    /// pooled connection, plus the store's write.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::PrimaryUnavailable`], [`Error::Query`], [`Error::Store`].
    pub fn record_lsn(&self, key: &str) -> Result<Lsn> {
        check_key(key)?;
        let s = self.shared();
        let mut conn = self.write_conn()?;
        let text: String = conn
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .map_err(|e| Error::Query {
                host: s.primary.label.clone(),
                message: e.to_string(),
            })?
            .get(0);
        let lsn: Lsn = text.parse()?;
        self.store_lsn(key, lsn)?;
        Ok(lsn)
    }

    /// Stores an LSN the caller already has (from a causal token carried in a header or a job,
    /// or from its own `pg_current_wal_insert_lsn()`), with the same monotonic rule.
    /// Does no database I/O.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`].
    pub fn record_lsn_value(&self, key: &str, lsn: Lsn) -> Result<()> {
        check_key(key)?;
        self.store_lsn(key, lsn)
    }

    /// Sends every sticky read of `key` to the primary for `ttl` (for data that must never be
    /// read from a replica, or after an operation whose effects cannot be captured by one
    /// LSN). Picks answer [`Reason::ForcedPrimary`]. Later `record_lsn` calls on the key keep
    /// it forced and extend the time.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`].
    pub fn force_primary(&self, key: &str, ttl: Duration) -> Result<()> {
        check_key(key)?;
        self.shared()
            .store
            .record(key, FORCE_PRIMARY, ttl)
            .map(|_| ())
            .inspect_err(|_| {
                self.shared()
                    .metrics
                    .store_errors
                    .fetch_add(1, Ordering::Relaxed);
            })
    }

    /// The LSN currently recorded for `key` (`None`: none, or expired). Reads the store only.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`].
    pub fn recorded_lsn(&self, key: &str) -> Result<Option<Lsn>> {
        check_key(key)?;
        self.shared().store.get(key)
    }

    /// Routes one read to the primary with [`Reason::ForcedPrimary`] (a per-call override).
    pub fn pick_primary(&self) -> Route {
        self.shared().primary_route(Reason::ForcedPrimary)
    }

    fn store_lsn(&self, key: &str, lsn: Lsn) -> Result<()> {
        let s = self.shared();
        let ttl = Duration::from_secs(s.config.sticky_ttl_s);
        match s.store.record(key, lsn, ttl) {
            Ok(_) => {
                s.metrics.lsn_recorded.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                s.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    pub(crate) fn pick_sticky(&self, key: &str) -> Result<Route> {
        check_key(key)?;
        let s = self.shared();
        match s.store.get(key) {
            Err(e) => {
                s.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                debug!(target: "dlb", "sticky pick falls back to the primary: {e}");
                Ok(s.primary_route(Reason::StoreError))
            }
            Ok(None) => Ok(s.round_robin(Reason::NoLsnRecorded)),
            Ok(Some(FORCE_PRIMARY)) => Ok(s.primary_route(Reason::ForcedPrimary)),
            Ok(Some(lsn)) => self.pick_replica_min_lsn(lsn),
        }
    }

    /// Picks a replica that has replayed at least `min_lsn` (a causal token the caller carried),
    /// in round-robin order among those that have.
    ///
    /// Decides from the replay positions the monitor caches (no I/O). Only when no cached
    /// position qualifies does it ask the healthy replicas live (`pg_last_wal_replay_lsn()`), in
    /// parallel, waiting at most `sticky_check_budget_ms` in total, and updates the cache. When
    /// none qualifies: the primary ([`Reason::NotCaughtUp`]) or, with policy `"error"`,
    /// [`Error::NoCaughtUpReplica`].
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub fn pick_replica_min_lsn(&self, min_lsn: Lsn) -> Result<Route> {
        let s = self.shared();
        if !s.lb_enabled {
            return Ok(s.primary_route(Reason::NoReplicasConfigured));
        }
        if let Some(host) = cached_pick(s, min_lsn) {
            s.metrics.count_pick(Reason::CaughtUpCached);
            return Ok(Route {
                host,
                reason: Reason::CaughtUpCached,
            });
        }
        if let Some(host) = live_pick(s, min_lsn) {
            s.metrics.count_pick(Reason::CaughtUpLive);
            return Ok(Route {
                host,
                reason: Reason::CaughtUpLive,
            });
        }
        match s.config.no_caught_up_replica {
            NoCaughtUpPolicy::Primary => Ok(s.primary_route(Reason::NotCaughtUp)),
            NoCaughtUpPolicy::Error => Err(Error::NoCaughtUpReplica { min_lsn }),
        }
    }
}

/// First healthy replica, in round-robin order, whose cached replay LSN is at least `min`.
fn cached_pick(s: &Shared, min: Lsn) -> Option<Arc<HostRef>> {
    s.with_snapshot(|snap| {
        let n = snap.eligible.len();
        if n == 0 {
            return None;
        }
        let start = s.next_cursor();
        (0..n)
            .map(|i| &snap.eligible[(start + i) % n])
            .find(|h| h.replay_lsn().is_some_and(|l| l >= min))
            .map(|h| h.handle())
    })
}

/// Asks every healthy replica for its replay LSN in parallel; returns the first that has
/// reached `min` within the budget.
fn live_pick(s: &Shared, min: Lsn) -> Option<Arc<HostRef>> {
    let budget = Duration::from_millis(s.config.sticky_check_budget_ms);
    if budget.is_zero() {
        return None;
    }
    let candidates: Vec<Arc<Striped>> = s.with_snapshot(|snap| snap.eligible.clone());
    if candidates.is_empty() {
        return None;
    }
    let deadline = Instant::now() + budget;
    let (tx, rx) = channel::bounded(candidates.len());
    for host in candidates {
        let tx = tx.clone();
        s.metrics.live_lsn_checks.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("dlb-lsn-check".into())
            .spawn(move || {
                let lsn = host.pool.get_timeout(budget).ok().and_then(|mut c| {
                    let row = c.query_one(LIVE_SQL, &[]).ok()?;
                    row.get::<_, Option<String>>(0)?.parse::<Lsn>().ok()
                });
                if let Some(l) = lsn {
                    host.observe_replay_lsn(l);
                }
                let _ = tx.send((host, lsn));
            });
        if spawned.is_err() {
            break;
        }
    }
    drop(tx);
    while let Ok((host, lsn)) = rx.recv_deadline(deadline) {
        if lsn.is_some_and(|l| l >= min) {
            return Some(host.handle());
        }
    }
    None
}
