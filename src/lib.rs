//! # dlb: client-side PostgreSQL load balancing
//!
//! dlb spreads reads over streaming replicas without serving a stale read to a caller who just
//! wrote. A [`Balancer`] owns one r2d2 pool per host and a background monitor that measures
//! every replica's replay position and lag, quarantining replicas that fall behind or stop
//! answering. Picking a host for a read takes no lock and does no I/O.
//!
//! ```no_run
//! use dlb::{Balancer, Config};
//!
//! let config = Config::from_json(r#"{
//!     "primary": "host=127.0.0.1 port=5432 user=app dbname=app",
//!     "replicas": { "hosts": ["127.0.0.1:5433", "127.0.0.1:5434"] }
//! }"#)?;
//! let lb = Balancer::new(config)?;
//!
//! // Write on the primary, then remember where the WAL was for this key.
//! lb.write_conn()?.execute("INSERT INTO tags (repo, name) VALUES ($1, $2)", &[&"a/b", &"v1"])?;
//! let token = lb.record_lsn("repo:a/b")?;
//!
//! // Reads for the key only go to replicas that have replayed the write.
//! let mut conn = lb.read_conn(Some("repo:a/b"))?;
//! let rows = conn.query("SELECT name FROM tags WHERE repo = $1", &[&"a/b"])?;
//! println!("{} tags via {} (token {token})", rows.len(), conn.route());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn
)]

mod balancer;
mod config;
mod counters;
mod discovery;
mod dsn;
mod error;
mod events;
#[doc(hidden)]
pub mod ffi;
mod freshness;
mod health;
mod labels;
mod lsn;
mod monitor;
mod observability;
mod redact;
mod routing;
mod server;
mod sticking;
mod sync;
// Test-only C entry points (`ffi-tests/`), outside `ffi/` so that cbindgen does not put them
// in the header, and compiled only with the `ffi-test-hooks` feature.
#[cfg(feature = "ffi-test-hooks")]
#[doc(hidden)]
pub mod test_hooks;

// Property tests (fuzzing) of the crate-private parsers.
#[cfg(test)]
mod fuzz_tests;

pub use balancer::{Balancer, Conn, SqlStatement};
pub use config::{
    Config, ConfigBuilder, ConnectivityConfig, DnsConfig, DnsRecordType, LsnStoreConfig,
    MAX_KEY_LEN, MetricsConfig, NoCaughtUpPolicy, PoolConfig, RedisStoreConfig, ReplicasConfig,
};
pub use counters::CounterValues;
pub use dsn::HostPort;
pub use error::{Error, Result};
pub use events::{EVENT_QUEUE_CAPACITY, EventCallback, HostEvent, HostEventKind};
pub use labels::{Health, Overall, PrimaryState, QuarantineReason, Reason, Role};
pub use lsn::{CausalToken, Lsn};
pub use observability::{
    Histogram, HistogramBucket, HostStatus, METRICS_VERSION, Metrics, PickCount, PoolMetrics,
    ReasonCount, ReplicaMetrics, ReplicaStatus, STATUS_VERSION, Status,
};
pub use routing::{PickOptions, Route};
pub use server::connection::STATEMENT_CACHE_SIZE;
pub use sticking::{LsnStore, MAX_TTL, MAX_VERBATIM_KEY, MemoryStore, Recorded, RedisStore};
pub use sync::stripe::LATENCY_BUCKETS;
