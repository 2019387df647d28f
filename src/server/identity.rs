//! Who answered: the identity of the PostgreSQL server at the other end of a connection.
//!
//! A replica entry (`host:port`) is only an address: behind it there may be a standby of
//! another cluster, a server that restarted or was replaced, or a proxy that spreads
//! connections over several servers. dlb reads the identity of the server on every probe and
//! on every new pooled connection, and trusts a cached replay position only for the server it
//! was read from.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

/// The identity columns, for a `SELECT` list: system identifier (text), server address
/// (`addr:port`, `local` over a Unix socket) and postmaster start time (µs since the epoch).
pub(crate) const IDENTITY_COLUMNS: &str = "(SELECT system_identifier FROM pg_control_system())::text, \
     COALESCE(host(inet_server_addr()), 'local') || ':' || COALESCE(inet_server_port()::text, ''), \
     (EXTRACT(EPOCH FROM pg_postmaster_start_time()) * 1000000)::int8";

/// Who a connection reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ServerIdentity {
    /// `pg_control_system().system_identifier`: shared by a primary and all its standbys,
    /// different for every independently initialised cluster.
    pub(crate) system_id: u64,
    /// `inet_server_addr():inet_server_port()` as the server sees it.
    pub(crate) server_addr: String,
    /// `pg_postmaster_start_time()`, µs since the Unix epoch: changes when the server restarts.
    pub(crate) started_us: i64,
}

impl ServerIdentity {
    /// Reads the three [`IDENTITY_COLUMNS`] starting at column `at` of `row`.
    pub(crate) fn from_row(row: &postgres::Row, at: usize) -> Result<ServerIdentity, String> {
        let system: Option<String> = row.try_get(at).map_err(|e| e.to_string())?;
        let system_id = system
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|v| v as u64)
            .ok_or("no system identifier (pg_control_system() unavailable)")?;
        let server_addr: Option<String> = row.try_get(at + 1).map_err(|e| e.to_string())?;
        let started_us: Option<i64> = row.try_get(at + 2).map_err(|e| e.to_string())?;
        Ok(ServerIdentity {
            system_id,
            server_addr: server_addr.unwrap_or_default(),
            started_us: started_us.unwrap_or_default(),
        })
    }

    /// Reads the three [`IDENTITY_COLUMNS`] starting at column `at` of a simple-protocol
    /// (text) row.
    pub(crate) fn from_text_row(
        row: &postgres::SimpleQueryRow,
        at: usize,
    ) -> Result<ServerIdentity, String> {
        let col = |i: usize| row.try_get(at + i).map_err(|e| e.to_string());
        let number = |i: usize| -> Result<Option<i64>, String> {
            col(i)?
                .map(|v| v.parse::<i64>().map_err(|_| format!("not a number: {v:?}")))
                .transpose()
        };
        let system_id = number(0)?
            .map(|v| v as u64)
            .ok_or("no system identifier (pg_control_system() unavailable)")?;
        Ok(ServerIdentity {
            system_id,
            server_addr: col(1)?.unwrap_or_default().to_string(),
            started_us: number(2)?.unwrap_or_default(),
        })
    }

    /// A non-zero tag for this identity, to compare identities through an atomic (0 means
    /// unknown). Stable within the process.
    pub(crate) fn tag(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish().max(1)
    }
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server {} of system {} (started at {} µs)",
            self.server_addr, self.system_id, self.started_us
        )
    }
}

/// The identities that new connections to one address reached, most recent last, for telling
/// a re-pointed address (one change) from an address that reaches several servers (changes
/// back and forth).
#[derive(Debug, Default)]
pub(crate) struct IdentityLog {
    samples: parking_lot::Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

/// At most this many samples are kept.
const LOG_CAP: usize = 64;

impl IdentityLog {
    /// Notes that a new connection reached the server tagged `tag` at `now`.
    pub(crate) fn record(&self, tag: u64, now: Instant) {
        let mut s = self.samples.lock();
        if s.len() >= LOG_CAP {
            s.pop_front();
        }
        s.push_back((now, tag));
    }

    /// The samples taken at or after `since`, oldest first.
    pub(crate) fn since(&self, since: Instant) -> Vec<u64> {
        self.samples
            .lock()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, tag)| *tag)
            .collect()
    }
}

/// How many times consecutive samples change server.
pub(crate) fn changes(samples: &[u64]) -> usize {
    samples.windows(2).filter(|w| w[0] != w[1]).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_any_part() {
        let a = ServerIdentity {
            system_id: 7,
            server_addr: "127.0.0.1:5433".into(),
            started_us: 1,
        };
        let mut b = a.clone();
        assert_eq!(a.tag(), b.tag());
        b.started_us = 2;
        assert_ne!(a.tag(), b.tag(), "a restart is a new identity");
        let mut c = a.clone();
        c.server_addr = "127.0.0.1:5434".into();
        assert_ne!(a.tag(), c.tag());
        assert_ne!(a.tag(), 0);
    }

    #[test]
    fn changes_count_switches() {
        assert_eq!(changes(&[]), 0);
        assert_eq!(changes(&[1, 1, 1]), 0);
        assert_eq!(changes(&[1, 1, 2, 2]), 1, "re-pointed once");
        assert_eq!(changes(&[1, 2, 1]), 2, "back and forth");
    }

    #[test]
    fn log_keeps_recent_samples() {
        use std::time::Duration;
        let log = IdentityLog::default();
        let t0 = Instant::now();
        log.record(1, t0);
        log.record(2, t0 + Duration::from_secs(1));
        assert_eq!(log.since(t0), [1, 2]);
        assert_eq!(log.since(t0 + Duration::from_secs(1)), [2]);
        for i in 0..100 {
            log.record(i, t0 + Duration::from_secs(2));
        }
        assert_eq!(log.since(t0).len(), LOG_CAP);
    }
}
