//! The embedded [`MemoryStore`]: recorded LSNs in this process only.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::LsnStore;
use crate::error::Result;
use crate::lsn::Lsn;

const SHARDS: usize = 16;

/// The default, in-process store: a sharded hash map with per-entry expiry.
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
    map: HashMap<String, (Lsn, Instant)>,
    sweep_at: usize,
}

impl Shard {
    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, (_, exp)| *exp > now);
        self.sweep_at = (self.map.len() * 2).max(1024);
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
        let expires = now + ttl;
        let mut shard = self.shard(key).lock();
        if shard.map.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        let stored = match shard.map.entry(key.to_string()) {
            Entry::Occupied(mut e) => {
                let (old, exp) = e.get_mut();
                if *exp <= now || lsn > *old {
                    *old = lsn;
                }
                *exp = expires;
                *old
            }
            Entry::Vacant(e) => e.insert((lsn, expires)).0,
        };
        Ok(stored)
    }

    fn get(&self, key: &str) -> Result<Option<Lsn>> {
        let now = Instant::now();
        let shard = self.shard(key).lock();
        Ok(shard
            .map
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(l, _)| *l))
    }

    fn maintain(&self) {
        let now = Instant::now();
        for s in self.shards.iter() {
            s.lock().sweep(now);
        }
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn monotonic_per_key() {
        let s = MemoryStore::new();
        assert_eq!(s.get("k").unwrap(), None);
        assert_eq!(
            s.record("k", Lsn::from_u64(10), HOUR).unwrap(),
            Lsn::from_u64(10)
        );
        assert_eq!(
            s.record("k", Lsn::from_u64(5), HOUR).unwrap(),
            Lsn::from_u64(10)
        );
        assert_eq!(
            s.record("k", Lsn::from_u64(11), HOUR).unwrap(),
            Lsn::from_u64(11)
        );
        assert_eq!(s.get("k").unwrap(), Some(Lsn::from_u64(11)));
        assert_eq!(s.get("other").unwrap(), None);
    }

    #[test]
    fn expiry_and_eviction() {
        let s = MemoryStore::new();
        s.record("old", Lsn::from_u64(10), Duration::ZERO).unwrap();
        assert_eq!(s.get("old").unwrap(), None);
        // An expired entry does not block an older LSN from being stored afresh.
        assert_eq!(
            s.record("old", Lsn::from_u64(3), HOUR).unwrap(),
            Lsn::from_u64(3)
        );
        for i in 0..40_000 {
            s.record(&format!("gone{i}"), Lsn::from_u64(1), Duration::ZERO)
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
                        s.record("hot", Lsn::from_u64(i * 8 + t), HOUR).unwrap();
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.get("hot").unwrap(), Some(Lsn::from_u64(1999 * 8 + 7)));
    }
}
