//! The [`Balancer`]: the public face of dlb, a thin facade over its parts.
//!
//! * routing ([`crate::routing`]): where a read goes, the only code on the pick path;
//! * the monitor ([`crate::monitor`]): the background thread that probes the hosts, applies
//!   the health policy ([`crate::health`]) and the replica list ([`crate::discovery`]), and
//!   publishes snapshots to routing;
//! * sticking ([`crate::sticking`]): where recorded LSNs live;
//! * observability ([`crate::observability`]): status and metrics.
//!
//! See ARCHITECTURE.md for the data flow of a pick, a probe and a record.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam::channel;
use log::{debug, info, warn};
use postgres::types::ToSql;

use crate::config::{Config, LsnStoreConfig};
use crate::counters::{self, Counters};
use crate::discovery::ReplicaSource;
use crate::error::{Error, Result};
use crate::events::{EventCallback, Events, HostEvent};
use crate::freshness::{self, Requirement};
use crate::labels::{Reason, Role, StoreOp};
use crate::lsn::{CausalToken, Lsn};
use crate::monitor::{Monitor, MonitorThread, Outputs};
use crate::observability::{self, Metrics, Status};
use crate::routing::{self, PickOptions, Plan, Route, Router};
use crate::server::connection::{ping_replay, primary_timeline_column};
use crate::server::host::{Host, PooledClient, StripedHost};
use crate::server::session::{is_host_failure, is_plain_read};
use crate::sticking::{self, LsnStore, MemoryStore, RedisStore, validate_key};

mod conn;
mod read;

pub use self::conn::{Conn, SqlStatement};

/// A client-side load balancer over one primary and its streaming replicas.
///
/// It owns one r2d2 connection pool per host and a background monitor thread. Picking a replica
/// ([`Balancer::pick_replica`]) takes no lock and does no I/O: it reads an immutable snapshot
/// of replica health published by the monitor and advances an atomic round-robin cursor
/// (striped per thread).
///
/// `Balancer` is `Send + Sync`: share it by reference or in an `Arc`. Dropping it stops and
/// joins the monitor thread and closes the pools.
///
/// **Fork**: make balancers after `fork()`, not before. A child inherits the parent's
/// connections (shared sockets) but not its monitor thread: in the child, every call on an
/// inherited balancer that routes or does I/O returns [`Error::Forked`], and dropping it leaks
/// it instead of closing the parent's connections. A new balancer made in the child works.
pub struct Balancer {
    config: Config,
    // Dropped on a dlb thread (see `Drop`), never on the caller's.
    router: ManuallyDrop<Arc<Router>>,
    store: ManuallyDrop<Arc<dyn LsnStore>>,
    counters: Arc<Counters>,
    /// Host events: the monitor's publications put them here (or to the callback).
    events: Arc<Events>,
    monitor: MonitorThread,
    /// The process that made it (see the fork note on [`Balancer`]).
    pid: u32,
    /// [`crate::sync::fork::generation`] when it was made.
    forks: u64,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("primary", &self.router.primary().redacted)
            .field(
                "replicas",
                &self.router.with_snapshot(|s| {
                    s.replicas
                        .iter()
                        .map(|r| r.host.addr.clone())
                        .collect::<Vec<_>>()
                }),
            )
            .finish()
    }
}

impl Balancer {
    // ---- Construction.

    /// Validates `config`, creates the pools (connections are opened lazily), runs one check of
    /// every host and starts the monitor thread.
    ///
    /// Blocks for that first check: with DNS discovery one lookup, at most
    /// `replicas.dns.timeout_ms` (default 1 s) however the server answers; the replicas, then
    /// the primary, each for at most `probe_timeout_ms` (default 100 ms). A replica or primary that is down does not fail
    /// start-up: the replica stays out of rotation until
    /// it answers, and a down primary is reported by the first write.
    ///
    /// The LSN store is chosen by `lsn_store`: the in-process [`MemoryStore`] (default) or a
    /// [`RedisStore`], which connects lazily (a Redis that is down does not fail start-up;
    /// sticky reads go to the primary until it answers).
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn new(config: Config) -> Result<Balancer> {
        config.validate()?;
        let store: Arc<dyn LsnStore> = match &config.lsn_store {
            LsnStoreConfig::Memory {} => Arc::new(MemoryStore::new()),
            LsnStoreConfig::Redis(r) => Arc::new(RedisStore::new(r)?),
        };
        Balancer::with_store(config, store)
    }

