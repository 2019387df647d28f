//! Replica health: the pure state machine the monitor drives, and the snapshot the pick path
//! reads.

use std::sync::Arc;

use crate::host::{Host, Striped};
use crate::lsn::Lsn;

/// Why a replica is not serving reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum QuarantineReason {
    /// Over both lag thresholds (bytes and time).
    Lag = 0,
    /// Connection or query failed.
    Unreachable = 1,
    /// The probe did not answer within `probe_timeout_ms`.
    Timeout = 2,
    /// `pg_is_in_recovery()` is false: it is not a standby (promoted, or a primary).
    NotInRecovery = 3,
    /// Quarantined or added/removed too often within `connectivity.flap_window_ms`: held out
    /// for `connectivity.flap_hold_ms`.
    Flapping = 4,
}

impl QuarantineReason {
    pub(crate) const COUNT: usize = 5;

    /// Every reason, in numeric order.
    pub const ALL: [QuarantineReason; QuarantineReason::COUNT] = [
        QuarantineReason::Lag,
        QuarantineReason::Unreachable,
        QuarantineReason::Timeout,
        QuarantineReason::NotInRecovery,
        QuarantineReason::Flapping,
    ];

    /// Snake-case name for metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Lag => "lag",
            QuarantineReason::Unreachable => "unreachable",
            QuarantineReason::Timeout => "timeout",
            QuarantineReason::NotInRecovery => "not_in_recovery",
            QuarantineReason::Flapping => "flapping",
        }
    }
}

/// A replica's state as seen by the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: not eligible.
    Unknown,
    /// Serving reads.
    Healthy,
    /// Set aside; not picked.
    Quarantined(QuarantineReason),
}

impl Health {
    /// `unknown`, `healthy` or `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Quarantined(_) => "quarantined",
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
    },
}

/// Lag thresholds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub(crate) max_bytes: u64,
    pub(crate) max_ms: u64,
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

/// The next health of a replica. A replica is lag-quarantined only when over **both**
/// thresholds, and re-admitted only when under **half** of either (hysteresis).
pub(crate) fn next_health(prev: Health, obs: &Observation, lag: Lag, t: Thresholds) -> Health {
    match obs {
        Observation::Failed(reason, _) => Health::Quarantined(*reason),
        Observation::Answered {
            in_recovery: false, ..
        } => Health::Quarantined(QuarantineReason::NotInRecovery),
        Observation::Answered { .. } => {
            let secs = |ms: u64| ms as f64 / 1000.0;
            let over = lag.bytes > t.max_bytes && lag.seconds > secs(t.max_ms);
            let well_under = lag.bytes <= t.max_bytes / 2 || lag.seconds <= secs(t.max_ms) / 2.0;
            match prev {
                Health::Quarantined(QuarantineReason::Lag) if !well_under => prev,
                _ if over => Health::Quarantined(QuarantineReason::Lag),
                _ => Health::Healthy,
            }
        }
    }
}

/// One replica in a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaState {
    pub(crate) host: Arc<Host>,
    pub(crate) health: Health,
    pub(crate) lag: Lag,
    pub(crate) last_error: Option<String>,
}

/// Immutable view the pick path reads; the monitor publishes a new one after every check.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Every configured replica, healthy or not (status, metrics).
    pub(crate) replicas: Vec<ReplicaState>,
    /// The healthy ones, in a stable order: the round-robin ring.
    pub(crate) eligible: Vec<Arc<Striped>>,
    /// Replicas that left the list and are being drained (status only).
    pub(crate) draining: Vec<Arc<Host>>,
    /// Primary LSN seen by the last successful check.
    pub(crate) primary_lsn: Option<Lsn>,
    /// Monotonic check counter (0 before the first check).
    pub(crate) generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        max_bytes: 1000,
        max_ms: 10_000,
    };

    fn ok(lag_bytes: u64, age: f64) -> (Observation, Lag) {
        let obs = Observation::Answered {
            in_recovery: true,
            replay_lsn: Some(Lsn::from_u64(10_000 - lag_bytes)),
            replay_age_s: Some(age),
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
}
