//! The background monitor: every `replica_check_interval_ms` it refreshes the replica list
//! (DNS discovery, when configured), reads the primary's WAL position and probes the replicas in
//! parallel, then publishes a new [`Snapshot`].
//!
//! Each probe runs on its own short-lived thread and is waited for until one deadline
//! (`probe_timeout_ms`), so a slow replica cannot stall the others; a probe still running at the
//! next check counts as a timeout. Replicas that fail are quarantined and re-probed with
//! exponential backoff; flapping replicas are held out longer; replicas that leave the list are
//! drained. The monitor owns all of this state ([`Membership`]): nothing but the published
//! snapshot is shared. The thread holds only a `Weak` reference to the balancer and exits when
//! the balancer is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError};
use log::{debug, info, warn};
use scheduled_thread_pool::ScheduledThreadPool;

use crate::balancer::Shared;
use crate::config::{Config, DnsConfig, DnsRecordType};
use crate::dns::Resolver;
use crate::dsn::{Dsn, HostPort};
use crate::host::{Host, Role, Striped};
use crate::lsn::Lsn;
use crate::state::{
    Health, Lag, Observation, QuarantineReason, ReplicaState, Snapshot, Thresholds, next_health,
};

const PRIMARY_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text";
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
     EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

/// Wake-ups closer together than this are merged into one check.
const MIN_WAKE_GAP: Duration = Duration::from_millis(50);
/// Error-driven DNS refreshes are at least this far apart.
const MIN_DNS_REFRESH_GAP: Duration = Duration::from_secs(1);

