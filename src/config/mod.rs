//! Configuration: JSON (unknown fields rejected) or the typed [`ConfigBuilder`].
//!
//! ```json
//! { "primary": "host=127.0.0.1 port=5432 user=app dbname=app",
//!   "replicas": { "hosts": ["127.0.0.1:5433", "127.0.0.1:5434"] },
//!   "replica_check_interval_ms": 1000,
//!   "max_lag_bytes": 8388608, "max_lag_ms": 30000,
//!   "pool": { "max_size": 10, "connect_timeout_ms": 2000, "max_lifetime_s": 1800 } }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dsn::{Dsn, HostPort};
use crate::error::{Error, Result};

mod builder;
mod check;

pub use self::builder::ConfigBuilder;
use self::check::safe_path;

/// Longest accepted sticking key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest time-to-live a store keeps an entry for: 10 years (of 365 days).
///
/// A longer `ttl` given to [`crate::LsnStore::record`] or [`crate::LsnStore::force`] (up to
/// [`Duration::MAX`], e.g. through [`crate::Balancer::force_primary`]) counts as this one:
/// "forever" for a read. `sticky_ttl_s` may be at most this many seconds
/// ([`crate::Config::validate`] rejects more, naming the field).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Balancer configuration. Build it with [`Config::from_json`] or [`Config::builder`]; both
/// validate, and [`crate::Balancer::new`] validates again.
///
/// Every size and duration has an upper bound (docs/configuration.md lists them), so
/// that no setting can make the balancer allocate without limit or block a caller for an
/// unreasonable time. `Debug` shows the primary DSN and the Redis URLs without their
/// passwords ([`Config::to_json`] shows them as configured).
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The primary's connection string: libpq `key=value` or a `postgres://` URL. Required.
    /// Replica connection strings are this one with host and port replaced.
    pub primary: String,
    /// Where the replicas are. Absent, `null` or empty: every read goes to the primary.
    #[serde(default)]
    pub replicas: Option<ReplicasConfig>,
    /// How often the background monitor polls the primary's LSN and every replica's replay
    /// position, in milliseconds. Default [`Config::DEFAULT_REPLICA_CHECK_INTERVAL_MS`]; at
    /// least 10, at most an hour.
    #[serde(default = "serde_default::replica_check_interval_ms")]
    pub replica_check_interval_ms: u64,
    /// Replication lag, in bytes of WAL, over which (together with `max_lag_ms`) a replica is
    /// quarantined. Default [`Config::DEFAULT_MAX_LAG_BYTES`].
    #[serde(default = "serde_default::max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// Replication lag, in milliseconds since the last replayed transaction, over which
    /// (together with `max_lag_bytes`) a replica is quarantined. Counts only while the replica
    /// is behind in bytes, so an idle primary never quarantines a caught-up replica.
    /// Default [`Config::DEFAULT_MAX_LAG_MS`].
    #[serde(default = "serde_default::max_lag_ms")]
    pub max_lag_ms: u64,
    /// Time lag, in milliseconds since the last replayed transaction while behind in bytes,
    /// over which a replica is quarantined `lag` **whatever its byte lag**: for a delayed
    /// standby (`recovery_min_apply_delay`), which receives WAL at once but replays it late,
    /// so that its byte lag stays small under light traffic. Re-admitted under half of it.
    /// 0 (the default, [`Config::DEFAULT_MAX_TIME_LAG_MS`]) turns the rule off: then only
    /// both thresholds together quarantine. At most 10 years.
    #[serde(default = "serde_default::max_time_lag_ms")]
    pub max_time_lag_ms: u64,
    /// How long a replica that is behind the primary (in bytes, by any amount) may go without
    /// replaying anything before it is quarantined `stalled` (replay paused, or blocked by a
    /// recovery conflict): under light write traffic its lag may stay under `max_lag_bytes`
    /// for ever. In milliseconds; 0 turns the rule off. Default
    /// [`Config::DEFAULT_MAX_REPLAY_STALL_MS`].
    #[serde(default = "serde_default::max_replay_stall_ms")]
    pub max_replay_stall_ms: u64,
    /// Client-side timeout of each monitor probe and of each live replay-LSN check.
    /// A replica that does not answer in time counts as failed, in milliseconds. Default
    /// [`Config::DEFAULT_PROBE_TIMEOUT_MS`]; at most a minute (construction waits for a first
    /// probe).
    #[serde(default = "serde_default::probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Connection pools, one per host.
    #[serde(default)]
    pub pool: PoolConfig,
    /// How long a recorded LSN is kept for a key (primary sticking), in seconds. Default
    /// [`Config::DEFAULT_STICKY_TTL_S`]; at most 10 years ([`crate::MAX_TTL`]).
    #[serde(default = "serde_default::sticky_ttl_s")]
    pub sticky_ttl_s: u64,
    /// Total time a keyed pick may block, in milliseconds, from its start: the LSN store's read,
    /// then live checks of the replicas when the cached replay positions do not show one
    /// caught up. Default [`Config::DEFAULT_STICKY_CHECK_BUDGET_MS`]; 0 disables live checks
    /// (the store's read then has the store's own limit only); at most a minute.
    #[serde(default = "serde_default::sticky_check_budget_ms")]
    pub sticky_check_budget_ms: u64,
    /// What a sticky pick does when no replica has replayed the key's LSN: `"primary"`
    /// (default) or `"error"` ([`crate::Error::NoCaughtUpReplica`], retryable).
    #[serde(default)]
    pub no_caught_up_replica: NoCaughtUpPolicy,
    /// Where recorded LSNs live: `{"memory": {}}` (default, in-process) or `{"redis": {...}}`
    /// (shared by a fleet).
    #[serde(default)]
    pub lsn_store: LsnStoreConfig,
    /// Connectivity quarantine of replicas that fail probes.
    #[serde(default)]
    pub connectivity: ConnectivityConfig,
    /// How the Prometheus metrics are named and labelled.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

