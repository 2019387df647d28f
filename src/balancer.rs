//! The [`Balancer`]: pools, routing and the background monitor.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};
use crossbeam::epoch::{self, Atomic, Owned};
use log::{info, warn};
use parking_lot::Mutex;
use scheduled_thread_pool::{OnPoolDropBehavior, ScheduledThreadPool};

use crate::config::Config;
use crate::error::Result;
use crate::host::{Host, PooledClient, Role, Striped};
use crate::metrics::{Metrics, StripedCursor};
use crate::monitor::{self, Membership};
use crate::route::{Reason, Route};
use crate::state::Snapshot;
use crate::store::{LsnStore, MemoryStore};

/// State shared by the balancer handle, the monitor thread and nothing else.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) primary: Arc<Host>,
    /// Per-stripe handles on the primary, for routes.
    primary_handles: Arc<Striped>,
    /// Replicas are configured (fixed or DNS): load balancing is on.
    pub(crate) lb_enabled: bool,
    snapshot: Atomic<Snapshot>,
    /// Orders snapshot publications (monitor vs `report_failure`); held for memory work only.
    publish_lock: Mutex<()>,
    /// A caller asked for a DNS refresh (network error reported).
    pub(crate) dns_refresh: AtomicBool,
    cursor: StripedCursor,
    pub(crate) metrics: Metrics,
    pub(crate) store: Arc<dyn LsnStore>,
    wake: Sender<()>,
}

impl Shared {
    /// Runs `f` on the current snapshot without taking a lock (epoch-pinned read).
    #[inline]
    pub(crate) fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let guard = epoch::pin();
        let ptr = self.snapshot.load(Ordering::Acquire, &guard);
        // SAFETY: the pointer is set in `Balancer::new` and only ever replaced by `publish`,
        // which defers the old value's destruction until no pinned reader can see it.
        f(unsafe { ptr.deref() })
    }

    /// Publishes a snapshot built from probes that started at `probe_start`, leaving out
    /// replicas a caller reported failing since then.
    pub(crate) fn publish_checked(&self, mut snap: Snapshot, probe_start: Instant) {
        let _g = self.publish_lock.lock();
        snap.eligible.retain(|h| !h.reported_since(probe_start));
        self.swap(snap);
    }

    /// Takes `host` out of rotation at once (until a probe that starts later succeeds).
    fn exclude_now(&self, host: &Arc<Host>) {
        let _g = self.publish_lock.lock();
        let snap = self.with_snapshot(|s| Snapshot {
            replicas: s.replicas.clone(),
            eligible: s
                .eligible
                .iter()
                .filter(|h| !Arc::ptr_eq(h.host(), host))
                .cloned()
                .collect(),
            draining: s.draining.clone(),
            primary_lsn: s.primary_lsn,
            generation: s.generation,
        });
        self.swap(snap);
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

    /// Asks the monitor for an immediate check (merged with any pending one).
    pub(crate) fn wake_monitor(&self) {
        let _ = self.wake.try_send(());
    }

    #[inline]
    pub(crate) fn primary_route(&self, reason: Reason) -> Route {
        self.metrics.count_pick(reason);
        Route {
            host: self.primary_handles.handle(),
            reason,
        }
    }

    #[inline]
    pub(crate) fn next_cursor(&self) -> usize {
        self.cursor.next()
    }

    /// Round-robin over the healthy replicas: no lock, no I/O.
    #[inline]
    pub(crate) fn round_robin(&self, reason: Reason) -> Route {
        let picked = self.with_snapshot(|s| match s.eligible.len() {
            0 => None,
            n => Some(s.eligible[self.next_cursor() % n].handle()),
        });
        match picked {
            Some(host) => {
                self.metrics.count_pick(reason);
                Route { host, reason }
            }
            None => self.primary_route(self.no_replica_reason()),
        }
    }

    fn no_replica_reason(&self) -> Reason {
        if !self.lb_enabled {
            Reason::NoReplicasConfigured
        } else {
            Reason::NoHealthyReplica
        }
    }
}

