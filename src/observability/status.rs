//! The status report of a balancer: every host, its state and pool, as last seen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::labels::{Health, Overall, PrimaryState};
use crate::routing::{Router, Server};
use crate::server::host::Host;

/// The version of the status JSON ([`Status::version`]). It grows when fields are added
/// (2: `version`, `status`, `primary_state`, `primary_error`, `last_check_at`,
/// `check_interval_ms`); a field is never removed or changes meaning within a major version
/// of the crate.
pub const STATUS_VERSION: u32 = 2;

/// A point-in-time report of every host. Contains no secrets; serialize it with
/// [`Status::to_json`]. docs/operations.md, "Status", shows the JSON.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The version of this report's shape: [`STATUS_VERSION`].
    pub version: u32,
    /// The overall verdict, an [`Overall`] name: `ok` (the primary answered the last check,
    /// every replica serves reads, the monitor is on time), `degraded` (a replica is out or
    /// not yet checked, or the last check is older than a few check intervals: reads are
    /// still served) or `down` (the primary did not answer the last check).
    pub status: &'static str,
    /// The primary's state at the last check, a [`PrimaryState`] name: `unknown`, `up` or
    /// `down`.
    pub primary_state: &'static str,
    /// Why the primary's last check failed (no secrets: host names and driver messages);
    /// `None` while it answers.
    pub primary_error: Option<String>,
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
    /// When the monitor last published a check, in UTC (RFC 3339 with milliseconds,
    /// `2026-12-01T22:04:05.123Z`); `None` before the first.
    pub last_check_at: Option<String>,
    /// The configured check interval (`replica_check_interval_ms`), to judge
    /// `last_check_age_ms` by.
    pub check_interval_ms: u64,
    /// Replicas currently serving reads.
    pub healthy_replicas: usize,
    /// Kind of LSN store (`memory`, ...).
    pub lsn_store: &'static str,
    /// A standing concern about the LSN store (a Redis `maxmemory-policy` other than
    /// `noeviction`, which lets Redis evict recorded LSNs); `None` when there is none.
    pub lsn_store_warning: Option<String>,
    /// Milliseconds since dlb last noticed the LSN store lost entries (a Redis restart without
    /// persistence, a flush, an eviction; the memory store's cap): for `sticky_ttl_s` after it,
    /// keyed reads that find nothing go to the primary. `None` if never.
    pub lsn_store_loss_age_ms: Option<u64>,
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
    /// Seconds behind (0 when not behind in bytes); `None` when unknown (no replay position:
    /// the replica has not answered, or its last probe failed).
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

/// The overall verdict: `down` unless the primary answered the last check; `degraded` when a
/// replica does not serve reads or the last check is older than `stale_after`.
pub(crate) fn overall(
    primary: PrimaryState,
    replicas: impl IntoIterator<Item = Health>,
    last_check_age: Option<Duration>,
    stale_after: Duration,
) -> Overall {
    if primary != PrimaryState::Up {
        return Overall::Down;
    }
    let stale = last_check_age.is_none_or(|age| age > stale_after);
    if stale || replicas.into_iter().any(|h| h != Health::Healthy) {
        Overall::Degraded
    } else {
        Overall::Ok
    }
}

/// `t` in UTC as RFC 3339 with milliseconds (`2026-12-01T22:04:05.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let (secs, millis) = (ms / 1000, ms % 1000);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The report of `router`'s current snapshot. Never blocks on I/O.
/// What status tells of the LSN store (read by the balancer from it; none of it blocks).
pub(crate) struct StoreView {
    /// [`Status::lsn_store`].
    pub(crate) kind: &'static str,
    /// [`Status::lsn_store_warning`].
    pub(crate) warning: Option<String>,
    /// When the store last lost entries ([`Status::lsn_store_loss_age_ms`]).
    pub(crate) last_loss: Option<std::time::Instant>,
}

pub(crate) fn collect(router: &Router, store: StoreView, check_interval_ms: u64) -> Status {
    router.with_snapshot(|snap| {
        let age = snap.published_at.map(|t| t.elapsed());
        let verdict = overall(
            snap.primary_state,
            snap.replicas.iter().map(|r| r.health),
            age,
            router.trust_cache_for(),
        );
        Status {
            version: STATUS_VERSION,
            status: verdict.as_str(),
            primary_state: snap.primary_state.as_str(),
            primary_error: snap.primary_error.clone(),
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
                    // No replay position (never answered, or the last probe failed): unknown.
                    lag_seconds: (r.lag.seconds.is_finite() && r.host.replay_lsn().is_some())
                        .then_some(r.lag.seconds),
                    last_error: r.last_error.clone(),
                })
                .collect(),
            primary_lsn: snap.primary_lsn.map(|l| l.to_string()),
            checks: snap.generation,
            last_check_age_ms: age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            last_check_at: snap.published_wall.map(rfc3339),
            check_interval_ms,
            healthy_replicas: snap.eligible.len(),
            lsn_store: store.kind,
            lsn_store_warning: store.warning,
            lsn_store_loss_age_ms: store
                .last_loss
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
            draining: snap.draining.iter().map(|h| h.addr.clone()).collect(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::QuarantineReason;

    #[test]
    fn rfc3339_renders_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_903_445_123);
        assert_eq!(rfc3339(t), "2026-11-28T22:04:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn overall_verdict() {
        let s = Duration::from_secs(3);
        let fresh = Some(Duration::from_millis(10));
        let ok = [Health::Healthy, Health::Healthy];
        let lag = [Health::Healthy, Health::Quarantined(QuarantineReason::Lag)];
        assert_eq!(overall(PrimaryState::Up, ok, fresh, s), Overall::Ok);
        assert_eq!(overall(PrimaryState::Up, [], fresh, s), Overall::Ok);
        assert_eq!(overall(PrimaryState::Up, lag, fresh, s), Overall::Degraded);
        assert_eq!(
            overall(PrimaryState::Up, [Health::Unknown], fresh, s),
            Overall::Degraded
        );
        let old = Some(Duration::from_secs(4));
        assert_eq!(overall(PrimaryState::Up, ok, old, s), Overall::Degraded);
        assert_eq!(overall(PrimaryState::Up, ok, None, s), Overall::Degraded);
        assert_eq!(overall(PrimaryState::Down, ok, fresh, s), Overall::Down);
        assert_eq!(overall(PrimaryState::Unknown, ok, fresh, s), Overall::Down);
    }
}
