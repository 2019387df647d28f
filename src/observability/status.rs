//! The status report of a balancer: every host, its state and pool, as last seen.

use serde::Serialize;

use crate::host::Host;
use crate::routing::{Router, Server};

/// A point-in-time report of every host. Contains no secrets; serialize it with
/// [`Status::to_json`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The primary.
    pub primary: HostStatus,
    /// Every configured replica.
    pub replicas: Vec<ReplicaStatus>,
    /// The primary's WAL insert position at the last successful check, as `X/Y`.
    pub primary_lsn: Option<String>,
    /// Checks run by the monitor so far.
    pub checks: u64,
    /// Milliseconds since the monitor last published a check; `None` before the first. Several
    /// check intervals means the monitor is stuck or failing: sticky picks then stop trusting
    /// cached replay positions.
    pub last_check_age_ms: Option<u64>,
    /// Replicas currently serving reads.
    pub healthy_replicas: usize,
    /// Kind of LSN store (`memory`, ...).
    pub lsn_store: &'static str,
    /// Replicas that left the list and are being drained (`host:port`).
    pub draining: Vec<String>,
}

/// A host and its pool.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct HostStatus {
    /// `host:port`.
    pub addr: String,
    /// The DSN with its password hidden.
    pub dsn: String,
    /// Open pooled connections.
    pub pool_connections: u32,
    /// Of which idle.
    pub pool_idle: u32,
    /// The server that answered the last probe, as it sees itself
    /// (`inet_server_addr():inet_server_port()`); `None` until a probe answers. Differs from
    /// `addr` behind a proxy or a load balancer.
    pub server_addr: Option<String>,
    /// That server's `system_identifier` (as decimal text: it does not fit a JSON number):
    /// the same for a primary and its standbys.
    pub system_identifier: Option<String>,
    /// That server's timeline (received or last restarted on, for a standby).
    pub timeline: Option<u32>,
}

/// A replica's health as last seen by the monitor.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The host and its pool.
    #[serde(flatten)]
    pub host: HostStatus,
    /// `unknown`, `healthy` or `quarantined`.
    pub state: &'static str,
    /// Why quarantined: a [`crate::QuarantineReason`] name (`lag`, `unreachable`, `timeout`,
    /// `not_in_recovery`, `flapping`, `wrong_cluster`, `diverged`, `stalled`,
    /// `multiple_servers`).
    pub reason: Option<&'static str>,
    /// Cached replay position, as `X/Y`.
    pub replay_lsn: Option<String>,
    /// Bytes behind the primary.
    pub lag_bytes: u64,
    /// Seconds behind (0 when not behind in bytes); `None` when unknown.
    pub lag_seconds: Option<f64>,
    /// The last probe error (no secrets: host names and driver messages only).
    pub last_error: Option<String>,
}

impl Status {
    /// The report as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("status serializes")
    }
}

fn host_status(h: &Host, server: &Server) -> HostStatus {
    let st = h.pool.state();
    HostStatus {
        addr: h.addr.clone(),
        dsn: h.redacted.clone(),
        pool_connections: st.connections,
        pool_idle: st.idle_connections,
        server_addr: server.as_ref().map(|(id, _)| id.server_addr.clone()),
        system_identifier: server.as_ref().map(|(id, _)| id.system_id.to_string()),
        timeline: server.as_ref().and_then(|(_, tl)| *tl),
    }
}

/// The report of `router`'s current snapshot. Never blocks on I/O.
pub(crate) fn collect(router: &Router, lsn_store: &'static str) -> Status {
    router.with_snapshot(|snap| Status {
        primary: host_status(router.primary(), &snap.primary_server),
        replicas: snap
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                host: host_status(&r.host, &r.server),
                state: r.health.as_str(),
                reason: r.health.reason().map(|q| q.as_str()),
                replay_lsn: r.host.replay_lsn().map(|l| l.to_string()),
                lag_bytes: r.lag.bytes,
                lag_seconds: r.lag.seconds.is_finite().then_some(r.lag.seconds),
                last_error: r.last_error.clone(),
            })
            .collect(),
        primary_lsn: snap.primary_lsn.map(|l| l.to_string()),
        checks: snap.generation,
        last_check_age_ms: snap
            .published_at
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        healthy_replicas: snap.eligible.len(),
        lsn_store,
        draining: snap.draining.iter().map(|h| h.addr.clone()).collect(),
    })
}
