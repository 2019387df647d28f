//! The embedded [`MemoryStore`]: recorded LSNs in this process only.

use std::collections::HashMap;
use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use log::warn;
use parking_lot::Mutex;

use super::{LsnStore, Recorded, deadline};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sync::instant::AtomicInstant;

const SHARDS: usize = 16;

/// The default, in-process store: a sharded hash map with per-entry expiry, on this process's
/// monotonic clock. Never blocks on I/O.
///
/// Memory is bounded twice. Expired entries are evicted by [`LsnStore::maintain`] and whenever
/// a shard doubles in size since its last sweep, so the store holds the keys written within
/// one TTL; and it holds at most [`MemoryStore::MAX_ENTRIES`] entries (or the count given to
/// [`MemoryStore::with_max_entries`]), split evenly over its 16 shards (keys are spread by a
/// hash keyed at random per store). A new key that finds its shard full of live entries makes
/// room by dropping the entries that expire soonest (about 1/64 of the shard at once), never
/// one that is forced to the primary; the store then reports the loss
/// ([`LsnStore::last_loss`]), so for `sticky_ttl_s` keys with nothing recorded are read from
/// the primary, as after a Redis store loses keys: a dropped entry never makes its key look
/// "never written". A shard full of forced entries refuses new keys with
/// [`crate::Error::Store`] (`record_lsn` returns it with the LSN, a pick of such a key finds
/// nothing, as before).
///
/// Lookups lock one shard briefly (no I/O under the lock).
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Entries one shard holds at most.
    shard_cap: usize,
    /// When live entries were last dropped to make room.
    lost_at: AtomicInstant,
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

/// Why a new key found no room.
struct Full;

