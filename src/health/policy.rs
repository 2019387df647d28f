//! The health policy: when a replica is in or out. Pure functions over observations and a
//! clock reading passed in (`now`), no I/O, so every rule is unit-tested with fake
//! observations and a fake clock. The monitor ([`crate::monitor`]) feeds it probe results and
//! acts on its decisions (logs, metrics, publishing).
//!
//! The rules, with their configuration fields (defaults in docs/configuration.md):
//! * **Lag** ([`next_health`]): quarantined when over **both** `max_lag_bytes` and
//!   `max_lag_ms`; re-admitted only when under **half** of either (hysteresis).
//! * **Connectivity** ([`ReplicaHealth::observe`]): `connectivity.failure_threshold`
//!   consecutive failed probes quarantine a replica; it is re-probed after
//!   `backoff_initial_ms`, then after a doubling wait capped at `backoff_max_ms` while it keeps
//!   failing (half-open: one probe when the wait is over; one success re-admits it).
//! * **Flapping** ([`FlapDetector`], [`ReplicaHealth::hold_flapping`]): an address quarantined,
//!   added or removed `flap_threshold` times within `flap_window_ms` is held out for
//!   `flap_hold_ms`.
//! * **Draining** ([`drain_deadline`], [`drain_finished`]): a replica that left the list keeps
//!   its pool until no connection is checked out, or until `replicas.drain_timeout_ms`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{Config, ReplicasConfig};
use crate::dsn::HostPort;
use crate::labels::{Health, QuarantineReason};
use crate::lsn::Lsn;

/// The health rules' settings, taken from a [`Config`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) lag: Thresholds,
    pub(crate) failure_threshold: u32,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) flap_window: Duration,
    pub(crate) flap_threshold: u32,
    pub(crate) flap_hold: Duration,
    pub(crate) drain_timeout: Duration,
    /// 0: no stall rule.
    pub(crate) stall_timeout: Duration,
}

impl Policy {
    pub(crate) fn from_config(c: &Config) -> Policy {
        let conn = &c.connectivity;
        let drain_ms = c
            .replicas
            .as_ref()
            .map_or(ReplicasConfig::DEFAULT_DRAIN_TIMEOUT_MS, |r| {
                r.drain_timeout_ms
            });
        Policy {
            lag: Thresholds {
                max_bytes: c.max_lag_bytes,
                max_ms: c.max_lag_ms,
                max_time_only_ms: c.max_time_lag_ms,
            },
            failure_threshold: conn.failure_threshold,
            backoff_initial: Duration::from_millis(conn.backoff_initial_ms),
            backoff_max: Duration::from_millis(conn.backoff_max_ms),
            flap_window: Duration::from_millis(conn.flap_window_ms),
            flap_threshold: conn.flap_threshold,
            flap_hold: Duration::from_millis(conn.flap_hold_ms),
            drain_timeout: Duration::from_millis(drain_ms),
            stall_timeout: Duration::from_millis(c.max_replay_stall_ms),
        }
    }
}

/// What one probe of a replica saw.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Observation {
    /// The probe failed.
    Failed(QuarantineReason, String),
    /// The probe answered.
    Answered {
        in_recovery: bool,
        replay_lsn: Option<Lsn>,
        /// Seconds since the last replayed transaction; `None` if none was ever replayed.
        replay_age_s: Option<f64>,
        /// The server's `system_identifier`; `None` if it could not be read.
        system_id: Option<u64>,
        /// The timeline it receives or last restarted on; `None` if unknown.
        timeline: Option<u32>,
        /// New connections to this address reached more than one server lately.
        several_servers: bool,
    },
}

/// What the monitor knows of the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PrimaryView {
    /// Its WAL insert position at the last successful probe.
    pub(crate) lsn: Option<Lsn>,
    /// `lsn` was read in this check, after every replica answered: a replica replaying past
    /// it has diverged.
    pub(crate) lsn_after_replicas: bool,
    /// Its `system_identifier`.
    pub(crate) system_id: Option<u64>,
    /// Its current timeline.
    pub(crate) timeline: Option<u32>,
}

