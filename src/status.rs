//! Health/status report and Prometheus metrics of a balancer.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::balancer::Balancer;
use crate::host::Host;
use crate::metrics::Exposition;
use crate::route::Reason;
use crate::state::{Health, QuarantineReason};

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
    /// Why quarantined (`lag`, `unreachable`, `timeout`, `not_in_recovery`).
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

fn host_status(h: &Host) -> HostStatus {
    let st = h.pool.state();
    HostStatus {
        addr: h.label.clone(),
        dsn: h.redacted.clone(),
        pool_connections: st.connections,
        pool_idle: st.idle_connections,
    }
}

impl Balancer {
    /// The current health report. Never blocks on I/O.
    pub fn status(&self) -> Status {
        let s = self.shared();
        s.with_snapshot(|snap| Status {
            primary: host_status(&s.primary),
            replicas: snap
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    host: host_status(&r.host),
                    state: r.health.as_str(),
                    reason: match r.health {
                        Health::Quarantined(q) => Some(q.as_str()),
                        _ => None,
                    },
                    replay_lsn: r.host.replay_lsn().map(|l| l.to_string()),
                    lag_bytes: r.lag.bytes,
                    lag_seconds: r.lag.seconds.is_finite().then_some(r.lag.seconds),
                    last_error: r.last_error.clone(),
                })
                .collect(),
            primary_lsn: snap.primary_lsn.map(|l| l.to_string()),
            checks: snap.generation,
            healthy_replicas: snap.eligible.len(),
            lsn_store: s.store.kind(),
            draining: snap.draining.iter().map(|h| h.label.clone()).collect(),
        })
    }

    /// Every metric in the Prometheus text exposition format (names prefixed `dlb_`).
    /// Per-replica series exist only for replicas currently configured. Never blocks on I/O.
    pub fn metrics_text(&self) -> String {
        let s = self.shared();
        let m = &s.metrics;
        let mut e = Exposition::new();
        e.family(
            "picks_total",
            "counter",
            "Routing decisions, by target role and reason.",
        );
        for r in Reason::ALL {
            e.sample(
                "picks_total",
                &[("role", r.role().as_str()), ("reason", r.as_str())],
                m.picks.get(r as usize),
            );
        }
        e.family(
            "quarantines_total",
            "counter",
            "Replicas put out of rotation, by reason.",
        );
        for q in QuarantineReason::ALL {
            e.sample(
                "quarantines_total",
                &[("reason", q.as_str())],
                m.quarantines[q as usize].load(Relaxed),
            );
        }
        e.family(
            "readmissions_total",
            "counter",
            "Replicas put back into rotation, by the reason they were out.",
        );
        for q in QuarantineReason::ALL {
            e.sample(
                "readmissions_total",
                &[("reason", q.as_str())],
                m.readmissions[q as usize].load(Relaxed),
            );
        }
        let counters = [
            ("checks_total", "Monitor checks run.", &m.checks),
            (
                "primary_check_errors_total",
                "Monitor checks whose primary probe failed.",
                &m.primary_check_errors,
            ),
            (
                "replica_check_errors_total",
                "Replica probes that failed.",
                &m.replica_check_errors,
            ),
            (
                "live_lsn_checks_total",
                "Live replay-LSN queries made by sticky picks.",
                &m.live_lsn_checks,
            ),
            (
                "lsn_recorded_total",
                "LSNs recorded for sticking keys.",
                &m.lsn_recorded,
            ),
            (
                "store_errors_total",
                "LSN store operations that failed.",
                &m.store_errors,
            ),
            (
                "reported_failures_total",
                "Network failures reported by callers.",
                &m.reported_failures,
            ),
            (
                "dns_refreshes_total",
                "DNS discovery refreshes attempted.",
                &m.dns_refreshes,
            ),
            (
                "dns_errors_total",
                "DNS refreshes that failed or came back empty (the last good list stays).",
                &m.dns_errors,
            ),
            (
                "replicas_added_total",
                "Replicas that joined the list after start-up.",
                &m.replicas_added,
            ),
            (
                "replicas_removed_total",
                "Replicas that left the list (then drained).",
                &m.replicas_removed,
            ),
            (
                "replicas_drained_total",
                "Removed replicas whose pools were closed.",
                &m.replicas_drained,
            ),
        ];
        for (name, help, c) in counters {
            e.family(name, "counter", help);
            e.sample(name, &[], c.load(Relaxed));
        }
        let status = self.status();
        e.family(
            "replica_up",
            "gauge",
            "1 when the replica serves reads, else 0.",
        );
        for r in &status.replicas {
            e.sample(
                "replica_up",
                &[("replica", &r.host.addr)],
                u8::from(r.state == "healthy"),
            );
        }
        e.family(
            "replica_state",
            "gauge",
            "Replica state, one series per state set to 1.",
        );
        for r in &status.replicas {
            for st in ["unknown", "healthy", "quarantined"] {
                e.sample(
                    "replica_state",
                    &[("replica", &r.host.addr), ("state", st)],
                    u8::from(r.state == st),
                );
            }
        }
        e.family(
            "replica_lag_bytes",
            "gauge",
            "WAL bytes the replica is behind the primary.",
        );
        for r in &status.replicas {
            e.sample(
                "replica_lag_bytes",
                &[("replica", &r.host.addr)],
                r.lag_bytes,
            );
        }
        e.family(
            "replica_lag_seconds",
            "gauge",
            "Seconds since the replica's last replayed transaction, while behind.",
        );
        for r in &status.replicas {
            let v = r.lag_seconds.map_or("+Inf".to_string(), |v| format!("{v}"));
            e.sample("replica_lag_seconds", &[("replica", &r.host.addr)], v);
        }
        e.family(
            "pool_connections",
            "gauge",
            "Open pooled connections per host, by state.",
        );
        let hosts = std::iter::once((&status.primary, "primary"))
            .chain(status.replicas.iter().map(|r| (&r.host, "replica")));
        for (h, role) in hosts {
            let active = h.pool_connections.saturating_sub(h.pool_idle);
            e.sample(
                "pool_connections",
                &[("host", &h.addr), ("role", role), ("state", "idle")],
                h.pool_idle,
            );
            e.sample(
                "pool_connections",
                &[("host", &h.addr), ("role", role), ("state", "active")],
                active,
            );
        }
        e.finish()
    }
}