impl fmt::Debug for Config {
    /// Every field, the primary DSN without its password (as `lb_dsn_redact` renders it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be left out (or shown unredacted) unnoticed.
        let Config {
            primary,
            replicas,
            replica_check_interval_ms,
            max_lag_bytes,
            max_lag_ms,
            max_time_lag_ms,
            max_replay_stall_ms,
            probe_timeout_ms,
            pool,
            sticky_ttl_s,
            sticky_check_budget_ms,
            no_caught_up_replica,
            lsn_store,
            connectivity,
            metrics,
        } = self;
        f.debug_struct("Config")
            .field("primary", &crate::dsn::redact_dsn(primary))
            .field("replicas", replicas)
            .field("replica_check_interval_ms", replica_check_interval_ms)
            .field("max_lag_bytes", max_lag_bytes)
            .field("max_lag_ms", max_lag_ms)
            .field("max_time_lag_ms", max_time_lag_ms)
            .field("max_replay_stall_ms", max_replay_stall_ms)
            .field("probe_timeout_ms", probe_timeout_ms)
            .field("pool", pool)
            .field("sticky_ttl_s", sticky_ttl_s)
            .field("sticky_check_budget_ms", sticky_check_budget_ms)
            .field("no_caught_up_replica", no_caught_up_replica)
            .field("lsn_store", lsn_store)
            .field("connectivity", connectivity)
            .field("metrics", metrics)
            .finish()
    }
}

/// Which [`crate::LsnStore`] to use.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum LsnStoreConfig {
    /// The embedded in-process store ([`crate::MemoryStore`]).
    Memory {},
    /// Redis (standalone or Cluster).
    Redis(RedisStoreConfig),
}

impl Default for LsnStoreConfig {
    fn default() -> Self {
        LsnStoreConfig::Memory {}
    }
}

/// Redis LSN store settings. Exactly one of `url` and `cluster` is required. `Debug` shows the
/// URLs without their passwords.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisStoreConfig {
    /// A standalone Redis: `redis://[[user]:password@]host:port[/db]`, or `rediss://...` for
    /// TLS (the server's certificate is verified against `tls_ca_file`, or the system's
    /// trusted roots).
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Cluster seed nodes (`redis://host:port`, ...); at most
    /// [`RedisStoreConfig::LIMIT_CLUSTER_NODES`].
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Prefix of every stored key. Default [`RedisStoreConfig::DEFAULT_KEY_PREFIX`].
    #[serde(default = "serde_default::redis_key_prefix")]
    pub key_prefix: String,
    /// Timeout of each Redis operation (connect, read, write), in milliseconds. Default
    /// [`RedisStoreConfig::DEFAULT_OP_TIMEOUT_MS`]; at most a minute.
    #[serde(default = "serde_default::redis_op_timeout_ms")]
    pub op_timeout_ms: u64,
    /// Pooled Redis connections. Default [`RedisStoreConfig::DEFAULT_POOL_SIZE`]; at most
    /// [`RedisStoreConfig::LIMIT_POOL_SIZE`].
    #[serde(default = "serde_default::redis_pool_size")]
    pub pool_size: u32,
    /// PEM file of the certificate authorities trusted for `rediss://` URLs instead of the
    /// system's roots (a private CA). Read when the balancer starts. Default: none.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
}

impl fmt::Debug for RedisStoreConfig {
    /// Every field, the URLs without their credentials (`user:password@` becomes `***@`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RedisStoreConfig {
            url,
            cluster,
            key_prefix,
            op_timeout_ms,
            pool_size,
            tls_ca_file,
        } = self;
        let redacted = |u: &String| crate::redact::redact_url(u);
        f.debug_struct("RedisStoreConfig")
            .field("url", &url.as_ref().map(redacted))
            .field("cluster", &cluster.iter().map(redacted).collect::<Vec<_>>())
            .field("key_prefix", key_prefix)
            .field("op_timeout_ms", op_timeout_ms)
            .field("pool_size", pool_size)
            .field("tls_ca_file", tls_ca_file)
            .finish()
    }
}

