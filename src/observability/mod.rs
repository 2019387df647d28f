//! What a balancer tells its operators: the status report ([`Status`]) and the Prometheus
//! metrics rendered from the counters ([`crate::counters`]) and that report. Logging goes
//! through the `log` crate (target `dlb`) everywhere; the C ABI's log callback is in
//! `ffi/logging.rs`.

mod metrics;
mod prometheus;
mod status;

pub(crate) use self::metrics::collect as collect_metrics;
pub use self::metrics::{
    Histogram, HistogramBucket, METRICS_VERSION, Metrics, PickCount, PoolMetrics, ReasonCount,
    ReplicaMetrics,
};
pub(crate) use self::prometheus::render as render_metrics;
pub use self::status::{HostStatus, ReplicaStatus, STATUS_VERSION, Status};
pub(crate) use self::status::{StoreView, collect as collect_status};
