//! The pure step of a monitor round: from what this round's probes saw to every replica's new
//! health. No I/O, no clock reading, no lock: the monitor gathers the inputs (probe answers,
//! how many servers each address reached lately) and acts on the result (logs, counters,
//! publication). Unit-tested like the health policy.

use std::time::Instant;

use crate::dsn::HostPort;
use crate::health::policy::{self, FlapDetector, PrimaryView, Transition};
use crate::health::{Health, Observation, Policy, ReplicaHealth};
use crate::labels::QuarantineReason;
use crate::lsn::Lsn;

/// Servers an address must have reached within the window for "several servers".
pub(super) const SEVERAL_SERVERS: usize = 2;

/// What a replica's probe read when it answered (the monitor adds what it knows of the
/// address: [`Outcome::Answered`]).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Reading {
    pub(super) in_recovery: bool,
    pub(super) replay_lsn: Option<Lsn>,
    pub(super) replay_age_s: Option<f64>,
    pub(super) system_id: Option<u64>,
    pub(super) timeline: Option<u32>,
}

/// One member's outcome in this round.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Outcome {
    /// Not probed this round: it waits out a backoff or a hold, and stays as it is.
    NotDue,
    /// The probe failed, or did not answer by the round's deadline.
    Failed(QuarantineReason, String),
    /// The probe answered; `servers` is how many server changes new connections to the
    /// address saw within the several-servers window.
    Answered { reading: Reading, servers: usize },
}

impl Outcome {
    /// The observation the health policy judges.
    fn observation(&self) -> Option<Observation> {
        match self {
            Outcome::NotDue => None,
            Outcome::Failed(reason, message) => Some(Observation::Failed(*reason, message.clone())),
            Outcome::Answered {
                reading: r,
                servers,
            } => Some(Observation::Answered {
                in_recovery: r.in_recovery,
                replay_lsn: r.replay_lsn,
                replay_age_s: r.replay_age_s,
                system_id: r.system_id,
                timeline: r.timeline,
                several_servers: *servers >= SEVERAL_SERVERS,
            }),
        }
    }
}

/// What a round decided.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Applied {
    /// Per member: its health before and after the round (`None`: not probed).
    pub(super) transitions: Vec<Option<Transition>>,
    /// Members let serve although held out for flapping, because no other replica would.
    pub(super) admitted: Vec<usize>,
}

