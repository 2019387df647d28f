//! References to a host that one of dlb's own threads holds for one piece of I/O (a probe, a
//! live check): counted, so that a stopping monitor can tell them from the references callers
//! hold (routes, old snapshots) and does not wait for a connect to a vanished host.
//!
//! A stopping monitor waits (a bounded time) until nothing but itself refers to a host, so that
//! the host's pools are closed on a dlb thread, never on a caller's (possibly async) thread. A
//! probe or a checker thread in the middle of a connect to a black-holed host also refers to
//! it, for up to its connect timeout; that thread is a dlb thread, and it closes the host
//! itself when it lets go last. So the monitor does not wait for it.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Something that counts the [`IoRef`]s to it.
pub(crate) trait Lendable {
    /// How many [`IoRef`]s to this value exist (at most; see [`IoRef`]).
    fn io_refs(&self) -> &AtomicUsize;
}

/// A strong reference held by a dlb thread for one piece of I/O. The count is raised after the
/// reference is taken and lowered before it is released, so the count never exceeds the
/// number of such references alive: read it before and after a strong count (see
/// [`only_io_refs`]) and a caller's reference is never mistaken for one of these.
pub(crate) struct IoRef<T: ?Sized + Lendable>(Arc<T>);

impl<T: ?Sized + Lendable> IoRef<T> {
    /// Takes `value` (an `Arc` already cloned) as an I/O reference.
    pub(crate) fn new(value: Arc<T>) -> IoRef<T> {
        value.io_refs().fetch_add(1, Ordering::AcqRel);
        IoRef(value)
    }
}

impl<T: ?Sized + Lendable> Deref for IoRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + Lendable> Drop for IoRef<T> {
    fn drop(&mut self) {
        // Lowered first; the `Arc` field is released right after.
        self.0.io_refs().fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether every strong reference to `value` beyond `known` is an [`IoRef`]. The I/O count is
/// read before and after the strong count and the smaller reading used: an `IoRef` taken or
/// released meanwhile can only make the answer `false`, never hide another reference.
pub(crate) fn only_io_refs<T: ?Sized + Lendable>(value: &Arc<T>, known: usize) -> bool {
    let before = value.io_refs().load(Ordering::Acquire);
    let strong = Arc::strong_count(value);
    let after = value.io_refs().load(Ordering::Acquire);
    strong <= known + before.min(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Thing(AtomicUsize);

    impl Lendable for Thing {
        fn io_refs(&self) -> &AtomicUsize {
            &self.0
        }
    }

    #[test]
    fn io_refs_are_told_from_other_references() {
        let thing = Arc::new(Thing::default());
        assert!(only_io_refs(&thing, 1));
        let io = IoRef::new(thing.clone());
        assert!(
            only_io_refs(&thing, 1),
            "an I/O reference is not waited for"
        );
        let other = thing.clone();
        assert!(!only_io_refs(&thing, 1), "a caller's reference is");
        drop(io);
        assert!(!only_io_refs(&thing, 1));
        drop(other);
        assert!(only_io_refs(&thing, 1));
        assert_eq!(thing.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reference_taken_but_not_yet_counted_is_waited_for() {
        let thing = Arc::new(Thing::default());
        let _not_yet_counted = thing.clone();
        assert!(!only_io_refs(&thing, 1));
    }
}