/// Body of the monitor thread.
pub(crate) fn run(
    shared: Weak<Shared>,
    mut members: Membership,
    stop: Receiver<()>,
    wake: Receiver<()>,
    interval: Duration,
) {
    let mut last = Instant::now();
    loop {
        let woken = channel::select! {
            recv(stop) -> _ => return, // a message or the balancer dropped its sender
            recv(wake) -> _ => true,
            default(interval.saturating_sub(last.elapsed())) => false,
        };
        if woken {
            // Throttle error-driven checks without ignoring the stop signal.
            let gap = MIN_WAKE_GAP.saturating_sub(last.elapsed());
            match stop.recv_timeout(gap) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while wake.try_recv().is_ok() {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        last = Instant::now();
        check_once(&shared, &mut members);
    }
}

/// A replica the monitor tracks.
struct Member {
    addr: HostPort,
    host: Arc<Host>,
    /// The host's per-stripe handles, for the round-robin ring.
    handles: Arc<Striped>,
    health: Health,
    lag: Lag,
    last_error: Option<String>,
    /// Consecutive failed probes.
    failures: u32,
    /// Current connectivity backoff; doubles on every failed re-probe, up to the maximum.
    backoff: Duration,
    /// No probe before this instant (quarantined with backoff, or held out for flapping).
    retry_at: Option<Instant>,
}

/// Where the replica list comes from, and everything the monitor knows about each replica.
pub(crate) struct Membership {
    primary_dsn: Dsn,
    config: Config,
    scheduler: Arc<ScheduledThreadPool>,
    fixed: Vec<HostPort>,
    dns: Option<DnsSource>,
    members: Vec<Member>,
    draining: Vec<(Arc<Host>, Instant)>,
    /// Recent quarantine and add/remove events per address, for flap detection.
    events: HashMap<HostPort, VecDeque<Instant>>,
    primary_lsn: Option<Lsn>,
    generation: u64,
}

struct DnsSource {
    cfg: DnsConfig,
    resolver: Resolver,
    next_refresh: Instant,
    last_refresh: Option<Instant>,
    last_good: Vec<HostPort>,
}

impl Membership {
    pub(crate) fn new(
        config: &Config,
        primary_dsn: Dsn,
        fixed: Vec<HostPort>,
        scheduler: Arc<ScheduledThreadPool>,
    ) -> Membership {
        let dns = config
            .replicas
            .as_ref()
            .and_then(|r| r.dns.clone())
            .map(|cfg| {
                let ip: IpAddr = cfg.nameserver.parse().expect("validated nameserver");
                DnsSource {
                    resolver: Resolver {
                        server: SocketAddr::new(ip, cfg.port),
                        tcp: cfg.tcp,
                        timeout: Duration::from_millis(cfg.timeout_ms),
                    },
                    cfg,
                    next_refresh: Instant::now(),
                    last_refresh: None,
                    last_good: Vec::new(),
                }
            });
        Membership {
            primary_dsn,
            config: config.clone(),
            scheduler,
            fixed,
            dns,
            members: Vec::new(),
            draining: Vec::new(),
            events: HashMap::new(),
            primary_lsn: None,
            generation: 0,
        }
    }

    fn desired(&self) -> Vec<HostPort> {
        let mut all = self.fixed.clone();
        if let Some(d) = &self.dns {
            for hp in &d.last_good {
                if !all.contains(hp) {
                    all.push(hp.clone());
                }
            }
        }
        all
    }

    /// Records an add/remove/quarantine event; true when the address is now flapping.
    fn flap_event(&mut self, addr: &HostPort, now: Instant) -> bool {
        let c = &self.config.connectivity;
        let window = Duration::from_millis(c.flap_window_ms);
        let q = self.events.entry(addr.clone()).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        q.len() >= c.flap_threshold as usize
    }

    fn hold_if_flapping(&mut self, i: usize, now: Instant, shared: &Shared) {
        let addr = self.members[i].addr.clone();
        if self.flap_event(&addr, now) {
            let hold = Duration::from_millis(self.config.connectivity.flap_hold_ms);
            let m = &mut self.members[i];
            if m.health != Health::Quarantined(QuarantineReason::Flapping) {
                shared.metrics.quarantines[QuarantineReason::Flapping as usize]
                    .fetch_add(1, Relaxed);
                warn!(target: "dlb", "replica {} quarantined: flapping (held out for {} s)", addr, hold.as_secs());
            }
            m.health = Health::Quarantined(QuarantineReason::Flapping);
            m.retry_at = Some(now + hold);
            m.backoff = Duration::from_millis(self.config.connectivity.backoff_initial_ms);
        }
    }

    /// Refreshes the DNS list when due (or requested and not throttled). On failure or an empty
    /// answer the last good list stays.
    fn refresh_dns(&mut self, shared: &Shared, now: Instant) {
        let Some(d) = self.dns.as_mut() else { return };
        let requested = shared.dns_refresh.swap(false, Relaxed)
            && d.last_refresh
                .is_none_or(|t| now.duration_since(t) >= MIN_DNS_REFRESH_GAP);
        if now < d.next_refresh && !requested {
            return;
        }
        d.last_refresh = Some(now);
        shared.metrics.dns_refreshes.fetch_add(1, Relaxed);
        let interval = Duration::from_millis(d.cfg.refresh_interval_ms);
        let default_port = self.primary_dsn.host_port().port;
        let result = match d.cfg.record_type {
            DnsRecordType::Srv => d.resolver.srv(&d.cfg.record).map(|r| {
                for t in &r.unresolved {
                    warn!(target: "dlb", "DNS: SRV target {t} of {} did not resolve; keeping the others", d.cfg.record);
                }
                (r.addrs, r.ttl)
            }),
            DnsRecordType::A => d
                .resolver
                .addresses(&d.cfg.record)
                .map(|(ips, ttl)| (ips.into_iter().map(|ip| (ip, default_port)).collect(), ttl)),
        };
        let retry = interval.min(Duration::from_secs(1));
        match result {
            Ok((addrs, _)) if addrs.is_empty() => {
                shared.metrics.dns_errors.fetch_add(1, Relaxed);
                warn!(target: "dlb", "DNS: empty answer for {}; keeping the last good list ({} hosts)", d.cfg.record, d.last_good.len());
                d.next_refresh = now + retry;
            }
            Ok((addrs, ttl)) => {
                d.last_good = addrs
                    .into_iter()
                    .map(|(ip, port)| HostPort {
                        host: ip.to_string(),
                        port,
                    })
                    .collect();
                let mut base = interval;
                if let Some(ttl) = ttl {
                    base = base.min(Duration::from_secs(u64::from(ttl.max(1))));
                }
                d.next_refresh = now + jittered(base);
            }
            Err(e) => {
                shared.metrics.dns_errors.fetch_add(1, Relaxed);
                warn!(target: "dlb", "DNS: cannot resolve {}: {e}; keeping the last good list ({} hosts)", d.cfg.record, d.last_good.len());
                d.next_refresh = now + retry;
            }
        }
    }

    /// Adds new members and starts draining the ones that left the list.
    fn apply_list(&mut self, shared: &Shared, now: Instant) {
        let desired = self.desired();
        let drain_for = Duration::from_millis(
            self.config
                .replicas
                .as_ref()
                .map_or(30_000, |r| r.drain_timeout_ms),
        );
        let mut i = 0;
        while i < self.members.len() {
            if desired.contains(&self.members[i].addr) {
                i += 1;
                continue;
            }
            let m = self.members.remove(i);
            shared.metrics.replicas_removed.fetch_add(1, Relaxed);
            info!(target: "dlb", "replica {} left the list: draining (deadline {} s)", m.addr, drain_for.as_secs());
            self.draining.push((m.host, now + drain_for));
            self.flap_event(&m.addr, now);
        }
        for addr in desired {
            if self.members.iter().any(|m| m.addr == addr) {
                continue;
            }
            let dsn = self.primary_dsn.with_host(&addr);
            let host = match Host::new(Role::Replica, &dsn, &self.config, &self.scheduler) {
                Ok(h) => Arc::new(h),
                Err(e) => {
                    warn!(target: "dlb", "replica {addr} cannot be added: {e}");
                    continue;
                }
            };
            if self.generation > 0 {
                shared.metrics.replicas_added.fetch_add(1, Relaxed);
                info!(target: "dlb", "replica {addr} joined the list; serving once it answers as a standby");
            }
            self.members.push(Member {
                addr: addr.clone(),
                handles: Striped::new(host.clone()),
                host,
                health: Health::Unknown,
                lag: Lag::default(),
                last_error: None,
                failures: 0,
                backoff: Duration::from_millis(self.config.connectivity.backoff_initial_ms),
                retry_at: None,
            });
            let idx = self.members.len() - 1;
            if self.generation > 0 {
                self.hold_if_flapping(idx, now, shared);
            }
        }
    }

    /// Closes drained pools: once no connection is checked out, or at the deadline.
    fn finish_draining(&mut self, shared: &Shared, now: Instant) {
        self.draining.retain(|(host, deadline)| {
            let in_use = host.in_use();
            if in_use == 0 || now >= *deadline {
                shared.metrics.replicas_drained.fetch_add(1, Relaxed);
                info!(target: "dlb", "replica {} drained ({in_use} connection(s) still out)", host.label);
                false
            } else {
                true
            }
        });
    }
}

/// `d` minus up to 10%, so a fleet does not refresh in lockstep.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let frac = f64::from(nanos % 1000) / 10_000.0; // 0 .. 0.1
    d.mul_f64(1.0 - frac)
}

enum Target {
    Primary,
    Replica(usize),
}

enum Answer {
    Primary(Result<Lsn, String>),
    Replica(Observation),
}

fn probe_primary(host: &Host) -> Option<Result<Lsn, String>> {
    host.with_probe_conn(|c| {
        c.query_one(PRIMARY_SQL, &[])
            .map(|row| row.get::<_, String>(0))
    })
    .map(|r| r.and_then(|s| s.parse::<Lsn>().map_err(|e| e.to_string())))
}

fn probe_replica(host: &Host) -> Observation {
    let res = host.with_probe_conn(|c| {
        c.query_one(REPLICA_SQL, &[]).map(|row| {
            (
                row.get::<_, bool>(0),
                row.get::<_, Option<String>>(1),
                row.get::<_, Option<f64>>(2),
            )
        })
    });
    match res {
        None => Observation::Failed(
            QuarantineReason::Timeout,
            "previous probe still running".into(),
        ),
        Some(Err(e)) => Observation::Failed(QuarantineReason::Unreachable, e),
        Some(Ok((in_recovery, lsn, age))) => match lsn.map(|s| s.parse::<Lsn>()).transpose() {
            Ok(replay_lsn) => Observation::Answered {
                in_recovery,
                replay_lsn,
                replay_age_s: age,
            },
            Err(e) => Observation::Failed(QuarantineReason::Unreachable, e.to_string()),
        },
    }
}

/// Runs one check and publishes the resulting snapshot. Blocks for at most `probe_timeout_ms`
/// (plus a DNS exchange when a refresh is due).
pub(crate) fn check_once(shared: &Shared, ms: &mut Membership) {
    let now = Instant::now();
    ms.refresh_dns(shared, now);
    ms.apply_list(shared, now);

    let timeout = shared.config.probe_timeout();
    let probe_start = Instant::now();
    let deadline = probe_start + timeout;
    let (tx, rx) = channel::unbounded::<(Target, Answer)>();
    let spawn = |target: Target, host: Arc<Host>| {
        let tx = tx.clone();
        let name = format!("dlb-probe-{}", host.label);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let answer = match target {
                Target::Primary => Answer::Primary(
                    probe_primary(&host)
                        .unwrap_or_else(|| Err("previous probe still running".into())),
                ),
                Target::Replica(_) => Answer::Replica(probe_replica(&host)),
            };
            let _ = tx.send((target, answer));
        });
        if let Err(e) = spawned {
            warn!(target: "dlb", "cannot spawn probe thread: {e}");
        }
    };
    spawn(Target::Primary, shared.primary.clone());
    let mut probed = vec![false; ms.members.len()];
    for (i, m) in ms.members.iter().enumerate() {
        if m.retry_at.is_none_or(|t| t <= now) {
            probed[i] = true;
            spawn(Target::Replica(i), m.host.clone());
        }
    }
    drop(tx);

    let mut primary: Option<Result<Lsn, String>> = None;
    let mut observed: Vec<Option<Observation>> = vec![None; ms.members.len()];
    while let Ok((target, answer)) = rx.recv_deadline(deadline) {
        match (target, answer) {
            (Target::Primary, Answer::Primary(r)) => primary = Some(r),
            (Target::Replica(i), Answer::Replica(o)) => observed[i] = Some(o),
            _ => unreachable!("answers match their targets"),
        }
    }

    let met = &shared.metrics;
    met.checks.fetch_add(1, Relaxed);
    match primary {
        Some(Ok(lsn)) => ms.primary_lsn = Some(lsn),
        failed => {
            let why = match failed {
                Some(Err(e)) => e,
                _ => format!("no answer within {} ms", timeout.as_millis()),
            };
            met.primary_check_errors.fetch_add(1, Relaxed);
            warn!(target: "dlb", "primary {} check failed: {why}", shared.primary.label);
        }
    }
    let thresholds = Thresholds {
        max_bytes: shared.config.max_lag_bytes,
        max_ms: shared.config.max_lag_ms,
    };
    let conn = shared.config.connectivity.clone();
    for i in 0..ms.members.len() {
        if !probed[i] {
            continue; // in backoff: stays as it is
        }
        let obs = observed[i].take().unwrap_or_else(|| {
            Observation::Failed(
                QuarantineReason::Timeout,
                format!("no answer within {} ms", timeout.as_millis()),
            )
        });
        let m = &mut ms.members[i];
        let before = m.health;
        match &obs {
            Observation::Answered {
                replay_lsn,
                replay_age_s,
                ..
            } => {
                if let Some(l) = replay_lsn {
                    m.host.set_replay_lsn(*l);
                }
                m.lag = Lag::measure(ms.primary_lsn, *replay_lsn, *replay_age_s);
                m.last_error = None;
                m.failures = 0;
                m.retry_at = None;
                m.backoff = Duration::from_millis(conn.backoff_initial_ms);
                m.health = next_health(before, &obs, m.lag, thresholds);
            }
            Observation::Failed(reason, e) => {
                met.replica_check_errors.fetch_add(1, Relaxed);
                m.last_error = Some(e.clone());
                m.lag = Lag::default();
                m.failures += 1;
                let already_out = matches!(
                    before,
                    Health::Quarantined(
                        QuarantineReason::Unreachable
                            | QuarantineReason::Timeout
                            | QuarantineReason::Flapping
                    )
                );
                if already_out {
                    // A failed re-probe: back off further.
                    m.backoff = (m.backoff * 2).min(Duration::from_millis(conn.backoff_max_ms));
                    m.retry_at = Some(now + m.backoff);
                    m.health = Health::Quarantined(*reason);
                } else if m.failures >= conn.failure_threshold {
                    m.backoff = Duration::from_millis(conn.backoff_initial_ms);
                    m.retry_at = Some(now + m.backoff);
                    m.health = next_health(before, &obs, m.lag, thresholds);
                }
            }
        }
        let after = ms.members[i].health;
        report_transition(shared, &ms.members[i], before, after);
        let newly_out = matches!(
            after,
            Health::Quarantined(QuarantineReason::Unreachable | QuarantineReason::Timeout)
        ) && !matches!(before, Health::Quarantined(_));
        if newly_out {
            ms.hold_if_flapping(i, now, shared);
        }
    }
    ms.finish_draining(shared, now);
    ms.generation += 1;
    let replicas: Vec<ReplicaState> = ms
        .members
        .iter()
        .map(|m| ReplicaState {
            host: m.host.clone(),
            health: m.health,
            lag: m.lag,
            last_error: m.last_error.clone(),
        })
        .collect();
    shared.publish_checked(
        Snapshot {
            eligible: ms
                .members
                .iter()
                .filter(|m| m.health == Health::Healthy)
                .map(|m| m.handles.clone())
                .collect(),
            replicas,
            draining: ms.draining.iter().map(|(h, _)| h.clone()).collect(),
            primary_lsn: ms.primary_lsn,
            generation: ms.generation,
        },
        probe_start,
    );
    shared.store.maintain();
}