/// Connectivity quarantine: consecutive probe failures put a replica aside; it is probed again
/// with exponential backoff and re-admitted after a successful probe. A replica that flaps
/// (many quarantines or list changes within a window) is held out longer.
///
/// A field missing from the JSON takes its value from [`ConnectivityConfig::default`]. The
/// thresholds are at most 1000, the durations at most a day.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConnectivityConfig {
    /// Consecutive failed probes (errors or timeouts) before quarantine. Default
    /// [`ConnectivityConfig::DEFAULT_FAILURE_THRESHOLD`]: with 1, the first failure takes a
    /// replica out (reads then go to the others).
    pub failure_threshold: u32,
    /// First wait before re-probing a quarantined replica, in milliseconds. Default
    /// [`ConnectivityConfig::DEFAULT_BACKOFF_INITIAL_MS`].
    pub backoff_initial_ms: u64,
    /// Longest wait between probes of a quarantined replica, in milliseconds. Default
    /// [`ConnectivityConfig::DEFAULT_BACKOFF_MAX_MS`].
    pub backoff_max_ms: u64,
    /// Window over which flapping is counted, in milliseconds. Default
    /// [`ConnectivityConfig::DEFAULT_FLAP_WINDOW_MS`].
    pub flap_window_ms: u64,
    /// Quarantines (or add/remove events) within the window that make a replica a flapper.
    /// Default [`ConnectivityConfig::DEFAULT_FLAP_THRESHOLD`].
    pub flap_threshold: u32,
    /// How long a flapping replica is held out after its last quarantine or list change, in
    /// milliseconds (each new one extends the hold). It is still probed meanwhile, and serves
    /// anyway when no other replica does. Default [`ConnectivityConfig::DEFAULT_FLAP_HOLD_MS`]:
    /// with the defaults, a replica that answers is back within 15 s of its last fault.
    pub flap_hold_ms: u64,
}

impl ConnectivityConfig {
    /// Default of [`ConnectivityConfig::failure_threshold`].
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 1;
    /// Default of [`ConnectivityConfig::backoff_initial_ms`].
    pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1000;
    /// Default of [`ConnectivityConfig::backoff_max_ms`].
    pub const DEFAULT_BACKOFF_MAX_MS: u64 = 10_000;
    /// Default of [`ConnectivityConfig::flap_window_ms`].
    pub const DEFAULT_FLAP_WINDOW_MS: u64 = 60_000;
    /// Default of [`ConnectivityConfig::flap_threshold`].
    pub const DEFAULT_FLAP_THRESHOLD: u32 = 5;
    /// Default of [`ConnectivityConfig::flap_hold_ms`].
    pub const DEFAULT_FLAP_HOLD_MS: u64 = 10_000;
}

impl Default for ConnectivityConfig {
    fn default() -> Self {
        ConnectivityConfig {
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            backoff_initial_ms: Self::DEFAULT_BACKOFF_INITIAL_MS,
            backoff_max_ms: Self::DEFAULT_BACKOFF_MAX_MS,
            flap_window_ms: Self::DEFAULT_FLAP_WINDOW_MS,
            flap_threshold: Self::DEFAULT_FLAP_THRESHOLD,
            flap_hold_ms: Self::DEFAULT_FLAP_HOLD_MS,
        }
    }
}

/// How [`crate::Balancer::metrics_text`] names and labels its series, so that two balancers
/// in one process do not collide and dashboards built on other names can be kept.
///
/// A field missing from the JSON takes its value from [`MetricsConfig::default`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Put before every metric name, verbatim: `dlb_` gives `dlb_picks_total`. Default
    /// [`MetricsConfig::DEFAULT_PREFIX`]; empty, or a valid start of a Prometheus metric name
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`), at most [`MetricsConfig::LIMIT_PREFIX_LEN`] bytes.
    pub prefix: String,
    /// Constant labels added to every series (`{"service": "api", "balancer": "main"}`).
    /// Default: none. Names are Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`, not
    /// starting with `__`) other than the ones dlb's series use (`role`, `reason`, `replica`,
    /// `host`, `state`, `op`, `le`); at most [`MetricsConfig::LIMIT_LABELS`] labels, values at
    /// most [`MetricsConfig::LIMIT_LABEL_VALUE_LEN`] bytes.
    pub labels: BTreeMap<String, String>,
}

impl MetricsConfig {
    /// Default of [`MetricsConfig::prefix`].
    pub const DEFAULT_PREFIX: &str = "dlb_";
    /// Longest [`MetricsConfig::prefix`], in bytes.
    pub const LIMIT_PREFIX_LEN: usize = 100;
    /// Most entries [`MetricsConfig::labels`] may have.
    pub const LIMIT_LABELS: usize = 32;
    /// Longest value of a constant label, in bytes.
    pub const LIMIT_LABEL_VALUE_LEN: usize = 1024;

