//! Primary sticking: where recorded LSNs live ([`LsnStore`]: the embedded [`MemoryStore`], or
//! [`RedisStore`] shared by a fleet) and how a key's write position is recorded.
//!
//! Reading a recorded LSN to route a read is the pick path's business ([`crate::routing`]);
//! this module only writes and stores.

pub(crate) mod loss;
mod memory;
pub(crate) mod redis;

use std::time::{Duration, Instant};

use crate::config::MAX_KEY_LEN;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::labels::StoreOp;
use crate::lsn::Lsn;

pub use self::memory::MemoryStore;
pub use self::redis::{MAX_VERBATIM_KEY, RedisStore};

pub use crate::config::MAX_TTL;

/// What a store holds for a sticking key ([`LsnStore::get`]). The default (no LSN, not
/// forced) is what a key that was never written, or whose entry expired, has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Recorded {
    /// The newest LSN recorded for the key, if any: sticky reads need a replica that has
    /// replayed it.
    pub lsn: Option<Lsn>,
    /// The key is forced to the primary right now ([`LsnStore::force`] with a TTL that has not
    /// run out yet): sticky reads go to the primary whatever the LSN.
    pub forced: bool,
}

/// Storage for the last write position of each sticking key, and for "read this key from the
/// primary" forces.
///
/// An entry holds two things, kept apart: the key's **LSN** (monotonic: `record` never moves
/// it backwards, so a late, older write cannot hide a newer one) and the time it is **forced
/// until**. Neither call ever loses protection:
///
/// * `force` never erases or lowers the recorded LSN; `record` never ends a force early;
/// * expiries only ever extend: the entry lives until the latest `now + ttl` of all the
///   `record` and `force` calls on it, and the force lasts until the latest `now + ttl` of the
///   `force` calls. A call with a shorter TTL (even zero) shortens nothing;
/// * a TTL longer than [`MAX_TTL`] counts as [`MAX_TTL`]; no TTL, up to [`Duration::MAX`],
///   may panic.
///
/// When the entry expires, both go at once (the key is as if never written).
///
/// Implementations must be thread-safe (and, for a shared store, agree across processes: the
/// Redis store compares times on the Redis server's clock). Calls may block on the store's
/// I/O; [`MemoryStore`] never does.
pub trait LsnStore: Send + Sync + 'static {
    /// Stores `lsn` for `key` unless a newer LSN is already stored, and makes the entry live
    /// for at least `ttl` from now (a longer remaining lifetime is kept). Leaves a force as it
    /// is. Returns the LSN now stored (the newer of the two).
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store fails (build it with [`crate::Error::store`]).
    fn record(&self, key: &str, lsn: Lsn, ttl: Duration) -> Result<Lsn>;

    /// Forces `key` to the primary until at least `ttl` from now (a later end is kept), and
    /// makes the entry live at least that long. Leaves the recorded LSN as it is (or absent).
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store fails.
    fn force(&self, key: &str, ttl: Duration) -> Result<()>;

    /// What is stored for `key` now: its LSN and whether it is forced. An expired or absent
    /// entry gives [`Recorded::default()`].
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store fails or holds something it cannot read (a
    /// sticky pick then goes to the primary).
    fn get(&self, key: &str) -> Result<Recorded>;

    /// As [`LsnStore::get`], finishing by `deadline` when one is given (a caller's time
    /// budget), else within the store's own limits. The default ignores `deadline` (right for
    /// a store that never blocks).
    ///
    /// # Errors
    /// As [`LsnStore::get`]; a store error when the deadline passes first.
    fn get_by(&self, key: &str, deadline: Option<Instant>) -> Result<Recorded> {
        let _ = deadline;
        self.get(key)
    }

    /// True when no call can block (no I/O): a "cached only" pick may still read it. The
    /// default is false.
    fn never_blocks(&self) -> bool {
        false
    }

    /// Housekeeping, called by the monitor after every check (the memory store evicts expired
    /// entries here). Must not block for long. The default does nothing.
    fn maintain(&self) {}

    /// When the store last noticed that it lost entries it held (a restart without
    /// persistence, a flush, an eviction, a failover to a replica that missed writes), if
    /// ever. For `sticky_ttl_s` after it, a key with nothing recorded may have lost its entry,
    /// so its sticky reads go to the primary. Read on every sticky pick: must not block. The
    /// default is `None` (the store never loses entries, or cannot tell); [`MemoryStore`]
    /// reports when it last dropped live entries to stay within its entry cap.
    fn last_loss(&self) -> Option<Instant> {
        None
    }

    /// A standing concern about the store, for status (`lsn_store_warning`): e.g. a Redis
    /// `maxmemory-policy` that lets Redis evict recorded LSNs. Must not block. The default is
    /// `None`.
    fn warning(&self) -> Option<String> {
        None
    }

    /// Short name for logs and status (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

/// `now + ttl`, with `ttl` capped at [`MAX_TTL`]; never panics (on a clock that cannot go that
/// far, as far as it can).
pub(crate) fn deadline(now: Instant, ttl: Duration) -> Instant {
    let mut ttl = ttl.min(MAX_TTL);
    loop {
        if let Some(t) = now.checked_add(ttl) {
            return t;
        }
        ttl /= 2;
    }
}

/// Checks a sticking key: not empty, at most [`MAX_KEY_LEN`] bytes.
///
/// # Errors
/// [`Error::InvalidKey`] saying which.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            reason: "key is empty".into(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey {
            reason: format!(
                "key is {} bytes long; the limit is {MAX_KEY_LEN}",
                key.len()
            ),
        });
    }
    Ok(())
}

/// Stores `lsn` for `key` for `ttl` (monotonic), counting the record or the store error.
///
/// # Errors
/// [`Error::Store`] carrying `lsn` ([`Error::lsn`]): the caller can still use it as a causal
/// token. A store that fails with another kind of error has it turned into such a store error.
pub(crate) fn record(
    store: &dyn LsnStore,
    counters: &Counters,
    key: &str,
    lsn: Lsn,
    ttl: Duration,
) -> Result<Lsn> {
    match counters.time_store(StoreOp::Record, || store.record(key, lsn, ttl)) {
        Ok(stored) => {
            counters.count(&counters.lsn_recorded);
            Ok(stored)
        }
        Err(e) => {
            counters.count(&counters.store_errors);
            let message = match e {
                Error::Store { message, .. } => message,
                other => other.to_string(),
            };
            Err(Error::Store {
                message,
                lsn: Some(lsn),
            })
        }
    }
}

/// Forces `key` to the primary for `ttl`, counting a store error.
///
/// # Errors
/// [`Error::Store`].
pub(crate) fn force(
    store: &dyn LsnStore,
    counters: &Counters,
    key: &str,
    ttl: Duration,
) -> Result<()> {
    counters
        .time_store(StoreOp::Force, || store.force(key, ttl))
        .inspect_err(|_| counters.count(&counters.store_errors))
}
