//! One database host: its connection pool, its monitoring connection and its cached state.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use scheduled_thread_pool::ScheduledThreadPool;

use crate::config::Config;
use crate::dsn::Dsn;
use crate::error::{Error, Result};
use crate::labels::Role;
use crate::lsn::Lsn;
use crate::stripe::{STRIPES, stripe};

/// The r2d2 pool type dlb uses for every host.
pub type PgPool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A connection checked out of a host's pool; returned to the pool on drop.
pub type PooledClient = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// A host, shared by the pick path, the monitor and routes handed to callers.
pub(crate) struct Host {
    pub(crate) role: Role,
    /// `host:port`: no secrets, used in logs, metrics and status.
    pub(crate) addr: String,
    /// The full DSN callers connect with (password included). Never logged.
    pub(crate) dsn: String,
    /// The DSN with the password hidden.
    pub(crate) redacted: String,
    pub(crate) pool: PgPool,
    probe_config: postgres::Config,
    /// Monitoring connection, taken out while a probe runs (no lock across I/O).
    probe_conn: Mutex<Option<postgres::Client>>,
    probe_in_flight: AtomicBool,
    /// Last known replay LSN (replicas) as a `u64`; 0 when unknown. Only moves forward.
    replay_lsn: AtomicU64,
    /// When a caller last reported a failure, in nanoseconds since [`epoch`]; 0 if never.
    reported_at: AtomicU64,
}

/// One stripe's handle on a host. Routes hold these rather than the host itself: an `Arc`
/// clone increments a reference count, and one count shared by every thread would bounce its
/// cache line between cores on every pick. Threads on different stripes clone different
/// handles, each in its own cache lines (the alignment spaces the reference counts of
/// neighbouring allocations apart).
#[repr(align(128))]
pub(crate) struct HostHandle(Arc<Host>);

impl Deref for HostHandle {
    type Target = Host;
    #[inline]
    fn deref(&self) -> &Host {
        &self.0
    }
}

/// A host with one cache-padded [`HostHandle`] per stripe, made once per host.
pub(crate) struct StripedHost {
    host: Arc<Host>,
    handles: Box<[CachePadded<Arc<HostHandle>>]>,
}

impl StripedHost {
    pub(crate) fn new(host: Arc<Host>) -> Arc<StripedHost> {
        Arc::new(StripedHost {
            handles: (0..STRIPES)
                .map(|_| CachePadded::new(Arc::new(HostHandle(host.clone()))))
                .collect(),
            host,
        })
    }

    /// This thread's handle on the host (an uncontended reference count increment).
    #[inline]
    pub(crate) fn handle(&self) -> Arc<HostHandle> {
        Arc::clone(&self.handles[stripe()])
    }

    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }
}

impl std::fmt::Debug for StripedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.host.fmt(f)
    }
}

impl Deref for StripedHost {
    type Target = Host;
    #[inline]
    fn deref(&self) -> &Host {
        &self.host
    }
}

/// A process-wide origin for instants stored in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64 + 1
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("role", &self.role)
            .field("dsn", &self.redacted)
            .finish()
    }
}

impl Host {
    pub(crate) fn new(
        role: Role,
        dsn: &Dsn,
        cfg: &Config,
        scheduler: &Arc<ScheduledThreadPool>,
    ) -> Result<Host> {
        let text = dsn.to_string();
        let field = match role {
            Role::Primary => "primary",
            Role::Replica => "replicas",
        };
        let mut pg: postgres::Config = text
            .parse()
            .map_err(|e| Error::config(field, format!("not a valid connection string: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_millis(cfg.pool.connect_timeout_ms));
        }
        let mut probe_config = pg.clone();
        probe_config.connect_timeout(Duration::from_millis(
            cfg.pool
                .connect_timeout_ms
                .min(cfg.probe_timeout_ms.max(1) * 10),
        ));
        probe_config.tcp_user_timeout(Duration::from_secs(5));
        let manager = PostgresConnectionManager::new(pg, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool.max_size)
            .min_idle(Some(cfg.pool.min_idle))
            .connection_timeout(Duration::from_millis(cfg.pool.checkout_timeout_ms))
            .max_lifetime(match cfg.pool.max_lifetime_s {
                0 => None,
                s => Some(Duration::from_secs(s)),
            })
            .thread_pool(scheduler.clone())
            .build_unchecked(manager);
        Ok(Host {
            role,
            addr: dsn.host_port().to_string(),
            dsn: text,
            redacted: dsn.redacted(),
            pool,
            probe_config,
            probe_conn: Mutex::new(None),
            probe_in_flight: AtomicBool::new(false),
            replay_lsn: AtomicU64::new(0),
            reported_at: AtomicU64::new(0),
        })
    }

    /// Cached replay LSN, if any probe or live check has seen one.
    pub(crate) fn replay_lsn(&self) -> Option<Lsn> {
        match self.replay_lsn.load(Ordering::Acquire) {
            0 => None,
            v => Some(Lsn::from_u64(v)),
        }
    }

    /// Records that a caller saw this host fail, now.
    pub(crate) fn mark_reported(&self) {
        self.reported_at
            .store(nanos_since_epoch(Instant::now()), Ordering::Release);
    }

    /// True when a failure was reported at or after `t`.
    pub(crate) fn reported_since(&self, t: Instant) -> bool {
        let at = self.reported_at.load(Ordering::Acquire);
        at != 0 && at >= nanos_since_epoch(t)
    }

    /// Pooled connections currently checked out.
    pub(crate) fn in_use(&self) -> u32 {
        let st = self.pool.state();
        st.connections.saturating_sub(st.idle_connections)
    }

    /// Sets the cached replay LSN from a monitor probe (authoritative).
    pub(crate) fn set_replay_lsn(&self, lsn: Lsn) {
        self.replay_lsn.store(lsn.as_u64(), Ordering::Release);
    }

    /// Raises the cached replay LSN (never lowers it); used by live checks.
    pub(crate) fn observe_replay_lsn(&self, lsn: Lsn) {
        self.replay_lsn.fetch_max(lsn.as_u64(), Ordering::AcqRel);
    }

    /// Runs `f` on this host's monitoring connection, connecting first if needed. Returns
    /// `None` without doing anything when another probe of this host is still running.
    /// Blocks for as long as the I/O takes: callers bound it with their own deadline.
    pub(crate) fn with_probe_conn<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>,
    ) -> Option<std::result::Result<T, String>> {
        if self.probe_in_flight.swap(true, Ordering::AcqRel) {
            return None;
        }
        let taken = self.probe_conn.lock().take();
        let mut client = match taken {
            Some(c) if !c.is_closed() => c,
            _ => match self.probe_config.connect(NoTls) {
                Ok(c) => c,
                Err(e) => {
                    self.probe_in_flight.store(false, Ordering::Release);
                    return Some(Err(format!("connect: {e}")));
                }
            },
        };
        let out = f(&mut client).map_err(|e| e.to_string());
        if out.is_ok() {
            *self.probe_conn.lock() = Some(client);
        }
        self.probe_in_flight.store(false, Ordering::Release);
        Some(out)
    }

    /// Checks a connection out of this host's pool, waiting at most `timeout`.
    pub(crate) fn checkout(&self, timeout: Duration) -> Result<PooledClient> {
        self.pool.get_timeout(timeout).map_err(|e| {
            let (host, message) = (self.addr.clone(), e.to_string());
            match self.role {
                Role::Primary => Error::PrimaryUnavailable { host, message },
                Role::Replica => Error::ReplicaUnavailable { host, message },
            }
        })
    }
}
