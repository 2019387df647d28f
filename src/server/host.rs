//! One database host: its connection pool, its monitoring connection and its cached state.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use scheduled_thread_pool::{OnPoolDropBehavior, ScheduledThreadPool};

use crate::config::Config;
use crate::dsn::Dsn;
use crate::error::{Error, Result};
use crate::labels::Role;
use crate::lsn::{Lsn, Position};
use crate::server::checker::{Checked, Checker};
use crate::server::connection::{PgConn, PgManager};
use crate::server::identity::IdentityLog;
use crate::server::io_ref::{Lendable, only_io_refs};
use crate::server::probe_conn::ProbeConn;
use crate::server::session::is_host_failure;
use crate::server::tls::{PgTls, TlsSettings};
pub(crate) use crate::sync::instant::nanos_since_epoch;
use crate::sync::stripe::{STRIPES, stripe};

/// The scheduler of one pool's background work (connects, reaping): one thread of its own,
/// named `name` (not r2d2's 3 shared threads), which exits when the pool is dropped (pending
/// jobs discarded, not after the next reaper run, up to 30 s away). A connect that hangs (a
/// black-holed host waits for the connect timeout; one behind a stalled proxy never answers
/// the startup message, and nothing bounds that exchange but TCP, which a proxy keeps alive)
/// holds its own host's thread only, never another replica's or the primary's.
fn pool_scheduler(name: &str) -> Arc<ScheduledThreadPool> {
    Arc::new(
        ScheduledThreadPool::builder()
            .num_threads(1)
            .thread_name_pattern(name)
            .on_drop_behavior(OnPoolDropBehavior::DiscardPendingScheduled)
            .build(),
    )
}

/// The r2d2 pool type dlb uses for every host.
pub(crate) type PgPool = r2d2::Pool<PgManager>;

/// A connection checked out of a host's pool; returned to the pool on drop.
pub(crate) type PooledClient = r2d2::PooledConnection<PgManager>;

/// `tcp_user_timeout` of pooled connections when the DSN sets none: the checkout timeout
/// (`pool.checkout_timeout_ms`), within these bounds. A call on a connection whose host
/// vanished (its packets dropped: no RST, no answer) then fails about when a checkout would
/// have given up, not after 10 s or the kernel's ~15 minutes. A long query is not affected
/// (nothing is unacknowledged while the server computes); the floor keeps a lost packet or
/// two from closing a connection.
const POOL_TCP_USER_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const POOL_TCP_USER_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// The `tcp_user_timeout` of pooled connections when the DSN sets none (see
/// [`POOL_TCP_USER_TIMEOUT_MIN`]).
pub(crate) fn pool_tcp_user_timeout(cfg: &Config) -> Duration {
    Duration::from_millis(cfg.pool.checkout_timeout_ms)
        .clamp(POOL_TCP_USER_TIMEOUT_MIN, POOL_TCP_USER_TIMEOUT_MAX)
}

/// Keepalives of every connection when the DSN sets no `keepalives*`: a silent peer is given
/// up after about 30 + 3 × 10 s (the kernel's defaults wait 2 h, then 9 × 75 s).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_COUNT: u32 = 3;

/// The monitoring connection is replaced after this many probes, so that an address re-pointed
/// to another server is noticed within as many check intervals.
const PROBE_CONN_USES: u32 = 5;

/// A host's pool could not hand out a connection ([`Host::checkout`]).
#[derive(Debug)]
pub(crate) struct Unavailable {
    /// [`Error::PrimaryUnavailable`] or [`Error::ReplicaUnavailable`].
    pub(crate) error: Error,
    /// Whether the host failed (no connection, a broken one, a server shutting down), rather
    /// than a check's statement ([`is_host_failure`]): only then is a replica reported.
    pub(crate) host_failed: bool,
}

impl From<Unavailable> for Error {
    fn from(u: Unavailable) -> Error {
        u.error
    }
}

