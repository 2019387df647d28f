//! Read-your-writes: the one place that decides whether a replica is proven to hold a write.
//!
//! A sticky read has a [`Requirement`]: the LSN recorded for its key (or carried by a causal
//! token) and the timeline of the primary it belongs to. A replica's [`Position`] is what a
//! probe or a live check read from it: its replay LSN and the timeline it receives. The rule
//! ([`proves`]) compares LSNs only within one timeline: after a failover, a standby left on the
//! old timeline may have replayed *more* WAL than the new primary wrote (positions the new
//! history never had), so a bigger number there proves nothing.
//!
//! [`decide`] is the part of a sticky pick that comes before any replica is looked at: what the
//! key's store entry, the cluster, the timeline and the store's own health say. When no cached
//! position proves a read, [`prove`] is the one loop of live checks (order, deadline, what a
//! failed check means, the cache raised by every answer, the live checks' metrics), over a
//! [`Prover`]: a handed-out DSN's live checker, or the pooled connection that serves the read.
//! All of it is pure (no I/O, no clock, no lock: the prover does the I/O and reads the clock)
//! and unit-tested here with hand-built inputs and a fake prover. The callers (`routing` for
//! picks and handed-out DSNs, `balancer` for pooled reads) only gather the inputs and act on
//! the answer; they never compare positions themselves.
//!
//! What this part deliberately does not do: any I/O. Reading positions is `server`'s, keeping
//! recorded LSNs `sticking`'s, choosing among proven replicas `routing`'s.

mod prove;

pub(crate) use self::prove::{Answer, Prover, prove};
pub(crate) use crate::lsn::Position;
use crate::lsn::{CausalToken, Lsn};
use crate::sticking::Recorded;

/// What a sticky read needs: a replica on `timeline` that replayed `lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Requirement {
    /// The recorded position (or the causal token's).
    pub(crate) lsn: Lsn,
    /// The primary's timeline the position is compared on; 0 when unknown (then no replica
    /// can be proven: the read goes to the primary).
    pub(crate) timeline: u32,
}

/// Whether a replica at `pos` is proven to hold every write up to `req`: same known timeline,
/// and replayed at least as far. An unknown timeline on either side proves nothing.
#[inline]
pub(crate) fn proves(pos: Position, req: Requirement) -> bool {
    req.timeline != 0 && pos.timeline == req.timeline && pos.lsn >= req.lsn
}

/// The state a sticky pick is decided in, gathered by the router before it reads the store's
/// answer: each field is a fact the caller read, none is computed here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Context {
    /// Replicas are configured: load balancing is on.
    pub(crate) lb_enabled: bool,
    /// The primary's cluster (`system_identifier`) is not known yet: keys recorded by another
    /// instance cannot be found, so nothing can be proven.
    pub(crate) unknown_cluster: bool,
    /// The primary's timeline is not known right now (not read yet, or the last primary probe
    /// failed: a failover may be under way).
    pub(crate) unknown_timeline: bool,
    /// Within `sticky_ttl_s` of a change of the primary's cluster behind its address: a key
    /// with nothing recorded in the new cluster may have been written in the old one.
    pub(crate) cluster_changed: bool,
    /// Within `sticky_ttl_s` of the LSN store losing entries (a flush, a restart without
    /// persistence, an eviction): a key with nothing recorded may have lost its entry.
    pub(crate) store_lost: bool,
}

/// What a sticky pick does before it looks at any replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The store could not be read: the primary ([`crate::Reason::StoreError`]).
    StoreError,
    /// The key is forced to the primary ([`crate::Reason::ForcedPrimary`]).
    Forced,
    /// Nothing is recorded and nothing was lost: any healthy replica
    /// ([`crate::Reason::NoLsnRecorded`]).
    AnyReplica,
    /// No replica can be proven fresh (nothing recorded after a loss or a cluster change, or an
    /// unknown cluster or timeline): the not-caught-up policy decides (primary or error), for
    /// the position given (0 when nothing is recorded).
    NotProvable(Lsn),
    /// A replica that satisfies this requirement ([`proves`]).
    Prove(Requirement),
}

/// Decides a sticky pick from the key's store entry (`got`) and the state it is read in
/// (`ctx`); `timeline` is the primary's current timeline (0: unknown). Pure.
pub(crate) fn decide<E>(got: Result<Recorded, E>, ctx: Context, timeline: u32) -> Decision {
    let recorded = match got {
        Err(_) => return Decision::StoreError,
        Ok(Recorded { forced: true, .. }) => return Decision::Forced,
        Ok(r) => r,
    };
    let unknown = ctx.lb_enabled && (ctx.unknown_cluster || ctx.unknown_timeline);
    match recorded.lsn {
        Some(lsn) if unknown => Decision::NotProvable(lsn),
        Some(lsn) => Decision::Prove(Requirement { lsn, timeline }),
        None if ctx.lb_enabled && ctx.unknown_cluster => Decision::NotProvable(Lsn::from_u64(0)),
        None if ctx.cluster_changed || ctx.store_lost => Decision::NotProvable(Lsn::from_u64(0)),
        None => Decision::AnyReplica,
    }
}