/// Why a replica that answered must not serve reads whatever its lag, if it must not: not a
/// standby, a standby of another cluster, diverged from the primary, an address reaching
/// several servers, or stalled. `None` when the lag rule decides.
pub(crate) fn disqualified(
    obs: &Observation,
    primary: &PrimaryView,
    stalled: bool,
) -> Option<QuarantineReason> {
    let Observation::Answered {
        in_recovery,
        replay_lsn,
        system_id,
        timeline,
        several_servers,
        ..
    } = obs
    else {
        return None;
    };
    let differ = |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(x), Some(y)) if x != y);
    if !in_recovery {
        Some(QuarantineReason::NotInRecovery)
    } else if differ(*system_id, primary.system_id) {
        Some(QuarantineReason::WrongCluster)
    } else if differ(timeline.map(u64::from), primary.timeline.map(u64::from))
        || (primary.lsn_after_replicas
            && matches!((replay_lsn, primary.lsn), (Some(r), Some(p)) if *r > p))
    {
        Some(QuarantineReason::Diverged)
    } else if *several_servers {
        Some(QuarantineReason::MultipleServers)
    } else if stalled {
        Some(QuarantineReason::Stalled)
    } else {
        None
    }
}

/// Lag thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Thresholds {
    pub(crate) max_bytes: u64,
    pub(crate) max_ms: u64,
    /// Time lag that quarantines alone (a delayed standby); 0: off.
    pub(crate) max_time_only_ms: u64,
}

/// Lag as measured against the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Lag {
    pub(crate) bytes: u64,
    /// Counts only while behind in bytes; `f64::INFINITY` when behind with no replay time.
    pub(crate) seconds: f64,
}

impl Lag {
    pub(crate) fn measure(
        primary: Option<Lsn>,
        replay: Option<Lsn>,
        replay_age_s: Option<f64>,
    ) -> Lag {
        let bytes = match (primary, replay) {
            (Some(p), Some(r)) => p.bytes_since(r),
            // Without a primary position there is nothing to lag behind (and reads from the
            // replicas are the best we have while the primary is down).
            (None, _) => 0,
            (Some(p), None) => p.as_u64(),
        };
        let seconds = if bytes == 0 {
            0.0
        } else {
            replay_age_s.map_or(f64::INFINITY, |s| s.max(0.0))
        };
        Lag { bytes, seconds }
    }
}

/// The next health of a replica. A replica is lag-quarantined when over **both** thresholds
/// (or over the time-only threshold, when set), and re-admitted only when under **half** of
/// either of the pair (and of the time-only threshold) (hysteresis).
pub(crate) fn next_health(prev: Health, obs: &Observation, lag: Lag, t: Thresholds) -> Health {
    match obs {
        Observation::Failed(reason, _) => Health::Quarantined(*reason),
        Observation::Answered {
            in_recovery: false, ..
        } => Health::Quarantined(QuarantineReason::NotInRecovery),
        Observation::Answered { .. } => {
            let secs = |ms: u64| ms as f64 / 1000.0;
            let time_only = t.max_time_only_ms > 0;
            let over = (lag.bytes > t.max_bytes && lag.seconds > secs(t.max_ms))
                || (time_only && lag.seconds > secs(t.max_time_only_ms));
            let well_under = (lag.bytes <= t.max_bytes / 2 || lag.seconds <= secs(t.max_ms) / 2.0)
                && (!time_only || lag.seconds <= secs(t.max_time_only_ms) / 2.0);
            match prev {
                Health::Quarantined(QuarantineReason::Lag) if !well_under => prev,
                _ if over => Health::Quarantined(QuarantineReason::Lag),
                _ => Health::Healthy,
            }
        }
    }
}

/// What the monitor knows of one replica between probes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReplicaHealth {
    pub(crate) health: Health,
    pub(crate) lag: Lag,
    /// The last probe error; `None` after a successful probe.
    pub(crate) last_error: Option<String>,
    /// Consecutive failed probes.
    pub(crate) failures: u32,
    /// Current connectivity backoff; doubles on every failed re-probe, up to the maximum.
    pub(crate) backoff: Duration,
    /// No probe before this instant (quarantined with backoff, or held out for flapping).
    pub(crate) retry_at: Option<Instant>,
    /// The replay position last seen, and since when it has not moved.
    pub(crate) progress: Option<(Lsn, Instant)>,
    /// Held out for flapping until then.
    pub(crate) held_until: Option<Instant>,
    /// The last probe answered and every rule but the flapping hold would let it serve.
    pub(crate) ready: bool,
}

/// A replica's health before and after one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) before: Health,
    pub(crate) after: Health,
}

impl Transition {
    /// The replica just went out for a connectivity failure: counts towards flapping.
    pub(crate) fn newly_unreachable(self) -> bool {
        matches!(
            self.after,
            Health::Quarantined(QuarantineReason::Unreachable | QuarantineReason::Timeout)
        ) && !matches!(self.before, Health::Quarantined(_))
    }
}

