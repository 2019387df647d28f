//! The typed metrics snapshot ([`Metrics`]): what the Prometheus text and the C API's JSON are
//! rendered from.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::Status;
use crate::counters::{CounterValues, Counters};
use crate::labels::{PrimaryState, QuarantineReason, Reason, Role, StoreOp};
use crate::sync::stripe::{LATENCY_BUCKETS, StripedHistogram};

/// The version of the metrics JSON (`lb_metrics_json`, [`Metrics::to_json`]); it grows when
/// fields are added. A field is never removed or changes meaning within a major version.
pub const METRICS_VERSION: u32 = 1;

/// Every metric of a balancer at one moment: counters (summed over the per-thread stripes),
/// gauges from the status report, and latency histograms. [`crate::Balancer::metrics_text`]
/// renders it as Prometheus text; [`Metrics::to_json`] as JSON. Contains no secrets.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// The version of this shape: [`METRICS_VERSION`].
    pub version: u32,
    /// Routing decisions by target role and reason, one entry per [`Reason`].
    pub picks: Vec<PickCount>,
    /// Replicas put out of rotation, one entry per [`QuarantineReason`].
    pub quarantines: Vec<ReasonCount>,
    /// Replicas put back, by the reason they were out, one entry per [`QuarantineReason`].
    pub readmissions: Vec<ReasonCount>,
    /// The plain counters (checks, errors, store and DNS activity).
    pub counters: CounterValues,
    /// The primary answered the last check.
    pub primary_up: bool,
    /// Replicas serving reads.
    pub healthy_replicas: u64,
    /// Seconds since the monitor last published a check; `None` before the first.
    pub last_check_age_seconds: Option<f64>,
    /// Every configured replica.
    pub replicas: Vec<ReplicaMetrics>,
    /// The pool of every host, the primary first.
    pub pools: Vec<PoolMetrics>,
    /// Monitor probe latency by role (`primary`, `replica`), timed on the probe's thread
    /// (a probe that outlives the check's deadline is observed when it ends).
    pub probe_seconds: BTreeMap<&'static str, Histogram>,
    /// Latency of the live proofs of sticky reads: one observation per `pick_replica` or
    /// `read_conn` that checks live (its checks together, up to `sticky_check_budget_ms`),
    /// and per `read_conn` check of the connection of a replica the cache chose.
    pub live_check_seconds: Histogram,
    /// LSN store operation latency by operation (`get`, `record`, `force`), failures included.
    pub store_operation_seconds: BTreeMap<&'static str, Histogram>,
    /// Latency of sticky picks (a key or a minimum LSN): store read, cached positions, live
    /// checks.
    pub sticky_pick_seconds: Histogram,
}

/// Picks of one reason.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PickCount {
    /// `primary` or `replica`.
    pub role: &'static str,
    /// A [`Reason`] name.
    pub reason: &'static str,
    /// Picks so far.
    pub count: u64,
}

/// A count of one [`QuarantineReason`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ReasonCount {
    /// A [`QuarantineReason`] name.
    pub reason: &'static str,
    /// Events so far.
    pub count: u64,
}

/// A replica's gauges.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ReplicaMetrics {
    /// `host:port`.
    pub replica: String,
    /// Serves reads.
    pub up: bool,
    /// `unknown`, `healthy` or `quarantined`.
    pub state: &'static str,
    /// WAL bytes behind the primary; `None` when unknown (no replay position or primary
    /// position yet).
    pub lag_bytes: Option<u64>,
    /// Seconds since the last replayed transaction while behind; `None` when unknown.
    pub lag_seconds: Option<f64>,
}

/// A host's pool.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// `host:port`.
    pub host: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// Idle pooled connections.
    pub idle: u32,
    /// Checked-out pooled connections.
    pub active: u32,
}

/// A latency histogram over fixed buckets (100 µs to 10 s).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Histogram {
    /// Cumulative counts: observations of at most `le` seconds (`+Inf` is `count`).
    pub buckets: Vec<HistogramBucket>,
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// One bucket of a [`Histogram`].
#[derive(Clone, Copy, Debug, Serialize)]
#[non_exhaustive]
pub struct HistogramBucket {
    /// The upper bound, in seconds.
    pub le: f64,
    /// Observations of at most `le` (cumulative).
    pub count: u64,
}

impl Metrics {
    /// The metrics as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metrics serialize")
    }
}

fn histogram(h: &StripedHistogram) -> Histogram {
    let (cumulative, count, sum_seconds) = h.read();
    Histogram {
        buckets: LATENCY_BUCKETS
            .iter()
            .zip(cumulative)
            .map(|(&le, count)| HistogramBucket { le, count })
            .collect(),
        count,
        sum_seconds,
    }
}

/// The metrics from the counters and a status report. Never blocks on I/O.
pub(crate) fn collect(m: &Counters, status: &Status) -> Metrics {
    let reasons = |a: &[std::sync::atomic::AtomicU64]| {
        QuarantineReason::ALL
            .iter()
            .map(|q| ReasonCount {
                reason: q.as_str(),
                count: a[*q as usize].load(Relaxed),
            })
            .collect()
    };
    let replicas: Vec<ReplicaMetrics> = status
        .replicas
        .iter()
        .map(|r| ReplicaMetrics {
            replica: r.host.addr.clone(),
            up: r.state == crate::labels::Health::Healthy.as_str(),
            state: r.state,
            lag_bytes: (r.replay_lsn.is_some() && status.primary_lsn.is_some())
                .then_some(r.lag_bytes),
            lag_seconds: r.lag_seconds,
        })
        .collect();
    let pools = std::iter::once((&status.primary, Role::Primary))
        .chain(status.replicas.iter().map(|r| (&r.host, Role::Replica)))
        .map(|(h, role)| PoolMetrics {
            host: h.addr.clone(),
            role: role.as_str(),
            idle: h.pool_idle,
            active: h.pool_connections.saturating_sub(h.pool_idle),
        })
        .collect();
    Metrics {
        version: METRICS_VERSION,
        picks: Reason::ALL
            .iter()
            .map(|r| PickCount {
                role: r.role().as_str(),
                reason: r.as_str(),
                count: m.picks.get(*r as usize),
            })
            .collect(),
        quarantines: reasons(&m.quarantines),
        readmissions: reasons(&m.readmissions),
        counters: m.values(),
        primary_up: status.primary_state == PrimaryState::Up.as_str(),
        healthy_replicas: status.healthy_replicas as u64,
        last_check_age_seconds: status.last_check_age_ms.map(|ms| ms as f64 / 1000.0),
        replicas,
        pools,
        probe_seconds: Role::ALL
            .iter()
            .map(|r| (r.as_str(), histogram(&m.probe_latency[*r as usize])))
            .collect(),
        live_check_seconds: histogram(&m.live_check_latency),
        store_operation_seconds: StoreOp::ALL
            .iter()
            .map(|o| (o.as_str(), histogram(&m.store_latency[*o as usize])))
            .collect(),
        sticky_pick_seconds: histogram(&m.sticky_pick_latency),
    }
}
