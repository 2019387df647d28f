//! The immutable view of the replicas that the pick path reads: built by the monitor after every
//! check and published whole ([`super::Router::publish`]).

use std::sync::Arc;

use crate::health::{Health, Lag};
use crate::labels::PrimaryState;
use crate::lsn::Lsn;
use crate::server::host::{Host, StripedHost};
use crate::server::identity::ServerIdentity;

/// Who answered a host's last probe, and its timeline.
pub(crate) type Server = Option<(ServerIdentity, Option<u32>)>;

/// One replica in a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaState {
    pub(crate) host: Arc<Host>,
    pub(crate) health: Health,
    pub(crate) lag: Lag,
    pub(crate) last_error: Option<String>,
    pub(crate) server: Server,
}

/// What the pick path and the status report read; replaced whole after every check.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Every configured replica, healthy or not (status, metrics).
    pub(crate) replicas: Vec<ReplicaState>,
    /// The healthy ones, in a stable order: the round-robin ring.
    pub(crate) eligible: Vec<Arc<StripedHost>>,
    /// Replicas that left the list and are being drained (status only).
    pub(crate) draining: Vec<Arc<Host>>,
    /// Primary LSN seen by the last successful check.
    pub(crate) primary_lsn: Option<Lsn>,
    /// Who answered the last successful primary probe.
    pub(crate) primary_server: Server,
    /// The primary's state at the last check.
    pub(crate) primary_state: PrimaryState,
    /// Why the primary's last check failed (no secrets: host names and driver messages).
    pub(crate) primary_error: Option<String>,
    /// Monotonic check counter (0 before the first check).
    pub(crate) generation: u64,
    /// When the monitor published it (`None` before the first check).
    pub(crate) published_at: Option<std::time::Instant>,
    /// The same moment on the wall clock (status only).
    pub(crate) published_wall: Option<std::time::SystemTime>,
}

impl Snapshot {
    /// The same snapshot without `host` in the round-robin ring.
    pub(crate) fn without(&self, host: &Arc<Host>) -> Snapshot {
        Snapshot {
            replicas: self.replicas.clone(),
            eligible: self
                .eligible
                .iter()
                .filter(|h| !Arc::ptr_eq(h.host(), host))
                .cloned()
                .collect(),
            draining: self.draining.clone(),
            primary_lsn: self.primary_lsn,
            primary_server: self.primary_server.clone(),
            primary_state: self.primary_state,
            primary_error: self.primary_error.clone(),
            generation: self.generation,
            published_at: self.published_at,
            published_wall: self.published_wall,
        }
    }
}