    /// The constant labels, in the order they are rendered (by name).
    pub(crate) fn label_pairs(&self) -> Vec<(String, String)> {
        self.labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        let name_char = |c: char, first: bool, colon: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colon && c == ':')
                || (!first && c.is_ascii_digit())
        };
        if self.prefix.len() > Self::LIMIT_PREFIX_LEN {
            return Err(Error::config(
                "metrics.prefix",
                format!("is longer than {} bytes", Self::LIMIT_PREFIX_LEN),
            ));
        }
        if let Some((i, _)) = self
            .prefix
            .char_indices()
            .find(|&(i, c)| !name_char(c, i == 0, true))
        {
            return Err(Error::config(
                "metrics.prefix",
                format!(
                    "is not the start of a Prometheus metric name: byte {i} is not one of \
                     [a-zA-Z_:] (or a digit after the first)"
                ),
            ));
        }
        if self.labels.len() > Self::LIMIT_LABELS {
            return Err(Error::config(
                "metrics.labels",
                format!("has more than {} labels", Self::LIMIT_LABELS),
            ));
        }
        for (name, value) in &self.labels {
            let field = || safe_path(&format!("metrics.labels.{name}"));
            let valid = !name.is_empty()
                && name
                    .char_indices()
                    .all(|(i, c)| name_char(c, i == 0, false));
            if !valid {
                return Err(Error::config(
                    field(),
                    "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                ));
            }
            if name.starts_with("__") {
                return Err(Error::config(
                    field(),
                    "names starting with __ are reserved",
                ));
            }
            if crate::labels::SERIES_LABELS.contains(&name.as_str()) {
                return Err(Error::config(
                    field(),
                    format!(
                        "is a label dlb's own series use (one of {})",
                        crate::labels::SERIES_LABELS.join(", ")
                    ),
                ));
            }
            if value.len() > Self::LIMIT_LABEL_VALUE_LEN {
                return Err(Error::config(
                    field(),
                    format!("value is longer than {} bytes", Self::LIMIT_LABEL_VALUE_LEN),
                ));
            }
        }
        Ok(())
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            labels: BTreeMap::new(),
        }
    }
}

/// Replica source.
///
/// A field missing from the JSON takes its value from [`ReplicasConfig::default`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReplicasConfig {
    /// Fixed replica list: `host`, `host:port` or `[v6]:port`. A missing port means the
    /// primary's. Default: empty; at most [`ReplicasConfig::LIMIT_HOSTS`] entries.
    pub hosts: Vec<String>,
    /// DNS service discovery (instead of, or on top of, `hosts`). Default: none.
    pub dns: Option<DnsConfig>,
    /// How long a replica that left the list may keep its in-flight connections before its
    /// pool is closed, in milliseconds. Default [`ReplicasConfig::DEFAULT_DRAIN_TIMEOUT_MS`]; at
    /// most an hour.
    pub drain_timeout_ms: u64,
}

impl ReplicasConfig {
    /// Default of [`ReplicasConfig::drain_timeout_ms`].
    pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
    /// Most entries [`ReplicasConfig::hosts`] may have, and most replicas a balancer keeps
    /// (the fixed list first, then DNS answers, which are cut to fit with a warning).
    pub const LIMIT_HOSTS: usize = 1000;
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        ReplicasConfig {
            hosts: Vec::new(),
            dns: None,
            drain_timeout_ms: Self::DEFAULT_DRAIN_TIMEOUT_MS,
        }
    }
}

impl DnsConfig {
    /// Default of [`DnsConfig::nameserver`].
    pub const DEFAULT_NAMESERVER: &str = "127.0.0.1";
    /// Default of [`DnsConfig::port`].
    pub const DEFAULT_PORT: u16 = 53;
    /// Default of [`DnsConfig::refresh_interval_ms`].
    pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 30_000;
    /// Default of [`DnsConfig::timeout_ms`].
    pub const DEFAULT_TIMEOUT_MS: u64 = 1000;

    /// SRV discovery of `record` at `nameserver:port`, every other setting at its default.
    pub fn new(record: impl Into<String>, nameserver: impl Into<String>, port: u16) -> DnsConfig {
        DnsConfig {
            record: record.into(),
            nameserver: nameserver.into(),
            port,
            record_type: DnsRecordType::default(),
            tcp: false,
            refresh_interval_ms: Self::DEFAULT_REFRESH_INTERVAL_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
        }
    }
}

/// DNS service discovery of replicas.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DnsConfig {
    /// The name to resolve, e.g. `replica.pg.service.consul`.
    pub record: String,
    /// Nameserver IP address. Default [`DnsConfig::DEFAULT_NAMESERVER`].
    #[serde(default = "serde_default::dns_nameserver")]
    pub nameserver: String,
    /// Nameserver port. Default [`DnsConfig::DEFAULT_PORT`].
    #[serde(default = "serde_default::dns_port")]
    pub port: u16,
    /// `SRV` (default: host and port from the answer, targets resolved with A/AAAA) or `A`
    /// (A and AAAA records; the primary's port).
    #[serde(default)]
    pub record_type: DnsRecordType,
    /// Query over TCP instead of UDP. Default false.
    #[serde(default)]
    pub tcp: bool,
    /// Longest time between refreshes, in milliseconds; answers with a shorter TTL refresh
    /// sooner. Default [`DnsConfig::DEFAULT_REFRESH_INTERVAL_MS`]. Refreshes carry up to 10%
    /// jitter so a fleet does not refresh in lockstep. At most a day.
    #[serde(default = "serde_default::dns_refresh_interval_ms")]
    pub refresh_interval_ms: u64,
    /// Deadline of one DNS lookup, in milliseconds: every exchange of a refresh (a TCP retry,
    /// SRV targets' A/AAAA lookups) ends within it, however the server answers. Default
    /// [`DnsConfig::DEFAULT_TIMEOUT_MS`]; at most a minute.
    #[serde(default = "serde_default::dns_timeout_ms")]
    pub timeout_ms: u64,
}

