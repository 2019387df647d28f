//! Every enumerated name dlb reports: host roles, routing reasons and quarantine reasons, each
//! list written once (numbers, snake-case names and the `ALL` list come from one macro
//! invocation), plus a replica's [`Health`].
//!
//! The numbers are stable: they cross the C ABI (`LB_ROLE_*`, `LB_REASON_*`) and name metric
//! series.

use std::ffi::CStr;
use std::fmt;

/// Declares a C-like enum whose variants each carry a stable number and a snake-case name, and
/// derives `COUNT`, `ALL`, `as_str`, `as_c_str` and `Display` from that one list.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $num, )+
        }

        impl $name {
            /// Number of values (for arrays indexed by the value).
            pub(crate) const COUNT: usize = [$($num),+].len();

            /// Every value, in numeric order.
            pub const ALL: [$name; $name::COUNT] = [$($name::$variant),+];

            /// Snake-case name used in metrics, status and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// [`Self::as_str`] as a static NUL-terminated string (for the C ABI).
            #[allow(dead_code)]
            pub(crate) fn as_c_str(self) -> &'static CStr {
                match self {
                    $( $name::$variant => match CStr::from_bytes_with_nul(concat!($text, "\0").as_bytes()) {
                        Ok(s) => s,
                        Err(_) => unreachable!(),
                    }, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// Which side of replication a host is on.
    pub enum Role {
        /// The primary (read-write).
        Primary = 0 => "primary",
        /// A streaming replica (read-only).
        Replica = 1 => "replica",
    }
}

named_enum! {
    /// Why a read went where it went. Numbers are stable (they cross the C ABI as
    /// `LB_REASON_*`).
    #[non_exhaustive]
    pub enum Reason {
        /// Replica chosen by round-robin; the read had no sticking key.
        RoundRobin = 0 => "round_robin",
        /// Replica chosen because the cached replay positions show it has replayed the key's
        /// LSN.
        CaughtUpCached = 1 => "caught_up_cached",
        /// Replica chosen after a live `pg_last_wal_replay_lsn()` check showed it caught up.
        CaughtUpLive = 2 => "caught_up_live",
        /// Replica chosen by round-robin: the key has no recorded LSN (or it expired).
        NoLsnRecorded = 3 => "no_lsn_recorded",
        /// Primary: no replicas are configured (load balancing off).
        NoReplicasConfigured = 4 => "no_replicas_configured",
        /// Primary: every replica is quarantined or not yet checked.
        NoHealthyReplica = 5 => "no_healthy_replica",
        /// Primary: no replica has replayed the key's LSN yet.
        NotCaughtUp = 6 => "not_caught_up",
        /// Primary: the LSN store failed, so no replica can be proven fresh.
        StoreError = 7 => "store_error",
        /// Primary: the caller forced the primary for this call or key.
        ForcedPrimary = 8 => "forced_primary",
        /// Primary: a write (`primary()` / `write_conn()`).
        Write = 9 => "write",
        /// Primary: the picked replica's pool could not hand out a connection.
        ReplicaUnavailable = 10 => "replica_unavailable",
    }
}

impl Reason {
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

named_enum! {
    /// Why a replica is not serving reads.
    #[non_exhaustive]
    pub enum QuarantineReason {
        /// Over both lag thresholds (bytes and time).
        Lag = 0 => "lag",
        /// Connection or query failed.
        Unreachable = 1 => "unreachable",
        /// The probe did not answer within `probe_timeout_ms`.
        Timeout = 2 => "timeout",
        /// `pg_is_in_recovery()` is false: it is not a standby (promoted, or a primary).
        NotInRecovery = 3 => "not_in_recovery",
        /// Quarantined or added/removed too often within `connectivity.flap_window_ms`: held
        /// out for `connectivity.flap_hold_ms`.
        Flapping = 4 => "flapping",
        /// A standby of another cluster: its `system_identifier` differs from the primary's
        /// (a copy-pasted host list, a name shared by two clusters).
        WrongCluster = 5 => "wrong_cluster",
        /// Its history left the primary's: its replay position is ahead of the primary's, or
        /// it is on a timeline the primary is not on (an async standby that replayed past a
        /// failover's switch point, an old primary restarted as a standby without rewind).
        Diverged = 6 => "diverged",
        /// Behind the primary and replaying nothing for `max_replay_stall_ms` (replay paused,
        /// or blocked by a recovery conflict).
        Stalled = 7 => "stalled",
        /// New connections to this one address reach different servers (a load balancer,
        /// Kubernetes Service or pooler over several replicas): no replay position describes
        /// them all. List each server as its own replica instead.
        MultipleServers = 8 => "multiple_servers",
    }
}

named_enum! {
    /// A balancer's overall verdict in its status report (`Status::status`), and the exit
    /// status of `dlb check` (its number).
    pub enum Overall {
        /// The primary answered the last check, every replica serves reads and the monitor
        /// is on time.
        Ok = 0 => "ok",
        /// Reads and writes are served, but not as configured: a replica is out (or not yet
        /// checked), or the monitor's last check is older than a few check intervals.
        Degraded = 1 => "degraded",
        /// The primary did not answer the last check: writes (and reads falling back to the
        /// primary) fail.
        Down = 2 => "down",
    }
}

named_enum! {
    /// The primary's state as seen by the monitor's last check (`Status::primary_state`).
    #[derive(Default)]
    pub enum PrimaryState {
        /// Not checked yet.
        #[default]
        Unknown = 0 => "unknown",
        /// Answered the last check.
        Up = 1 => "up",
        /// Failed or did not answer the last check.
        Down = 2 => "down",
    }
}

named_enum! {
    /// An LSN store operation, as timed by the `store_operation_seconds` histogram.
    pub enum StoreOp {
        /// Reading a key's entry (sticky picks, `recorded_lsn`).
        Get = 0 => "get",
        /// Recording an LSN (`record_lsn`, `record_lsn_value`).
        Record = 1 => "record",
        /// Forcing a key to the primary (`force_primary`).
        Force = 2 => "force",
    }
}

/// A replica's state as seen by the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: not eligible.
    Unknown,
    /// Serving reads.
    Healthy,
    /// Set aside; not picked.
    Quarantined(QuarantineReason),
}

impl Health {
    /// Every state name, in the order `as_str` can return them.
    pub(crate) const NAMES: [&'static str; 3] = ["unknown", "healthy", "quarantined"];

    /// `unknown`, `healthy` or `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => Health::NAMES[0],
            Health::Healthy => Health::NAMES[1],
            Health::Quarantined(_) => Health::NAMES[2],
        }
    }

    /// The quarantine reason, when quarantined.
    pub fn reason(self) -> Option<QuarantineReason> {
        match self {
            Health::Quarantined(r) => Some(r),
            _ => None,
        }
    }
}

/// The label names dlb's own metric series use: a constant label (`metrics.labels`) may not
/// take one of them.
pub(crate) const SERIES_LABELS: [&str; 7] =
    ["role", "reason", "replica", "host", "state", "op", "le"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_numbered_in_order_with_names() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(r.as_c_str().to_str().unwrap(), r.as_str());
        }
        for (i, q) in QuarantineReason::ALL.iter().enumerate() {
            assert_eq!(*q as usize, i);
        }
        assert_eq!(Reason::COUNT, 11);
        assert_eq!(QuarantineReason::COUNT, 9);
        assert_eq!(Role::ALL, [Role::Primary, Role::Replica]);
        assert_eq!(Reason::NotCaughtUp.to_string(), "not_caught_up");
        assert_eq!(Reason::NoLsnRecorded.role(), Role::Replica);
        assert_eq!(Reason::StoreError.role(), Role::Primary);
    }
}
