//! Validation and resolution of a [`Config`]: defaults, minimums and maximums, and error
//! text that names the field and never quotes a secret.

use super::*;

impl RedisStoreConfig {
    /// Checks the settings that need no I/O (the URLs are parsed by [`crate::RedisStore::new`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field: both or neither of `url` and `cluster`, a zero
    /// timeout or pool size, a value over its bound.
    pub(crate) fn validate(&self) -> Result<()> {
        match (&self.url, self.cluster.is_empty()) {
            (Some(_), false) => Err(Error::config(
                "lsn_store.redis",
                "give either url or cluster, not both",
            )),
            (None, true) => Err(Error::config(
                "lsn_store.redis",
                "url or cluster is required",
            )),
            _ => Ok(()),
        }?;
        at_least("lsn_store.redis.op_timeout_ms", self.op_timeout_ms, 1)?;
        at_least("lsn_store.redis.pool_size", self.pool_size.into(), 1)?;
        self.check_limits()
    }

    /// The upper bounds of the Redis settings (before anything is allocated for them).
    fn check_limits(&self) -> Result<()> {
        at_most(
            "lsn_store.redis.cluster",
            len(self.cluster.len()),
            len(Self::LIMIT_CLUSTER_NODES),
            "entries",
        )?;
        at_most(
            "lsn_store.redis.op_timeout_ms",
            self.op_timeout_ms,
            MINUTE,
            "1 minute",
        )?;
        at_most(
            "lsn_store.redis.pool_size",
            self.pool_size.into(),
            Self::LIMIT_POOL_SIZE.into(),
            "",
        )
    }

    /// Most [`RedisStoreConfig::pool_size`] may be.
    pub const LIMIT_POOL_SIZE: u32 = 1000;
    /// Most entries [`RedisStoreConfig::cluster`] may have.
    pub const LIMIT_CLUSTER_NODES: usize = 1000;

    /// Default of [`RedisStoreConfig::key_prefix`].
    pub const DEFAULT_KEY_PREFIX: &str = "dlb:lsn:";
    /// Default of [`RedisStoreConfig::op_timeout_ms`].
    pub const DEFAULT_OP_TIMEOUT_MS: u64 = 500;
    /// Default of [`RedisStoreConfig::pool_size`].
    pub const DEFAULT_POOL_SIZE: u32 = 8;

    /// A standalone Redis at `url`, every other setting at its default.
    pub fn standalone(url: impl Into<String>) -> RedisStoreConfig {
        RedisStoreConfig {
            url: Some(url.into()),
            cluster: Vec::new(),
            key_prefix: Self::DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout_ms: Self::DEFAULT_OP_TIMEOUT_MS,
            pool_size: Self::DEFAULT_POOL_SIZE,
            tls_ca_file: None,
        }
    }

    /// A Redis Cluster reached through the seed `nodes`, every other setting at its default.
    pub fn cluster<I: IntoIterator<Item = S>, S: Into<String>>(nodes: I) -> RedisStoreConfig {
        RedisStoreConfig {
            url: None,
            cluster: nodes.into_iter().map(Into::into).collect(),
            ..RedisStoreConfig::standalone("")
        }
    }
}
impl Config {
    /// Default of [`Config::replica_check_interval_ms`].
    pub const DEFAULT_REPLICA_CHECK_INTERVAL_MS: u64 = 1000;
    /// Default of [`Config::max_lag_bytes`]: 8 MiB.
    pub const DEFAULT_MAX_LAG_BYTES: u64 = 8 * 1024 * 1024;
    /// Default of [`Config::max_time_lag_ms`]: off.
    pub const DEFAULT_MAX_TIME_LAG_MS: u64 = 0;
    /// Default of [`Config::max_lag_ms`].
    pub const DEFAULT_MAX_LAG_MS: u64 = 30_000;
    /// Default of [`Config::max_replay_stall_ms`].
    pub const DEFAULT_MAX_REPLAY_STALL_MS: u64 = 30_000;
    /// Default of [`Config::probe_timeout_ms`].
    pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 100;
    /// Default of [`Config::sticky_ttl_s`].
    pub const DEFAULT_STICKY_TTL_S: u64 = 3600;
    /// Default of [`Config::sticky_check_budget_ms`].
    pub const DEFAULT_STICKY_CHECK_BUDGET_MS: u64 = 100;