impl Drop for Shared {
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
/// connections (shared sockets) but not its monitor thread: it must not use an inherited
/// balancer, and dropping one there leaks it instead of closing the parent's connections.
pub struct Balancer {
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    monitor: Option<JoinHandle<()>>,
    /// The process that made it (see the fork note on [`Balancer`]).
    pid: u32,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("primary", &self.shared.primary.redacted)
            .field(
                "replicas",
                &self.shared.with_snapshot(|s| {
                    s.replicas
                        .iter()
                        .map(|r| r.host.label.clone())
                        .collect::<Vec<_>>()
                }),
            )
            .finish()
    }
}

impl Balancer {
    /// Validates `config`, creates the pools (connections are opened lazily), runs one check of
    /// every host and starts the monitor thread.
    ///
    /// Blocks for at most `probe_timeout_ms` (default 100 ms) for that first check. A replica
    /// or primary that is down does not fail start-up: the replica stays out of rotation until
    /// it answers, and a down primary is reported by the first write.
    ///
    /// The LSN store is chosen by `lsn_store`: the in-process [`MemoryStore`] (default) or a
    /// [`crate::RedisStore`], which connects lazily (a Redis that is down does not fail start-up;
    /// sticky reads go to the primary until it answers).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the offending field.
    pub fn new(config: Config) -> Result<Balancer> {
        config.validate()?;
        let store: Arc<dyn LsnStore> = match &config.lsn_store {
            crate::config::LsnStoreConfig::Memory {} => Arc::new(MemoryStore::new()),
            crate::config::LsnStoreConfig::Redis(r) => {
                Arc::new(crate::redis_store::RedisStore::new(r)?)
            }
        };
        Balancer::with_store(config, store)
    }