impl ReplicaHealth {
    /// A replica not checked yet.
    pub(crate) fn new(p: &Policy) -> ReplicaHealth {
        ReplicaHealth {
            health: Health::Unknown,
            lag: Lag::default(),
            last_error: None,
            failures: 0,
            backoff: p.backoff_initial,
            retry_at: None,
            progress: None,
            held_until: None,
            ready: false,
        }
    }

    /// Whether the replica is probed at `now`: always, unless it waits out a backoff or a
    /// flapping hold (then exactly once when the wait is over: half-open).
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| t <= now)
    }

    /// Applies one probe's outcome, seen at `now`, against what is known of the primary.
    pub(crate) fn observe(
        &mut self,
        obs: &Observation,
        primary: &PrimaryView,
        now: Instant,
        p: &Policy,
    ) -> Transition {
        let before = self.health;
        match obs {
            Observation::Answered {
                replay_lsn,
                replay_age_s,
                ..
            } => {
                self.lag = Lag::measure(primary.lsn, *replay_lsn, *replay_age_s);
                self.last_error = None;
                self.failures = 0;
                self.retry_at = None;
                self.backoff = p.backoff_initial;
                let stalled = self.stalled(*replay_lsn, now, p);
                let verdict = match disqualified(obs, primary, stalled) {
                    Some(reason) => Health::Quarantined(reason),
                    None => next_health(before, obs, self.lag, p.lag),
                };
                self.ready = verdict == Health::Healthy;
                self.health = match self.held_until {
                    Some(until) if now < until => Health::Quarantined(QuarantineReason::Flapping),
                    _ => {
                        self.held_until = None;
                        verdict
                    }
                };
            }
            Observation::Failed(reason, e) => {
                self.last_error = Some(e.clone());
                self.lag = Lag::default();
                self.progress = None;
                self.ready = false;
                self.failures = self.failures.saturating_add(1);
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
                    self.backoff = self.backoff.saturating_mul(2).min(p.backoff_max);
                    self.retry_at = Some(later(now, self.backoff));
                    self.health = Health::Quarantined(*reason);
                } else if self.failures >= p.failure_threshold {
                    self.backoff = p.backoff_initial;
                    self.retry_at = Some(later(now, self.backoff));
                    self.health = next_health(before, obs, self.lag, p.lag);
                }
                if self.held_until.is_some_and(|t| now < t) {
                    // Held out for flapping: it stays so (one quarantine, not one per probe).
                    self.health = Health::Quarantined(QuarantineReason::Flapping);
                }
            }
        }
        Transition {
            before,
            after: self.health,
        }
    }

    /// Notes the replay position `replay` seen at `now`; true when the replica is behind
    /// (`self.lag`, measured first) and has not replayed anything for `stall_timeout`.
    fn stalled(&mut self, replay: Option<Lsn>, now: Instant, p: &Policy) -> bool {
        match (replay, self.progress) {
            (Some(l), Some((seen, _))) if l == seen => {}
            (Some(l), _) => self.progress = Some((l, now)),
            (None, _) => self.progress = None,
        }
        !p.stall_timeout.is_zero()
            && self.lag.bytes > 0
            && self
                .progress
                .is_some_and(|(_, since)| now.saturating_duration_since(since) >= p.stall_timeout)
    }

    /// Forgets the replay progress (the address now reaches another server).
    pub(crate) fn forget_progress(&mut self) {
        self.progress = None;
    }

    /// Holds the replica out for `flap_hold` from `now` (a later event extends the hold). It
    /// is still probed (after its connectivity backoff, if any): [`panic_admissions`] may let
    /// it serve, and it serves again at its first good probe after the hold. Returns whether
    /// it was not already held.
    pub(crate) fn hold_flapping(&mut self, now: Instant, p: &Policy) -> bool {
        let newly = self.held_until.is_none_or(|t| t <= now);
        self.held_until = Some(later(now, p.flap_hold));
        self.health = Health::Quarantined(QuarantineReason::Flapping);
        newly
    }
}

/// The replicas to let serve although they are held out for flapping: when no replica
/// serves, those whose last probe answered within every other rule (Envoy's panic threshold,
/// at its simplest: a flap hold never leaves the primary alone while a held replica would
/// serve). Indexes into `replicas`.
pub(crate) fn panic_admissions(replicas: &[ReplicaHealth]) -> Vec<usize> {
    if replicas.iter().any(|r| r.health == Health::Healthy) {
        return Vec::new();
    }
    (0..replicas.len())
        .filter(|&i| {
            let r = &replicas[i];
            r.ready && r.health == Health::Quarantined(QuarantineReason::Flapping)
        })
        .collect()
}

