//! The result of a routing decision.

use std::fmt;
use std::sync::Arc;

use crate::host::{HostRef, Role};

/// Why a read went where it went. Numbers are stable (they cross the C ABI as `LB_REASON_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Reason {
    /// Replica chosen by round-robin; the read had no sticking key.
    RoundRobin = 0,
    /// Replica chosen because the cached replay positions show it has replayed the key's LSN.
    CaughtUpCached = 1,
    /// Replica chosen after a live `pg_last_wal_replay_lsn()` check showed it caught up.
    CaughtUpLive = 2,
    /// Replica chosen by round-robin: the key has no recorded LSN (or it expired).
    NoLsnRecorded = 3,
    /// Primary: no replicas are configured (load balancing off).
    NoReplicasConfigured = 4,
    /// Primary: every replica is quarantined or not yet checked.
    NoHealthyReplica = 5,
    /// Primary: no replica has replayed the key's LSN yet.
    NotCaughtUp = 6,
    /// Primary: the LSN store failed, so no replica can be proven fresh.
    StoreError = 7,
    /// Primary: the caller forced the primary for this call or key.
    ForcedPrimary = 8,
    /// Primary: a write (`primary()` / `write_conn()`).
    Write = 9,
    /// Primary: the picked replica's pool could not hand out a connection.
    ReplicaUnavailable = 10,
}

impl Reason {
    /// Number of reasons (for metric arrays).
    pub(crate) const COUNT: usize = 11;

    /// Every reason, in numeric order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::RoundRobin,
        Reason::CaughtUpCached,
        Reason::CaughtUpLive,
        Reason::NoLsnRecorded,
        Reason::NoReplicasConfigured,
        Reason::NoHealthyReplica,
        Reason::NotCaughtUp,
        Reason::StoreError,
        Reason::ForcedPrimary,
        Reason::Write,
        Reason::ReplicaUnavailable,
    ];

    /// Snake-case name used in metrics and status (`round_robin`, `not_caught_up`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RoundRobin => "round_robin",
            Reason::CaughtUpCached => "caught_up_cached",
            Reason::CaughtUpLive => "caught_up_live",
            Reason::NoLsnRecorded => "no_lsn_recorded",
            Reason::NoReplicasConfigured => "no_replicas_configured",
            Reason::NoHealthyReplica => "no_healthy_replica",
            Reason::NotCaughtUp => "not_caught_up",
            Reason::StoreError => "store_error",
            Reason::ForcedPrimary => "forced_primary",
            Reason::Write => "write",
            Reason::ReplicaUnavailable => "replica_unavailable",
        }
    }

    /// The role a route with this reason has.
    pub fn role(self) -> Role {
        match self {
            Reason::RoundRobin
            | Reason::CaughtUpCached
            | Reason::CaughtUpLive
            | Reason::NoLsnRecorded => Role::Replica,
            _ => Role::Primary,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where to send a query, and why. Cheap to clone.
///
/// `Debug` and `Display` show the redacted DSN; [`Route::dsn`] gives the full one.
#[derive(Clone)]
pub struct Route {
    pub(crate) host: Arc<HostRef>,
    pub(crate) reason: Reason,
}

impl Route {
    /// The connection string to use, in the configured syntax, **password included**: hand it
    /// to a driver, never to a log.
    pub fn dsn(&self) -> &str {
        &self.host.dsn
    }

    /// The DSN with its password hidden.
    pub fn redacted_dsn(&self) -> &str {
        &self.host.redacted
    }

    /// `host:port` of the target.
    pub fn addr(&self) -> &str {
        &self.host.label
    }

    /// Primary or replica.
    pub fn role(&self) -> Role {
        self.host.role
    }

    /// Why this target was chosen.
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("dsn", &self.host.redacted)
            .field("role", &self.host.role)
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.host.role.as_str(),
            self.host.label,
            self.reason
        )
    }
}
