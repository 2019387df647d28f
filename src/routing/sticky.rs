//! Sticky picks: a replica that has replayed a given LSN, from the cached replay positions or,
//! when none qualifies, from live checks ([`freshness::prove`] over the replicas' live
//! checkers).

use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};

use super::Snapshot;
use crate::counters::Counters;
use crate::freshness::{self, Answer, Position, Prover, Requirement};
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

/// Proves `req` on the candidates' live checkers ([`crate::server::checker`]) with
/// [`freshness::prove`]: the first (the round-robin candidate) alone, on the caller's thread
/// when its checker's connection is idle, then, when it does not prove `req`, the others in
/// parallel on their checkers' threads. Returns the first proven before `deadline`. Spawns no
/// thread; blocks until `deadline` at most.
pub(super) fn live(
    candidates: &[Arc<StripedHost>],
    req: Requirement,
    deadline: Instant,
    counters: &Counters,
) -> Option<Arc<HostHandle>> {
    let (tx, rx) = channel::bounded(candidates.len());
    let prover = Checkers { tx, rx };
    freshness::prove(&prover, candidates, req, deadline, counters)
        .map(|(i, ())| candidates[i].handle())
}

/// The live checkers of a handed-out DSN's candidates, as a [`Prover`]: a check on the
/// caller's thread when a checker connection is idle, else a question to the checker's thread,
/// answered on `rx` with the candidate's index.
struct Checkers {
    tx: Sender<(usize, Option<Position>)>,
    rx: Receiver<(usize, Option<Position>)>,
}

/// A checker's answer: its position, or nothing. The checker does not say why it has none (a
/// failed query, an unreadable position, a connection that reached another server than the one
/// the cache describes): never a host failure here; the monitor's probes judge the host.
fn answer(pos: Option<Position>) -> Answer<()> {
    pos.map_or(Answer::Nothing, |p| Answer::Read(p, ()))
}

impl Prover for Checkers {
    type Candidate = Arc<StripedHost>;
    type Served = ();
    const PARALLEL: bool = true;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn check_here(&self, c: &Arc<StripedHost>, deadline: Instant) -> Option<Answer<()>> {
        c.host().check_here(deadline).map(answer)
    }

    fn ask(&self, index: usize, c: &Arc<StripedHost>) -> bool {
        c.host().ask_checker(index, &self.tx)
    }

    fn collect(&self, deadline: Instant) -> Option<(usize, Answer<()>)> {
        let (i, pos) = self.rx.recv_deadline(deadline).ok()?;
        Some((i, answer(pos)))
    }

    /// Done already: the checker raises the cache with every position it reads, for the server
    /// its connection reached, and answers only the positions the cache took.
    fn raise(&self, _: &Arc<StripedHost>, (): &(), _: Position) {}

    /// Never asked: a checker's answer is never a host failure (see [`answer`]).
    fn report(&self, _: &Arc<StripedHost>) {}
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