impl Shard {
    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, e| e.expires > now);
        self.sweep_at = (self.map.len() * 2).max(1024);
    }

    /// Makes room for one new entry in a shard holding `cap` or more: expired entries go
    /// first; if none had, the soonest-expiring entries not forced at `now` (about 1/64 of
    /// `cap`). Returns whether live entries were dropped; [`Full`] when every entry is forced.
    fn make_room(&mut self, cap: usize, now: Instant) -> std::result::Result<bool, Full> {
        self.sweep(now);
        if self.map.len() < cap {
            return Ok(false);
        }
        let mut victims: Vec<(Instant, &String)> = self
            .map
            .iter()
            .filter(|(_, e)| e.forced_until.is_none_or(|t| t <= now))
            .map(|(k, e)| (e.expires, k))
            .collect();
        if victims.is_empty() {
            return Err(Full);
        }
        let n = (cap / 64).clamp(1, victims.len());
        if n < victims.len() {
            victims.select_nth_unstable(n - 1);
            victims.truncate(n);
        }
        let victims: Vec<String> = victims.into_iter().map(|(_, k)| k.clone()).collect();
        for k in &victims {
            self.map.remove(k);
        }
        Ok(true)
    }

    /// The live entry for `key` (a fresh, empty one when it is absent or expired), its expiry
    /// pushed to at least `until`. A new key in a shard of `cap` entries makes room first
    /// (`lost` tells when live entries were dropped for it).
    fn entry(
        &mut self,
        key: &str,
        now: Instant,
        until: Instant,
        cap: usize,
        lost: &AtomicInstant,
    ) -> Result<&mut Entry> {
        if self.map.len() >= self.sweep_at {
            self.sweep(now);
        }
        if self.map.len() >= cap && !self.map.contains_key(key) {
            match self.make_room(cap, now) {
                Ok(false) => {}
                Ok(true) => {
                    if !lost.within(Duration::from_secs(60), now) {
                        warn!(
                            target: "dlb",
                            "memory LSN store: full ({} entries); the entries expiring soonest were dropped, so keyed reads with nothing recorded go to the primary for sticky_ttl_s",
                            cap * SHARDS
                        );
                    }
                    lost.set(now);
                }
                Err(Full) => {
                    return Err(Error::store(format!(
                        "memory LSN store full ({} entries): this key's part of the store holds only keys forced to the primary",
                        cap * SHARDS
                    )));
                }
            }
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
        Ok(e)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// Entries a store made by [`MemoryStore::new`] holds at most (1,000,000: some 100 to
    /// 200 MB with keys of a few dozen bytes).
    pub const MAX_ENTRIES: usize = 1_000_000;

    /// An empty store of at most [`MemoryStore::MAX_ENTRIES`] entries.
    pub fn new() -> MemoryStore {
        MemoryStore::with_max_entries(Self::MAX_ENTRIES)
    }

    /// An empty store of at most `max` entries (rounded down to a multiple of 16, at least
    /// 16: each of the 16 shards holds a 16th).
    pub fn with_max_entries(max: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        sweep_at: 1024,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            shard_cap: (max / SHARDS).max(1),
            lost_at: AtomicInstant::default(),
        }
    }

    fn shard_index(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[self.shard_index(key)]
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
        let e = shard.entry(key, now, deadline(now, ttl), self.shard_cap, &self.lost_at)?;
        let stored = e.lsn.map_or(lsn, |old| old.max(lsn));
        e.lsn = Some(stored);
        Ok(stored)
    }

    fn force(&self, key: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let until = deadline(now, ttl);
        let mut shard = self.shard(key).lock();
        let e = shard.entry(key, now, until, self.shard_cap, &self.lost_at)?;
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

    /// When live entries were last dropped because the store was full, if ever.
    fn last_loss(&self) -> Option<Instant> {
        self.lost_at.get()
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

    /// `n` keys that land in the same shard of `s`.
    fn same_shard(s: &MemoryStore, n: usize) -> Vec<String> {
        let shard = s.shard_index("k0");
        (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| s.shard_index(k) == shard)
            .take(n)
            .collect()
    }

    #[test]
    fn the_default_cap_is_documented() {
        let s = MemoryStore::new();
        assert_eq!(s.shard_cap * SHARDS, MemoryStore::MAX_ENTRIES);
        assert_eq!(MemoryStore::MAX_ENTRIES, 1_000_000);
        assert_eq!(MemoryStore::with_max_entries(0).shard_cap, 1);
    }

    /// The entry count stays bounded whatever is written; what is kept is exact, and dropping
    /// live entries is reported as a loss (routing then sends keys with nothing recorded to
    /// the primary), never silent. The store used to grow without bound.
    #[test]
    fn entry_count_is_bounded_and_a_dropped_entry_is_a_loss() {
        let s = MemoryStore::with_max_entries(64);
        let start = Instant::now();
        for i in 0..10_000u64 {
            assert_eq!(
                s.record(&format!("k{i}"), lsn(i + 1), HOUR).unwrap(),
                lsn(i + 1)
            );
            assert!(s.len() <= 64, "{} entries after {i}", s.len());
        }
        let lost = s.last_loss().expect("live entries were dropped: a loss");
        assert!(lost >= start);
        let mut kept = 0;
        for i in 0..10_000u64 {
            match s.get(&format!("k{i}")).unwrap() {
                Recorded {
                    lsn: None,
                    forced: false,
                } => {}
                r => {
                    assert_eq!(r, recorded(Some(lsn(i + 1)), false), "k{i}");
                    kept += 1;
                }
            }
        }
        assert_eq!(kept, s.len());
        assert_eq!(s.get("k9999").unwrap().lsn, Some(lsn(10_000)));
    }

    /// The store `Balancer::new` makes holds at most `MAX_ENTRIES` (it used to grow with every
    /// key written within `sticky_ttl_s`).
    #[test]
    fn the_default_store_holds_at_most_max_entries() {
        let s = MemoryStore::new();
        let n = MemoryStore::MAX_ENTRIES + MemoryStore::MAX_ENTRIES / 20;
        for i in 0..n {
            s.record(&i.to_string(), lsn(1), HOUR).unwrap();
        }
        assert!(s.len() <= MemoryStore::MAX_ENTRIES, "{}", s.len());
        assert!(s.last_loss().is_some());
        assert_eq!(s.get(&(n - 1).to_string()).unwrap().lsn, Some(lsn(1)));
    }

    /// A full shard first drops what has expired (not a loss), then the entries expiring
    /// soonest, never a forced one; full of forced entries, it refuses new keys (a store
    /// error) and keeps taking writes to the keys it holds.
    #[test]
    fn a_full_shard_drops_the_soonest_expiry_and_keeps_forces() {
        let s = MemoryStore::with_max_entries(4 * SHARDS);
        let k = same_shard(&s, 12);
        for key in &k[..4] {
            s.record(key, lsn(1), Duration::ZERO).unwrap();
        }
        s.record(&k[4], lsn(5), HOUR).unwrap();
        assert_eq!(s.last_loss(), None, "only expired entries made room");

        s.record(&k[5], lsn(6), 3 * HOUR).unwrap();
        s.force(&k[6], Duration::from_secs(60)).unwrap();
        s.record(&k[7], lsn(8), 2 * HOUR).unwrap();
        // Full (k4: 1 h, k5: 3 h, k6: forced for a minute, k7: 2 h): k4 goes, not the force.
        s.record(&k[8], lsn(9), HOUR).unwrap();
        assert!(s.last_loss().is_some());
        assert_eq!(s.get(&k[4]).unwrap(), Recorded::default());
        assert_eq!(s.get(&k[5]).unwrap().lsn, Some(lsn(6)));
        assert!(s.get(&k[6]).unwrap().forced);
        assert_eq!(s.get(&k[7]).unwrap().lsn, Some(lsn(8)));
        assert_eq!(s.get(&k[8]).unwrap().lsn, Some(lsn(9)));

        // Every entry forced: a new key is refused, known keys still take writes.
        for key in &k[5..9] {
            s.force(key, HOUR).unwrap();
        }
        let e = s.record(&k[9], lsn(10), HOUR).unwrap_err();
        assert!(matches!(e, Error::Store { .. }), "{e}");
        assert!(e.to_string().contains("full"), "{e}");
        assert!(s.force(&k[10], HOUR).is_err());
        assert_eq!(s.get(&k[9]).unwrap(), Recorded::default());
        assert_eq!(s.record(&k[5], lsn(11), HOUR).unwrap(), lsn(11));
        assert_eq!(s.len(), 4);
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
