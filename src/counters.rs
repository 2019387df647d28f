//! The counters of a balancer (rendered by [`crate::observability`]). Pick counters sit on the hot path, so they are striped per
//! thread ([`crate::stripe`]) and summed when read; the rest are plain relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::labels::{QuarantineReason, Reason};
use crate::stripe::StripedCounters;

/// Every counter of a balancer.
pub(crate) struct Counters {
    pub(crate) picks: StripedCounters<{ Reason::COUNT }>,
    pub(crate) quarantines: [AtomicU64; QuarantineReason::COUNT],
    pub(crate) readmissions: [AtomicU64; QuarantineReason::COUNT],
    pub(crate) checks: AtomicU64,
    pub(crate) primary_check_errors: AtomicU64,
    pub(crate) replica_check_errors: AtomicU64,
    pub(crate) live_lsn_checks: AtomicU64,
    pub(crate) lsn_recorded: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) reported_failures: AtomicU64,
    pub(crate) dns_refreshes: AtomicU64,
    pub(crate) dns_errors: AtomicU64,
    pub(crate) replicas_added: AtomicU64,
    pub(crate) replicas_removed: AtomicU64,
    pub(crate) replicas_drained: AtomicU64,
    pub(crate) monitor_panics: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            picks: StripedCounters::new(),
            quarantines: Default::default(),
            readmissions: Default::default(),
            checks: AtomicU64::new(0),
            primary_check_errors: AtomicU64::new(0),
            replica_check_errors: AtomicU64::new(0),
            live_lsn_checks: AtomicU64::new(0),
            lsn_recorded: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            reported_failures: AtomicU64::new(0),
            dns_refreshes: AtomicU64::new(0),
            dns_errors: AtomicU64::new(0),
            replicas_added: AtomicU64::new(0),
            replicas_removed: AtomicU64::new(0),
            replicas_drained: AtomicU64::new(0),
            monitor_panics: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn count_pick(&self, reason: Reason) {
        self.picks.incr(reason as usize);
    }

    /// [`Counters::count_pick`] on stripe `at` (this thread's).
    #[inline]
    pub(crate) fn count_pick_at(&self, at: usize, reason: Reason) {
        self.picks.incr_at(at, reason as usize);
    }

    /// Adds one to a (cold-path) counter.
    #[inline]
    pub(crate) fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