    /// As [`Balancer::new`], with another [`LsnStore`] for sticking (the default is an
    /// in-process [`MemoryStore`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn with_store(config: Config, store: Arc<dyn LsnStore>) -> Result<Balancer> {
        let forks = crate::sync::fork::generation();
        crate::sync::fork::make_room_in_parking_table();
        let resolved = config.resolve()?;
        let primary = Arc::new(Host::new(Role::Primary, &resolved.primary, &config)?);
        let source = ReplicaSource::new(
            resolved.replicas,
            config.replicas.as_ref().and_then(|r| r.dns.clone()),
            resolved.primary.host_port().port,
            std::time::Instant::now(),
        );
        let counters = Arc::new(Counters::new());
        let events = Arc::new(Events::new());
        let (wake_tx, wake_rx) = channel::bounded(1);
        let router = Arc::new(Router::new(
            &config,
            primary.clone(),
            source.configured(),
            counters.clone(),
            store.clone(),
            wake_tx,
        ));
        info!(target: "dlb", "balancer started: primary {}", primary.redacted);
        let mut monitor = Monitor::new(
            &config,
            resolved.primary,
            primary,
            source,
            Outputs {
                counters: counters.clone(),
                store: Arc::downgrade(&store),
                events: events.clone(),
            },
        );
        monitor.round(&router);
        let monitor = MonitorThread::spawn(monitor, Arc::downgrade(&router), wake_rx)
            .map_err(|e| Error::config("", format!("cannot start monitor thread: {e}")))?;
        Ok(Balancer {
            config,
            router: ManuallyDrop::new(router),
            store: ManuallyDrop::new(store),
            counters,
            events,
            monitor,
            pid: std::process::id(),
            forks,
        })
    }

    /// Parses a JSON configuration (see [`Config::from_json`]) and calls [`Balancer::new`].
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn from_json(json: &str) -> Result<Balancer> {
        Balancer::new(Config::from_json(json)?)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- Writes.

    /// The primary, for writes. Never blocks.
    pub fn primary(&self) -> Route {
        self.router.primary_route(Reason::Write)
    }

    /// A pooled connection to the primary.
    ///
    /// Blocks until a connection is free or `pool.checkout_timeout_ms` passes (connecting if
    /// needed).
    ///
    /// # Errors
    /// [`Error::PrimaryUnavailable`] when no connection can be had in time.
    pub fn write_conn(&self) -> Result<Conn> {
        self.same_process()?;
        self.checkout(self.primary(), self.checkout_timeout())
    }

    // ---- Reads.

    /// Picks where a read should go. Without a key this is plain round-robin over the healthy
    /// replicas; the primary (with the reason) when none is healthy or none is configured.
    /// With a key, only a replica that has replayed the key's recorded LSN (see
    /// [`Balancer::record_lsn`]); a key with no recorded LSN goes round-robin.
    ///
    /// Takes no lock and does no I/O when `key` is `None`. With a key it reads the LSN store
    /// and, only when no cached replay position qualifies, asks the healthy replicas live
    /// (at most `sticky_check_budget_ms`).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy. A store
    /// failure is not an error: the read goes to the primary ([`Reason::StoreError`]).
    #[inline]
    pub fn pick_replica(&self, key: Option<&str>) -> Result<Route> {
        self.pick_replica_with(key, &PickOptions::default())
    }

    /// [`Balancer::pick_replica`] with per-call options: a time budget for the store read and
    /// live checks, "cached only" (never block), the policy when no replica has caught up
    /// (see [`PickOptions`]).
    ///
    /// # Errors
    /// As [`Balancer::pick_replica`].
    pub fn pick_replica_with(&self, key: Option<&str>, opts: &PickOptions) -> Result<Route> {
        self.same_process()?;
        // A sticky pick is timed by the router (sharing clock readings with the store read).
        self.router.pick(key, opts)
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
        self.pick_replica_min_lsn_with(min_lsn, &PickOptions::default())
    }

    /// [`Balancer::pick_replica_min_lsn`] with per-call options (see [`PickOptions`]).
    ///
    /// # Errors
    /// As [`Balancer::pick_replica_min_lsn`].
    pub fn pick_replica_min_lsn_with(&self, min_lsn: Lsn, opts: &PickOptions) -> Result<Route> {
        self.same_process()?;
        counters::timed(&self.counters.sticky_pick_latency, || {
            self.router.pick_min_lsn(min_lsn, opts)
        })
    }

    /// A replica that has replayed the write `token` stands for, on the same cluster and the
    /// same timeline (see [`CausalToken`]): cached positions first, then live checks, as
    /// [`Balancer::pick_replica_min_lsn`]. A token of another cluster, or of a timeline other
    /// than the primary's current one (written before a failover, or after one this process
    /// has not seen yet), goes where an unprovable read goes: the primary
    /// ([`Reason::NotCaughtUp`]) or [`Error::NoCaughtUpReplica`]. A bare LSN token (`X/Y`) is
    /// compared on the current timeline. Blocks as `pick_replica_min_lsn` does.
    ///
    /// # Errors
    /// [`Error::NoCaughtUpReplica`] under the `"error"` policy; [`Error::Forked`].
    pub fn pick_replica_token(&self, token: &CausalToken) -> Result<Route> {
        self.pick_replica_token_with(token, &PickOptions::default())
    }

    /// [`Balancer::pick_replica_token`] with per-call options (see [`PickOptions`]).
    ///
    /// # Errors
    /// As [`Balancer::pick_replica_token`].
    pub fn pick_replica_token_with(
        &self,
        token: &CausalToken,
        opts: &PickOptions,
    ) -> Result<Route> {
        self.same_process()?;
        counters::timed(&self.counters.sticky_pick_latency, || {
            self.router.pick_token(token, opts)
        })
    }

    /// One pick for a read that must see both the writes recorded for `key` and the write a
    /// causal `token` stands for: a replica that has replayed the newer of the two (same rules
    /// as [`Balancer::pick_replica`] and [`Balancer::pick_replica_token`]: a forced key or a
    /// store failure sends the read to the primary, a token of another cluster or timeline
    /// makes it unprovable), else the primary ([`Reason::NotCaughtUp`]). Two picks, one per
    /// requirement, could each be satisfied by a different replica and the second one would
    /// not see what the first required.
    ///
    /// # Errors
    /// As [`Balancer::pick_replica`]; [`Error::Forked`].
    pub fn pick_replica_key_token_with(
        &self,
        key: &str,
        token: &CausalToken,
        opts: &PickOptions,
    ) -> Result<Route> {
        self.same_process()?;
        self.router.pick_key_token(key, token, opts)
    }

    /// Routes one read to the primary with [`Reason::ForcedPrimary`] (a per-call override).
    pub fn pick_primary(&self) -> Route {
        self.router.primary_route(Reason::ForcedPrimary)
    }

    /// Picks a host for a read (as [`Balancer::pick_replica`]) and checks a connection out of
    /// its pool. When the replica's pool cannot hand out a connection within
    /// `pool.connect_timeout_ms`, the failure is reported (the monitor re-checks at once) and
    /// the read falls back to the primary with reason [`Reason::ReplicaUnavailable`].
    ///
    /// # Errors
    /// Those of `pick_replica`, and [`Error::PrimaryUnavailable`] when the read must go to
    /// the primary and it cannot be reached.
    pub fn read_conn(&self, key: Option<&str>) -> Result<Conn> {
        self.same_process()?;
        let opts = PickOptions::default();
        // Only a keyed read blocks (the store, live checks): a keyless one reads no clock.
        let deadline = key.and_then(|_| self.router.pick_deadline(&opts, Instant::now()));
        match self.router.plan(key, &opts, deadline)? {
            Plan::Route(route) => self.read_on(route),
            Plan::Live { req, candidates } => self.read_live(req, &candidates, deadline),
        }
    }

    /// Tells the balancer that the caller saw a network error on a host (given by its DSN as
    /// handed out, or its `host:port`). A replica leaves the rotation at once, until a probe
    /// that starts after this call succeeds; the monitor re-checks every host right away
    /// (throttled) and, with DNS discovery, refreshes the list (at most once a second).
    /// Returns whether the host is known. Never blocks on I/O. In a forked child (see
    /// [`Error::Forked`]) it does nothing and returns `false`.
    pub fn report_failure(&self, dsn_or_addr: &str) -> bool {
        self.same_process().is_ok() && self.router.report_failure(dsn_or_addr)
    }

    // ---- Sticking.

    /// Records the primary's current WAL insert position for `key` (call it after a write
    /// commits) and returns it. Later sticky reads for `key` only go to replicas that have
    /// replayed at least this position, for at least `sticky_ttl_s` (a key's entry lives until
    /// the latest end of its records and forces). A key's LSN never moves backwards, and a
    /// force on the key ([`Balancer::force_primary`]) stays as long as it was asked for.
    /// The returned LSN is also a causal token (see [`Balancer::pick_replica_min_lsn`]).
    ///
    /// Blocks for one round trip to the primary (`SELECT pg_current_wal_insert_lsn()`) on a
    /// pooled connection, plus the store's write.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::PrimaryUnavailable`], [`Error::Query`], [`Error::Store`].
    /// A store error comes after the LSN was read: [`Error::lsn`] gives it, to carry as a
    /// causal token (the write happened; only its recording failed).
    pub fn record_lsn(&self, key: &str) -> Result<Lsn> {
        self.record(key).map(|t| t.lsn)
    }

    /// As [`Balancer::record_lsn`], returning the position as a [`CausalToken`]: with the
    /// cluster and the timeline it was written on, so that a read elsewhere
    /// ([`Balancer::pick_replica_token`], another process) never compares it with a position
    /// of another cluster or of another branch of its history. Its text form
    /// (`v2:X/Y:T:S`) travels in a header, a cookie or a job.
    ///
    /// Blocks as `record_lsn` does (the same one round trip, plus the store's write).
    ///
    /// # Errors
    /// As [`Balancer::record_lsn`].
    pub fn record_token(&self, key: &str) -> Result<CausalToken> {
        self.record(key)
    }

    /// The work of [`Balancer::record_lsn`] and [`Balancer::record_token`].
    fn record(&self, key: &str) -> Result<CausalToken> {
        self.same_process()?;
        validate_key(key)?;
        let mut conn = self.write_conn()?;
        let row = conn
            .query_one(
                concat!(
                    "SELECT pg_current_wal_insert_lsn()::text, \
                     (SELECT system_identifier FROM pg_control_system())::text, ",
                    primary_timeline_column!()
                ),
                &[],
            )
            .map_err(|e| Error::Query {
                host: conn.route().addr().to_string(),
                message: crate::redact::bounded(&crate::error::with_causes(&e)),
            })?;
        let host = conn.route().addr().to_string();
        drop(conn);
        // Whatever the server answers (a NULL, another type: a hostile or misconfigured
        // server), an error, never a panic.
        let lsn: Lsn = match row.try_get::<_, Option<String>>(0) {
            Ok(Some(text)) => text.parse()?,
            Ok(None) => {
                return Err(Error::Query {
                    host,
                    message: "the primary answered no WAL insert position (NULL)".into(),
                });
            }
            Err(e) => {
                return Err(Error::Query {
                    host,
                    message: format!(
                        "the primary's WAL insert position is not text: {}",
                        crate::redact::bounded(&e.to_string())
                    ),
                });
            }
        };
        // The LSN belongs to the cluster that gave it, whatever the monitor saw last.
        let system = row
            .try_get::<_, Option<String>>(1)
            .ok()
            .flatten()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|v| v as u64);
        if let Some(system) = system {
            self.router.set_primary_system(system);
        }
        // And to its timeline: a timeline the monitor has not seen yet (a failover) stops
        // positions of the old one from proving anything at once, and wakes the monitor.
        let timeline = row
            .try_get::<_, Option<i64>>(2)
            .ok()
            .flatten()
            .and_then(|t| u32::try_from(t).ok());
        if let Some(timeline) = timeline {
            self.router.set_primary_timeline(timeline);
        }
        let stored =
            routing::store_key(system.unwrap_or_else(|| self.router.primary_system()), key);
        self.store_lsn(&stored, lsn)?;
        Ok(CausalToken {
            lsn,
            timeline: timeline.unwrap_or(0),
            system_id: system.unwrap_or(0),
        })
    }

    /// Stores an LSN the caller already has (from a causal token carried in a header or a job,
    /// or from its own `pg_current_wal_insert_lsn()`), with the same rules as
    /// [`Balancer::record_lsn`]. Does no database I/O.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`] (carrying `lsn`, see [`Error::lsn`]).
    pub fn record_lsn_value(&self, key: &str, lsn: Lsn) -> Result<()> {
        self.same_process()?;
        validate_key(key)?;
        self.store_lsn(&self.router.store_key(key), lsn)
    }

    /// Sends every sticky read of `key` to the primary for `ttl` (for data that must never be
    /// read from a replica, or after an operation whose effects cannot be captured by one
    /// LSN). Picks answer [`Reason::ForcedPrimary`].
    ///
    /// The force is kept apart from the key's recorded LSN: it never erases the LSN (when the
    /// force ends, reads still wait for a replica that replayed it), and nothing shortens it
    /// (a later `record_lsn`, or a force with a shorter `ttl`, even zero, leaves its end as
    /// it is; a longer one extends it). A `ttl` over [`crate::MAX_TTL`] (10 years), up to
    /// [`Duration::MAX`], counts as `MAX_TTL`.
    ///
    /// Blocks only on the LSN store (never with the default in-memory one).
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`].
    pub fn force_primary(&self, key: &str, ttl: Duration) -> Result<()> {
        self.same_process()?;
        validate_key(key)?;
        sticking::force(
            &**self.store,
            &self.counters,
            &self.router.store_key(key),
            ttl,
        )
    }

    /// The LSN currently recorded for `key` (`None`: none, or expired), forced or not.
    /// Reads the store only.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::Store`].
    pub fn recorded_lsn(&self, key: &str) -> Result<Option<Lsn>> {
        self.same_process()?;
        validate_key(key)?;
        let key = self.router.store_key(key);
        let got = self
            .counters
            .time_store(StoreOp::Get, || self.store.get(&key));
        Ok(got?.lsn)
    }

    // ---- Host events.

    /// Sends every host event (see [`HostEvent`]) to `callback`, called on dlb's monitor
    /// thread right after the check that caused it; it may call the balancer (except this
    /// method) and should return quickly, since the next check waits for it. The events
    /// already queued (the `added` events of start-up, at least) go to it first, on the
    /// calling thread, before this returns. `None` sends events to the queue
    /// ([`Balancer::next_event`]) again.
    pub fn set_event_callback(&self, callback: Option<EventCallback>) {
        self.events.set_callback(callback);
    }

    /// The next host event from the queue (events go there while no callback is set),
    /// waiting up to `timeout` for one; `None` when none came, or when
    /// [`Balancer::wake_event_waiters`] was called. The queue holds
    /// [`crate::EVENT_QUEUE_CAPACITY`] events: when it is full the oldest is dropped, and the
    /// next event taken counts them in [`HostEvent::dropped`]. The monitor never waits for a
    /// reader.
    ///
    /// The first check (in [`Balancer::new`]) queues an `added` event for every replica.
    pub fn next_event(&self, timeout: Duration) -> Option<HostEvent> {
        self.events
            .take(timeout, |e| Ok::<_, std::convert::Infallible>(e.clone()))
            .unwrap_or_else(|never| match never {})
    }

    /// Makes every [`Balancer::next_event`] waiting now return `None` at once (to stop a
    /// polling thread before dropping the balancer). Never blocks.
    pub fn wake_event_waiters(&self) {
        self.events.wake();
    }

    /// The event queue, for the C ABI (which formats an event only when it fits).
    pub(crate) fn events(&self) -> &crate::events::Events {
        &self.events
    }

    // ---- Observability.

    /// The current health report. Never blocks on I/O.
    pub fn status(&self) -> Status {
        observability::collect_status(
            &self.router,
            observability::StoreView {
                kind: self.store.kind(),
                warning: self.store.warning(),
                last_loss: self.store.last_loss(),
            },
            self.config.replica_check_interval_ms,
        )
    }

    /// Every metric, typed: counters, gauges and latency histograms (see [`Metrics`]).
    /// Never blocks on I/O.
    pub fn metrics(&self) -> Metrics {
        observability::collect_metrics(&self.counters, &self.status())
    }

    /// Every metric in the Prometheus text exposition format, rendered from
    /// [`Balancer::metrics`]: names prefixed with `metrics.prefix` (default `dlb_`), the
    /// constant `metrics.labels` on every series. Per-replica series exist only for replicas
    /// currently configured; a lag that is unknown has no series. Never blocks on I/O.
    pub fn metrics_text(&self) -> String {
        let m = &self.config.metrics;
        observability::render_metrics(&self.metrics(), &m.prefix, &m.label_pairs())
    }

    // ---- Helpers.

    /// [`Error::Forked`] in a process that did not make this balancer (a child after `fork`).
    #[inline]
    fn same_process(&self) -> Result<()> {
        if crate::sync::fork::generation() == self.forks {
            Ok(())
        } else {
            Err(Error::Forked {
                created_by: self.pid,
            })
        }
    }

    fn store_lsn(&self, key: &str, lsn: Lsn) -> Result<()> {
        // `Config::validate` bounds `sticky_ttl_s`; the stores cap TTLs anyway.
        let ttl = Duration::from_secs(self.config.sticky_ttl_s);
        sticking::record(&**self.store, &self.counters, key, lsn, ttl).map(|_| ())
    }
}

