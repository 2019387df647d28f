//! The background monitor: every `replica_check_interval_ms` a round ([`Monitor::round`])
//! refreshes the replica list ([`crate::discovery`]), probes the replicas in parallel and then
//! the primary ([`probe`]), takes in the answers (the hosts' cached positions and identities),
//! applies the health rules ([`round`], pure over the members: the policy of
//! [`crate::health::policy`], flap holds, panic admissions), logs and counts the transitions,
//! publishes a new snapshot to the router with its host events, and runs the LSN store's
//! housekeeping.
//!
//! The monitor owns all of this state ([`Monitor`]); it talks to routing through
//! [`Router::publish`], [`Router::take_refresh_request`] and what it learnt of the primary
//! ([`Router::set_primary_system`], [`Router::set_primary_timeline`]). Its thread holds a `Weak`
//! reference to the router and exits when the balancer is dropped (or stops it).

mod member;
mod probe;
mod round;

use self::member::Member;

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use self::round::Outcome;
use crate::config::Config;
use crate::counters::Counters;
use crate::discovery::{self, ReplicaSource};
use crate::dsn::{Dsn, HostPort};
use crate::events::{self, Events};
use crate::health::policy::PrimaryView;
use crate::health::policy::{self, FlapDetector, Transition};
use crate::health::{Health, Policy, ReplicaHealth};
use crate::labels::{PrimaryState, QuarantineReason, Role};
use crate::lsn::Position;
use crate::redact::bounded;
use crate::routing::{ReplicaState, Router, Snapshot};
use crate::server::host::{Host, StripedHost};
use crate::server::identity::{self, ServerIdentity};
use crate::sticking::LsnStore;

/// An address whose new connections changed server twice within this many check intervals
/// reaches several servers.
const SEVERAL_SERVERS_CHECKS: u32 = 30;

/// What a probe that missed the round's deadline is reported as.
fn no_answer(timeout: Duration) -> String {
    format!("no answer within {} ms", timeout.as_millis())
}

/// Wake-ups closer together than this are merged into one check.
const MIN_WAKE_GAP: Duration = Duration::from_millis(50);

/// What a round's probes brought back.
struct Probed {
    /// When the probes started (failures reported since then keep a replica out).
    start: Instant,
    /// The members probed (`None`: not due).
    due: Vec<Option<Arc<Host>>>,
    replicas: Vec<Option<probe::ReplicaAnswer>>,
    primary: Option<Result<probe::PrimaryAnswer, String>>,
}

/// Everything the monitor knows: the replica list, each replica's health, the drained pools.
pub(crate) struct Monitor {
    config: Config,
    policy: Policy,
    primary_dsn: Dsn,
    primary: Arc<Host>,
    source: ReplicaSource,
    members: Vec<Member>,
    draining: Vec<(Arc<StripedHost>, Instant)>,
    /// Hosts that left (drained), kept until nothing else refers to them, then closed on a
    /// dlb thread: never inside a caller's pick (where an old snapshot may be freed).
    graveyard: Vec<Arc<StripedHost>>,
    flaps: FlapDetector,
    primary_view: PrimaryView,
    /// Who answered the last primary probe, and on which timeline.
    primary_server: Option<(ServerIdentity, Option<u32>)>,
    /// The primary's state at the last check, and why it failed.
    primary_state: PrimaryState,
    primary_error: Option<String>,
    generation: u64,
    counters: Arc<Counters>,
    store: Weak<dyn LsnStore>,
    /// Where the host events each publication makes go.
    events: Arc<Events>,
    /// Disconnected when the monitor is to stop ([`MonitorThread::stop`]): the probes' waits
    /// end at once and the round is abandoned.
    stop: Receiver<()>,
}

/// Where a monitor's findings go, besides the router: counters, the LSN store's housekeeping
/// (held weakly: the balancer owns the store) and host events.
pub(crate) struct Outputs {
    pub(crate) counters: Arc<Counters>,
    pub(crate) store: Weak<dyn LsnStore>,
    pub(crate) events: Arc<Events>,
}