fn report_transition(shared: &Shared, m: &Member, before: Health, after: Health) {
    let met = &shared.metrics;
    let detail = match &m.last_error {
        Some(e) => e.clone(),
        None => format!("lag {} bytes, {:.1} s", m.lag.bytes, m.lag.seconds),
    };
    match (before, after) {
        (a, b) if a == b => debug!(target: "dlb", "replica {} {} ({detail})", m.addr, b.as_str()),
        (_, Health::Quarantined(r)) => {
            met.quarantines[r as usize].fetch_add(1, Relaxed);
            let retry = m.retry_at.map(|t| {
                format!(
                    "; next probe in {} ms",
                    t.saturating_duration_since(Instant::now()).as_millis()
                )
            });
            warn!(target: "dlb", "replica {} quarantined: {} ({detail}){}", m.addr, r.as_str(), retry.unwrap_or_default());
        }
        (Health::Quarantined(r), Health::Healthy) => {
            met.readmissions[r as usize].fetch_add(1, Relaxed);
            info!(target: "dlb", "replica {} re-admitted after {} ({detail})", m.addr, r.as_str());
        }
        (_, Health::Healthy) => info!(target: "dlb", "replica {} healthy ({detail})", m.addr),
        (_, Health::Unknown) => {}
    }
}
