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
