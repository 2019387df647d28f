//! Replica health: the vocabulary ([`Health`], [`QuarantineReason`], lag) and the pure policy
//! that decides when a replica is in or out ([`policy`]). No I/O here: probes are the monitor's
//! ([`crate::monitor`]).

pub(crate) mod policy;

pub(crate) use self::policy::{Lag, Observation, Policy, ReplicaHealth};
pub(crate) use crate::labels::Health;
