//! The crate's error type.

use std::fmt;

use crate::lsn::Lsn;

/// Everything that can go wrong in dlb.
///
/// Messages never contain a password: host names appear as `host:port`, DSNs only in their
/// redacted form.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid. `field` names the offending field as a JSON path
    /// (`pool.max_size`, `replicas.hosts[1]`), or is empty when the document itself is malformed.
    Config {
        /// Path of the offending field, e.g. `pool.max_size`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A string is not a valid `X/Y` LSN.
    InvalidLsn {
        /// The input (truncated when long).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sticking key is empty or too long.
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The primary cannot be reached (connection refused, timed out, pool exhausted...).
    PrimaryUnavailable {
        /// `host:port` of the primary.
        host: String,
        /// The underlying failure.
        message: String,
    },
    /// A replica was picked but a connection to it could not be opened.
    ReplicaUnavailable {
        /// `host:port` of the replica.
        host: String,
        /// The underlying failure.
        message: String,
    },
    /// No replica has replayed the required LSN and the policy is `"error"`: retryable.
    NoCaughtUpReplica {
        /// The LSN the read needed.
        min_lsn: Lsn,
    },
    /// The LSN store (in-memory or Redis) failed.
    ///
    /// From [`crate::Balancer::record_lsn`] (and `record_lsn_value`) it carries the LSN that
    /// could not be stored: see [`Error::lsn`].
    Store {
        /// The underlying failure.
        message: String,
        /// The LSN that was read (or given) but could not be stored; `None` for the other
        /// store failures. [`Error::store`] builds a store error without one.
        lsn: Option<Lsn>,
    },
    /// A database query issued by dlb itself failed.
    Query {
        /// `host:port` of the server.
        host: String,
        /// The underlying failure.
        message: String,
    },
    /// The balancer was made in another process, before a `fork()`: this process has no
    /// monitor thread, and the pools' sockets are the parent's. Make a new balancer here.
    Forked {
        /// The process that made the balancer.
        created_by: u32,
    },
}

impl Error {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A store error ([`Error::Store`]) with this message and no LSN: what an [`crate::LsnStore`]
    /// implementation returns when it fails.
    pub fn store(message: impl Into<String>) -> Error {
        Error::Store {
            message: message.into(),
            lsn: None,
        }
    }

    /// The LSN that was read but could not be stored: carry it as a causal token.
    ///
    /// [`crate::Balancer::record_lsn`] reads the primary's WAL position, then stores it; when
    /// the store fails, the write has still happened at that LSN. Pass it along (a header, a
    /// job) and read with [`crate::Balancer::pick_replica_min_lsn`], or retry
    /// [`crate::Balancer::record_lsn_value`] with it. `Some` only for an [`Error::Store`] from
    /// `record_lsn` or `record_lsn_value`; `None` for every other error.
    pub fn lsn(&self) -> Option<Lsn> {
        match self {
            Error::Store { lsn, .. } => *lsn,
            _ => None,
        }
    }

    /// True for errors a caller can reasonably retry (the cluster may change state):
    /// [`Error::NoCaughtUpReplica`], [`Error::PrimaryUnavailable`], [`Error::ReplicaUnavailable`],
    /// [`Error::Store`] and [`Error::Query`].
    pub fn is_retryable(&self) -> bool {
        // No wildcard: a new variant must be classified (the C API's `lb_status_is_retryable`
        // follows this, through the variant's status code; a unit test of `ffi` checks it).
        match self {
            Error::NoCaughtUpReplica { .. }
            | Error::PrimaryUnavailable { .. }
            | Error::ReplicaUnavailable { .. }
            | Error::Store { .. }
            | Error::Query { .. } => true,
            Error::Config { .. }
            | Error::InvalidLsn { .. }
            | Error::InvalidKey { .. }
            | Error::Forked { .. } => false,
        }
    }
}

/// `e`'s message followed by each of its causes (`message: cause: cause`), leaving out a cause
/// whose text the message already holds (drivers that print their cause themselves).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { field, message } if field.is_empty() => {
                write!(f, "invalid configuration: {message}")
            }
            Error::Config { field, message } => {
                write!(f, "invalid configuration: {field}: {message}")
            }
            Error::InvalidLsn { input, reason } => {
                write!(f, "invalid LSN {input:?}: {reason}")
            }
            Error::InvalidKey { reason } => write!(f, "invalid key: {reason}"),
            Error::PrimaryUnavailable { host, message } => {
                write!(f, "primary {host} unavailable: {message}")
            }
            Error::ReplicaUnavailable { host, message } => {
                write!(f, "replica {host} unavailable: {message}")
            }
            Error::NoCaughtUpReplica { min_lsn } => write!(
                f,
                "no replica has replayed LSN {min_lsn} yet (retryable; or read from the primary)"
            ),
            Error::Store { message, lsn: None } => write!(f, "LSN store error: {message}"),
            Error::Store {
                message,
                lsn: Some(lsn),
            } => write!(
                f,
                "LSN store error: {message} (LSN {lsn} was not stored: carry it as a causal token)"
            ),
            Error::Query { host, message } => write!(f, "query on {host} failed: {message}"),
            Error::Forked { created_by } => write!(
                f,
                "this balancer was made by process {created_by}, before a fork: make a new \
                 balancer in this process (an inherited one has no monitor and shares the \
                 parent's connections)"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for `Result<T, dlb::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error, bool);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error communicating with the server")?;
            if self.1 {
                write!(f, ": {}", self.0)?;
            }
            Ok(())
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_kept_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        let expected = format!("error communicating with the server: {}", io());
        assert_eq!(with_causes(&Outer(io(), false)), expected);
        assert_eq!(
            with_causes(&Outer(io(), true)),
            expected,
            "a cause its error prints already is not repeated"
        );
    }
}