impl Monitor {
    pub(crate) fn new(
        config: &Config,
        primary_dsn: Dsn,
        primary: Arc<Host>,
        source: ReplicaSource,
        Outputs {
            counters,
            store,
            events,
        }: Outputs,
    ) -> Monitor {
        Monitor {
            config: config.clone(),
            policy: Policy::from_config(config),
            primary_dsn,
            primary,
            source,
            members: Vec::new(),
            draining: Vec::new(),
            graveyard: Vec::new(),
            flaps: FlapDetector::default(),
            primary_view: PrimaryView::default(),
            primary_server: None,
            primary_state: PrimaryState::Unknown,
            primary_error: None,
            generation: 0,
            counters,
            store,
            events,
            stop: channel::never(),
        }
    }

    /// Runs one round and publishes the resulting snapshot: refresh the list, probe, take in
    /// the answers, apply the health rules ([`round::apply`], pure), report, publish. Blocks for
    /// at most `probe_timeout_ms` (plus a DNS exchange when a refresh is due, and the LSN
    /// store's housekeeping).
    pub(crate) fn round(&mut self, router: &Router) {
        #[cfg(test)]
        if router
            .panic_next_check
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            panic!("injected by a test");
        }
        let now = Instant::now();
        self.refresh(router, now);
        let probed = self.probe(now);
        if self.stopping() {
            return;
        }
        self.counters.count(&self.counters.checks);
        self.take_in_primary(probed.primary, router);
        let outcomes = self.take_in(probed.replicas, &probed.due, now);
        let applied = self.apply(&outcomes, now);
        self.report(&applied);
        self.publish(router, probed.start, now);
    }

    /// Whether the monitor is to stop ([`MonitorThread::stop`] was called, or the balancer
    /// dropped the thread's handle).
    fn stopping(&self) -> bool {
        matches!(
            self.stop.try_recv(),
            Err(channel::TryRecvError::Disconnected)
        )
    }

    /// The list: a DNS refresh when due (or asked for by a caller's failure report), then the
    /// members added and drained.
    fn refresh(&mut self, router: &Router, now: Instant) {
        self.source
            .refresh(router.take_refresh_request(), now, &self.counters);
        self.apply_list(now);
    }

    /// Probes the members due at `now`, then the primary, within `probe_timeout_ms`.
    fn probe(&self, now: Instant) -> Probed {
        let timeout = self.config.probe_timeout();
        let start = Instant::now();
        let due: Vec<Option<Arc<Host>>> = self
            .members
            .iter()
            .map(|m| m.state.probe_due(now).then(|| m.host.clone()))
            .collect();
        // Replicas first, then the primary: a replica that replayed past a primary position
        // read after it has diverged.
        let replicas = probe::probe_replicas(&due, start + timeout, &self.stop, &self.counters);
        let primary = probe::probe_primary(
            &self.primary,
            policy::later(Instant::now(), timeout),
            &self.stop,
            &self.counters,
        );
        Probed {
            start,
            due,
            replicas,
            primary,
        }
    }

    /// Takes in the primary's answer (or its failure: its timeline becomes unknown to routing).
    fn take_in_primary(
        &mut self,
        primary: Option<Result<probe::PrimaryAnswer, String>>,
        router: &Router,
    ) {
        self.primary_view.lsn_after_replicas = false;
        match primary {
            Some(Ok(p)) => {
                self.primary_answered(p, router);
                self.primary_state = PrimaryState::Up;
                self.primary_error = None;
            }
            failed => {
                let why = failed
                    .and_then(Result::err)
                    .map(|e| bounded(&e))
                    .unwrap_or_else(|| no_answer(self.config.probe_timeout()));
                self.counters.count(&self.counters.primary_check_errors);
                warn!(target: "dlb", "primary {} check failed: {why}", self.primary.addr);
                // The primary may be failing over: until it answers again (or a record reads
                // its timeline), no replica position is trusted against the old timeline.
                router.set_primary_timeline(0);
                self.primary_state = PrimaryState::Down;
                self.primary_error = Some(why);
            }
        }
    }

    /// The health rules over every member ([`round::apply`]).
    fn apply(&mut self, outcomes: &[Outcome], now: Instant) -> round::Applied {
        let mut states: Vec<ReplicaHealth> = self.members.iter().map(|m| m.state.clone()).collect();
        let addrs: Vec<HostPort> = self.members.iter().map(|m| m.addr.clone()).collect();
        let applied = round::apply(
            &mut states,
            &addrs,
            outcomes,
            &self.primary_view,
            &mut self.flaps,
            now,
            &self.policy,
        );
        for (m, state) in self.members.iter_mut().zip(states) {
            m.state = state;
        }
        applied
    }

    /// Closes what finished draining, publishes the new snapshot, delivers the host events it
    /// made (outside the publication lock: a callback may take its time), and runs the LSN
    /// store's housekeeping.
    fn publish(&mut self, router: &Router, probe_start: Instant, now: Instant) {
        self.finish_draining(now);
        self.generation += 1;
        let happened = router.publish(self.snapshot(), probe_start, events::diff);
        self.events.deliver(happened);
        if let Some(store) = self.store.upgrade() {
            store.maintain();
        }
    }

    /// Takes in the replicas' answers: what each tells of its host (who answered, the cached
    /// replay position; a failure forgets both), and each member's outcome for the pure step
    /// ([`round::apply`]), with how many servers its address reached lately.
    fn take_in(
        &mut self,
        answers: Vec<Option<probe::ReplicaAnswer>>,
        due: &[Option<Arc<Host>>],
        now: Instant,
    ) -> Vec<Outcome> {
        let timeout = self.config.probe_timeout();
        let window_start = now
            .checked_sub(
                self.config
                    .check_interval()
                    .saturating_mul(SEVERAL_SERVERS_CHECKS),
            )
            .unwrap_or(now);
        let c = &*self.counters;
        answers
            .into_iter()
            .zip(due)
            .zip(self.members.iter_mut())
            .map(|((answer, due), m)| {
                if due.is_none() {
                    return Outcome::NotDue;
                }
                let answer = answer.unwrap_or_else(|| probe::ReplicaAnswer {
                    obs: Err((QuarantineReason::Timeout, no_answer(timeout))),
                    identity: None,
                    fresh: false,
                });
                if let (Some(id), Ok(r)) = (answer.identity, &answer.obs) {
                    m.identity_seen(id, r.timeline, answer.fresh, now);
                }
                match answer.obs {
                    Ok(reading) => {
                        if let Some(lsn) = reading.replay_lsn {
                            let pos = Position {
                                lsn,
                                timeline: reading.timeline.unwrap_or(0),
                            };
                            m.host.set_replay_position(m.host.identity_tag(), pos);
                        }
                        let servers = identity::changes(&m.host.identity_log.since(window_start));
                        Outcome::Answered { reading, servers }
                    }
                    Err((reason, message)) => {
                        // A server's words go to the status, events and logs: bounded.
                        let message = bounded(&message);
                        // Whoever answers next may be another server: trust no cached position.
                        m.host.forget();
                        m.server = None;
                        c.count(&c.replica_check_errors);
                        Outcome::Failed(reason, message)
                    }
                }
            })
            .collect()
    }

    /// Logs and counts what a round decided.
    fn report(&self, applied: &round::Applied) {
        let c = &*self.counters;
        for &i in &applied.admitted {
            let before = applied.transitions[i].map(|t| t.before);
            if before != Some(Health::Healthy) {
                info!(target: "dlb", "replica {} serves although it flaps: no other replica does", self.members[i].addr);
            }
        }
        for (m, t) in self.members.iter().zip(&applied.transitions) {
            if let Some(t) = t {
                report_transition(c, m, *t);
            }
        }
    }

    /// Takes in a primary probe's answer; a changed `system_identifier` (another cluster
    /// behind the primary's address) is logged and passed on to routing.
    fn primary_answered(&mut self, p: probe::PrimaryAnswer, router: &Router) {
        let v = &mut self.primary_view;
        if v.system_id.is_some_and(|old| old != p.identity.system_id) {
            warn!(target: "dlb", "primary {} is now {}: another cluster; positions recorded before are not trusted", self.primary.addr, p.identity);
        }
        router.set_primary_system(p.identity.system_id);
        router.set_primary_timeline(p.timeline.unwrap_or(0));
        *v = PrimaryView {
            lsn: Some(p.lsn),
            lsn_after_replicas: true,
            system_id: Some(p.identity.system_id),
            timeline: p.timeline,
        };
        self.primary_server = Some((p.identity, p.timeline));
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            replicas: self
                .members
                .iter()
                .map(|m| ReplicaState {
                    host: m.host.clone(),
                    health: m.state.health,
                    lag: m.state.lag,
                    last_error: m.state.last_error.clone(),
                    server: m.server.clone(),
                })
                .collect(),
            eligible: self
                .members
                .iter()
                .filter(|m| m.state.health == Health::Healthy)
                .map(|m| m.handles.clone())
                .collect(),
            draining: self
                .draining
                .iter()
                .map(|(h, _)| h.host().clone())
                .collect(),
            primary_lsn: self.primary_view.lsn,
            primary_server: self.primary_server.clone(),
            primary_state: self.primary_state,
            primary_error: self.primary_error.clone(),
            generation: self.generation,
            published_at: Some(Instant::now()),
            published_wall: Some(std::time::SystemTime::now()),
        }
    }

    /// Counts a flap event for member `i`; holds it out when it is now flapping. `report`:
    /// count and log a new hold here (a probe's transition is reported by the check).
    fn hold_if_flapping(&mut self, i: usize, now: Instant, report: bool) {
        let m = &mut self.members[i];
        if !self.flaps.event(&m.addr, now, &self.policy) {
            return;
        }
        if m.state.hold_flapping(now, &self.policy) && report {
            self.counters.quarantines[QuarantineReason::Flapping as usize]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(target: "dlb", "replica {} quarantined: flapping (held out for {} s after its last fault, unless no other replica serves)", m.addr, self.policy.flap_hold.as_secs());
        }
    }

    /// Adds new members and starts draining the ones that left the list.
    fn apply_list(&mut self, now: Instant) {
        let current: Vec<HostPort> = self.members.iter().map(|m| m.addr.clone()).collect();
        let (removed, added) = discovery::diff(&current, &self.source.desired());
        for i in removed.into_iter().rev() {
            let m = self.members.remove(i);
            let deadline = policy::drain_deadline(now, &self.policy);
            self.counters.count(&self.counters.replicas_removed);
            info!(target: "dlb", "replica {} left the list: draining (deadline {} s)", m.addr, self.policy.drain_timeout.as_secs());
            self.draining.push((m.handles, deadline));
            self.flaps.event(&m.addr, now, &self.policy);
        }
        for addr in added {
            let dsn = self.primary_dsn.with_host(&addr);
            let host = match Host::new(Role::Replica, &dsn, &self.config) {
                Ok(h) => Arc::new(h),
                Err(e) => {
                    warn!(target: "dlb", "replica {addr} cannot be added: {e}");
                    continue;
                }
            };
            if self.generation > 0 {
                self.counters.count(&self.counters.replicas_added);
                info!(target: "dlb", "replica {addr} joined the list; serving once it answers as a standby");
            }
            self.members.push(Member {
                addr,
                handles: StripedHost::new(host.clone()),
                host,
                state: ReplicaHealth::new(&self.policy),
                server: None,
                last_probe: None,
            });
            if self.generation > 0 {
                self.hold_if_flapping(self.members.len() - 1, now, true);
            }
        }
    }

    /// Closes drained pools: once no connection is checked out, or at the deadline. A drained
    /// host waits in the graveyard until nothing else refers to it, and is closed on a
    /// short-lived `dlb-reaper` thread (closing connections to a dead host may block).
    fn finish_draining(&mut self, now: Instant) {
        let c = &self.counters;
        let graveyard = &mut self.graveyard;
        self.draining.retain(|(host, deadline)| {
            let in_use = host.in_use();
            if policy::drain_finished(in_use, *deadline, now) {
                c.count(&c.replicas_drained);
                info!(target: "dlb", "replica {} drained ({in_use} connection(s) still out)", host.addr);
                graveyard.push(host.clone());
                false
            } else {
                true
            }
        });
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.graveyard)
            .into_iter()
            .partition(StripedHost::only_reference);
        self.graveyard = kept;
        if !gone.is_empty() {
            let reaper = std::thread::Builder::new()
                .name("dlb-reaper".into())
                .spawn(move || drop(gone));
            if let Err(e) = reaper {
                warn!(target: "dlb", "cannot start a thread to close drained hosts: {e}");
            }
        }
    }
}

