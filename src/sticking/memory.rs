//! The embedded [`MemoryStore`]: recorded LSNs in this process only.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry as MapEntry};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{LsnStore, Recorded, deadline};
use crate::error::Result;
use crate::lsn::Lsn;

const SHARDS: usize = 16;

/// The default, in-process store: a sharded hash map with per-entry expiry, on this process's
/// monotonic clock. Never blocks on I/O.
///
/// Memory stays bounded by the number of keys written within one TTL: expired entries are
/// evicted by [`LsnStore::maintain`] and whenever a shard doubles in size since its last sweep.
/// Lookups lock one shard briefly (no I/O under the lock).
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
    sweep_at: usize,
}

/// One key's entry: the LSN and the force kept apart, each deadline only ever pushed later.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lsn: Option<Lsn>,
    forced_until: Option<Instant>,
    expires: Instant,
}

impl Shard {
    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, e| e.expires > now);
        self.sweep_at = (self.map.len() * 2).max(1024);
    }

    /// The live entry for `key` (a fresh, empty one when it is absent or expired), its expiry
    /// pushed to at least `until`.
    fn entry(&mut self, key: &str, now: Instant, until: Instant) -> &mut Entry {
        if self.map.len() >= self.sweep_at {
            self.sweep(now);
        }
        let fresh = Entry {
            lsn: None,
            forced_until: None,
            expires: until,
        };
        let e = match self.map.entry(key.to_string()) {
            MapEntry::Occupied(o) => {
                let e = o.into_mut();
                if e.expires <= now {
                    *e = fresh;
                }
                e
            }
            MapEntry::Vacant(v) => v.insert(fresh),
        };
        e.expires = e.expires.max(until);
        e
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        sweep_at: 1024,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// Number of entries held, expired ones not yet evicted included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LsnStore for MemoryStore {
    fn record(&self, key: &str, lsn: Lsn, ttl: Duration) -> Result<Lsn> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let e = shard.entry(key, now, deadline(now, ttl));
        let stored = e.lsn.map_or(lsn, |old| old.max(lsn));
        e.lsn = Some(stored);
        Ok(stored)
    }

    fn force(&self, key: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let until = deadline(now, ttl);
        let mut shard = self.shard(key).lock();
        let e = shard.entry(key, now, until);
        e.forced_until = Some(e.forced_until.map_or(until, |old| old.max(until)));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Recorded> {
        let now = Instant::now();
        let shard = self.shard(key).lock();
        Ok(match shard.map.get(key) {
            Some(e) if e.expires > now => Recorded {
                lsn: e.lsn,
                forced: e.forced_until.is_some_and(|t| t > now),
            },
            _ => Recorded::default(),
        })
    }

    fn maintain(&self) {
        let now = Instant::now();
        for s in self.shards.iter() {
            s.lock().sweep(now);
        }
    }

    fn never_blocks(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::sticking::MAX_TTL;

    const HOUR: Duration = Duration::from_secs(3600);

    fn lsn(v: u64) -> Lsn {
        Lsn::from_u64(v)
    }

    fn recorded(lsn: Option<Lsn>, forced: bool) -> Recorded {
        Recorded { lsn, forced }
    }

    #[test]
    fn monotonic_per_key() {
        let s = MemoryStore::new();
        assert_eq!(s.get("k").unwrap(), Recorded::default());
        assert_eq!(s.record("k", lsn(10), HOUR).unwrap(), lsn(10));
        assert_eq!(s.record("k", lsn(5), HOUR).unwrap(), lsn(10));
        assert_eq!(s.record("k", lsn(11), HOUR).unwrap(), lsn(11));
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(11)), false));
        assert_eq!(s.get("other").unwrap(), Recorded::default());
    }

    #[test]
    fn expiry_and_eviction() {
        let s = MemoryStore::new();
        s.record("old", lsn(10), Duration::ZERO).unwrap();
        assert_eq!(s.get("old").unwrap(), Recorded::default());
        // An expired entry does not block an older LSN from being stored afresh.
        assert_eq!(s.record("old", lsn(3), HOUR).unwrap(), lsn(3));
        for i in 0..40_000 {
            s.record(&format!("gone{i}"), lsn(1), Duration::ZERO)
                .unwrap();
        }
        assert!(s.len() < 40_000, "shards sweep as they grow: {}", s.len());
        s.maintain();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn concurrent_writers_keep_the_max() {
        let s = Arc::new(MemoryStore::new());
        let hs: Vec<_> = (0..8u64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        s.record("hot", lsn(i * 8 + t), HOUR).unwrap();
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.get("hot").unwrap().lsn, Some(lsn(1999 * 8 + 7)));
    }

    #[test]
    fn a_force_never_erases_the_lsn_and_nothing_shortens_anything() {
        let s = MemoryStore::new();
        s.record("k", lsn(10), HOUR).unwrap();
        // A zero force is a no-op: the LSN stays, nothing is forced.
        s.force("k", Duration::ZERO).unwrap();
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(10)), false));
        s.force("k", HOUR).unwrap();
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(10)), true));
        // Neither a later record (even with a zero TTL) nor a shorter force ends the force.
        assert_eq!(s.record("k", lsn(11), Duration::ZERO).unwrap(), lsn(11));
        s.force("k", Duration::ZERO).unwrap();
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(11)), true));
        // A record with a shorter TTL does not shorten the entry's life.
        s.record("r", lsn(5), HOUR).unwrap();
        s.record("r", lsn(6), Duration::ZERO).unwrap();
        assert_eq!(s.get("r").unwrap(), recorded(Some(lsn(6)), false));
        // A force alone: forced, no LSN; a record then keeps the force.
        s.force("f", HOUR).unwrap();
        assert_eq!(s.get("f").unwrap(), recorded(None, true));
        s.record("f", lsn(7), Duration::ZERO).unwrap();
        assert_eq!(s.get("f").unwrap(), recorded(Some(lsn(7)), true));
    }

    #[test]
    fn the_lsn_outlives_a_short_force() {
        let s = MemoryStore::new();
        s.record("k", lsn(10), HOUR).unwrap();
        s.force("k", Duration::from_millis(20)).unwrap();
        assert!(s.get("k").unwrap().forced);
        let end = Instant::now() + Duration::from_secs(10);
        while s.get("k").unwrap().forced {
            assert!(Instant::now() < end, "the force never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(10)), false));
    }

    #[test]
    fn huge_ttls_do_not_panic() {
        let s = MemoryStore::new();
        assert_eq!(s.record("k", lsn(1), Duration::MAX).unwrap(), lsn(1));
        s.force("k", Duration::MAX).unwrap();
        s.force("k", Duration::from_secs(u64::MAX)).unwrap();
        assert_eq!(s.get("k").unwrap(), recorded(Some(lsn(1)), true));
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), now + MAX_TTL);
        assert_eq!(deadline(now, HOUR), now + HOUR);
    }
}
