//! Noticing that a shared LSN store forgot entries.
//!
//! A Redis server that restarts without persistence, is flushed, evicts keys or fails over to
//! a replica that missed writes forgets recorded LSNs, and a key whose entry is gone looks like
//! a key that was never written: its reads would go to any replica. Each server reports a loss
//! *epoch* with every record and every read that finds nothing (and the monitor asks for one
//! after every check): its `run_id`, `evicted_keys` and flush counts. A known server whose
//! epoch changed has lost keys; [`LossWatch::last_loss`] says when that was last seen, and
//! routing sends keyed reads that find nothing to the primary for `sticky_ttl_s` after it.
//!
//! The first epoch seen from a server is its baseline: a loss before this process first talked
//! to a server is not seen. Keys deleted by hand (`DEL`, `UNLINK`) are not seen either.

use std::collections::HashMap;
use std::time::Instant;

use log::warn;
use parking_lot::Mutex;

use crate::redact::bounded;
use crate::sync::instant::AtomicInstant;

/// Servers remembered at most (a Cluster's nodes); more are not tracked (a bound against a
/// hostile or misconfigured server sending a new node id every time).
const MAX_NODES: usize = 1024;

/// The epochs seen per server, and when one last changed.
#[derive(Debug, Default)]
pub(crate) struct LossWatch {
    /// The last epoch seen per server (a Cluster node's id; empty for a standalone server).
    seen: Mutex<HashMap<String, String>>,
    lost_at: AtomicInstant,
}

impl LossWatch {
    /// Takes in `epoch` as read from `node` at `now`; returns whether it shows a loss (a known
    /// server whose epoch changed). `target` names the store in the warning. Memory only.
    pub(crate) fn observe(&self, node: &str, epoch: &str, now: Instant, target: &str) -> bool {
        let mut seen = self.seen.lock();
        let old = match seen.get_mut(node) {
            Some(old) if old == epoch => return false,
            Some(old) => std::mem::replace(old, epoch.to_string()),
            None => {
                if seen.len() < MAX_NODES {
                    seen.insert(node.to_string(), epoch.to_string());
                }
                return false;
            }
        };
        drop(seen);
        self.lost_at.set(now);
        warn!(
            target: "dlb",
            "redis LSN store on {target}: a server may have lost recorded LSNs (epoch {} -> {}: restart, flush or eviction); keyed reads with nothing recorded go to the primary for sticky_ttl_s",
            bounded(&old),
            bounded(epoch)
        );
        true
    }

    /// When a loss was last seen, if ever. One atomic load.
    pub(crate) fn last_loss(&self) -> Option<Instant> {
        self.lost_at.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_epoch_is_a_baseline_and_a_change_is_a_loss() {
        let w = LossWatch::default();
        let t = Instant::now();
        assert!(!w.observe("", "run1 0 0 0", t, "r"));
        assert_eq!(w.last_loss(), None);
        assert!(!w.observe("", "run1 0 0 0", t, "r"));
        assert!(w.observe("", "run1 0 1 0", t, "r"), "a flush");
        assert!(w.last_loss().is_some());
        assert!(!w.observe("", "run1 0 1 0", t, "r"));
        assert!(w.observe("", "run2 0 0 0", t, "r"), "a restart");
        assert!(w.observe("", "run2 3 0 0", t, "r"), "an eviction");
    }

    #[test]
    fn cluster_nodes_are_tracked_apart_and_bounded() {
        let w = LossWatch::default();
        let t = Instant::now();
        assert!(!w.observe("a", "x", t, "r"));
        assert!(!w.observe("b", "y", t, "r"));
        assert!(!w.observe("a", "x", t, "r"));
        assert!(w.observe("b", "z", t, "r"));
        for i in 0..2 * MAX_NODES {
            w.observe(&format!("n{i}"), "e", t, "r");
        }
        assert!(w.seen.lock().len() <= MAX_NODES);
    }
}
