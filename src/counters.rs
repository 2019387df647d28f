//! The counters of a balancer (rendered by [`crate::observability`]). Pick counters and the
//! latency histograms sit on the hot path, so they are striped per thread ([`crate::sync::stripe`])
//! and summed when read; the rest are plain relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::labels::{QuarantineReason, Reason, Role, StoreOp};
use crate::sync::stripe::{StripedCounters, StripedHistogram};

/// Declares the plain counters once: the atomic fields of [`Counters`], the public fields of
/// [`CounterValues`] (documented with the metric's help text) and the metric name of each.
macro_rules! plain_counters {
    ($( $field:ident => $metric:literal, $help:literal; )+) => {
        /// Every counter of a balancer.
        pub(crate) struct Counters {
            pub(crate) picks: StripedCounters<{ Reason::COUNT }>,
            pub(crate) quarantines: [AtomicU64; QuarantineReason::COUNT],
            pub(crate) readmissions: [AtomicU64; QuarantineReason::COUNT],
            /// Monitor probe latency, by [`Role`].
            pub(crate) probe_latency: [StripedHistogram; Role::COUNT],
            /// Live proofs of sticky reads ([`crate::freshness::prove`]): one observation per
            /// proof, all its checks together.
            pub(crate) live_check_latency: StripedHistogram,
            /// LSN store operations, by [`StoreOp`].
            pub(crate) store_latency: [StripedHistogram; StoreOp::COUNT],
            /// Sticky picks (a key or a minimum LSN), store read and live checks included.
            pub(crate) sticky_pick_latency: StripedHistogram,
            $( pub(crate) $field: AtomicU64, )+
        }

        impl Counters {
            pub(crate) fn new() -> Counters {
                Counters {
                    picks: StripedCounters::new(),
                    quarantines: Default::default(),
                    readmissions: Default::default(),
                    probe_latency: std::array::from_fn(|_| StripedHistogram::new()),
                    live_check_latency: StripedHistogram::new(),
                    store_latency: std::array::from_fn(|_| StripedHistogram::new()),
                    sticky_pick_latency: StripedHistogram::new(),
                    $( $field: AtomicU64::new(0), )+
                }
            }

            /// The plain counters' values now.
            pub(crate) fn values(&self) -> CounterValues {
                CounterValues { $( $field: self.$field.load(Ordering::Relaxed), )+ }
            }
        }

        /// The plain counters of a balancer, read at one moment (part of
        /// [`crate::Metrics`]). Each is exported as `<prefix><name>_total`.
        #[derive(Clone, Debug, Default, PartialEq, Serialize)]
        #[non_exhaustive]
        pub struct CounterValues {
            $( #[doc = $help] pub $field: u64, )+
        }

        impl CounterValues {
            /// Each counter's metric name (without prefix), help text and value.
            pub(crate) fn families(&self) -> [(&'static str, &'static str, u64); [$($metric),+].len()] {
                [ $( ($metric, $help, self.$field), )+ ]
            }
        }
    };
}

plain_counters! {
    checks => "checks_total", "Monitor checks run.";
    primary_check_errors => "primary_check_errors_total", "Monitor checks whose primary probe failed.";
    replica_check_errors => "replica_check_errors_total", "Replica probes that failed.";
    live_lsn_checks => "live_lsn_checks_total", "Live replay-LSN checks made or asked for by sticky reads.";
    lsn_recorded => "lsn_recorded_total", "LSNs recorded for sticking keys.";
    store_errors => "store_errors_total", "LSN store operations that failed.";
    reported_failures => "reported_failures_total", "Network failures reported by callers.";
    dns_refreshes => "dns_refreshes_total", "DNS discovery refreshes attempted.";
    dns_errors => "dns_errors_total", "DNS refreshes that failed or came back empty (the last good list stays).";
    replicas_added => "replicas_added_total", "Replicas that joined the list after start-up.";
    replicas_removed => "replicas_removed_total", "Replicas that left the list (then drained).";
    replicas_drained => "replicas_drained_total", "Removed replicas whose pools were closed.";
    monitor_panics => "monitor_panics_total", "Monitor checks that panicked (a bug; the monitor goes on with the next check).";
}

impl Counters {
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

    /// Runs the store operation `f` and observes how long it took.
    #[inline]
    pub(crate) fn time_store<T>(&self, op: StoreOp, f: impl FnOnce() -> T) -> T {
        timed(&self.store_latency[op as usize], f)
    }
}

/// Runs `f` and observes its duration in `h`.
#[inline]
pub(crate) fn timed<T>(h: &StripedHistogram, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    h.observe(start.elapsed());
    out
}
