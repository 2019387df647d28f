//! Sticky picks: a replica that has replayed a given LSN, from the cached replay positions or,
//! when none qualifies, from live checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel;

use super::Snapshot;
use crate::counters::Counters;
use crate::host::{HostHandle, StripedHost};
use crate::lsn::Lsn;
use crate::stripe::StripedCursor;

const LIVE_SQL: &str = "SELECT pg_last_wal_replay_lsn()::text";

/// First healthy replica, in round-robin order, whose cached replay LSN is at least `min`.
/// No I/O.
pub(super) fn cached(s: &Snapshot, cursor: &StripedCursor, min: Lsn) -> Option<Arc<HostHandle>> {
    let n = s.eligible.len();
    if n == 0 {
        return None;
    }
    let start = cursor.next();
    (0..n)
        .map(|i| &s.eligible[(start + i) % n])
        .find(|h| h.replay_lsn().is_some_and(|l| l >= min))
        .map(|h| h.handle())
}

/// Asks every candidate for its replay LSN in parallel (one thread each, a pooled connection
/// each); returns the first that has reached `min` within `budget`, and raises the cached
/// positions of those that answer. An answer from a connection that reached another server
/// than the one the host's cache describes proves nothing and is ignored. Blocks for at most `budget`; a zero budget does nothing.
pub(super) fn live(
    candidates: Vec<Arc<StripedHost>>,
    min: Lsn,
    budget: Duration,
    counters: &Counters,
) -> Option<Arc<HostHandle>> {
    if budget.is_zero() || candidates.is_empty() {
        return None;
    }
    let deadline = Instant::now() + budget;
    let (tx, rx) = channel::bounded(candidates.len());
    for host in candidates {
        let tx = tx.clone();
        counters.count(&counters.live_lsn_checks);
        let spawned = std::thread::Builder::new()
            .name("dlb-lsn-check".into())
            .spawn(move || {
                // Counts only when the connection reached the server the cache describes.
                let lsn = host.pool.get_timeout(budget).ok().and_then(|mut c| {
                    let row = c.client.query_one(LIVE_SQL, &[]).ok()?;
                    let lsn = row.get::<_, Option<String>>(0)?.parse::<Lsn>().ok()?;
                    host.observe_replay_lsn(c.identity_tag(), lsn)
                        .then_some(lsn)
                });
                let _ = tx.send((host, lsn));
            });
        if spawned.is_err() {
            break;
        }
    }
    drop(tx);
    while let Ok((host, lsn)) = rx.recv_deadline(deadline) {
        if lsn.is_some_and(|l| l >= min) {
            return Some(host.handle());
        }
    }
    None
}