/// How long a stopping monitor waits for old snapshots to let go of its hosts.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

impl Drop for Monitor {
    /// Runs on the monitor thread when it stops: closes every host here, once nothing else
    /// (a route a caller still holds) refers to it — waiting at most [`RELEASE_WAIT`].
    fn drop(&mut self) {
        let mut hosts: Vec<Arc<StripedHost>> = self
            .members
            .drain(..)
            .map(|m| m.handles)
            .chain(self.draining.drain(..).map(|(h, _)| h))
            .chain(self.graveyard.drain(..))
            .collect();
        let end = Instant::now() + RELEASE_WAIT;
        while !hosts.iter().all(StripedHost::only_reference) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        hosts.clear();
    }
}

fn report_transition(c: &Counters, m: &Member, t: Transition) {
    let s = &m.state;
    let server = m
        .server
        .as_ref()
        .map_or_else(|| "an unknown server".to_string(), |(id, _)| id.to_string());
    let detail = match (&s.last_error, t.after) {
        (Some(e), _) => e.clone(),
        (None, Health::Quarantined(QuarantineReason::WrongCluster)) => {
            format!("{server} is not a standby of the primary's cluster: check the replica list")
        }
        (None, Health::Quarantined(QuarantineReason::Diverged)) => format!(
            "{server} replayed past the primary or is on another timeline: rebuild it (pg_rewind or a new base backup)"
        ),
        (None, Health::Quarantined(QuarantineReason::MultipleServers)) => "new connections to this address reach different servers (a load balancer, Service or pooler in front of several replicas): list each replica's own address instead".to_string(),
        (None, Health::Quarantined(QuarantineReason::Stalled)) => format!(
            "behind by {} bytes and replaying nothing (replay paused, or blocked by a recovery conflict)",
            s.lag.bytes
        ),
        (None, _) => format!("lag {} bytes, {:.1} s", s.lag.bytes, s.lag.seconds),
    };
    match (t.before, t.after) {
        (a, b) if a == b => debug!(target: "dlb", "replica {} {} ({detail})", m.addr, b.as_str()),
        (_, Health::Quarantined(r)) => {
            c.quarantines[r as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let retry = s.retry_at.map(|t| {
                format!(
                    "; next probe in {} ms",
                    t.saturating_duration_since(Instant::now()).as_millis()
                )
            });
            warn!(target: "dlb", "replica {} quarantined: {} ({detail}){}", m.addr, r.as_str(), retry.unwrap_or_default());
        }
        (Health::Quarantined(r), Health::Healthy) => {
            c.readmissions[r as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(target: "dlb", "replica {} re-admitted after {} ({detail})", m.addr, r.as_str());
        }
        (_, Health::Healthy) => info!(target: "dlb", "replica {} healthy ({detail})", m.addr),
        (_, Health::Unknown) => {}
    }
}

/// The running monitor thread: stop it (and join it) with [`MonitorThread::stop`].
#[derive(Debug)]
pub(crate) struct MonitorThread {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorThread {
    /// Starts the thread: a check every `interval`, or at once when woken through `wake`
    /// (wake-ups closer than 50 ms apart are merged).
    ///
    /// # Errors
    /// When the OS cannot start a thread.
    pub(crate) fn spawn(
        mut monitor: Monitor,
        router: Weak<Router>,
        wake: Receiver<()>,
    ) -> std::io::Result<MonitorThread> {
        let (stop_tx, stop) = channel::bounded::<()>(0);
        monitor.stop = stop.clone();
        let interval = monitor.config.check_interval();
        let thread = std::thread::Builder::new()
            .name("dlb-monitor".into())
            .spawn(move || {
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
                    let Some(router) = router.upgrade() else {
                        return;
                    };
                    last = Instant::now();
                    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        monitor.round(&router);
                    }));
                    if let Err(panic) = checked {
                        let c = &monitor.counters;
                        c.count(&c.monitor_panics);
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        log::error!(target: "dlb", "a monitor check panicked (a bug in dlb): {what}; the next check runs as usual, and cached replay positions are not trusted until one succeeds");
                    }
                }
            })?;
        Ok(MonitorThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: a round in progress is abandoned at its next wait for
    /// probes (probes and live checks still running finish on their own threads), so this
    /// waits for a DNS exchange or the LSN store's housekeeping at most, if one is running,
    /// then for the hosts' release (see [`Monitor`]'s `Drop`).
    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }

    /// Forgets the thread without stopping it (a forked child, where it does not exist).
    pub(crate) fn forget(&mut self) {
        std::mem::forget(self.stop.take());
        std::mem::forget(self.thread.take());
    }
}