/// Applies one round: each probed member's observation to its health (against `primary`),
/// a new connectivity failure counted as a flap event (a member flapping is held out), then,
/// when no replica would serve, the ones held only for flapping serve anyway.
pub(super) fn apply(
    states: &mut [ReplicaHealth],
    addrs: &[HostPort],
    outcomes: &[Outcome],
    primary: &PrimaryView,
    flaps: &mut FlapDetector,
    now: Instant,
    p: &Policy,
) -> Applied {
    let mut transitions = vec![None; states.len()];
    for (i, outcome) in outcomes.iter().enumerate() {
        let Some(obs) = outcome.observation() else {
            continue;
        };
        let t = states[i].observe(&obs, primary, now, p);
        if t.newly_unreachable() && flaps.event(&addrs[i], now, p) {
            states[i].hold_flapping(now, p);
        }
        transitions[i] = Some(t);
    }
    let admitted = policy::panic_admissions(states);
    for &i in &admitted {
        states[i].health = Health::Healthy;
    }
    for (i, t) in transitions.iter_mut().enumerate() {
        if let Some(t) = t {
            t.after = states[i].health;
        }
    }
    Applied {
        transitions,
        admitted,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn policy() -> Policy {
        let mut c = Config::new("host=127.0.0.1");
        c.connectivity.failure_threshold = 1;
        Policy::from_config(&c)
    }

    fn primary() -> PrimaryView {
        PrimaryView {
            lsn: Some(Lsn::from_u64(1000)),
            lsn_after_replicas: true,
            system_id: Some(7),
            timeline: Some(1),
        }
    }

    fn standby(servers: usize) -> Outcome {
        Outcome::Answered {
            reading: Reading {
                in_recovery: true,
                replay_lsn: Some(Lsn::from_u64(1000)),
                replay_age_s: Some(0.0),
                system_id: Some(7),
                timeline: Some(1),
            },
            servers,
        }
    }

    fn addrs(n: usize) -> Vec<HostPort> {
        (0..n)
            .map(|i| HostPort {
                host: "10.0.0.1".into(),
                port: 5432 + i as u16,
            })
            .collect()
    }

    fn round(
        states: &mut [ReplicaHealth],
        outcomes: &[Outcome],
        flaps: &mut FlapDetector,
        now: Instant,
        p: &Policy,
    ) -> Applied {
        apply(
            states,
            &addrs(states.len()),
            outcomes,
            &primary(),
            flaps,
            now,
            p,
        )
    }

    #[test]
    fn answered_standbys_serve_and_members_not_due_stay_as_they_are() {
        let p = policy();
        let mut s = vec![ReplicaHealth::new(&p), ReplicaHealth::new(&p)];
        let a = round(
            &mut s,
            &[standby(0), Outcome::NotDue],
            &mut FlapDetector::default(),
            Instant::now(),
            &p,
        );
        assert_eq!(s[0].health, Health::Healthy);
        assert_eq!(s[1].health, Health::Unknown);
        assert_eq!(
            a.transitions,
            vec![
                Some(Transition {
                    before: Health::Unknown,
                    after: Health::Healthy
                }),
                None
            ]
        );
        assert!(a.admitted.is_empty());
    }

    #[test]
    fn an_address_reaching_several_servers_is_quarantined() {
        let p = policy();
        let mut s = vec![ReplicaHealth::new(&p), ReplicaHealth::new(&p)];
        let now = Instant::now();
        round(
            &mut s,
            &[standby(SEVERAL_SERVERS - 1), standby(SEVERAL_SERVERS)],
            &mut FlapDetector::default(),
            now,
            &p,
        );
        assert_eq!(s[0].health, Health::Healthy);
        assert_eq!(
            s[1].health,
            Health::Quarantined(QuarantineReason::MultipleServers)
        );
    }

    #[test]
    fn a_failure_quarantines_and_repeated_failures_hold_a_flapping_replica() {
        let p = policy();
        let mut s = vec![ReplicaHealth::new(&p), ReplicaHealth::new(&p)];
        let mut flaps = FlapDetector::default();
        let mut now = Instant::now();
        let failed = Outcome::Failed(QuarantineReason::Unreachable, "refused".into());
        let mut held = false;
        for _ in 0..3 * p.flap_threshold.max(1) {
            round(&mut s, &[standby(0), standby(0)], &mut flaps, now, &p);
            assert_eq!(s[0].health, Health::Healthy);
            now += Duration::from_millis(1);
            round(&mut s, &[failed.clone(), standby(0)], &mut flaps, now, &p);
            if s[0].health == Health::Quarantined(QuarantineReason::Flapping) {
                held = true;
                break;
            }
            assert_eq!(
                s[0].health,
                Health::Quarantined(QuarantineReason::Unreachable)
            );
            now += Duration::from_millis(1);
        }
        assert!(held, "held out for flapping: {:?}", s[0]);
        assert_eq!(s[1].health, Health::Healthy);
    }

    #[test]
    fn replicas_held_only_for_flapping_serve_when_no_other_would() {
        let p = policy();
        let mut s = vec![ReplicaHealth::new(&p), ReplicaHealth::new(&p)];
        let mut flaps = FlapDetector::default();
        let now = Instant::now();
        round(&mut s, &[standby(0), standby(0)], &mut flaps, now, &p);
        // Replica 0 is held for flapping; replica 1 fails.
        s[0].hold_flapping(now, &p);
        s[0].ready = true;
        let failed = Outcome::Failed(QuarantineReason::Unreachable, "refused".into());
        let a = round(
            &mut s,
            &[Outcome::NotDue, failed],
            &mut flaps,
            now + Duration::from_millis(1),
            &p,
        );
        assert_eq!(a.admitted, vec![0]);
        assert_eq!(s[0].health, Health::Healthy);
        assert_eq!(
            a.transitions[1].map(|t| t.after),
            Some(Health::Quarantined(QuarantineReason::Unreachable))
        );
    }
}