    /// A configuration with every default and no replicas: what [`Config::from_json`] makes
    /// of `{"primary": ...}` alone.
    pub fn new(primary: impl Into<String>) -> Config {
        Config {
            primary: primary.into(),
            replicas: None,
            replica_check_interval_ms: Self::DEFAULT_REPLICA_CHECK_INTERVAL_MS,
            max_lag_bytes: Self::DEFAULT_MAX_LAG_BYTES,
            max_lag_ms: Self::DEFAULT_MAX_LAG_MS,
            max_time_lag_ms: Self::DEFAULT_MAX_TIME_LAG_MS,
            max_replay_stall_ms: Self::DEFAULT_MAX_REPLAY_STALL_MS,
            probe_timeout_ms: Self::DEFAULT_PROBE_TIMEOUT_MS,
            pool: PoolConfig::default(),
            sticky_ttl_s: Self::DEFAULT_STICKY_TTL_S,
            sticky_check_budget_ms: Self::DEFAULT_STICKY_CHECK_BUDGET_MS,
            no_caught_up_replica: NoCaughtUpPolicy::default(),
            lsn_store: LsnStoreConfig::default(),
            connectivity: ConnectivityConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }

    /// Starts a typed builder; see [`ConfigBuilder`].
    pub fn builder(primary: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder(Config::new(primary))
    }

    /// Parses and validates a JSON document.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field (`pool.max_size`), for malformed JSON,
    /// unknown fields, wrong types, a bad DSN or an out-of-range value.
    pub fn from_json(json: &str) -> Result<Config> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let cfg: Config = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            Error::config(
                safe_path(&field),
                without_quoted_values(&e.into_inner().to_string()),
            )
        })?;
        de.end()
            .map_err(|e| Error::config("", format!("{e} after the configuration object")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Renders the configuration as JSON (the primary DSN as configured, password included).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serializes")
    }

    /// Checks every field; [`Config::from_json`] and [`ConfigBuilder::build`] call it.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        self.resolve().map(|_| ())
    }

    pub(crate) fn resolve(&self) -> Result<Resolved> {
        // Sizes first: nothing below allocates or loops in proportion to an unchecked one.
        self.check_limits()?;
        let primary = Dsn::parse(&self.primary, "primary")?;
        if primary.hosts().len() > 1 {
            return Err(Error::config(
                "primary",
                "names several hosts: give the primary's one host (dlb finds the replicas \
                 itself: list them in replicas.hosts)",
            ));
        }
        if primary.get("service").is_some() {
            return Err(Error::config(
                "primary",
                "`service` is not supported: give host, port and dbname",
            ));
        }
        // Every key the driver takes, and the protection keys dlb cannot enforce (refused):
        // reported by `validate` (`build`, `from_json`), not only by `Balancer::new`.
        primary
            .driver_config()
            .map_err(|m| Error::config("primary", m))?;
        let primary_hp = primary.host_port();
        let hosts = self.replicas.as_ref().map_or(&[][..], |r| &r.hosts[..]);
        let mut replicas: Vec<HostPort> = Vec::with_capacity(hosts.len());
        let mut seen: HashSet<HostPort> = HashSet::with_capacity(hosts.len());
        for (i, h) in hosts.iter().enumerate() {
            let field = format!("replicas.hosts[{i}]");
            let hp = HostPort::parse(h, primary_hp.port).map_err(|m| Error::config(&field, m))?;
            if hp == primary_hp {
                return Err(Error::config(field, format!("{hp} is the primary")));
            }
            if !seen.insert(hp.clone()) {
                return Err(Error::config(field, format!("duplicate replica {hp}")));
            }
            replicas.push(hp);
        }
        at_least(
            "replica_check_interval_ms",
            self.replica_check_interval_ms,
            10,
        )?;
        at_least("probe_timeout_ms", self.probe_timeout_ms, 1)?;
        at_least("pool.max_size", self.pool.max_size.into(), 1)?;
        at_least("pool.connect_timeout_ms", self.pool.connect_timeout_ms, 1)?;
        at_least("pool.checkout_timeout_ms", self.pool.checkout_timeout_ms, 1)?;
        at_least("sticky_ttl_s", self.sticky_ttl_s, 1)?;
        if let Some(dns) = self.replicas.as_ref().and_then(|r| r.dns.as_ref()) {
            if dns.record.trim().is_empty() {
                return Err(Error::config("replicas.dns.record", "must not be empty"));
            }
            if dns.nameserver.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::config(
                    "replicas.dns.nameserver",
                    "is not an IP address",
                ));
            }
            at_least("replicas.dns.port", dns.port.into(), 1)?;
            at_least(
                "replicas.dns.refresh_interval_ms",
                dns.refresh_interval_ms,
                10,
            )?;
            at_least("replicas.dns.timeout_ms", dns.timeout_ms, 1)?;
        }
        if let LsnStoreConfig::Redis(r) = &self.lsn_store {
            r.validate()?;
        }
        let c = &self.connectivity;
        at_least(
            "connectivity.failure_threshold",
            c.failure_threshold.into(),
            1,
        )?;
        at_least("connectivity.backoff_initial_ms", c.backoff_initial_ms, 1)?;
        at_least("connectivity.flap_threshold", c.flap_threshold.into(), 1)?;
        if c.backoff_max_ms < c.backoff_initial_ms {
            return Err(Error::config(
                "connectivity.backoff_max_ms",
                "must be at least connectivity.backoff_initial_ms",
            ));
        }
        self.metrics.validate()?;
        if self.pool.min_idle > self.pool.max_size {
            return Err(Error::config(
                "pool.min_idle",
                format!("must not exceed pool.max_size ({})", self.pool.max_size),
            ));
        }
        Ok(Resolved { primary, replicas })
    }

    /// The upper bound of every size, count and duration (see [`Config::limits`]).
    fn check_limits(&self) -> Result<()> {
        for (field, value, max, what) in self.limits() {
            at_most(field, value, max, what)?;
        }
        if let LsnStoreConfig::Redis(r) = &self.lsn_store {
            r.check_limits()?;
        }
        Ok(())
    }

    /// Every bounded setting but the Redis store's ([`RedisStoreConfig::check_limits`]): its
    /// field name, value (in the field's unit), largest accepted value, and that value in
    /// words. Durations that make a caller or the monitor wait (timeouts, budgets) are at most
    /// a minute or ten; intervals and holds at most an hour or a day; thresholds and ages that
    /// nothing waits for at most ten years ([`crate::MAX_TTL`]), so no instant computed from
    /// them overflows a clock. docs/configuration.md lists the same bounds.
    fn limits(&self) -> Vec<(&'static str, u64, u64, &'static str)> {
        let (p, c) = (&self.pool, &self.connectivity);
        let hosts = self.replicas.as_ref().map_or(0, |r| r.hosts.len());
        let mut v = vec![
            (
                "replicas.hosts",
                len(hosts),
                len(ReplicasConfig::LIMIT_HOSTS),
                "entries",
            ),
            (
                "replica_check_interval_ms",
                self.replica_check_interval_ms,
                HOUR,
                "1 hour",
            ),
            ("max_lag_ms", self.max_lag_ms, TEN_YEARS_MS, "10 years"),
            (
                "max_time_lag_ms",
                self.max_time_lag_ms,
                TEN_YEARS_MS,
                "10 years",
            ),
            (
                "max_replay_stall_ms",
                self.max_replay_stall_ms,
                TEN_YEARS_MS,
                "10 years",
            ),
            (
                "probe_timeout_ms",
                self.probe_timeout_ms,
                MINUTE,
                "1 minute",
            ),
            (
                "sticky_ttl_s",
                self.sticky_ttl_s,
                TEN_YEARS_MS / 1000,
                "10 years, dlb::MAX_TTL",
            ),
            (
                "sticky_check_budget_ms",
                self.sticky_check_budget_ms,
                MINUTE,
                "1 minute",
            ),
            (
                "pool.max_size",
                p.max_size.into(),
                PoolConfig::LIMIT_MAX_SIZE.into(),
                "",
            ),
            (
                "pool.connect_timeout_ms",
                p.connect_timeout_ms,
                10 * MINUTE,
                "10 minutes",
            ),
            (
                "pool.checkout_timeout_ms",
                p.checkout_timeout_ms,
                10 * MINUTE,
                "10 minutes",
            ),
            (
                "pool.max_lifetime_s",
                p.max_lifetime_s,
                TEN_YEARS_MS / 1000,
                "10 years",
            ),
            (
                "pool.check_idle_after_ms",
                p.check_idle_after_ms,
                DAY,
                "1 day",
            ),
            (
                "pool.read_statement_timeout_ms",
                p.read_statement_timeout_ms,
                DAY,
                "1 day",
            ),
            (
                "connectivity.failure_threshold",
                c.failure_threshold.into(),
                THRESHOLD,
                "",
            ),
            (
                "connectivity.backoff_initial_ms",
                c.backoff_initial_ms,
                DAY,
                "1 day",
            ),
            (
                "connectivity.backoff_max_ms",
                c.backoff_max_ms,
                DAY,
                "1 day",
            ),
            (
                "connectivity.flap_window_ms",
                c.flap_window_ms,
                DAY,
                "1 day",
            ),
            (
                "connectivity.flap_threshold",
                c.flap_threshold.into(),
                THRESHOLD,
                "",
            ),
            ("connectivity.flap_hold_ms", c.flap_hold_ms, DAY, "1 day"),
        ];
        if let Some(r) = &self.replicas {
            v.push((
                "replicas.drain_timeout_ms",
                r.drain_timeout_ms,
                HOUR,
                "1 hour",
            ));
            if let Some(d) = &r.dns {
                v.push((
                    "replicas.dns.refresh_interval_ms",
                    d.refresh_interval_ms,
                    DAY,
                    "1 day",
                ));
                v.push(("replicas.dns.timeout_ms", d.timeout_ms, MINUTE, "1 minute"));
            }
        }
        v
    }

    pub(crate) fn check_interval(&self) -> Duration {
        Duration::from_millis(self.replica_check_interval_ms)
    }

    pub(crate) fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

