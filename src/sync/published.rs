//! A value published whole by one side (the monitor, a failure report) and read by every pick,
//! without a lock, a reference count or a memory fence on the read side.
//!
//! Readers announce the pointer they read in their thread's hazard slot (a plain store), check
//! that it is still the current one, and clear the slot when done. A writer swaps the pointer,
//! runs an asymmetric fence (Linux `membarrier(PRIVATE_EXPEDITED)`: every running thread of
//! the process passes a full barrier), then frees the old values no slot announces; the others
//! wait for the next publication (or the owner's drop). Where `membarrier` is unavailable,
//! readers fence themselves (`SeqCst`), as crossbeam-epoch does on every pin.
//!
//! This replaces crossbeam-epoch on the pick path, whose process-global collector a `fork`
//! taken while another thread was pinned leaves blocked for ever in the child: here the slots
//! are cleared in the child (`pthread_atfork`), so a balancer made there reclaims as usual.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering, compiler_fence, fence};

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;

/// One thread's hazard slot.
struct Slot {
    /// The value the thread is reading (null: none).
    hazard: AtomicPtr<()>,
    /// A live thread owns the slot.
    in_use: AtomicBool,
    /// The slot made before this one (a list only ever pushed to).
    next: *const CachePadded<Slot>,
}

/// Every slot ever made, newest first (slots of exited threads are reused, never freed). A
/// lock-free list: a `fork` cannot leave it locked in the child.
static SLOTS: AtomicPtr<CachePadded<Slot>> = AtomicPtr::new(std::ptr::null_mut());

/// Every slot ever made.
fn slots() -> impl Iterator<Item = &'static Slot> {
    let mut p = SLOTS.load(Ordering::Acquire).cast_const();
    std::iter::from_fn(move || {
        // SAFETY: slots are leaked, never freed, and linked before they are published.
        let s: &'static CachePadded<Slot> = unsafe { p.as_ref()? };
        p = s.next;
        Some(&**s)
    })
}

/// How readers and writers fence: [`UNKNOWN`], [`ASYMMETRIC`] or [`SYMMETRIC`].
static FENCES: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const ASYMMETRIC: u8 = 1;
const SYMMETRIC: u8 = 2;

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 8;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 16;

/// Chooses the fences (once per process) and installs the fork handler.
fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: plain system calls with integer arguments.
        let registered = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        } == 0;
        FENCES.store(
            if registered { ASYMMETRIC } else { SYMMETRIC },
            Ordering::SeqCst,
        );
        // SAFETY: the handler only stores to atomics of leaked slots.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// In a forked child only the forking thread exists, and it is not reading (it is in `fork`):