impl Drop for Balancer {
    /// Closes the pools and connections on dlb's threads, never the caller's (closing a
    /// `postgres::Client` runs a runtime of its own, which must not happen on an async worker):
    /// the routing state goes on a short-lived `dlb-teardown` thread, then the monitor thread
    /// is stopped and closes the hosts once no old snapshot refers to them (see the monitor).
    /// Blocks until done, without waiting for a probe, live check or connect in progress
    /// (they end on their own threads: a vanished host costs nothing here): longer only while
    /// a DNS exchange or the LSN store's housekeeping runs (each bounded by its timeout), and
    /// up to 2 s while routes and connections callers still hold are released.
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child: the monitor thread does not exist here, and the pools' sockets
            // are the parent's too (closing them would end the parent's sessions). Leak it all
            // (the `ManuallyDrop` fields are never dropped).
            self.monitor.forget();
            return;
        }
        // SAFETY: taken once, here; the fields are not used again.
        let parts = unsafe {
            (
                ManuallyDrop::take(&mut self.router),
                ManuallyDrop::take(&mut self.store),
            )
        };
        // If no thread can be started, the closure (and `parts`) is dropped right here.
        if let Ok(h) = std::thread::Builder::new()
            .name("dlb-teardown".into())
            .spawn(move || drop(parts))
        {
            let _ = h.join();
        }
        self.monitor.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A configuration whose primary and replica nothing listens on: every probe and connect
    /// fails at once, no server needed.
    fn nowhere() -> crate::config::ConfigBuilder {
        Config::builder("host=127.0.0.1 port=1 user=u dbname=d").replica_hosts(["127.0.0.1:2"])
    }

    #[test]
    fn a_panicking_check_is_counted_and_the_monitor_goes_on() {
        // Nothing listens on port 1: every probe fails at once, no server needed.
        let lb = Balancer::new(
            nowhere()
                .replica_check_interval(Duration::from_millis(20))
                .build()
                .unwrap(),
        )
        .unwrap();
        assert!(lb.status().last_check_age_ms.is_some());
        lb.router
            .panic_next_check
            .store(true, std::sync::atomic::Ordering::Relaxed);
        wait_until("the panic is counted", || {
            lb.metrics_text().contains("dlb_monitor_panics_total 1")
        });
        let checks = lb.status().checks;
        wait_until("the monitor checks again", || {
            lb.status().checks > checks + 2
        });
    }

    /// `read_conn`'s live checks run in the proof loop: a replica whose pool cannot hand out a
    /// connection (nothing listens on its port) failed by the host, so it is reported, its
    /// check counted, the proof observed once; then the not-caught-up policy.
    #[test]
    fn a_pooled_live_check_failed_by_the_host_reports_it() {
        let lb = Balancer::new(
            nowhere()
                .replica_check_interval(Duration::from_secs(3600))
                .checkout_timeout(Duration::from_millis(50))
                .sticky_check_budget(Duration::from_millis(200))
                .no_caught_up_replica(crate::config::NoCaughtUpPolicy::Error)
                .build()
                .unwrap(),
        )
        .unwrap();
        let candidates: Vec<_> = lb
            .router
            .with_snapshot(|s| s.replicas.iter().map(|r| r.host.clone()).collect());
        let candidates: Vec<_> = candidates.into_iter().map(StripedHost::new).collect();
        let reported = lb.counters.values().reported_failures;
        let req = Requirement {
            lsn: Lsn::from_u64(500),
            timeline: 2,
        };
        assert!(matches!(
            lb.read_live(req, &candidates, None),
            Err(Error::NoCaughtUpReplica { .. })
        ));
        let values = lb.counters.values();
        assert_eq!(values.live_lsn_checks, 1);
        assert_eq!(values.reported_failures, reported + 1);
        assert_eq!(lb.counters.live_check_latency.read().1, 1);
    }

    /// issue #14: a child forked while another thread of the parent was inside a pick (with
    /// crossbeam-epoch: pinned to the process-global collector, for ever in the child) must
    /// still free the snapshots a balancer it makes replaces. Fails on the epoch-based code:
    /// every replaced snapshot stays, and with it a reference to each host.
    #[test]
    fn a_balancer_made_in_a_child_forked_during_a_pick_frees_replaced_snapshots() {
        let make = || {
            Balancer::new(
                Config::builder("host=127.0.0.1 port=1 user=u dbname=d")
                    .replica_hosts(["127.0.0.1:2"])
                    .replica_check_interval(Duration::from_secs(3600))
                    .build()
                    .unwrap(),
            )
            .unwrap()
        };
        let lb = Arc::new(make());
        let (inside_tx, inside) = channel::bounded(0);
        let (leave, leave_rx) = channel::bounded::<()>(0);
        let reader = {
            let lb = lb.clone();
            std::thread::spawn(move || {
                lb.router.with_snapshot(|_| {
                    inside_tx.send(()).unwrap();
                    let _ = leave_rx.recv();
                })
            })
        };
        inside.recv().unwrap();
        // SAFETY: the child only runs dlb code and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let freed = std::panic::catch_unwind(|| {
                let lb = make();
                let host = lb.router.with_snapshot(|s| s.replicas[0].host.clone());
                let before = Arc::strong_count(&host);
                for _ in 0..200 {
                    lb.report_failure("127.0.0.1:2");
                }
                let after = Arc::strong_count(&host);
                std::mem::forget(lb);
                let msg = format!("child: host references {before} before, {after} after\n");
                // SAFETY: writes a buffer we own to stderr (no lock a parent thread may hold).
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                after <= before + 5
            });
            if freed.is_err() {
                let msg = "child: panicked\n";
                // SAFETY: as above.
                unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(!matches!(freed, Ok(true)))) };
        }
        assert!(pid > 0, "fork failed");
        drop(leave);
        reader.join().unwrap();
        let mut status = 0;
        wait_until("the child exits", || {
            // SAFETY: waits for our own child without blocking.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "in the child, replaced snapshots were not freed (status {status})"
        );
    }
}