/// Recent quarantine and membership events per address, for flap detection.
#[derive(Debug, Default)]
pub(crate) struct FlapDetector {
    events: HashMap<HostPort, VecDeque<Instant>>,
}

impl FlapDetector {
    /// Records an event (a quarantine, an addition or a removal) of `addr` at `now`; true when
    /// the address now has `flap_threshold` events within `flap_window`.
    pub(crate) fn event(&mut self, addr: &HostPort, now: Instant, p: &Policy) -> bool {
        let q = self.events.entry(addr.clone()).or_default();
        q.push_back(now);
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > p.flap_window)
        {
            q.pop_front();
        }
        q.len() >= p.flap_threshold as usize
    }
}

/// When the pool of a replica that left the list at `now` is closed at the latest.
pub(crate) fn drain_deadline(now: Instant, p: &Policy) -> Instant {
    later(now, p.drain_timeout)
}

/// `now + d`, or a day from now if that cannot be represented (configured durations are
/// bounded, so this is a guard against panics, not a rule).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Whether a drained replica's pool may be closed: no connection is checked out, or the
/// deadline has passed.
pub(crate) fn drain_finished(in_use: u32, deadline: Instant, now: Instant) -> bool {
    in_use == 0 || now >= deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        max_bytes: 1000,
        max_ms: 10_000,
        max_time_only_ms: 0,
    };

    fn ok(lag_bytes: u64, age: f64) -> (Observation, Lag) {
        let obs = Observation::Answered {
            in_recovery: true,
            replay_lsn: Some(Lsn::from_u64(10_000 - lag_bytes)),
            replay_age_s: Some(age),
            system_id: Some(SYSTEM),
            timeline: Some(1),
            several_servers: false,
        };
        (
            obs,
            Lag::measure(
                Some(Lsn::from_u64(10_000)),
                Some(Lsn::from_u64(10_000 - lag_bytes)),
                Some(age),
            ),
        )
    }

    #[test]
    fn idle_primary_does_not_quarantine() {
        let (o, l) = ok(0, 3600.0);
        assert_eq!(l.seconds, 0.0);
        assert_eq!(next_health(Health::Unknown, &o, l, T), Health::Healthy);
    }

    #[test]
    fn needs_both_thresholds() {
        let (o, l) = ok(5000, 1.0);
        assert_eq!(next_health(Health::Healthy, &o, l, T), Health::Healthy);
        let (o, l) = ok(10, 100.0);
        assert_eq!(next_health(Health::Healthy, &o, l, T), Health::Healthy);
        let (o, l) = ok(5000, 100.0);
        assert_eq!(
            next_health(Health::Healthy, &o, l, T),
            Health::Quarantined(QuarantineReason::Lag)
        );
    }

    /// A delayed standby (`recovery_min_apply_delay`): little byte lag, a long time behind.
    /// Only the time-only threshold, when set, takes it out; it comes back under half of it.
    #[test]
    fn time_lag_alone_quarantines_when_configured() {
        let delayed = Thresholds {
            max_time_only_ms: 60_000,
            ..T
        };
        let (o, l) = ok(10, 3600.0);
        assert_eq!(next_health(Health::Healthy, &o, l, T), Health::Healthy);
        let q = Health::Quarantined(QuarantineReason::Lag);
        assert_eq!(next_health(Health::Healthy, &o, l, delayed), q);
        // Under the threshold but not under half: stays out; under half: back.
        let (o, l) = ok(10, 45.0);
        assert_eq!(next_health(q, &o, l, delayed), q);
        assert_eq!(
            next_health(Health::Healthy, &o, l, delayed),
            Health::Healthy
        );
        let (o, l) = ok(10, 20.0);
        assert_eq!(next_health(q, &o, l, delayed), Health::Healthy);
        // Caught up in bytes: no time lag counts.
        let (o, l) = ok(0, 3600.0);
        assert_eq!(
            next_health(Health::Healthy, &o, l, delayed),
            Health::Healthy
        );
    }

    #[test]
    fn hysteresis() {
        let q = Health::Quarantined(QuarantineReason::Lag);
        // Under the thresholds but not under half: stays out.
        let (o, l) = ok(900, 100.0);
        assert_eq!(next_health(q, &o, l, T), q);
        // A healthy one at the same lag stays in.
        assert_eq!(next_health(Health::Healthy, &o, l, T), Health::Healthy);
        let (o, l) = ok(400, 100.0);
        assert_eq!(next_health(q, &o, l, T), Health::Healthy);
        let (o, l) = ok(0, 100.0);
        assert_eq!(next_health(q, &o, l, T), Health::Healthy);
    }

    #[test]
    fn failures_and_primaries() {
        let f = Observation::Failed(QuarantineReason::Timeout, "slow".into());
        assert_eq!(
            next_health(Health::Healthy, &f, Lag::default(), T),
            Health::Quarantined(QuarantineReason::Timeout)
        );
        let p = Observation::Answered {
            in_recovery: false,
            replay_lsn: None,
            replay_age_s: None,
            system_id: Some(SYSTEM),
            timeline: Some(1),
            several_servers: false,
        };
        assert_eq!(
            next_health(Health::Healthy, &p, Lag::default(), T),
            Health::Quarantined(QuarantineReason::NotInRecovery)
        );
        // Recovered from unreachable: back at once when not lagging.
        let (o, l) = ok(0, 0.0);
        assert_eq!(
            next_health(Health::Quarantined(QuarantineReason::Unreachable), &o, l, T),
            Health::Healthy
        );
    }

    #[test]
    fn lag_without_replay_time_counts_as_old() {
        let l = Lag::measure(Some(Lsn::from_u64(5000)), Some(Lsn::from_u64(1)), None);
        assert!(l.seconds.is_infinite());
        let l = Lag::measure(None, Some(Lsn::from_u64(1)), None);
        assert_eq!(l, Lag::default());
    }

    /// A policy with round numbers, and a fake clock (instants offset from one origin).
    fn policy() -> Policy {
        Policy {
            lag: T,
            failure_threshold: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            flap_window: Duration::from_secs(60),
            flap_threshold: 3,
            flap_hold: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(20),
        }
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    fn fail() -> Observation {
        Observation::Failed(QuarantineReason::Unreachable, "connection refused".into())
    }

    fn answer() -> Observation {
        ok(0, 0.0).0
    }

    const SYSTEM: u64 = 7_300_000_000_000_000_001;

    const PRIMARY: &PrimaryView = &PrimaryView {
        lsn: Some(Lsn::from_u64(10_000)),
        lsn_after_replicas: true,
        system_id: Some(SYSTEM),
        timeline: Some(1),
    };

    #[test]
    fn failure_threshold_counts_consecutive_failures() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = ReplicaHealth::new(&p);
        r.observe(&answer(), PRIMARY, t0, &p);
        assert_eq!(r.health, Health::Healthy);
        for i in 1..3 {
            let tr = r.observe(&fail(), PRIMARY, at(t0, i), &p);
            assert_eq!(tr.after, Health::Healthy, "failure {i} of 3 keeps it in");
            assert!(r.probe_due(at(t0, i)));
            assert_eq!(r.last_error.as_deref(), Some("connection refused"));
        }
        let tr = r.observe(&fail(), PRIMARY, at(t0, 3), &p);
        assert_eq!(tr.after, Health::Quarantined(QuarantineReason::Unreachable));
        assert!(tr.newly_unreachable());
        assert_eq!(r.retry_at, Some(at(t0, 4)), "first wait: backoff_initial");
        // A success in between resets the count.
        let mut r = ReplicaHealth::new(&p);
        r.observe(&fail(), PRIMARY, t0, &p);
        r.observe(&fail(), PRIMARY, t0, &p);
        r.observe(&answer(), PRIMARY, t0, &p);
        r.observe(&fail(), PRIMARY, t0, &p);
        assert_eq!(r.health, Health::Healthy);
        assert_eq!(r.failures, 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = Policy {
            failure_threshold: 1,
            ..policy()
        };
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(r.probe_due(now));
            r.observe(&fail(), PRIMARY, now, &p);
            let retry = r.retry_at.expect("quarantined with a retry time");
            waits.push((retry - now).as_secs());
            now = retry;
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn half_open_reprobe_readmits_on_success() {
        let p = Policy {
            failure_threshold: 1,
            ..policy()
        };
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        r.observe(&fail(), PRIMARY, t0, &p);
        r.observe(&fail(), PRIMARY, at(t0, 1), &p);
        assert_eq!(r.retry_at, Some(at(t0, 3)));
        assert!(!r.probe_due(at(t0, 2)), "not probed while it waits");
        assert!(r.probe_due(at(t0, 3)), "probed once the wait is over");
        let tr = r.observe(&answer(), PRIMARY, at(t0, 3), &p);
        assert_eq!(
            tr,
            Transition {
                before: Health::Quarantined(QuarantineReason::Unreachable),
                after: Health::Healthy
            }
        );
        assert_eq!(r.retry_at, None);
        assert_eq!(r.backoff, p.backoff_initial, "backoff reset");
        assert_eq!(r.last_error, None);
        // A timeout while out keeps it out, with the timeout as the reason.
        r.observe(&fail(), PRIMARY, at(t0, 4), &p);
        let timeout = Observation::Failed(QuarantineReason::Timeout, "slow".into());
        let tr = r.observe(&timeout, PRIMARY, at(t0, 5), &p);
        assert_eq!(tr.after, Health::Quarantined(QuarantineReason::Timeout));
        assert!(!tr.newly_unreachable(), "already out");
    }

    #[test]
    fn lag_quarantine_does_not_back_off() {
        let p = policy();
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        let (lagging, _) = ok(5000, 100.0);
        let tr = r.observe(&lagging, PRIMARY, t0, &p);
        assert_eq!(tr.after, Health::Quarantined(QuarantineReason::Lag));
        assert!(!tr.newly_unreachable());
        assert!(r.probe_due(t0), "a lagging replica is probed every check");
        assert_eq!(r.lag.bytes, 5000);
        // Hysteresis through the state machine: 900 bytes is under the threshold but not
        // under half of it, and replay is old.
        let (better, _) = ok(900, 100.0);
        assert_eq!(
            r.observe(&better, PRIMARY, t0, &p).after,
            Health::Quarantined(QuarantineReason::Lag)
        );
        let (caught_up, _) = ok(400, 100.0);
        assert_eq!(
            r.observe(&caught_up, PRIMARY, t0, &p).after,
            Health::Healthy
        );
    }

    #[test]
    fn flapping_needs_threshold_events_within_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let a = HostPort {
            host: "a".into(),
            port: 1,
        };
        let b = HostPort {
            host: "b".into(),
            port: 1,
        };
        let mut f = FlapDetector::default();
        assert!(!f.event(&a, t0, &p));
        assert!(!f.event(&a, at(t0, 30), &p));
        assert!(!f.event(&b, at(t0, 40), &p), "events are per address");
        assert!(f.event(&a, at(t0, 60), &p), "3 events within 60 s");
        // Spread out beyond the window: the old events no longer count.
        let mut f = FlapDetector::default();
        assert!(!f.event(&a, t0, &p));
        assert!(!f.event(&a, at(t0, 50), &p));
        assert!(
            !f.event(&a, at(t0, 70), &p),
            "the first event left the window"
        );
        assert!(f.event(&a, at(t0, 80), &p));
    }

    #[test]
    fn flapping_hold_keeps_it_out_while_others_serve() {
        let p = policy();
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        r.observe(&answer(), PRIMARY, t0, &p);
        assert!(r.hold_flapping(t0, &p));
        assert_eq!(r.health, Health::Quarantined(QuarantineReason::Flapping));
        assert!(!r.hold_flapping(at(t0, 10), &p), "already held: extended");
        // Still probed; good answers do not end the hold early.
        assert!(r.probe_due(at(t0, 11)));
        let tr = r.observe(&answer(), PRIMARY, at(t0, 11), &p);
        assert_eq!(tr.after, Health::Quarantined(QuarantineReason::Flapping));
        assert!(r.ready, "it would serve but for the hold");
        assert_eq!(
            r.observe(&answer(), PRIMARY, at(t0, 309), &p).after,
            Health::Quarantined(QuarantineReason::Flapping)
        );
        assert_eq!(
            r.observe(&answer(), PRIMARY, at(t0, 310), &p).after,
            Health::Healthy
        );
        // A failed probe while held backs off as any failure does, and stays `flapping`.
        r.hold_flapping(at(t0, 400), &p);
        let tr = r.observe(&fail(), PRIMARY, at(t0, 401), &p);
        assert_eq!(r.retry_at, Some(at(t0, 403)));
        assert!(!r.ready);
        assert_eq!(tr.before, tr.after, "no new quarantine while held");
    }

    #[test]
    fn a_held_replica_serves_when_no_other_does() {
        let p = policy();
        let t0 = Instant::now();
        let mut held = ReplicaHealth::new(&p);
        held.observe(&answer(), PRIMARY, t0, &p);
        held.hold_flapping(t0, &p);
        held.observe(&answer(), PRIMARY, at(t0, 1), &p);
        let mut down = ReplicaHealth::new(&p);
        down.observe(&fail(), PRIMARY, t0, &p);
        let mut healthy = ReplicaHealth::new(&p);
        healthy.observe(&answer(), PRIMARY, t0, &p);
        // Another replica serves: the hold stands.
        assert!(panic_admissions(&[held.clone(), healthy.clone()]).is_empty());
        // None does: the held replica that answers serves; a failing one does not.
        assert_eq!(panic_admissions(&[down.clone(), held.clone()]), [1]);
        let mut held_failing = held.clone();
        held_failing.observe(&fail(), PRIMARY, at(t0, 2), &p);
        assert!(panic_admissions(&[down, held_failing]).is_empty());
        // Lagging (another rule) is not overridden.
        let mut held_lagging = held.clone();
        held_lagging.observe(&ok(5000, 100.0).0, PRIMARY, at(t0, 2), &p);
        assert!(!held_lagging.ready);
        assert!(panic_admissions(&[held_lagging]).is_empty());
    }

    /// With the default settings, a replica that went through a storm of faults serves again
    /// within 15 s of the last one (it answers from then on).
    #[test]
    fn back_within_15_s_of_the_last_fault_with_the_defaults() {
        let p = Policy::from_config(&Config::new("host=h"));
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        let mut flaps = FlapDetector::default();
        let addr = HostPort::parse("r1", 5432).unwrap();
        let interval = Duration::from_secs(1);
        let mut now = t0;
        let mut last_fault = t0;
        // Two minutes of faults: down 3 s, up 2 s, probed every second when due.
        while now < t0 + Duration::from_secs(120) {
            if r.probe_due(now) {
                let phase = (now - t0).as_secs() % 5;
                let obs = if phase < 3 { fail() } else { answer() };
                if phase < 3 {
                    last_fault = now;
                }
                let t = r.observe(&obs, PRIMARY, now, &p);
                if t.newly_unreachable() && flaps.event(&addr, now, &p) {
                    r.hold_flapping(now, &p);
                }
            }
            now += interval;
        }
        assert_ne!(r.health, Health::Healthy, "out during the storm");
        // The storm is over: it answers every probe.
        let mut back = None;
        while back.is_none() && now < last_fault + Duration::from_secs(60) {
            if r.probe_due(now) && r.observe(&answer(), PRIMARY, now, &p).after == Health::Healthy {
                back = Some(now);
            }
            now += interval;
        }
        let back = back.expect("back in rotation");
        assert!(
            back - last_fault <= Duration::from_secs(15),
            "back {:?} after the last fault",
            back - last_fault
        );
    }

    #[test]
    fn drain_closes_when_idle_or_at_the_deadline() {
        let p = policy();
        let t0 = Instant::now();
        let deadline = drain_deadline(t0, &p);
        assert_eq!(deadline, at(t0, 30));
        assert!(drain_finished(0, deadline, t0), "nothing checked out");
        assert!(!drain_finished(2, deadline, at(t0, 29)));
        assert!(drain_finished(2, deadline, at(t0, 30)), "deadline reached");
    }

    /// An answer from a replica `behind` bytes behind [`PRIMARY`], with `f` applied.
    fn answer_with(behind: u64, f: impl FnOnce(&mut Observation)) -> Observation {
        let mut o = ok(behind, 1.0).0;
        f(&mut o);
        o
    }

    fn set(
        o: &mut Observation,
    ) -> (
        &mut Option<u64>,
        &mut Option<u32>,
        &mut bool,
        &mut Option<Lsn>,
    ) {
        match o {
            Observation::Answered {
                system_id,
                timeline,
                several_servers,
                replay_lsn,
                ..
            } => (system_id, timeline, several_servers, replay_lsn),
            Observation::Failed(..) => unreachable!(),
        }
    }

    #[test]
    fn a_standby_of_another_cluster_is_out_whatever_its_lag() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = ReplicaHealth::new(&p);
        let foreign = answer_with(0, |o| *set(o).0 = Some(SYSTEM + 1));
        let tr = r.observe(&foreign, PRIMARY, t0, &p);
        assert_eq!(
            tr.after,
            Health::Quarantined(QuarantineReason::WrongCluster)
        );
        assert!(!tr.newly_unreachable());
        // Unknown on either side: no verdict from identity.
        let unknown = answer_with(0, |o| *set(o).0 = None);
        assert_eq!(r.observe(&unknown, PRIMARY, t0, &p).after, Health::Healthy);
    }

    #[test]
    fn ahead_of_the_primary_or_on_another_timeline_is_diverged() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = ReplicaHealth::new(&p);
        let ahead = answer_with(0, |o| *set(o).3 = Some(Lsn::from_u64(10_001)));
        assert_eq!(
            r.observe(&ahead, PRIMARY, t0, &p).after,
            Health::Quarantined(QuarantineReason::Diverged)
        );
        assert_eq!(r.lag.bytes, 0, "ahead counts as no lag");
        // Only against a primary position read after the replica's.
        let stale = PrimaryView {
            lsn_after_replicas: false,
            ..*PRIMARY
        };
        assert_eq!(r.observe(&ahead, &stale, t0, &p).after, Health::Healthy);
        let old_timeline = answer_with(0, |o| *set(o).1 = Some(2));
        assert_eq!(
            r.observe(&old_timeline, &stale, t0, &p).after,
            Health::Quarantined(QuarantineReason::Diverged)
        );
        assert_eq!(r.observe(&answer(), PRIMARY, t0, &p).after, Health::Healthy);
    }

    #[test]
    fn an_address_reaching_several_servers_is_out() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = ReplicaHealth::new(&p);
        let several = answer_with(0, |o| *set(o).2 = true);
        assert_eq!(
            r.observe(&several, PRIMARY, t0, &p).after,
            Health::Quarantined(QuarantineReason::MultipleServers)
        );
        assert_eq!(r.observe(&answer(), PRIMARY, t0, &p).after, Health::Healthy);
    }

    #[test]
    fn behind_without_replay_progress_is_stalled() {
        let (p, t0) = (policy(), Instant::now());
        let mut r = ReplicaHealth::new(&p);
        // 10 bytes behind (far under max_lag_bytes), replay not moving.
        let stuck = answer_with(10, |_| {});
        for s in [0, 10, 19] {
            assert_eq!(
                r.observe(&stuck, PRIMARY, at(t0, s), &p).after,
                Health::Healthy
            );
        }
        assert_eq!(
            r.observe(&stuck, PRIMARY, at(t0, 20), &p).after,
            Health::Quarantined(QuarantineReason::Stalled)
        );
        // Progress re-admits it; so does catching up.
        let moving = answer_with(5, |_| {});
        assert_eq!(
            r.observe(&moving, PRIMARY, at(t0, 21), &p).after,
            Health::Healthy
        );
        // Caught up and idle: never stalled.
        let mut idle = ReplicaHealth::new(&p);
        for s in [0, 100, 1000] {
            assert_eq!(
                idle.observe(&answer(), PRIMARY, at(t0, s), &p).after,
                Health::Healthy
            );
        }
        // The rule can be turned off.
        let off = Policy {
            stall_timeout: Duration::ZERO,
            ..p
        };
        let mut r = ReplicaHealth::new(&off);
        r.observe(&stuck, PRIMARY, t0, &off);
        assert_eq!(
            r.observe(&stuck, PRIMARY, at(t0, 1000), &off).after,
            Health::Healthy
        );
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let p = Policy {
            failure_threshold: 1,
            backoff_initial: Duration::MAX,
            backoff_max: Duration::MAX,
            flap_hold: Duration::MAX,
            drain_timeout: Duration::MAX,
            ..policy()
        };
        let t0 = Instant::now();
        let mut r = ReplicaHealth::new(&p);
        r.observe(&fail(), PRIMARY, t0, &p);
        r.observe(&fail(), PRIMARY, t0, &p);
        assert!(r.retry_at.is_some_and(|t| t > t0));
        assert!(r.hold_flapping(t0, &p));
        assert!(drain_deadline(t0, &p) > t0);
    }

    #[test]
    fn policy_from_config_takes_every_setting() {
        let mut c = Config::new("host=h");
        c.connectivity.backoff_max_ms = 1234;
        let p = Policy::from_config(&c);
        assert_eq!(p.backoff_max, Duration::from_millis(1234));
        assert_eq!(
            p.drain_timeout,
            Duration::from_millis(ReplicasConfig::DEFAULT_DRAIN_TIMEOUT_MS)
        );
        assert_eq!(p.lag.max_bytes, c.max_lag_bytes);
    }
}
