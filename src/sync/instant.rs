//! An `Option<Instant>` in one atomic word: when something last happened, written by one
//! thread and read by every pick without a lock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A process-wide origin for instants stored in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as nanoseconds since a process-wide origin, plus one (0 stays free for "never").
pub(crate) fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64 + 1
}

/// When something last happened (`None`: never). Loads and stores only: no read-modify-write.
#[derive(Debug, Default)]
pub(crate) struct AtomicInstant(AtomicU64);

impl AtomicInstant {
    /// Records `t` (instants before the process-wide origin count as the origin).
    pub(crate) fn set(&self, t: Instant) {
        self.0.store(nanos_since_epoch(t), Ordering::Release);
    }

    /// Whether it happened less than `window` before `now`.
    pub(crate) fn within(&self, window: Duration, now: Instant) -> bool {
        match self.0.load(Ordering::Acquire) {
            0 => false,
            at => {
                let now = nanos_since_epoch(now);
                now.saturating_sub(at) < u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }

    /// When it last happened, if ever.
    pub(crate) fn get(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            at => Some(epoch() + Duration::from_nanos(at - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_then_within_a_window() {
        let a = AtomicInstant::default();
        let now = Instant::now();
        assert!(!a.within(Duration::MAX, now));
        assert_eq!(a.get(), None);
        a.set(now);
        assert!(a.within(Duration::from_secs(1), now));
        assert!(!a.within(Duration::from_secs(1), now + Duration::from_secs(1)));
        assert!(a.within(Duration::MAX, now + Duration::from_secs(1)));
        assert!(a.get().is_some_and(|t| t <= now + Duration::from_micros(1)));
    }
}
