//! Concurrency primitives, each depending on nothing else in the crate (as
//! `crossbeam-utils/src/sync/` does): per-thread stripes ([`stripe`]), the hazard-slot
//! publication of a value read by every pick ([`published`]), a bounded pollable queue
//! ([`queue`]), an instant in an atomic word ([`instant`]) and which side of a `fork` this is ([`fork`]).
//!
//! What this part deliberately does not do: know what it carries. Snapshots, hosts, events and
//! log records are its callers' types; `tests/architecture.rs` fails if a module here imports
//! another part of the crate.

pub(crate) mod fork;
pub(crate) mod instant;
pub(crate) mod published;
pub(crate) mod queue;
pub(crate) mod stripe;