/// DNS record type used for discovery.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsRecordType {
    /// SRV records.
    #[default]
    #[serde(rename = "SRV")]
    Srv,
    /// A and AAAA records.
    #[serde(rename = "A")]
    A,
}

/// Per-host connection pool settings.
///
/// A field missing from the JSON takes its value from [`PoolConfig::default`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Most connections per host. Default [`PoolConfig::DEFAULT_MAX_SIZE`]; at least 1, at most
    /// [`PoolConfig::LIMIT_MAX_SIZE`].
    pub max_size: u32,
    /// Idle connections each pool tries to keep open. Default [`PoolConfig::DEFAULT_MIN_IDLE`]
    /// (0: connect lazily); at most `max_size`.
    pub min_idle: u32,
    /// TCP connect timeout, in milliseconds. Default [`PoolConfig::DEFAULT_CONNECT_TIMEOUT_MS`];
    /// at most 10 minutes.
    pub connect_timeout_ms: u64,
    /// How long `write_conn`/`read_conn` wait for a free pooled connection, in milliseconds.
    /// Default [`PoolConfig::DEFAULT_CHECKOUT_TIMEOUT_MS`]; at most 10 minutes.
    pub checkout_timeout_ms: u64,
    /// Connections are closed after this age, in seconds. Default
    /// [`PoolConfig::DEFAULT_MAX_LIFETIME_S`]; 0 means no limit; at most 10 years.
    pub max_lifetime_s: u64,
    /// A pooled connection idle for longer than this, in milliseconds, is checked (one round
    /// trip, which also rolls back a transaction left open) before it is handed out; one used
    /// more recently is handed out as it is. Default
    /// [`PoolConfig::DEFAULT_CHECK_IDLE_AFTER_MS`] (PgBouncer's `server_check_delay`); 0 checks
    /// every checkout; at most 1 day. A broken connection that slips through fails the caller's
    /// query once: `read_conn`'s [`crate::Conn`] then reports the failure and discards it.
    pub check_idle_after_ms: u64,
    /// The server-side `statement_timeout` of every statement on a replica's pooled
    /// connections (`read_conn`), in milliseconds: a read that runs longer (a runaway query,
    /// a replica stuck in a recovery conflict) is cancelled by the replica with SQLSTATE
    /// `57014` instead of holding the caller. Set at connection start-up, so it survives
    /// the reset between borrowers; a borrower may still `SET` its own for one use. Reads that
    /// go to the primary and the DSNs of `pick_replica` are not affected. Default
    /// [`PoolConfig::DEFAULT_READ_STATEMENT_TIMEOUT_MS`] (0: none, the server's own); at most
    /// 1 day. A frozen server (stopped process) cannot cancel anything: a read there waits
    /// until it resumes or the connection's TCP timeouts end it.
    pub read_statement_timeout_ms: u64,
}

impl PoolConfig {
    /// Default of [`PoolConfig::max_size`].
    pub const DEFAULT_MAX_SIZE: u32 = 10;
    /// Default of [`PoolConfig::min_idle`].
    pub const DEFAULT_MIN_IDLE: u32 = 0;
    /// Default of [`PoolConfig::connect_timeout_ms`].
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
    /// Default of [`PoolConfig::checkout_timeout_ms`].
    pub const DEFAULT_CHECKOUT_TIMEOUT_MS: u64 = 5000;
    /// Default of [`PoolConfig::max_lifetime_s`].
    pub const DEFAULT_MAX_LIFETIME_S: u64 = 1800;
    /// Default of [`PoolConfig::check_idle_after_ms`]: 30 s, as PgBouncer's
    /// `server_check_delay`.
    pub const DEFAULT_CHECK_IDLE_AFTER_MS: u64 = 30_000;
    /// Default of [`PoolConfig::read_statement_timeout_ms`]: none.
    pub const DEFAULT_READ_STATEMENT_TIMEOUT_MS: u64 = 0;
    /// Most [`PoolConfig::max_size`] may be (the pool reserves a slot per connection when
    /// it is made).
    pub const LIMIT_MAX_SIZE: u32 = 1000;
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: Self::DEFAULT_MAX_SIZE,
            min_idle: Self::DEFAULT_MIN_IDLE,
            connect_timeout_ms: Self::DEFAULT_CONNECT_TIMEOUT_MS,
            checkout_timeout_ms: Self::DEFAULT_CHECKOUT_TIMEOUT_MS,
            max_lifetime_s: Self::DEFAULT_MAX_LIFETIME_S,
            check_idle_after_ms: Self::DEFAULT_CHECK_IDLE_AFTER_MS,
            read_statement_timeout_ms: Self::DEFAULT_READ_STATEMENT_TIMEOUT_MS,
        }
    }
}