pub(super) const MINUTE: u64 = 60_000;
pub(super) const HOUR: u64 = 60 * MINUTE;
pub(super) const DAY: u64 = 24 * HOUR;
/// The longest duration any setting may have: 10 years, as [`crate::MAX_TTL`].
pub(super) const TEN_YEARS_MS: u64 = MAX_TTL.as_millis() as u64;
/// The most `connectivity.failure_threshold` and `connectivity.flap_threshold` may be.
pub(super) const THRESHOLD: u64 = 1000;

/// A length as a `u64` (saturating; `usize` is at most 64 bits on every supported target).
pub(super) fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Whole milliseconds of `d`, saturating (the builder's setters take any [`Duration`]; a
/// truncating cast could turn a huge one into a small valid one).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `v <= max`, or an error naming `field` (`what`: the bound in words, or the unit of a
/// count; empty for none).
pub(super) fn at_most(field: &str, v: u64, max: u64, what: &str) -> Result<()> {
    if v <= max {
        return Ok(());
    }
    let bound = if what.is_empty() {
        max.to_string()
    } else {
        format!("{max} ({what})")
    };
    Err(Error::config(
        field,
        format!("must be at most {bound} (got {v})"),
    ))
}

/// A JSON path with every segment that is not a plain name (or a name with an `[index]`)
/// shown as `…`: an unknown key is part of the path, and may be a pasted DSN.
pub(super) fn safe_path(path: &str) -> String {
    path.split('.')
        .map(|seg| {
            let name = seg.split('[').next().unwrap_or_default();
            let plain = name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                && seg[name.len()..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '[' | ']'));
            if plain { seg } else { "…" }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A JSON error message with the values it quotes left out: a DSN pasted into the wrong field,
/// as a value (`invalid type: string "..."`, `unknown variant `...``) or as a key (`unknown
/// field `...``), must not be echoed. Double-quoted values (escapes included) become `"…"`;
/// a backquoted name stays only if it looks like a field or variant name (letters, digits,
/// `_`, `-`, `.`), else it becomes `` `…` ``.
pub(super) fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                let mut name = String::new();
                for q in chars.by_ref() {
                    if q == '`' {
                        break;
                    }
                    name.push(q);
                }
                // An unknown enumeration value is the input's own (anything may be pasted there):
                // never shown. Unknown keys are shown when they look like names (a typo is
                // worth seeing); the names serde lists as expected are dlb's own.
                let theirs = out.ends_with("unknown variant ");
                let plain = !theirs
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                out.push('`');
                out.push_str(if plain { &name } else { "…" });
                out.push('`');
            }
            _ => out.push(c),
        }
    }
    out
}

/// `v >= min`, or an error naming `field`.
pub(super) fn at_least(field: &str, v: u64, min: u64) -> Result<()> {
    if v < min {
        Err(Error::config(
            field,
            format!("must be at least {min} (got {v})"),
        ))
    } else {
        Ok(())
    }
}

/// Parsed parts of a validated [`Config`].
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) primary: Dsn,
    pub(crate) replicas: Vec<HostPort>,
}