/// A host, shared by the pick path, the monitor and routes handed to callers.
pub(crate) struct Host {
    /// Unique in the process, never reused ([`crate::Route::host_id`]).
    pub(crate) id: u64,
    pub(crate) role: Role,
    /// `host:port`: no secrets, used in logs, metrics and status.
    pub(crate) addr: String,
    /// The full DSN callers connect with (password included). Never logged.
    pub(crate) dsn: String,
    /// The DSN with the password hidden.
    pub(crate) redacted: String,
    pub(crate) pool: PgPool,
    probe_config: tokio_postgres::Config,
    /// The bound of each probe query (`probe_timeout_ms`).
    probe_timeout: Duration,
    /// The DSN's TLS settings (`sslmode` and the rest), for every connection to this host.
    tls: PgTls,
    /// Monitoring connection and the probes it served, taken out while a probe runs (no lock
    /// across I/O).
    probe_conn: Mutex<Option<(ProbeConn, u32)>>,
    probe_in_flight: AtomicBool,
    /// The identities reached by new connections (pooled, monitoring and live checkers).
    pub(crate) identity_log: Arc<IdentityLog>,
    /// Tag of the server identity the last probe saw ([`crate::server::identity::ServerIdentity::tag`]);
    /// 0 when unknown. The cached replay LSN describes this server only.
    identity: AtomicU64,
    /// Last known replay LSN (replicas) of the server tagged `identity`, as a `u64`; 0 when
    /// unknown.
    replay_lsn: AtomicU64,
    /// The timeline of `replay_lsn` (0: unknown). Written with it under `cache_writer`; a
    /// server's timeline only grows, and its positions on an older timeline are part of the
    /// newer one's history, so a reader that sees one of the two values from the previous write
    /// pairs a position with a timeline it belongs to.
    replay_timeline: AtomicU32,
    /// Held by whoever writes `identity` or `replay_lsn` (the monitor, live checks; memory
    /// only, never across I/O; picks only read): a live check's position and a new identity
    /// cannot interleave, so the cache never holds one server's position under another's
    /// identity, not even for an instant.
    cache_writer: Mutex<()>,
    /// When a caller last reported a failure, in nanoseconds since [`epoch`]; 0 if never.
    reported_at: AtomicU64,
    /// Pooled connections idle or unchecked for longer than this are checked on checkout
    /// (zero: every checkout, as on the primary).
    check_every: Duration,
    /// The live checker of sticky picks (replicas), started on first use.
    checker: OnceLock<Option<Checker>>,
    /// References a probe or live-check thread holds ([`crate::server::io_ref::IoRef`]).
    io_refs: AtomicUsize,
}

