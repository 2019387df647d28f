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
    Store {
        /// The underlying failure.
        message: String,
    },
    /// A database query issued by dlb itself failed.
    Query {
        /// `host:port` of the server.
        host: String,
        /// The underlying failure.
        message: String,
    },
}

impl Error {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Config {
            field: field.into(),
            message: message.into(),
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
            Error::Config { .. } | Error::InvalidLsn { .. } | Error::InvalidKey { .. } => false,
        }
    }
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
            Error::Store { message } => write!(f, "LSN store error: {message}"),
            Error::Query { host, message } => write!(f, "query on {host} failed: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for `Result<T, dlb::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
