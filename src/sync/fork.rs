//! Which side of a `fork` this is, without a system call: a counter the child increments
//! (`pthread_atfork`), so a balancer can tell cheaply on every call whether it is used in the
//! process that made it.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many `fork`s separate this process from the first one that called this (which installs
/// the handler: call it before anything that must notice a later fork is made).
#[inline]
pub(crate) fn generation() -> u64 {
    static INIT: Once = Once::new();
    if !INIT.is_completed() {
        // SAFETY: the handler only increments an atomic.
        INIT.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        });
    }
    FORKS.load(Ordering::Relaxed)
}

/// Threads the parking table is grown for, once per process (see [`make_room_in_parking_table`]).
const PARKING_ROOM: usize = 96;

/// Grows parking_lot's process-wide table of parked threads, once, to room for
/// [`PARKING_ROOM`] threads at once.
///
/// parking_lot (under r2d2's pools and scheduler and dlb's queues) sizes that table for the most threads
/// that have used it at the same time, and grows it, rehashing every entry, when a new thread
/// needs more room. In a forked child the table still lists the parent's parked threads (the
/// pool workers, idle there), and glibc hands their stacks, where those entries live, to the
/// child's new threads: a rehash then walks overwritten entries and can loop for ever (seen: a
/// balancer made in a child hung in its first `record_lsn`). With room made in the first
/// process, a child's new balancer does not grow the table. Costs ~100 short-lived threads
/// (small stacks) once, in the first `Balancer::new`; blocks until they are gone.
pub(crate) fn make_room_in_parking_table() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        use std::sync::atomic::AtomicUsize;
        use std::sync::{Arc, RwLock};
        use std::time::Duration;

        // Held by this thread until every helper has used parking_lot: they are all alive at
        // once, which is what sizes the table. A std lock (futex), not a parking_lot one.
        let gate = Arc::new(RwLock::new(()));
        let held = gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready = Arc::new(AtomicUsize::new(0));
        let helpers: Vec<_> = (0..PARKING_ROOM)
            .filter_map(|_| {
                let (gate, ready) = (gate.clone(), ready.clone());
                std::thread::Builder::new()
                    .name("dlb-init".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        // A timed wait registers this thread with parking_lot (the table
                        // grows): with both versions in the tree, each has a table (r2d2's
                        // pools use 0.12, its scheduler 0.13).
                        let (m, c) = (parking_lot::Mutex::new(()), parking_lot::Condvar::new());
                        c.wait_for(&mut m.lock(), Duration::ZERO);
                        let (m, c) = (
                            parking_lot_013::Mutex::new(()),
                            parking_lot_013::Condvar::new(),
                        );
                        c.wait_for(&mut m.lock(), Duration::ZERO);
                        ready.fetch_add(1, Ordering::Release);
                        drop(gate.read());
                    })
                    .ok()
            })
            .collect();
        while ready.load(Ordering::Acquire) < helpers.len() {
            std::thread::yield_now();
        }
        drop(held);
        for h in helpers {
            let _ = h.join();
        }
    });
}
