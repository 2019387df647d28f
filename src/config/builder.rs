//! [`ConfigBuilder`]: a [`Config`] built in code, field by field, validated by `build`.

use super::check::millis;
use super::*;

/// Typed builder for [`Config`]; setters take and return the builder by value.
///
/// ```
/// use std::time::Duration;
/// let cfg = dlb::Config::builder("host=127.0.0.1 port=5432 user=app dbname=app")
///     .replica_hosts(["127.0.0.1:5433", "127.0.0.1:5434"])
///     .replica_check_interval(Duration::from_millis(500))
///     .pool_max_size(20)
///     .build()
///     .unwrap();
/// assert_eq!(cfg.pool.max_size, 20);
/// ```
#[derive(Clone, Debug)]
pub struct ConfigBuilder(pub(super) Config);

impl ConfigBuilder {
    /// Sets the fixed replica list (`host[:port]`).
    pub fn replica_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let r = self.0.replicas.get_or_insert_with(ReplicasConfig::default);
        r.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }
    /// Discovers replicas through DNS (see [`DnsConfig`]).
    pub fn replica_dns(mut self, dns: DnsConfig) -> Self {
        self.0
            .replicas
            .get_or_insert_with(ReplicasConfig::default)
            .dns = Some(dns);
        self
    }
    /// See [`ReplicasConfig::drain_timeout_ms`].
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.0
            .replicas
            .get_or_insert_with(ReplicasConfig::default)
            .drain_timeout_ms = millis(d);
        self
    }
    /// See [`Config::metrics`].
    pub fn metrics(mut self, metrics: MetricsConfig) -> Self {
        self.0.metrics = metrics;
        self
    }
    /// See [`Config::lsn_store`].
    pub fn lsn_store(mut self, store: LsnStoreConfig) -> Self {
        self.0.lsn_store = store;
        self
    }
    /// See [`Config::connectivity`].
    pub fn connectivity(mut self, c: ConnectivityConfig) -> Self {
        self.0.connectivity = c;
        self
    }
    /// See [`Config::replica_check_interval_ms`].
    pub fn replica_check_interval(mut self, d: Duration) -> Self {
        self.0.replica_check_interval_ms = millis(d);
        self
    }
    /// See [`Config::max_lag_bytes`].
    pub fn max_lag_bytes(mut self, bytes: u64) -> Self {
        self.0.max_lag_bytes = bytes;
        self
    }
    /// See [`Config::max_lag_ms`].
    pub fn max_lag(mut self, d: Duration) -> Self {
        self.0.max_lag_ms = millis(d);
        self
    }
    /// See [`Config::max_time_lag_ms`] (`Duration::ZERO`: off).
    pub fn max_time_lag(mut self, d: Duration) -> Self {
        self.0.max_time_lag_ms = millis(d);
        self
    }
    /// See [`Config::max_replay_stall_ms`].
    pub fn max_replay_stall(mut self, d: Duration) -> Self {
        self.0.max_replay_stall_ms = millis(d);
        self
    }
    /// See [`Config::probe_timeout_ms`].
    pub fn probe_timeout(mut self, d: Duration) -> Self {
        self.0.probe_timeout_ms = millis(d);
        self
    }
    /// See [`PoolConfig::max_size`].
    pub fn pool_max_size(mut self, n: u32) -> Self {
        self.0.pool.max_size = n;
        self
    }
    /// See [`PoolConfig::min_idle`].
    pub fn pool_min_idle(mut self, n: u32) -> Self {
        self.0.pool.min_idle = n;
        self
    }
    /// See [`PoolConfig::connect_timeout_ms`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.0.pool.connect_timeout_ms = millis(d);
        self
    }
    /// See [`PoolConfig::checkout_timeout_ms`].
    pub fn checkout_timeout(mut self, d: Duration) -> Self {
        self.0.pool.checkout_timeout_ms = millis(d);
        self
    }
    /// See [`PoolConfig::check_idle_after_ms`].
    pub fn check_idle_after(mut self, d: Duration) -> Self {
        self.0.pool.check_idle_after_ms = millis(d);
        self
    }
    /// See [`PoolConfig::read_statement_timeout_ms`].
    pub fn read_statement_timeout(mut self, d: Duration) -> Self {
        self.0.pool.read_statement_timeout_ms = millis(d);
        self
    }
    /// See [`PoolConfig::max_lifetime_s`].
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.0.pool.max_lifetime_s = d.as_secs();
        self
    }
    /// See [`Config::sticky_ttl_s`].
    pub fn sticky_ttl(mut self, d: Duration) -> Self {
        self.0.sticky_ttl_s = d.as_secs();
        self
    }
    /// See [`Config::sticky_check_budget_ms`].
    pub fn sticky_check_budget(mut self, d: Duration) -> Self {
        self.0.sticky_check_budget_ms = millis(d);
        self
    }
    /// See [`Config::no_caught_up_replica`].
    pub fn no_caught_up_replica(mut self, p: NoCaughtUpPolicy) -> Self {
        self.0.no_caught_up_replica = p;
        self
    }
    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn build(self) -> Result<Config> {
        self.0.validate()?;
        Ok(self.0)
    }
}