/// no announced hazard is real. The `membarrier` registration belongs to the parent's address
/// space: register the child's, or fence on both sides from now on.
extern "C" fn after_fork_in_child() {
    if FENCES.load(Ordering::Relaxed) == ASYMMETRIC {
        // SAFETY: a plain system call with integer arguments.
        let registered = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        } == 0;
        if !registered {
            FENCES.store(SYMMETRIC, Ordering::SeqCst);
        }
    }
    for s in slots() {
        s.hazard.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

/// The reader side's fence between announcing a hazard and checking it still holds.
#[inline]
fn light_fence() {
    if FENCES.load(Ordering::Relaxed) == ASYMMETRIC {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// Set once a `membarrier` call failed after it had been registered: a reader that last looked
/// before that may have fenced with the compiler only, which a writer's own fence cannot pair
/// with, so no replaced value is ever freed again (leaked: one per publication).
static NEVER_FREE: AtomicBool = AtomicBool::new(false);

/// The writer side's fence between unlinking a value and scanning the slots.
fn heavy_fence() {
    if FENCES.load(Ordering::Relaxed) == ASYMMETRIC {
        // SAFETY: a plain system call; registered in `init`.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if r == 0 {
            return;
        }
        // Cannot happen once registered (a seccomp filter installed later could do it): readers
        // fence from now on, and nothing replaced is freed any more.
        NEVER_FREE.store(true, Ordering::SeqCst);
        FENCES.store(SYMMETRIC, Ordering::SeqCst);
    }
    fence(Ordering::SeqCst);
}

/// This thread's slot, claimed on first use and released when the thread exits.
struct Owner(&'static Slot);

impl Owner {
    fn claim() -> Owner {
        for s in slots() {
            if s.in_use
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Owner(s);
            }
        }
        let slot = Box::leak(Box::new(CachePadded::new(Slot {
            hazard: AtomicPtr::new(std::ptr::null_mut()),
            in_use: AtomicBool::new(true),
            next: std::ptr::null(),
        })));
        let mut head = SLOTS.load(Ordering::Acquire);
        loop {
            slot.next = head;
            match SLOTS.compare_exchange_weak(head, slot, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Owner(slot),
                Err(h) => head = h,
            }
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.hazard.store(std::ptr::null_mut(), Ordering::Release);
        self.0.in_use.store(false, Ordering::Release);
    }
}

thread_local! {
    static OWNER: Owner = Owner::claim();
}

/// Clears a slot's hazard when a read ends (also when `f` panics).
struct Announced<'a>(&'a AtomicPtr<()>);

impl Drop for Announced<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// A value replaced whole by writers and read without a lock (see the module notes).
pub(crate) struct Published<T> {
    current: AtomicPtr<T>,
    /// Replaced values some reader may still use; freed by a later publication or the drop.
    retired: Mutex<Vec<Box<T>>>,
}

impl<T> Published<T> {
    pub(crate) fn new(value: T) -> Published<T> {
        init();
        Published {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on the current value. No lock, no atomic read-modify-write, and (with
    /// `membarrier`) no fence. A thread has one hazard slot: a read inside a read (dlb never
    /// nests them) and a thread that cannot keep thread-local state (it is exiting) read under
    /// the publication lock instead (which must then not be nested on the same value).
    #[inline]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let mut f = Some(f);
        let fast = OWNER.try_with(|owner| {
            let slot = &owner.0.hazard;
            if !slot.load(Ordering::Relaxed).is_null() {
                // Nested: overwriting the slot would unprotect the outer read's value.
                return None;
            }
            let _announced = Announced(slot);
            let mut p = self.current.load(Ordering::Acquire);
            let q = loop {
                // Release: the reads of a value this thread read before happen before a
                // writer that sees this announcement frees that value.
                slot.store(p.cast(), Ordering::Release);
                light_fence();
                let q = self.current.load(Ordering::Acquire);
                if q == p {
                    break q;
                }
                p = q;
            };
            // SAFETY: `q` is announced in this thread's slot and was still current after the
            // announcement (fenced): a writer that unlinks it afterwards sees the slot and does
            // not free it until the announcement is gone.
            Some((f.take().expect("called once"))(unsafe { &*q }))
        });
        match fast {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => {
                let _retired = self.retired.lock();
                // SAFETY: writers free old values only under this lock; the current one is
                // freed only by `Drop`, which cannot run while `&self` lives.
                (f.take().expect("called once"))(unsafe { &*self.current.load(Ordering::Acquire) })
            }
        }
    }

    /// Publishes `value`; frees the replaced values no reader still announces. Never blocks
    /// on readers; blocks on other writers (memory work only) and one `membarrier` call.
    pub(crate) fn replace(&self, value: T) {
        let new = Box::into_raw(Box::new(value));
        let mut retired = self.retired.lock();
        let old = self.current.swap(new, Ordering::AcqRel);
        // SAFETY: `old` came from `Box::into_raw` and is unlinked; it is freed below only when
        // no slot announces it.
        retired.push(unsafe { Box::from_raw(old) });
        heavy_fence();
        if NEVER_FREE.load(Ordering::SeqCst) {
            retired.drain(..).for_each(std::mem::forget);
            return;
        }
        let announced: Vec<*mut ()> = slots()
            .map(|s| s.hazard.load(Ordering::Acquire))
            .filter(|p| !p.is_null())
            .collect();
        retired.retain(|b| announced.contains(&std::ptr::from_ref::<T>(b).cast_mut().cast()));
    }
}

impl<T> Drop for Published<T> {
    fn drop(&mut self) {
        // SAFETY: we own `self`: no reader holds a reference to it, so none is reading.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}

// SAFETY: `next` points to a leaked slot, never written after the slot is published.
unsafe impl Send for Slot {}
// SAFETY: as above; the other fields are atomics.
unsafe impl Sync for Slot {}

// SAFETY: values are shared between threads by reference (`read`) and moved in (`replace`).
unsafe impl<T: Send + Sync> Send for Published<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Published<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_replaced_value_is_freed_once_no_reader_holds_it() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let p = Published::new(Counted(dropped.clone()));
        p.read(|_| {
            // Replaced while read here: kept.
            p.replace(Counted(dropped.clone()));
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
        });
        p.replace(Counted(dropped.clone()));
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        drop(p);
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }

    /// A value whose drop is recorded by name.
    struct Named(&'static str, Arc<parking_lot::Mutex<Vec<&'static str>>>);
    impl Drop for Named {
        fn drop(&mut self) {
            self.1.lock().push(self.0);
        }
    }

    #[test]
    fn a_nested_read_leaves_the_outer_value_protected() {
        let dropped = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let p = Arc::new(Published::new(Named("x", dropped.clone())));
        p.read(|x| {
            p.replace(Named("y", dropped.clone())); // x retired, kept: read here
            let writer = {
                let (p, dropped) = (p.clone(), dropped.clone());
                std::thread::spawn(move || p.replace(Named("z", dropped)))
            };
            p.read(|_| {
                // Another thread publishes while the nested read runs. With one hazard slot
                // overwritten by the nested read, that publication freed x under the outer
                // read; a nested read takes the lock instead, so the publication waits for
                // it. Bounded wait: the publication must not have freed x meanwhile.
                let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
                while !writer.is_finished() && std::time::Instant::now() < until {
                    std::thread::yield_now();
                }
                assert!(!dropped.lock().contains(&"x"), "x freed under a read");
            });
            writer.join().unwrap();
            assert_eq!(x.0, "x");
            assert!(!dropped.lock().contains(&"x"), "x freed under a read");
        });
        p.replace(Named("w", dropped.clone()));
        assert!(dropped.lock().contains(&"x"), "freed once nobody reads it");
    }

    #[test]
    fn readers_on_many_threads_see_whole_values() {
        let p = Arc::new(Published::new((0u64, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (p, stop) = (p.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        p.read(|&(a, b)| assert_eq!(a, b));
                    }
                })
            })
            .collect();
        for i in 0..20_000 {
            p.replace((i, i));
        }
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().for_each(|r| r.join().unwrap());
    }
}
