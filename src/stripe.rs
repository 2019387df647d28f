//! Per-thread striping: hot-path state (round-robin cursors, pick counters, host handles) is
//! kept once per stripe, each in its own cache line, so threads on different stripes never
//! write to the same line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;

/// Stripes of the per-thread counters, cursors and host handles.
pub(crate) const STRIPES: usize = 16;

thread_local! {
    /// This thread's stripe; `STRIPES` until it first asks.
    static STRIPE: Cell<usize> = const { Cell::new(STRIPES) };
}

/// This thread's stripe (threads are spread over the stripes round-robin as they first ask).
#[inline]
pub(crate) fn stripe() -> usize {
    STRIPE.with(|s| match s.get() {
        STRIPES => {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let mine = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(mine);
            mine
        }
        mine => mine,
    })
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
    /// increment: only threads sharing a stripe (more than [`STRIPES`] at once) can both get
    /// the same position, which only bends their round-robin a little.
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
        self.stripes[at][i].fetch_add(1, Ordering::Relaxed);
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