/// What a sticky pick does when no replica has caught up.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoCaughtUpPolicy {
    /// Route the read to the primary (default).
    #[default]
    Primary,
    /// Return [`crate::Error::NoCaughtUpReplica`], which the caller may retry.
    Error,
}

/// The functions `#[serde(default = "...")]` names (it takes a function, not a constant): each
/// returns the field's `DEFAULT_*` constant, the one place its value is written.
mod serde_default {
    use super::{Config, DnsConfig, RedisStoreConfig};

    macro_rules! from_const {
        ($($name:ident -> $ty:ty { $value:expr })*) => {
            $(pub(super) fn $name() -> $ty { $value })*
        };
    }

    from_const! {
        replica_check_interval_ms -> u64 { Config::DEFAULT_REPLICA_CHECK_INTERVAL_MS }
        max_lag_bytes -> u64 { Config::DEFAULT_MAX_LAG_BYTES }
        max_lag_ms -> u64 { Config::DEFAULT_MAX_LAG_MS }
        max_time_lag_ms -> u64 { Config::DEFAULT_MAX_TIME_LAG_MS }
        max_replay_stall_ms -> u64 { Config::DEFAULT_MAX_REPLAY_STALL_MS }
        probe_timeout_ms -> u64 { Config::DEFAULT_PROBE_TIMEOUT_MS }
        sticky_ttl_s -> u64 { Config::DEFAULT_STICKY_TTL_S }
        sticky_check_budget_ms -> u64 { Config::DEFAULT_STICKY_CHECK_BUDGET_MS }
        redis_key_prefix -> String { RedisStoreConfig::DEFAULT_KEY_PREFIX.to_owned() }
        redis_op_timeout_ms -> u64 { RedisStoreConfig::DEFAULT_OP_TIMEOUT_MS }
        redis_pool_size -> u32 { RedisStoreConfig::DEFAULT_POOL_SIZE }
        dns_nameserver -> String { DnsConfig::DEFAULT_NAMESERVER.to_owned() }
        dns_port -> u16 { DnsConfig::DEFAULT_PORT }
        dns_refresh_interval_ms -> u64 { DnsConfig::DEFAULT_REFRESH_INTERVAL_MS }
        dns_timeout_ms -> u64 { DnsConfig::DEFAULT_TIMEOUT_MS }
    }
}

#[cfg(test)]
mod tests {
    use super::check::*;
    use super::*;

    const P: &str = "host=127.0.0.1 port=5432 user=app dbname=app";

