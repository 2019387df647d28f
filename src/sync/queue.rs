//! A bounded, pollable queue: producers never block (the oldest item is dropped when it is
//! full, and the drops are counted), consumers wait for an item with a timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

struct Inner<T> {
    items: VecDeque<T>,
    /// Items dropped since a consumer last took one.
    dropped: u64,
    /// Bumped by [`Queue::wake`]: waiters return at once.
    wakes: u64,
}

/// A bounded multi-producer, multi-consumer queue (see the module notes).
pub(crate) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Queue<T> {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                dropped: 0,
                wakes: 0,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends `item`, dropping the oldest one when the queue is full. Never blocks (the lock
    /// is held for memory work only).
    pub(crate) fn push(&self, item: T) {
        let mut g = self.inner.lock();
        if g.items.len() >= self.capacity {
            g.items.pop_front();
            g.dropped += 1;
        }
        g.items.push_back(item);
        drop(g);
        self.ready.notify_one();
    }

    /// Removes every item (the drop count stays).
    pub(crate) fn clear(&self) {
        self.inner.lock().items.clear();
    }

    /// Makes every waiting [`Queue::take`] return now (with nothing, unless an item is there).
    pub(crate) fn wake(&self) {
        self.inner.lock().wakes += 1;
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for an item, then offers it to `accept` with the number of items
    /// dropped before it: the item is removed (and the drop count reset) only when `accept`
    /// returns `Ok`. `Ok(None)`: nothing came within `timeout`, or [`Queue::wake`] was called.
    ///
    /// # Errors
    /// What `accept` returns; the item then stays first in the queue.
    pub(crate) fn take<R, E>(
        &self,
        timeout: Duration,
        accept: impl FnOnce(&T, u64) -> Result<R, E>,
    ) -> Result<Option<R>, E> {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.inner.lock();
        let wakes = g.wakes;
        while g.items.is_empty() && g.wakes == wakes {
            let timed_out = match deadline {
                Some(d) => self.ready.wait_until(&mut g, d).timed_out(),
                None => {
                    self.ready.wait(&mut g);
                    false
                }
            };
            if timed_out {
                break;
            }
        }
        let dropped = g.dropped;
        let Some(item) = g.items.front() else {
            return Ok(None);
        };
        let r = accept(item, dropped)?;
        g.items.pop_front();
        g.dropped = 0;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let q = Queue::new(2);
        for i in 0..5 {
            q.push(i);
        }
        let got = q.take(Duration::ZERO, |v, d| Ok::<_, ()>((*v, d)));
        assert_eq!(got, Ok(Some((3, 3))));
        let got = q.take(Duration::ZERO, |v, d| Ok::<_, ()>((*v, d)));
        assert_eq!(got, Ok(Some((4, 0))));
        assert_eq!(q.take(Duration::ZERO, |v, _| Ok::<_, ()>(*v)), Ok(None));
    }

    #[test]
    fn a_refused_item_stays() {
        let q = Queue::new(4);
        q.push(7);
        assert_eq!(
            q.take(Duration::ZERO, |_, _| Err::<(), _>("small")),
            Err("small")
        );
        assert_eq!(q.take(Duration::ZERO, |v, _| Ok::<_, ()>(*v)), Ok(Some(7)));
    }

    #[test]
    fn wake_ends_a_long_wait() {
        let q = std::sync::Arc::new(Queue::<u32>::new(4));
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || q2.take(Duration::MAX, |v, _| Ok::<_, ()>(*v)));
        // Bounded: wake until the waiter has returned (a wake before it waits is not seen).
        while !waiter.is_finished() {
            q.wake();
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), Ok(None));
    }
}
