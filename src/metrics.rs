//! Counters and gauges, rendered in the Prometheus text format.
//!
//! Pick counters sit on the hot path, so they are striped per thread (one cache line per
//! stripe) and summed when rendered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;

use crate::route::Reason;
use crate::state::QuarantineReason;

/// Stripes of the per-thread counters, cursors and host handles.
pub(crate) const STRIPES: usize = 16;

thread_local! {
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

/// This thread's stripe (threads are spread over the stripes round-robin as they first ask).
#[inline]
pub(crate) fn stripe() -> usize {
    STRIPE.with(|s| *s)
}

/// A round-robin cursor striped per thread: each thread advances its own stripe, so picks on
/// different threads never write to the same cache line. Stripe `i` starts at `i`, so threads
/// begin at different replicas; each thread goes round-robin, and so does the sum of them.
pub(crate) struct StripedCursor {
    stripes: Box<[CachePadded<AtomicUsize>]>,
}

impl StripedCursor {
    pub(crate) fn new() -> Self {
        StripedCursor {
            stripes: (0..STRIPES)
                .map(|i| CachePadded::new(AtomicUsize::new(i)))
                .collect(),
        }
    }

    /// The next position for this thread.
    #[inline]
    pub(crate) fn next(&self) -> usize {
        self.stripes[stripe()].fetch_add(1, Ordering::Relaxed)
    }
}

/// Relaxed counters indexed by an enum, one copy per stripe.
pub(crate) struct StripedCounters<const N: usize> {
    stripes: Box<[CachePadded<[AtomicU64; N]>]>,
}

impl<const N: usize> StripedCounters<N> {
    pub(crate) fn new() -> Self {
        StripedCounters {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn incr(&self, i: usize) {
        self.stripes[stripe()][i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[i].load(Ordering::Relaxed))
            .sum()
    }
}

/// Every counter of a balancer.
pub(crate) struct Metrics {
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
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
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
        }
    }

    #[inline]
    pub(crate) fn count_pick(&self, reason: Reason) {
        self.picks.incr(reason as usize);
    }
}

/// Builds a Prometheus exposition text.
pub(crate) struct Exposition(String);

impl Exposition {
    pub(crate) fn new() -> Self {
        Exposition(String::with_capacity(4096))
    }

    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP dlb_{name} {help}");
        let _ = writeln!(self.0, "# TYPE dlb_{name} {kind}");
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let _ = write!(self.0, "dlb_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    pub(crate) fn finish(self) -> String {
        self.0
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counters_sum_across_threads() {
        let c = std::sync::Arc::new(StripedCounters::<3>::new());
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.incr(1)))
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(1), 8000);
        assert_eq!(c.get(0), 0);
    }

    #[test]
    fn exposition_escapes_labels() {
        let mut e = Exposition::new();
        e.family("x", "gauge", "help");
        e.sample("x", &[("a", "q\"b\\")], 1);
        assert_eq!(
            e.finish(),
            "# HELP dlb_x help\n# TYPE dlb_x gauge\ndlb_x{a=\"q\\\"b\\\\\"} 1\n"
        );
    }
}