    fn err(json: &str) -> String {
        Config::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn minimal_and_full() {
        let c = Config::from_json(&format!(r#"{{"primary": "{P}"}}"#)).unwrap();
        assert_eq!(c, Config::new(P));
        assert_eq!(c.pool.max_size, 10);
        let c = Config::from_json(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": ["127.0.0.1:5433", "127.0.0.1:5434"]}},
                "replica_check_interval_ms": 500, "max_lag_bytes": 1, "max_lag_ms": 2,
                "pool": {{"max_size": 3, "connect_timeout_ms": 4, "max_lifetime_s": 5}},
                "no_caught_up_replica": "error"}}"#
        ))
        .unwrap();
        assert_eq!(c.replicas.as_ref().unwrap().hosts.len(), 2);
        assert_eq!(c.no_caught_up_replica, NoCaughtUpPolicy::Error);
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("{").starts_with("invalid configuration: "));
        assert!(err("{}").contains("missing field `primary`"));
        assert!(
            err(&format!(r#"{{"primary": "{P}", "bogus": 1}}"#)).contains("unknown field `bogus`")
        );
        let e = err(&format!(
            r#"{{"primary": "{P}", "pool": {{"max_size": 0}}}}"#
        ));
        assert!(e.contains("pool.max_size: must be at least 1"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "pool": {{"max_size": "x"}}}}"#
        ));
        assert!(e.contains("pool.max_size: invalid type"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "pool": {{"max_sise": 3}}}}"#
        ));
        assert!(
            e.contains("pool") && e.contains("unknown field `max_sise`"),
            "{e}"
        );
        let e = err(r#"{"primary": "host=a port=x"}"#);
        assert!(e.contains("primary: "), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": ["a:1", "b:0"]}}}}"#
        ));
        assert!(e.contains("replicas.hosts[1]: "), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": ["a:1", "a:1"]}}}}"#
        ));
        assert!(e.contains("duplicate"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": ["127.0.0.1"]}}}}"#
        ));
        assert!(e.contains("is the primary"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "no_caught_up_replica": "maybe"}}"#
        ));
        assert!(e.contains("no_caught_up_replica: unknown variant"), "{e}");
    }

    #[test]
    fn builder_validates() {
        assert!(Config::builder(P).pool_max_size(0).build().is_err());
        let c = Config::builder(P).replica_hosts(["h:1"]).build().unwrap();
        assert_eq!(c.resolve().unwrap().replicas[0].to_string(), "h:1");
    }

    #[test]
    fn durations_are_bounded() {
        let e = err(&format!(
            r#"{{"primary": "{P}", "connectivity": {{"flap_hold_ms": 18446744073709551615}}}}"#
        ));
        assert!(
            e.contains("connectivity.flap_hold_ms: must be at most"),
            "{e}"
        );
        let e = err(&format!(
            r#"{{"primary": "{P}", "pool": {{"max_lifetime_s": 18446744073709551615}}}}"#
        ));
        assert!(e.contains("pool.max_lifetime_s: must be at most"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": [], "drain_timeout_ms": 999999999999999}}}}"#
        ));
        assert!(e.contains("replicas.drain_timeout_ms"), "{e}");
        let ten_years = TEN_YEARS_MS;
        assert!(
            Config::from_json(&format!(
                r#"{{"primary": "{P}", "max_lag_ms": {ten_years}}}"#
            ))
            .is_ok()
        );
    }

    #[test]
    fn values_in_the_wrong_field_are_not_echoed() {
        let e = err(&format!(
            r#"{{"primary": "{P}", "pool": {{"max_size": "postgres://u:SECRET@h/db"}}}}"#
        ));
        assert!(e.contains("pool.max_size: invalid type"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = err(r#"{"primary": 5}"#);
        assert!(e.contains("primary: invalid type"), "{e}");
        let e = err(&format!(
            r#"{{"primary": "{P}", "replicas": {{"hosts": ["postgres://u:SECRET@h/db"]}}}}"#
        ));
        assert!(e.contains("replicas.hosts[0]"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let e = err(r#"{"primary": "host=h port=5432,5433 host=a,b"}"#);
        assert!(e.contains("several hosts"), "{e}");
    }

    /// Builds `{"primary": P, <extra>}` and returns the error's field and message.
    fn field_err(extra: &str) -> (String, String) {
        match Config::from_json(&format!(r#"{{"primary": "{P}", {extra}}}"#)) {
            Err(Error::Config { field, message }) => (field, message),
            other => panic!("{extra}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn sizes_are_bounded_before_anything_is_allocated() {
        // Each of these aborted the process (an allocation per slot) or took seconds.
        for (extra, field) in [
            (r#""pool": {"max_size": 100000000}"#, "pool.max_size"),
            (
                r#""pool": {"max_size": 10000000, "min_idle": 10000000}"#,
                "pool.max_size",
            ),
            (r#""pool": {"max_size": 1001}"#, "pool.max_size"),
            (
                r#""lsn_store": {"redis": {"url": "redis://h:1", "pool_size": 4294967295}}"#,
                "lsn_store.redis.pool_size",
            ),
            (
                r#""connectivity": {"failure_threshold": 4294967295}"#,
                "connectivity.failure_threshold",
            ),
            (
                r#""connectivity": {"flap_threshold": 1001}"#,
                "connectivity.flap_threshold",
            ),
        ] {
            let (f, m) = field_err(extra);
            assert_eq!(f, field, "{extra}: {m}");
            assert!(m.starts_with("must be at most 1000 (got "), "{extra}: {m}");
        }
        let (f, m) = field_err(r#""pool": {"max_size": 1000, "min_idle": 1001}"#);
        assert_eq!(
            (f.as_str(), m.as_str()),
            ("pool.min_idle", "must not exceed pool.max_size (1000)")
        );
        let at_limit = format!(
            r#"{{"primary": "{P}", "pool": {{"max_size": 1000, "min_idle": 1000}},
                "lsn_store": {{"redis": {{"url": "redis://h:1", "pool_size": 1000}}}}}}"#
        );
        Config::from_json(&at_limit).unwrap();
        // The Redis store checks its own settings when made directly.
        let mut r = RedisStoreConfig::standalone("redis://h:1");
        r.pool_size = u32::MAX;
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("lsn_store.redis.pool_size: must be at most 1000"),
            "{e}"
        );
        r.pool_size = 1;
        r.op_timeout_ms = u64::MAX;
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("lsn_store.redis.op_timeout_ms: must be at most 60000"),
            "{e}"
        );
        let mut c = RedisStoreConfig::cluster(vec!["redis://h:1"; 1001]);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("lsn_store.redis.cluster: must be at most 1000 (entries) (got 1001)"),
            "{e}"
        );
        c.cluster.truncate(1000);
        c.validate().unwrap();
    }

    fn hosts(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.{}.{}.{}:5432", i >> 16, (i >> 8) & 255, i & 255))
            .collect()
    }

    #[test]
    fn the_replica_list_is_bounded_and_checked_in_linear_time() {
        let started = std::time::Instant::now();
        let e = Config::builder(P)
            .replica_hosts(hosts(50_000))
            .build()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: replicas.hosts: must be at most 1000 (entries) (got 50000)"
        );
        // At the limit, duplicates are found through a hash set (quadratic took seconds at
        // 50,000; here the whole list is parsed and checked), and keep their messages.
        let mut list = hosts(ReplicasConfig::LIMIT_HOSTS);
        let c = Config::builder(P)
            .replica_hosts(list.clone())
            .build()
            .unwrap();
        assert_eq!(c.resolve().unwrap().replicas.len(), 1000);
        list[999] = list[3].clone();
        let e = Config::builder(P).replica_hosts(list).build().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: replicas.hosts[999]: duplicate replica 10.0.0.3:5432"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn durations_that_block_a_caller_are_bounded() {
        for (extra, field, max) in [
            (
                r#""probe_timeout_ms": 18446744073709551615"#,
                "probe_timeout_ms",
                "60000 (1 minute)",
            ),
            (
                r#""probe_timeout_ms": 60001"#,
                "probe_timeout_ms",
                "60000 (1 minute)",
            ),
            (
                r#""sticky_check_budget_ms": 60001"#,
                "sticky_check_budget_ms",
                "60000 (1 minute)",
            ),
            (
                r#""pool": {"checkout_timeout_ms": 18446744073709551615}"#,
                "pool.checkout_timeout_ms",
                "600000 (10 minutes)",
            ),
            (
                r#""pool": {"connect_timeout_ms": 600001}"#,
                "pool.connect_timeout_ms",
                "600000 (10 minutes)",
            ),
            (
                r#""replica_check_interval_ms": 3600001"#,
                "replica_check_interval_ms",
                "3600000 (1 hour)",
            ),
            (
                r#""replicas": {"drain_timeout_ms": 3600001}"#,
                "replicas.drain_timeout_ms",
                "3600000 (1 hour)",
            ),
            (
                r#""replicas": {"dns": {"record": "r", "timeout_ms": 60001}}"#,
                "replicas.dns.timeout_ms",
                "60000 (1 minute)",
            ),
            (
                r#""replicas": {"dns": {"record": "r", "refresh_interval_ms": 86400001}}"#,
                "replicas.dns.refresh_interval_ms",
                "86400000 (1 day)",
            ),
            (
                r#""connectivity": {"backoff_max_ms": 86400001}"#,
                "connectivity.backoff_max_ms",
                "86400000 (1 day)",
            ),
            (
                r#""lsn_store": {"redis": {"url": "redis://h:1", "op_timeout_ms": 60001}}"#,
                "lsn_store.redis.op_timeout_ms",
                "60000 (1 minute)",
            ),
            (
                r#""sticky_ttl_s": 315360001"#,
                "sticky_ttl_s",
                "315360000 (10 years, dlb::MAX_TTL)",
            ),
        ] {
            let (f, m) = field_err(extra);
            assert_eq!(f, field, "{extra}: {m}");
            assert!(
                m.starts_with(&format!("must be at most {max} (got ")),
                "{extra}: {m}"
            );
        }
    }

    #[test]
    fn builder_durations_saturate_instead_of_wrapping() {
        // 2^64 ms + 5 ms would wrap to 5 ms with `as u64`, a valid timeout.
        let huge = Duration::from_millis(u64::MAX) + Duration::from_millis(6);
        let e = Config::builder(P).probe_timeout(huge).build().unwrap_err();
        assert!(
            e.to_string().contains("probe_timeout_ms: must be at most"),
            "{e}"
        );
        let e = Config::builder(P)
            .checkout_timeout(Duration::MAX)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("pool.checkout_timeout_ms"), "{e}");
    }

    #[test]
    fn debug_hides_passwords() {
        let primary = "host=db port=5432 user=app password=pr1m4ry-s3cret dbname=app";
        let mut c = Config::new(primary);
        c.lsn_store = LsnStoreConfig::Redis(RedisStoreConfig::standalone(
            "rediss://user:r3d1s-s3cret@cache:6380/0",
        ));
        let url_primary = Config::new("postgres://app:pr1m4ry-s3cret@db:5432/app");
        let cluster = Config::builder(P)
            .lsn_store(LsnStoreConfig::Redis(RedisStoreConfig::cluster([
                "redis://:r3d1s-s3cret@n1:7000",
                "redis://:r3d1s/s3cret@n2:7000",
            ])))
            .build()
            .unwrap();
        for shown in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{url_primary:?}"),
            format!("{cluster:?}"),
            format!("{:?}", Config::builder(primary)),
            format!("{:?}", c.lsn_store),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let shown = format!("{c:?}");
        assert!(shown.contains("host=db"), "{shown}");
        assert!(shown.contains("rediss://***@cache:6380/0"), "{shown}");
        assert!(shown.contains("probe_timeout_ms: 100"), "{shown}");
        // The JSON rendering stays the configuration as given.
        assert!(c.to_json().contains("pr1m4ry-s3cret"));
    }
}
