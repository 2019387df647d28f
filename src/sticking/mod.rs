//! Primary sticking: where recorded LSNs live ([`LsnStore`]: the embedded [`MemoryStore`], or
//! [`RedisStore`] shared by a fleet) and how a key's write position is recorded.
//!
//! Reading a recorded LSN to route a read is the pick path's business ([`crate::routing`]);
//! this module only writes and stores.

mod memory;
pub(crate) mod redis;

use std::time::Duration;

use crate::config::MAX_KEY_LEN;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::lsn::Lsn;

pub use self::memory::MemoryStore;
pub use self::redis::{MAX_VERBATIM_KEY, RedisStore};

/// Storage for the last write position of each sticking key.
///
/// Implementations must be thread-safe and **monotonic per key**: `record` never moves a key's
/// LSN backwards, so a late, older write cannot hide a newer one. Every `record` refreshes the
/// key's time-to-live.
pub trait LsnStore: Send + Sync + 'static {
    /// Stores `lsn` for `key` unless a newer LSN is already stored, and (re)sets the entry to
    /// expire after `ttl`. Returns the LSN now stored (the newer of the two).
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store cannot be reached.
    fn record(&self, key: &str, lsn: Lsn, ttl: Duration) -> Result<Lsn>;

    /// The LSN stored for `key`, or `None` when there is none or it expired.
    ///
    /// # Errors
    /// [`crate::Error::Store`] when the store cannot be reached.
    fn get(&self, key: &str) -> Result<Option<Lsn>>;

    /// Housekeeping, called by the monitor after every check (the memory store evicts expired
    /// entries here). Must not block for long. The default does nothing.
    fn maintain(&self) {}

    /// Short name for logs and status (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

/// Stored in place of an LSN to force the primary for a key (no replica reaches it).
pub(crate) const FORCE_PRIMARY: Lsn = Lsn::from_u64(u64::MAX);

/// Checks a sticking key: not empty, at most [`MAX_KEY_LEN`] bytes.
///
/// # Errors
/// [`Error::InvalidKey`] saying which.
pub(crate) fn check_key(key: &str) -> Result<()> {
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
/// [`Error::Store`].
pub(crate) fn record(
    store: &dyn LsnStore,
    counters: &Counters,
    key: &str,
    lsn: Lsn,
    ttl: Duration,
) -> Result<()> {
    match store.record(key, lsn, ttl) {
        Ok(_) => {
            if lsn != FORCE_PRIMARY {
                counters.count(&counters.lsn_recorded);
            }
            Ok(())
        }
        Err(e) => {
            counters.count(&counters.store_errors);
            Err(e)
        }
    }
}
