//! Sticky picks: a replica that has replayed a given LSN, from the cached replay positions or,
//! when none qualifies, from live checks.

use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel;

use super::Snapshot;
use crate::counters::Counters;
use crate::freshness::{self, Requirement};
use crate::server::host::{HostHandle, StripedHost};
use crate::sync::stripe::StripedCursor;

/// First healthy replica, in round-robin order, whose cached replay position proves `req`
/// ([`freshness::proves`]). No I/O.
pub(super) fn cached(
    s: &Snapshot,
    cursor: &StripedCursor,
    req: Requirement,
) -> Option<Arc<HostHandle>> {
    let n = s.eligible.len();
    if n == 0 {
        return None;
    }
    let start = cursor.next();
    (0..n)
        .map(|i| &s.eligible[(start + i) % n])
        .find(|h| {
            h.replay_position()
                .is_some_and(|p| freshness::proves(p, req))
        })
        .map(|h| h.handle())
}

/// Asks the candidates' live checkers ([`crate::server::checker`]) for their replay positions: the
/// first (the round-robin candidate) alone, on the caller's thread when its checker's
/// connection is idle, then, when it does not prove `req`, the others in parallel on their
/// checkers' threads. Returns the first whose answer proves `req` ([`freshness::proves`])
/// before `deadline`; every answer raises the cached position of its host. Spawns no thread;
/// blocks until `deadline` at most.
pub(super) fn live(
    candidates: &[Arc<StripedHost>],
    req: Requirement,
    deadline: Instant,
    counters: &Counters,
) -> Option<Arc<HostHandle>> {
    let (first, rest) = candidates.split_first()?;
    if Instant::now() >= deadline {
        return None;
    }
    let (tx, rx) = channel::bounded(candidates.len());
    let ask = |i: usize, h: &Arc<StripedHost>| {
        counters.count(&counters.live_lsn_checks);
        h.host().ask_checker(i, &tx)
    };
    counters.count(&counters.live_lsn_checks);
    let mut waiting = match first.host().check_here(deadline) {
        Some(Some(pos)) if freshness::proves(pos, req) => return Some(first.handle()),
        Some(_) => 0,
        None => usize::from(first.host().ask_checker(0, &tx)),
    };
    let mut rest_asked = false;
    loop {
        if waiting == 0 {
            if rest_asked {
                return None;
            }
            rest_asked = true;
            waiting = rest
                .iter()
                .enumerate()
                .filter(|(i, h)| ask(i + 1, h))
                .count();
            continue;
        }
        let (i, pos) = rx.recv_deadline(deadline).ok()?;
        waiting -= 1;
        if pos.is_some_and(|p| freshness::proves(p, req)) {
            return Some(candidates[i].handle());
        }
    }
}

/// The candidates of a live check: the healthy replicas, starting at the round-robin position.
pub(super) fn candidates(s: &Snapshot, cursor: &StripedCursor) -> Vec<Arc<StripedHost>> {
    let n = s.eligible.len();
    if n == 0 {
        return Vec::new();
    }
    let start = cursor.next();
    (0..n)
        .map(|i| s.eligible[(start + i) % n].clone())
        .collect()
}