    /// As [`Balancer::new`], with another [`LsnStore`] for sticking (the default is an
    /// in-process [`MemoryStore`]).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the offending field.
    pub fn with_store(config: Config, store: Arc<dyn LsnStore>) -> Result<Balancer> {
        let resolved = config.resolve()?;
        // One scheduler for every pool's background connection work, not 3 threads per host.
        // Its threads exit as soon as the balancer is dropped, not after the pools' next
        // scheduled reaper run (up to 30 s later).
        let scheduler = Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(2)
                .thread_name_pattern("dlb-pool-{}")
                .on_drop_behavior(OnPoolDropBehavior::DiscardPendingScheduled)
                .build(),
        );
        let primary = Arc::new(Host::new(
            Role::Primary,
            &resolved.primary,
            &config,
            &scheduler,
        )?);
        let lb_enabled = !resolved.replicas.is_empty()
            || config.replicas.as_ref().is_some_and(|r| r.dns.is_some());
        let mut members = Membership::new(&config, resolved.primary, resolved.replicas, scheduler);
        let (wake_tx, wake_rx) = channel::bounded(1);
        let (stop_tx, stop_rx) = channel::bounded(0);
        let interval = config.check_interval();
        let shared = Arc::new(Shared {
            config,
            primary_handles: Striped::new(primary.clone()),
            primary,
            lb_enabled,
            snapshot: Atomic::new(Snapshot::default()),
            publish_lock: Mutex::new(()),
            dns_refresh: AtomicBool::new(false),
            cursor: StripedCursor::new(),
            metrics: Metrics::new(),
            store,
            wake: wake_tx,
        });
        info!(
            target: "dlb",
            "balancer started: primary {}",
            shared.primary.redacted,
        );
        monitor::check_once(&shared, &mut members);
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("dlb-monitor".into())
            .spawn(move || monitor::run(weak, members, stop_rx, wake_rx, interval))
            .map_err(|e| crate::Error::config("", format!("cannot start monitor thread: {e}")))?;
        Ok(Balancer {
            shared,
            stop: Some(stop_tx),
            monitor: Some(handle),
            pid: std::process::id(),
        })
    }

    /// Parses a JSON configuration (see [`Config::from_json`]) and calls [`Balancer::new`].
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the offending field.
    pub fn from_json(json: &str) -> Result<Balancer> {
        Balancer::new(Config::from_json(json)?)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The primary, for writes. Never blocks.
    pub fn primary(&self) -> Route {
        self.shared.primary_route(Reason::Write)
    }

    /// A pooled connection to the primary.
    ///
    /// Blocks until a connection is free or `pool.checkout_timeout_ms` passes (connecting if
    /// needed).
    ///
    /// # Errors
    /// [`crate::Error::PrimaryUnavailable`] when no connection can be had in time.
    pub fn write_conn(&self) -> Result<Conn> {
        let route = self.primary();
        let timeout = Duration::from_millis(self.shared.config.pool.checkout_timeout_ms);
        let client = route.host.checkout(timeout)?;
        Ok(Conn { route, client })
    }

    /// Picks where a read should go. Without a key this is plain round-robin over the healthy
    /// replicas; the primary (with the reason) when none is healthy or none is configured.
    ///
    /// Takes no lock and does no I/O when `key` is `None`.
    ///
    /// # Errors
    /// None without a key today; with a key see the sticking documentation.
    pub fn pick_replica(&self, key: Option<&str>) -> Result<Route> {
        match key {
            None => Ok(self.shared.round_robin(Reason::RoundRobin)),
            Some(k) => self.pick_sticky(k),
        }
    }

    /// Picks a host for a read (as [`Balancer::pick_replica`]) and checks a connection out of
    /// its pool. When the replica's pool cannot hand out a connection within
    /// `pool.connect_timeout_ms`, the failure is reported (the monitor re-checks at once) and
    /// the read falls back to the primary with reason [`Reason::ReplicaUnavailable`].
    ///
    /// # Errors
    /// Those of `pick_replica`, and [`crate::Error::PrimaryUnavailable`] when the read must go to
    /// the primary and it cannot be reached.
    pub fn read_conn(&self, key: Option<&str>) -> Result<Conn> {
        let route = self.pick_replica(key)?;
        let cfg = &self.shared.config.pool;
        if route.role() == Role::Replica {
            let timeout =
                Duration::from_millis(cfg.connect_timeout_ms.min(cfg.checkout_timeout_ms));
            match route.host.checkout(timeout) {
                Ok(client) => return Ok(Conn { route, client }),
                Err(e) => {
                    warn!(target: "dlb", "{e}; reading from the primary");
                    self.report_failure(route.addr());
                    let route = self.shared.primary_route(Reason::ReplicaUnavailable);
                    let timeout = Duration::from_millis(cfg.checkout_timeout_ms);
                    let client = route.host.checkout(timeout)?;
                    return Ok(Conn { route, client });
                }
            }
        }
        let client = route
            .host
            .checkout(Duration::from_millis(cfg.checkout_timeout_ms))?;
        Ok(Conn { route, client })
    }

    /// Tells the balancer that the caller saw a network error on a host (given by its DSN as
    /// handed out, or its `host:port`). A replica leaves the rotation at once, until a probe
    /// that starts after this call succeeds; the monitor re-checks every host right away
    /// (throttled) and, with DNS discovery, refreshes the list (at most once a second).
    /// Returns whether the host is known. Never blocks on I/O.
    pub fn report_failure(&self, dsn_or_addr: &str) -> bool {
        let s = &self.shared;
        let matches = |h: &Host| h.dsn == dsn_or_addr || h.label == dsn_or_addr;
        let replica = s.with_snapshot(|snap| {
            snap.replicas
                .iter()
                .find(|r| matches(&r.host))
                .map(|r| r.host.clone())
        });
        let known = replica.is_some() || matches(&s.primary);
        if let Some(host) = replica {
            host.mark_reported();
            s.exclude_now(&host);
            s.dns_refresh.store(true, Ordering::Relaxed);
        }
        if known {
            s.metrics.reported_failures.fetch_add(1, Ordering::Relaxed);
            s.wake_monitor();
        }
        known
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child: the monitor thread does not exist here, and the pools' sockets
            // are the parent's too (closing them would end the parent's sessions). Leak it all.
            std::mem::forget(self.shared.clone());
            std::mem::forget(self.monitor.take());
            std::mem::forget(self.stop.take());
            return;
        }
        drop(self.stop.take());
        if let Some(h) = self.monitor.take() {
            let _ = h.join();
        }
    }
}

/// A pooled connection together with the route that chose it. Dereferences to
/// [`postgres::Client`]; returned to its pool on drop.
pub struct Conn {
    route: Route,
    client: PooledClient,
}

impl Conn {
    /// Where this connection goes and why.
    pub fn route(&self) -> &Route {
        &self.route
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("route", &self.route).finish()
    }
}

impl Deref for Conn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}
