//! Per-thread striping: hot-path state (round-robin cursors, pick counters, host handles) is
//! kept once per stripe, each in its own cache line, so threads on different stripes never
//! write to the same line.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;

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
}