impl Lendable for Host {
    fn io_refs(&self) -> &AtomicUsize {
        &self.io_refs
    }
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
        self.handle_at(stripe())
    }

    /// Stripe `i`'s handle (this thread's).
    #[inline]
    pub(crate) fn handle_at(&self, i: usize) -> Arc<HostHandle> {
        Arc::clone(&self.handles[i])
    }

    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Whether `this` is the only reference left to the host but those of dlb threads in the
    /// middle of a probe or a live check ([`crate::server::io_ref`]): no snapshot, route or
    /// monitor entry holds it or one of its handles. Dropping `this` then closes the host, here
    /// or, when a probe or check is still running (a connect to a vanished host), on that dlb
    /// thread once it ends.
    pub(crate) fn only_reference(this: &Arc<StripedHost>) -> bool {
        Arc::strong_count(this) == 1
            && this.handles.iter().all(|h| Arc::strong_count(h) == 1)
            && only_io_refs(&this.host, 1 + this.handles.len())
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

impl Checked for Host {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn connect(&self) -> std::result::Result<ProbeConn, String> {
        self.connect_monitoring()
    }

    fn reached(&self, tag: u64) {
        self.identity_log.record(tag, Instant::now());
    }

    fn observe(&self, tag: u64, pos: Position) -> bool {
        self.observe_replay(tag, pos)
    }
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
    /// A host and its pool, connecting lazily (nothing is awaited here).
    ///
    /// # Errors
    /// [`Error::Config`] when the DSN's driver or TLS settings are unusable.
    pub(crate) fn new(role: Role, dsn: &Dsn, cfg: &Config) -> Result<Host> {
        let text = dsn.to_string();
        let field = match role {
            Role::Primary => "primary",
            Role::Replica => "replicas",
        };
        let mut pg = dsn.driver_config().map_err(|m| Error::config(field, m))?;
        let tls = TlsSettings::from_dsn(dsn, field)?.connector(field)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_millis(cfg.pool.connect_timeout_ms));
        }
        // A black-holed host must not hold a thread (a live check, a caller's query, a
        // checkout's check) for the kernel's retransmission timeout (~15 min): unacknowledged
        // data gives up after `pool_tcp_user_timeout`, and keepalives notice a silent peer.
        // The DSN's own `tcp_user_timeout` / `keepalives*` win.
        if !dsn.params().iter().any(|(k, _)| k == "tcp_user_timeout") {
            pg.tcp_user_timeout(pool_tcp_user_timeout(cfg));
        }
        if !dsn
            .params()
            .iter()
            .any(|(k, _)| k.starts_with("keepalives"))
        {
            pg.keepalives(true);
            pg.keepalives_idle(KEEPALIVES_IDLE);
            pg.keepalives_interval(KEEPALIVES_INTERVAL);
            pg.keepalives_retries(KEEPALIVES_COUNT);
        }
        let mut probe_config = pg.clone();
        if role == Role::Replica && cfg.pool.read_statement_timeout_ms > 0 {
            // Start-up options are the session's defaults: `RESET ALL` between borrowers keeps
            // them. The monitor's and checker's connections (cloned above) have deadlines of
            // their own.
            let option = format!(
                "-c statement_timeout={}",
                cfg.pool.read_statement_timeout_ms
            );
            let options = match pg.get_options() {
                Some(o) if !o.trim().is_empty() => format!("{o} {option}"),
                _ => option,
            };
            pg.options(&options);
        }
        probe_config.connect_timeout(Duration::from_millis(
            cfg.pool
                .connect_timeout_ms
                .min(cfg.probe_timeout_ms.max(1).saturating_mul(10)),
        ));
        probe_config.tcp_user_timeout(Duration::from_secs(5));
        let identity_log = Arc::new(IdentityLog::default());
        let mut pooled: postgres::Config = pg.into();
        pooled.notice_callback(crate::server::session::log_notice);
        let manager = PgManager::new(
            pooled,
            tls.clone(),
            identity_log.clone(),
            role == Role::Primary,
        );
        let pool = r2d2::Pool::builder()
            .max_size(cfg.pool.max_size)
            .min_idle(Some(cfg.pool.min_idle))
            .connection_timeout(Duration::from_millis(cfg.pool.checkout_timeout_ms))
            .max_lifetime(match cfg.pool.max_lifetime_s {
                0 => None,
                s => Some(Duration::from_secs(s)),
            })
            .thread_pool(pool_scheduler(match role {
                Role::Primary => "dlb-pool-primary",
                Role::Replica => "dlb-pool-replica",
            }))
            // `checkout` decides when to check (see `check_every`).
            .test_on_check_out(false)
            .build_unchecked(manager);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Host {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            role,
            addr: dsn.host_port().to_string(),
            dsn: text,
            redacted: dsn.redacted(),
            pool,
            probe_config,
            probe_timeout: cfg.probe_timeout(),
            tls,
            probe_conn: Mutex::new(None),
            probe_in_flight: AtomicBool::new(false),
            identity_log,
            identity: AtomicU64::new(0),
            replay_lsn: AtomicU64::new(0),
            replay_timeline: AtomicU32::new(0),
            cache_writer: Mutex::new(()),
            reported_at: AtomicU64::new(0),
            // The primary's connections are checked on every checkout: a write must never
            // land in a transaction another caller left open.
            check_every: match role {
                Role::Primary => Duration::ZERO,
                Role::Replica => Duration::from_millis(cfg.pool.check_idle_after_ms),
            },
            checker: OnceLock::new(),
            io_refs: AtomicUsize::new(0),
        })
    }

    /// Cached replay LSN, if any probe or live check has seen one.
    pub(crate) fn replay_lsn(&self) -> Option<Lsn> {
        match self.replay_lsn.load(Ordering::Acquire) {
            0 => None,
            v => Some(Lsn::from_u64(v)),
        }
    }

    /// Cached replay position (LSN and timeline), if any probe or live check has seen one.
    #[inline]
    pub(crate) fn replay_position(&self) -> Option<Position> {
        let timeline = self.replay_timeline.load(Ordering::Acquire);
        self.replay_lsn().map(|lsn| Position { lsn, timeline })
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

    /// The identity tag of the server the last probe saw (0: unknown).
    pub(crate) fn identity_tag(&self) -> u64 {
        self.identity.load(Ordering::Acquire)
    }

    /// Records the identity a probe saw. When it differs from the previous one (a restart, a
    /// replacement, a re-pointed name), the cached replay LSN is forgotten at once. Returns
    /// whether it changed.
    pub(crate) fn set_identity(&self, tag: u64) -> bool {
        let _w = self.cache_writer.lock();
        self.set_identity_locked(tag)
    }

    /// [`Host::set_identity`] under `cache_writer`.
    fn set_identity_locked(&self, tag: u64) -> bool {
        let old = self.identity.swap(tag, Ordering::AcqRel);
        if old != tag {
            self.forget_replay_lsn();
        }
        old != tag
    }

    /// Forgets the cached replay LSN and the identity it belongs to (a failed probe).
    pub(crate) fn forget(&self) {
        let _w = self.cache_writer.lock();
        self.identity.store(0, Ordering::Release);
        self.forget_replay_lsn();
    }

    fn forget_replay_lsn(&self) {
        self.replay_lsn.store(0, Ordering::Release);
        self.replay_timeline.store(0, Ordering::Release);
    }

    /// Sets the cached replay position from a monitor probe of the server tagged `tag`
    /// (authoritative).
    pub(crate) fn set_replay_position(&self, tag: u64, pos: Position) {
        let _w = self.cache_writer.lock();
        self.set_identity_locked(tag);
        self.replay_timeline.store(pos.timeline, Ordering::Release);
        self.replay_lsn.store(pos.lsn.as_u64(), Ordering::Release);
    }

    /// Raises the cached replay position with what a live check on a connection to the server
    /// tagged `tag` saw: on the cached timeline the LSN never moves back; a newer timeline (the
    /// standby follows a promoted primary) replaces the position; an older or unknown one is
    /// ignored, and so is an answer from another server than the one the cache describes.
    /// Returns whether it counted.
    pub(crate) fn observe_replay(&self, tag: u64, pos: Position) -> bool {
        if tag == 0 || pos.timeline == 0 {
            return false;
        }
        let _w = self.cache_writer.lock();
        if self.identity_tag() != tag {
            return false;
        }
        let cached = self.replay_timeline.load(Ordering::Acquire);
        if pos.timeline > cached {
            self.replay_timeline.store(pos.timeline, Ordering::Release);
            self.replay_lsn.store(pos.lsn.as_u64(), Ordering::Release);
        } else if pos.timeline == cached {
            self.replay_lsn
                .fetch_max(pos.lsn.as_u64(), Ordering::AcqRel);
        } else {
            return false;
        }
        true
    }

    /// Runs `f` on this host's monitoring connection, connecting first if needed (and every
    /// few probes, to notice a re-pointed address). `f` is told whether the connection is new.
    /// Returns `None` without doing anything when another probe of this host is still running.
    /// Blocks at most for the connect timeout plus `probe_timeout_ms` per query of `f`; after
    /// an error (a timeout included) the connection is closed, and the next probe connects anew.
    pub(crate) fn with_probe_conn<T>(
        &self,
        f: impl FnOnce(&mut ProbeConn, bool) -> std::result::Result<T, String>,
    ) -> Option<std::result::Result<T, String>> {
        if self.probe_in_flight.swap(true, Ordering::AcqRel) {
            return None;
        }
        /// Clears the flag however the probe ends: a panic too (the host would otherwise never
        /// be probed again, "previous probe still running").
        struct InFlight<'a>(&'a AtomicBool);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _in_flight = InFlight(&self.probe_in_flight);
        let taken = self.probe_conn.lock().take();
        let (mut client, uses, fresh) = match taken {
            Some((c, uses)) if !c.is_closed() && uses < PROBE_CONN_USES => (c, uses, false),
            _ => match self.connect_monitoring() {
                Ok(c) => (c, 0, true),
                Err(e) => return Some(Err(format!("connect: {e}"))),
            },
        };
        let out = f(&mut client, fresh);
        if out.is_ok() {
            *self.probe_conn.lock() = Some((client, uses + 1));
        }
        Some(out)
    }

    /// A new dlb-owned connection to this host (the monitor's probes, the live checker): the
    /// connect bounded as the probe's, and every query by `probe_timeout_ms`, after which the
    /// connection is closed (a stalled host holds no thread longer than that).
    ///
    /// # Errors
    /// The connection failure or the timeout, as text.
    pub(crate) fn connect_monitoring(&self) -> std::result::Result<ProbeConn, String> {
        ProbeConn::connect(
            &self.probe_config,
            &self.tls,
            self.probe_config
                .get_connect_timeout()
                .copied()
                .unwrap_or(self.probe_timeout),
            self.probe_timeout,
        )
    }

    /// Drops the monitoring connection: the next probe connects anew.
    pub(crate) fn reconnect_probe(&self) {
        let old = self.probe_conn.lock().take();
        drop(old); // closing it is I/O: not under the lock
    }

    /// Whether `conn` (a connection of this host's pool) must be checked before it is handed
    /// out: a borrower may have changed it, or it has been idle or unchecked for longer than
    /// `pool.check_idle_after_ms` (always, on the primary). No I/O.
    pub(crate) fn needs_check(&self, conn: &PgConn, now: Instant) -> bool {
        conn.dirty || conn.needs_check(self.check_every, now)
    }

    /// Checks a connection out of this host's pool, waiting at most `timeout`. A connection a
    /// borrower may have changed (`PgConn::dirty`), or idle or unchecked for longer than
    /// `pool.check_idle_after_ms` (every connection of the primary), is checked first
    /// ([`crate::server::connection::ping`], one round trip, resetting a dirty one); one that
    /// fails it is discarded and another taken, within the same `timeout`. With
    /// `check_follows` (the caller checks it at once with
    /// [`crate::server::connection::ping_replay`], which resets too) none of that runs here.
    ///
    /// # Errors
    /// [`Unavailable`]: no connection in time, or only connections that failed their check.
    pub(crate) fn checkout(
        &self,
        timeout: Duration,
        check_follows: bool,
    ) -> std::result::Result<PooledClient, Unavailable> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let mut conn = self.pool.get_timeout(wait).map_err(|e| Unavailable {
                error: self.unavailable(&e),
                host_failed: true,
            })?;
            let now = Instant::now();
            if check_follows || !self.needs_check(&conn, now) {
                conn.last_used = now;
                return Ok(conn);
            }
            match crate::server::connection::ping(&mut conn) {
                Ok(()) => {
                    conn.last_used = now;
                    return Ok(conn);
                }
                Err(e) => {
                    conn.discard = true;
                    drop(conn);
                    let host_failed = is_host_failure(&e);
                    if Instant::now() >= deadline {
                        return Err(Unavailable {
                            error: self.unavailable(&e),
                            host_failed,
                        });
                    }
                    log::debug!(target: "dlb", "a pooled connection to {} failed its check: {}; discarded", self.addr, crate::redact::bounded(&crate::error::with_causes(&e)));
                }
            }
        }
    }

    fn unavailable(&self, e: &dyn std::error::Error) -> Error {
        // The server's own words (an error message) may be anything: bounded, controls escaped.
        // The causes too: the driver's "error communicating with the server" says nothing of
        // the OS error ("Connection timed out") that it carries.
        let (host, message) = (
            self.addr.clone(),
            crate::redact::bounded(&crate::error::with_causes(e)),
        );
        match self.role {
            Role::Primary => Error::PrimaryUnavailable { host, message },
            Role::Replica => Error::ReplicaUnavailable { host, message },
        }
    }

    /// Checks this replica's replay position on the caller's thread, on its live checker's
    /// connection when that is connected and idle ([`Checker::check_here`]): `Some(answer)`
    /// after one round trip (by `deadline` at the latest), `None` without any I/O otherwise
    /// (then [`Host::ask_checker`]).
    pub(crate) fn check_here(&self, deadline: std::time::Instant) -> Option<Option<Position>> {
        self.checker.get()?.as_ref()?.check_here(self, deadline)
    }

    /// Asks this replica's live checker (a dlb-owned connection and thread, started on first
    /// use) for its replay position; the answer arrives on `reply` as `(index, position)`,
    /// `None` when it failed or reached another server than the one the cache describes.
    /// Never blocks. Returns whether the question was sent.
    pub(crate) fn ask_checker(
        self: &Arc<Host>,
        index: usize,
        reply: &crossbeam::channel::Sender<(usize, Option<Position>)>,
    ) -> bool {
        let checker = self.checker.get_or_init(|| {
            Checker::spawn(Arc::downgrade(self) as std::sync::Weak<dyn Checked>)
                .map_err(|e| log::warn!(target: "dlb", "cannot start the live checker of {}: {e}", self.addr))
                .ok()
        });
        checker
            .as_ref()
            .is_some_and(|c| c.ask(index, reply.clone()))
    }
}