/// What a causal token requires, read against the primary's cluster `system` and current
/// `timeline` (0: unknown): `None` when no replica can prove it (the read goes where unprovable
/// reads go). A token of another cluster, or of another timeline than the current one (written
/// before a failover, or after one this process has not seen yet), proves nothing. A bare LSN
/// (no cluster, no timeline: a 0.2 token) is compared on the current timeline, as a key's
/// recorded LSN is, and never while the timeline is unknown.
pub(crate) fn token_requirement(
    t: &CausalToken,
    system: u64,
    timeline: u32,
) -> Option<Requirement> {
    if t.system_id != 0 && t.system_id != system {
        return None;
    }
    let on_timeline = t.timeline == 0 || t.timeline == timeline;
    (on_timeline && timeline != 0).then_some(Requirement {
        lsn: t.lsn,
        timeline,
    })
}

/// A sticky pick's decision `d` (from [`decide`]) for a read that also carries a causal token
/// `t` (read against the primary's cluster `system` and current `timeline`, the one `d` was
/// decided on): one requirement that satisfies both, the newer of the two positions. A token
/// that proves nothing ([`token_requirement`] `None`) makes the read unprovable, as it does
/// alone; the primary, forced or after a store error, stays where `d` sends it. Without
/// replicas (`lb_enabled` false) `d` is kept: every read goes to the primary anyway. Pure.
pub(crate) fn with_token(
    d: Decision,
    t: &CausalToken,
    system: u64,
    timeline: u32,
    lb_enabled: bool,
) -> Decision {
    if !lb_enabled {
        return d;
    }
    let token = token_requirement(t, system, timeline);
    match (d, token) {
        (Decision::StoreError | Decision::Forced, _) => d,
        (Decision::NotProvable(lsn), _) => Decision::NotProvable(lsn.max(t.lsn)),
        (Decision::AnyReplica, Some(req)) => Decision::Prove(req),
        (Decision::AnyReplica, None) => Decision::NotProvable(t.lsn),
        (Decision::Prove(req), Some(tr)) if tr.timeline == req.timeline => {
            Decision::Prove(Requirement {
                lsn: req.lsn.max(tr.lsn),
                timeline: req.timeline,
            })
        }
        (Decision::Prove(req), _) => Decision::NotProvable(req.lsn.max(t.lsn)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(v: u64) -> Lsn {
        Lsn::from_u64(v)
    }
    fn pos(l: u64, timeline: u32) -> Position {
        Position {
            lsn: lsn(l),
            timeline,
        }
    }
    fn req(l: u64, timeline: u32) -> Requirement {
        Requirement {
            lsn: lsn(l),
            timeline,
        }
    }
    fn at(l: Option<u64>, forced: bool) -> Result<Recorded, ()> {
        Ok(Recorded {
            lsn: l.map(lsn),
            forced,
        })
    }
    fn running() -> Context {
        Context {
            lb_enabled: true,
            ..Context::default()
        }
    }

    #[test]
    fn a_position_proves_only_on_the_same_known_timeline() {
        assert!(proves(pos(10, 2), req(10, 2)));
        assert!(proves(pos(11, 2), req(10, 2)));
        assert!(!proves(pos(9, 2), req(10, 2)), "behind");
        // The failover case: a standby left on the old timeline, far ahead in numbers.
        assert!(!proves(pos(1 << 40, 1), req(10, 2)));
        // A standby on a newer timeline than the write: its history may have forked before it.
        assert!(!proves(pos(1 << 40, 3), req(10, 2)));
        assert!(
            !proves(pos(1 << 40, 0), req(10, 2)),
            "replica timeline unknown"
        );
        assert!(!proves(pos(1 << 40, 0), req(10, 0)), "both unknown");
        assert!(
            !proves(pos(1 << 40, 2), req(10, 0)),
            "primary timeline unknown"
        );
    }

    #[test]
    fn tokens_prove_only_in_their_cluster_and_on_their_timeline() {
        let token = |timeline, system_id| CausalToken {
            lsn: lsn(5),
            timeline,
            system_id,
        };
        assert_eq!(token_requirement(&token(2, 7), 7, 2), Some(req(5, 2)));
        // Another cluster; a timeline before the failover, or one not seen yet here.
        assert_eq!(token_requirement(&token(2, 8), 7, 2), None);
        assert_eq!(token_requirement(&token(1, 7), 7, 2), None);
        assert_eq!(token_requirement(&token(3, 7), 7, 2), None);
        // The primary's timeline unknown (a failed probe): nothing.
        assert_eq!(token_requirement(&token(2, 7), 7, 0), None);
        assert_eq!(token_requirement(&token(0, 0), 7, 0), None);
        // A bare LSN: the current timeline.
        assert_eq!(token_requirement(&token(0, 0), 7, 2), Some(req(5, 2)));
    }

    #[test]
    fn store_errors_and_forces_come_first() {
        let lost = Context {
            store_lost: true,
            unknown_timeline: true,
            ..running()
        };
        assert_eq!(
            decide(Err::<Recorded, _>("down"), lost, 2),
            Decision::StoreError
        );
        assert_eq!(decide(at(Some(5), true), lost, 2), Decision::Forced);
        assert_eq!(decide(at(None, true), running(), 2), Decision::Forced);
    }

    #[test]
    fn a_recorded_position_is_proven_on_the_primary_timeline() {
        assert_eq!(
            decide(at(Some(5), false), running(), 2),
            Decision::Prove(req(5, 2))
        );
        // A loss or a cluster change does not matter to a key that still has its entry.
        let after = Context {
            store_lost: true,
            cluster_changed: true,
            ..running()
        };
        assert_eq!(
            decide(at(Some(5), false), after, 2),
            Decision::Prove(req(5, 2))
        );
    }

    #[test]
    fn an_unknown_cluster_or_timeline_proves_nothing() {
        for ctx in [
            Context {
                unknown_cluster: true,
                ..running()
            },
            Context {
                unknown_timeline: true,
                ..running()
            },
        ] {
            assert_eq!(
                decide(at(Some(5), false), ctx, 2),
                Decision::NotProvable(lsn(5))
            );
        }
        assert_eq!(
            decide(
                at(None, false),
                Context {
                    unknown_cluster: true,
                    ..running()
                },
                2
            ),
            Decision::NotProvable(lsn(0))
        );
        // Nothing recorded and only the timeline unknown: nothing to prove, any replica.
        assert_eq!(
            decide(
                at(None, false),
                Context {
                    unknown_timeline: true,
                    ..running()
                },
                0
            ),
            Decision::AnyReplica
        );
    }

    #[test]
    fn nothing_recorded_after_a_loss_or_a_cluster_change_is_not_provable() {
        assert_eq!(decide(at(None, false), running(), 2), Decision::AnyReplica);
        for ctx in [
            Context {
                store_lost: true,
                ..running()
            },
            Context {
                cluster_changed: true,
                ..running()
            },
        ] {
            assert_eq!(
                decide(at(None, false), ctx, 2),
                Decision::NotProvable(lsn(0))
            );
        }
    }

    #[test]
    fn without_replicas_nothing_is_unknown() {
        // No replicas configured: the router sends everything to the primary anyway; the
        // decision only passes the position on.
        let ctx = Context {
            unknown_cluster: true,
            unknown_timeline: true,
            ..Context::default()
        };
        assert_eq!(
            decide(at(Some(5), false), ctx, 0),
            Decision::Prove(req(5, 0))
        );
        assert_eq!(decide(at(None, false), ctx, 0), Decision::AnyReplica);
    }

    #[test]
    fn a_key_and_a_token_need_the_newer_of_the_two() {
        let system = 7;
        let token = |l| CausalToken {
            lsn: lsn(l),
            timeline: 2,
            system_id: system,
        };
        let with = |d, l| with_token(d, &token(l), system, 2, true);
        // The token newer than the key's record, and the other way round.
        assert_eq!(
            with(Decision::Prove(req(10, 2)), 20),
            Decision::Prove(req(20, 2))
        );
        assert_eq!(
            with(Decision::Prove(req(30, 2)), 20),
            Decision::Prove(req(30, 2))
        );
        // Nothing recorded for the key: the token alone.
        assert_eq!(with(Decision::AnyReplica, 20), Decision::Prove(req(20, 2)));
        // The primary stays the primary.
        assert_eq!(with(Decision::Forced, 20), Decision::Forced);
        assert_eq!(with(Decision::StoreError, 20), Decision::StoreError);
        assert_eq!(
            with(Decision::NotProvable(lsn(10)), 20),
            Decision::NotProvable(lsn(20))
        );
        // A token of another cluster or timeline proves nothing, whatever the key has.
        let other = CausalToken {
            lsn: lsn(5),
            timeline: 2,
            system_id: system + 1,
        };
        assert_eq!(
            with_token(Decision::Prove(req(10, 2)), &other, system, 2, true),
            Decision::NotProvable(lsn(10))
        );
        assert_eq!(
            with_token(Decision::AnyReplica, &token(5), system, 3, true),
            Decision::NotProvable(lsn(5))
        );
        // Without replicas the key's decision stands (the primary either way).
        assert_eq!(
            with_token(Decision::AnyReplica, &other, system, 2, false),
            Decision::AnyReplica
        );
    }
}
