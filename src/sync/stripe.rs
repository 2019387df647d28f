//! Per-thread striping: hot-path state (round-robin cursors, pick counters, host handles) is
//! kept once per stripe, each in its own cache line, so threads on different stripes never
//! write to the same line.
//!
//! A thread owns one of the first [`OWNED`] stripes while it lives (claimed on first use,
//! released when it exits): only its owner writes an owned stripe's counters, so an increment
//! there is a load and a store, not an atomic read-modify-write, and none is lost. Threads
//! beyond [`OWNED`] at once (and a thread that is exiting) share the last stripe, where
//! counters use atomic increments.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;

/// Stripes of the per-thread counters, cursors and host handles: [`OWNED`] owned ones and the
/// shared one.
pub(crate) const STRIPES: usize = 17;

/// Stripes a thread can own; stripe `OWNED` is the shared one.
const OWNED: usize = STRIPES - 1;

/// Which owned stripes a live thread holds.
static TAKEN: [AtomicBool; OWNED] = [const { AtomicBool::new(false) }; OWNED];

/// A thread's stripe, released when the thread exits.
struct Claim(usize);

impl Claim {
    fn new() -> Claim {
        Claim(
            (0..OWNED)
                .find(|&i| {
                    TAKEN[i]
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                })
                .unwrap_or(OWNED),
        )
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.0 < OWNED {
            // Release: the next owner's claim (acquire) sees this thread's counts.
            TAKEN[self.0].store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static STRIPE: Claim = Claim::new();
}

/// This thread's stripe: one it owns while it lives, or the shared one.
#[inline]
pub(crate) fn stripe() -> usize {
    STRIPE.try_with(|c| c.0).unwrap_or(OWNED)
}

/// Adds one to `c`, a counter of stripe `at` (this thread's): a load and a store on an owned
/// stripe (only its owner writes it), an atomic increment on the shared one.
#[inline]
fn add(c: &AtomicU64, at: usize, n: u64) {
    if at < OWNED {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        c.fetch_add(n, Ordering::Relaxed);
    }
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
        self.next_at(stripe())
    }

    /// The next position for stripe `i` (this thread's). A load and a store, not an atomic
    /// increment: only threads sharing the shared stripe (more than [`OWNED`] at once) can both
    /// get the same position, which only bends their round-robin a little.
    #[inline]
    pub(crate) fn next_at(&self, i: usize) -> usize {
        let c = &self.stripes[i];
        let v = c.load(Ordering::Relaxed);
        c.store(v.wrapping_add(1), Ordering::Relaxed);
        v
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
        self.incr_at(stripe(), i);
    }

    /// Adds one to counter `i` of stripe `at` (this thread's).
    #[inline]
    pub(crate) fn incr_at(&self, at: usize, i: usize) {
        add(&self.stripes[at][i], at, 1);
    }

    pub(crate) fn get(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[i].load(Ordering::Relaxed))
            .sum()
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds (Prometheus `le`): the same
/// fixed buckets for every histogram, 100 µs to 10 s; slower observations count in `+Inf`
/// only.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// One stripe of a histogram: a count per bucket (not cumulative; the last is `+Inf`) and the
/// sum of the observations in nanoseconds.
struct HistogramCells {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// A latency histogram over [`LATENCY_BUCKETS`], one copy per stripe: an observation is two
/// relaxed additions to this thread's stripe (no lock, no shared cache line); a read sums
/// the stripes.
pub(crate) struct StripedHistogram {
    stripes: Box<[CachePadded<HistogramCells>]>,
}

impl StripedHistogram {
    pub(crate) fn new() -> Self {
        StripedHistogram {
            stripes: (0..STRIPES)
                .map(|_| {
                    CachePadded::new(HistogramCells {
                        buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                        sum_ns: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    /// Counts one observation of `d`.
    #[inline]
    pub(crate) fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&le| le < secs);
        let at = stripe();
        let cells = &self.stripes[at];
        add(&cells.buckets[i], at, 1);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        add(&cells.sum_ns, at, ns);
    }

    /// The sum over the stripes: cumulative counts per bucket (as Prometheus wants them), the
    /// total count and the sum in seconds.
    pub(crate) fn read(&self) -> (Vec<u64>, u64, f64) {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum_ns: u128 = 0;
        for s in self.stripes.iter() {
            for (c, b) in counts.iter_mut().zip(&s.buckets) {
                *c += b.load(Ordering::Relaxed);
            }
            sum_ns += u128::from(s.sum_ns.load(Ordering::Relaxed));
        }
        let mut running = 0;
        let cumulative: Vec<u64> = counts
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        let total = running;
        (
            cumulative[..LATENCY_BUCKETS.len()].to_vec(),
            total,
            sum_ns as f64 / 1e9,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_with_more_threads_than_owned_stripes_and_thread_churn() {
        let c = std::sync::Arc::new(StripedCounters::<2>::new());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(OWNED + 8));
        for round in 0..3 {
            // OWNED + 8 threads at once: 8 of them share the shared stripe.
            let hs: Vec<_> = (0..OWNED + 8)
                .map(|_| {
                    let (c, barrier) = (c.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..10_000 {
                            c.incr(round % 2);
                        }
                    })
                })
                .collect();
            hs.into_iter().for_each(|t| t.join().unwrap());
        }
        // Threads of later rounds took over the stripes of exited ones and kept counting.
        assert_eq!(c.get(0), 2 * (OWNED as u64 + 8) * 10_000);
        assert_eq!(c.get(1), (OWNED as u64 + 8) * 10_000);
    }

    #[test]
    fn histogram_buckets_are_cumulative_across_threads() {
        use std::time::Duration;
        let h = std::sync::Arc::new(StripedHistogram::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    h.observe(Duration::from_micros(50)); // first bucket
                    h.observe(Duration::from_millis(1)); // le 0.001 exactly
                    h.observe(Duration::from_secs(60)); // +Inf only
                })
            })
            .collect();
        hs.into_iter().for_each(|t| t.join().unwrap());
        let (buckets, count, sum) = h.read();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len());
        assert_eq!(buckets[0], 4);
        assert_eq!(buckets[3], 8, "le=0.001 holds 1 ms");
        assert_eq!(*buckets.last().unwrap(), 8);
        assert_eq!(count, 12);
        assert!((sum - 4.0 * 60.0012).abs() < 1e-3, "{sum}");
    }

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
}
