//! The Redis [`LsnStore`]: recorded LSNs shared by every instance of a service (a fleet), on a
//! standalone Redis or a Redis Cluster.
//!
//! * **One key per sticking key**, `key_prefix` + the key (keys over [`MAX_VERBATIM_KEY`] bytes
//!   are replaced by their SHA-1, see [`RedisStore::redis_key`]): a hash holding the LSN and,
//!   apart from it, the end of a force (see `script.rs` for the layout). Every command touches
//!   one key, so it works on a Cluster without hash tags.
//! * **Atomic on the server**: Lua scripts (sent with `EVALSHA`, falling back to `EVAL` when
//!   the server does not have them cached) record an LSN (keeping the larger of the stored and
//!   the new one), force a key, and read an entry. Expiries only ever extend. Whether a key is
//!   forced *now* is decided on the Redis server's clock (`TIME`), so a fleet whose clocks
//!   disagree still agrees. LSNs are stored as 16 uppercase hex digits (`%016X`) and compared
//!   byte by byte, exactly over the whole 64-bit range; the scripts never turn an LSN into a
//!   Lua number (a double, exact only up to 2^53).
//! * **Never a Redis replica**: every call is a script (`EVALSHA`), which redis-rs's cluster
//!   client routes to the master of the key's slot. It would also send `READONLY` on every
//!   node connection, which lets a replica answer reads for its master's slots instead of
//!   redirecting them, e.g. when the client's slot map is stale after a failover or it falls
//!   back to a random node; our node connections swallow that `READONLY` (see `pool.rs`), so
//!   a replica answers `MOVED` and the call goes to the master. A standalone `url` must name
//!   the master: a replica there fails every record (a store error), and its reads may lag.
//! * **Bounded waits**: each call gets `op_timeout_ms` for everything (waiting for a pooled
//!   connection, connecting, the round trip). Connections are pooled (`pool_size`), opened
//!   lazily, dropped after any error and reopened by the next call, so the store recovers by
//!   itself when Redis returns.
//! * **Secrets**: error messages and `Debug` never contain a password.
//! * **TLS**: `rediss://` URLs go over rustls (ring); the server certificate is checked
//!   against `tls_ca_file` when set, else the system's trusted roots.

mod pool;
mod script;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{
    ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates,
    Value,
};

use self::pool::{Link, NodeConn, Pool, Pooled};
use self::script::{
    EPOCH_SCRIPT, FORCE_SCRIPT, GET_SCRIPT, RECORD_SCRIPT, Script, decode_lsn, encode_lsn, request,
    run_script,
};
use crate::config::RedisStoreConfig;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::redact::redact_text as redact;
use crate::sticking::loss::LossWatch;
use crate::sticking::{LsnStore, MAX_TTL, Recorded};

/// Longest sticking key stored verbatim after the prefix; longer keys are stored under their
/// SHA-1 (see [`RedisStore::redis_key`]).
pub const MAX_VERBATIM_KEY: usize = 128;

enum Backend {
    Standalone {
        client: redis::Client,
        pool: Pool<redis::Connection>,
    },
    Cluster {
        client: ClusterClient,
        pool: Pool<ClusterConnection<NodeConn>>,
    },
}

/// [`LsnStore`] on Redis, standalone or Cluster, for a fleet of service instances that must
/// honour each other's writes. Built by [`crate::Balancer::new`] from
/// [`crate::LsnStoreConfig::Redis`], or directly for [`crate::Balancer::with_store`].
///
/// Every call is bounded by `op_timeout_ms` (see docs/concepts.md for the
/// Cluster's redirects). When Redis fails, `record` returns [`Error::Store`] and sticky picks go
/// to the primary with [`crate::Reason::StoreError`]; the next calls reconnect.
pub struct RedisStore {
    backend: Backend,
    prefix: String,
    op_timeout: Duration,
    /// `host:port` (standalone) or `cluster host:port,...`, for messages.
    target: String,
    /// Passwords from the configured URLs, removed from every error message.
    secrets: Vec<String>,
    record: Script,
    force: Script,
    get: Script,
    epoch: Script,
    /// Whether the last call succeeded (to log only transitions).
    healthy: AtomicBool,
    /// The servers' loss epochs, and when one last changed.
    loss: LossWatch,
    /// `maxmemory-policy` was looked at (by the first `maintain`).
    policy_checked: AtomicBool,
    /// What the eviction policy check found wrong (see [`LsnStore::warning`]).
    policy_warning: parking_lot::Mutex<Option<String>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("key_prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

fn addr_label(info: &ConnectionInfo) -> String {
    info.addr().to_string()
}

impl RedisStore {
    /// Checks `config` and prepares the pool. Does not connect: the first call does, so a Redis
    /// that is down at start-up does not stop the service (sticky reads go to the primary until
    /// it is up).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field (`lsn_store.redis.url`, `lsn_store.redis.cluster[1]`,
    /// ...) for a URL that does not parse, a `tls_ca_file` that cannot be read or holds no
    /// PEM certificate, both or neither of `url` and `cluster`, a zero timeout or pool size, or
    /// a value over its bound ([`RedisStoreConfig::LIMIT_POOL_SIZE`], ...).
    pub fn new(config: &RedisStoreConfig) -> Result<RedisStore> {
        config.validate()?;
        let op_timeout = Duration::from_millis(config.op_timeout_ms);
        let size = config.pool_size as usize;
        let (backend, target, secrets) = match (&config.url, config.cluster.as_slice()) {
            // `check` made sure that exactly one of the two is given.
            (Some(url), _) => {
                let info = parse_url(url, "lsn_store.redis.url")?;
                let secrets: Vec<String> = info
                    .redis_settings()
                    .password()
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let target = addr_label(&info);
                let client = match tls_roots(config)? {
                    Some(certs) => redis::Client::build_with_tls(info, certs),
                    None => redis::Client::open(info),
                }
                .map_err(|e| {
                    Error::config("lsn_store.redis.url", redact(&e.to_string(), &secrets))
                })?;
                let pool = Pool::new(size);
                (Backend::Standalone { client, pool }, target, secrets)
            }
            (None, nodes) => {
                let mut infos = Vec::with_capacity(nodes.len());
                let mut secrets = Vec::new();
                for (i, url) in nodes.iter().enumerate() {
                    let info = parse_url(url, &format!("lsn_store.redis.cluster[{i}]"))?;
                    secrets.extend(info.redis_settings().password().map(str::to_string));
                    infos.push(info);
                }
                let target = format!(
                    "cluster {}",
                    infos.iter().map(addr_label).collect::<Vec<_>>().join(",")
                );
                // The cluster client's own defaults retry 16 times with waits of up to minutes:
                // one retry (a MOVED/ASK redirect or a reconnect), short waits, and every
                // connect and reply bounded by the op timeout.
                let mut builder = ClusterClientBuilder::new(infos);
                if let Some(certs) = tls_roots(config)? {
                    builder = builder.certs(certs);
                }
                let client = builder
                    .connection_timeout(op_timeout)
                    .response_timeout(op_timeout)
                    .retries(1)
                    .min_retry_wait(0)
                    .max_retry_wait((config.op_timeout_ms / 10).max(1))
                    .build()
                    .map_err(|e| {
                        Error::config("lsn_store.redis.cluster", redact(&e.to_string(), &secrets))
                    })?;
                let pool = Pool::new(size);
                (Backend::Cluster { client, pool }, target, secrets)
            }
        };
        Ok(RedisStore {
            backend,
            prefix: config.key_prefix.clone(),
            op_timeout,
            target,
            secrets,
            record: Script::new(RECORD_SCRIPT),
            force: Script::new(FORCE_SCRIPT),
            get: Script::new(GET_SCRIPT),
            epoch: Script::new(EPOCH_SCRIPT),
            healthy: AtomicBool::new(true),
            loss: LossWatch::default(),
            policy_checked: AtomicBool::new(false),
            policy_warning: parking_lot::Mutex::new(None),
        })
    }

    /// The Redis key that holds `key`'s LSN: `key_prefix` + `key` for keys of up to
    /// [`MAX_VERBATIM_KEY`] bytes, else `key_prefix` + `#sha1:` + 40 hex digits + `:` + the
    /// key's length, so a stored key is never more than `key_prefix` + 128 bytes long.
    ///
    /// Two long keys share an entry only if their SHA-1 and length both match (accidental
    /// collisions are out of reach; deliberately built SHA-1 collisions cost about 2^63 work).
    /// A short key spelled exactly like a hashed name also shares it. Sharing is safe: the
    /// entry holds the larger LSN of the two, so reads of either key wait for more than needed
    /// (or go to the primary), never less.
    pub fn redis_key(&self, key: &str) -> String {
        if key.len() <= MAX_VERBATIM_KEY {
            format!("{}{key}", self.prefix)
        } else {
            let digest = sha1_smol::Sha1::from(key.as_bytes()).digest();
            format!("{}#sha1:{digest}:{}", self.prefix, key.len())
        }
    }

    fn store_error(&self, what: &str, e: &RedisError) -> Error {
        let message = crate::redact::bounded(&redact(
            &format!("redis {what} on {}: {e}", self.target),
            &self.secrets,
        ));
        if self.healthy.swap(false, Ordering::Relaxed) {
            warn!(
                target: "dlb",
                "{message}; sticky reads go to the primary until Redis answers again"
            );
        }
        Error::store(message)
    }

    /// `by_caller`: the caller's deadline, shorter than the op timeout, ended the call (which
    /// says nothing about Redis's health).
    fn timeout_error(&self, what: &str, detail: &str, by_caller: bool) -> Error {
        if by_caller {
            return Error::store(format!(
                "redis {what} on {}: {detail} within the caller's time budget",
                self.target
            ));
        }
        let message = format!(
            "redis {what} on {}: {detail} within {} ms",
            self.target,
            self.op_timeout.as_millis()
        );
        if self.healthy.swap(false, Ordering::Relaxed) {
            warn!(target: "dlb", "{message}");
        }
        Error::store(message)
    }

    fn unexpected(&self, what: &str, v: &Value) -> Error {
        Error::store(format!(
            "redis {what} on {}: unexpected reply {v:?}",
            self.target
        ))
    }

    /// Takes in a `[node, epoch]` pair a script returned (see [`script::EPOCH_SCRIPT`]).
    fn observe_epoch(&self, pair: &[Value]) {
        if let [node, epoch] = pair {
            if let (Some(node), Some(epoch)) = (value_bytes(node), value_bytes(epoch)) {
                let (node, epoch) = (
                    String::from_utf8_lossy(node),
                    String::from_utf8_lossy(epoch),
                );
                self.loss
                    .observe(&node, &epoch, Instant::now(), &self.target);
            }
        }
    }

    /// Warns once when the server may evict keys (`maxmemory-policy` other than
    /// `noeviction`): dlb notices evictions ([`LsnStore::last_loss`]), but every eviction then
    /// sends keyed reads with nothing recorded to the primary for `sticky_ttl_s`. A server that
    /// refuses `CONFIG` (managed services often do) is not asked again.
    fn check_eviction_policy(&self) {
        let policy = self.exec("config get", |c| {
            request(c, redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
        });
        let name = match &policy {
            Ok(Value::Array(v)) => v.get(1).and_then(value_bytes).map(String::from_utf8_lossy),
            Ok(Value::Map(m)) => m
                .first()
                .and_then(|(_, v)| value_bytes(v))
                .map(String::from_utf8_lossy),
            _ => None,
        };
        if let Some(p) = name.filter(|p| p != "noeviction") {
            let warning = format!(
                "maxmemory-policy is {}, not noeviction: an eviction makes keyed reads with nothing recorded go to the primary for sticky_ttl_s",
                crate::redact::bounded(&p)
            );
            warn!(target: "dlb", "redis LSN store on {}: {warning}", self.target);
            *self.policy_warning.lock() = Some(warning);
        }
    }

    fn ok(&self) {
        if !self.healthy.load(Ordering::Relaxed) && !self.healthy.swap(true, Ordering::Relaxed) {
            info!(target: "dlb", "redis LSN store on {} answers again", self.target);
        }
    }

    /// Runs `f` on a pooled connection within the op timeout.
    fn exec<T>(
        &self,
        what: &str,
        f: impl Fn(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        self.exec_by(what, None, f)
    }

    /// Runs `f` on a pooled connection within the op timeout, and by `caller_deadline` when
    /// that comes first.
    fn exec_by<T>(
        &self,
        what: &str,
        caller_deadline: Option<Instant>,
        f: impl Fn(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T> {
        let own = Instant::now() + self.op_timeout;
        let deadline = caller_deadline.map_or(own, |d| d.min(own));
        let by_caller = deadline < own;
        let r = match &self.backend {
            Backend::Standalone { client, pool } => self.exec_on(
                pool,
                (deadline, by_caller),
                what,
                |t| client.get_connection_with_timeout(t),
                |c| f(c),
            ),
            Backend::Cluster { client, pool } => self.exec_on(
                pool,
                (deadline, by_caller),
                what,
                |_| client.get_generic_connection::<NodeConn>(),
                |c| f(c),
            ),
        };
        if r.is_ok() {
            self.ok();
        }
        r
    }

    fn exec_on<C: Link, T>(
        &self,
        pool: &Pool<C>,
        (deadline, by_caller): (Instant, bool),
        what: &str,
        connect: impl Fn(Duration) -> RedisResult<C>,
        f: impl Fn(&mut C) -> RedisResult<T>,
    ) -> Result<T> {
        let Some(mut lease) = pool.acquire(deadline) else {
            return Err(self.timeout_error(
                what,
                &format!("no pooled connection free (pool_size {})", pool.size),
                by_caller,
            ));
        };
        let mut retried = false;
        loop {
            let reused = lease.conn.is_some();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout_error(what, "no answer", by_caller));
            }
            let p = match &mut lease.conn {
                Some(p) => p,
                slot => {
                    let conn = connect(left).map_err(|e| self.store_error(what, &e))?;
                    conn.set_io_timeout(self.op_timeout)
                        .map_err(|e| self.store_error(what, &e))?;
                    slot.insert(Pooled {
                        conn,
                        timeout: self.op_timeout,
                    })
                }
            };
            // Sockets keep the op timeout; lower it only when this call already waited (for a
            // slot or to connect), and restore it on the next call: no syscalls on the fast path.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout_error(what, "no answer", by_caller));
            }
            if left + self.op_timeout / 10 < p.timeout || left > p.timeout {
                if let Err(e) = p.conn.set_io_timeout(left) {
                    lease.conn = None;
                    return Err(self.store_error(what, &e));
                }
                p.timeout = left;
            }
            match f(&mut p.conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    // Never reuse a connection after an error: a timed-out reply may still
                    // arrive on it.
                    lease.conn = None;
                    let dead = e.is_connection_dropped() || e.is_connection_refusal();
                    if dead {
                        pool.clear_idle();
                    }
                    // An idle connection that died while Redis restarted: one more try on a
                    // fresh connection (both commands are idempotent).
                    if dead && reused && !retried && !e.is_timeout() {
                        retried = true;
                        continue;
                    }
                    if by_caller && e.is_timeout() {
                        return Err(self.timeout_error(what, "no answer", true));
                    }
                    return Err(self.store_error(what, &e));
                }
            }
        }
    }
}

fn parse_url(url: &str, field: &str) -> Result<ConnectionInfo> {
    url.into_connection_info()
        .map_err(|e| Error::config(field, redact(&e.to_string(), &[])))
}

/// The CA certificates of `tls_ca_file`, when set (`None`: the system's trusted roots).
fn tls_roots(config: &RedisStoreConfig) -> Result<Option<TlsCertificates>> {
    // rustls needs a process-wide crypto provider; ring is the one this build has. Installing
    // fails harmlessly when the host program already installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        Error::config(
            "lsn_store.redis.tls_ca_file",
            format!("cannot read {path}: {e}"),
        )
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(Error::config(
            "lsn_store.redis.tls_ca_file",
            format!("{path} holds no PEM certificate"),
        ));
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn value_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `ttl` in whole milliseconds for the scripts, capped at [`MAX_TTL`] (so that the server's
/// time plus it stays exact in a Lua number).
fn ttl_ms(ttl: Duration) -> String {
    ttl.min(MAX_TTL).as_millis().to_string()
}

impl LsnStore for RedisStore {
    fn record(&self, key: &str, lsn: Lsn, ttl: Duration) -> Result<Lsn> {
        let rkey = self.redis_key(key);
        let (new, ttl) = (encode_lsn(lsn), ttl_ms(ttl));
        let v = self.exec("record (EVALSHA)", |c| {
            run_script(c, &self.record, Some(&rkey), &[&new, &ttl])
        })?;
        let stored = match &v {
            Value::Array(items) => {
                self.observe_epoch(&items[1.min(items.len())..]);
                items.first().and_then(value_bytes).and_then(decode_lsn)
            }
            _ => None,
        };
        stored.ok_or_else(|| self.unexpected("record", &v))
    }

    fn force(&self, key: &str, ttl: Duration) -> Result<()> {
        let rkey = self.redis_key(key);
        let ttl = ttl_ms(ttl);
        match self.exec("force (EVALSHA)", |c| {
            run_script(c, &self.force, Some(&rkey), &[&ttl])
        })? {
            Value::Int(1) => Ok(()),
            v => Err(self.unexpected("force", &v)),
        }
    }

    fn get(&self, key: &str) -> Result<Recorded> {
        self.get_by(key, None)
    }

    fn get_by(&self, key: &str, deadline: Option<Instant>) -> Result<Recorded> {
        let rkey = self.redis_key(key);
        let v = self.exec_by("get (EVALSHA)", deadline, |c| {
            run_script(c, &self.get, Some(&rkey), &[])
        })?;
        let Value::Array(items) = &v else {
            return Err(self.unexpected("get", &v));
        };
        let lsn = match items.first() {
            Some(Value::Nil) => None,
            Some(l) => match value_bytes(l).and_then(decode_lsn) {
                Some(l) => Some(l),
                // Unreadable: treat like an unreachable store (the read goes to the primary).
                None => {
                    return Err(Error::store(format!(
                        "redis get on {}: the value stored for the key is not an LSN",
                        self.target
                    )));
                }
            },
            None => return Err(self.unexpected("get", &v)),
        };
        if lsn.is_none() {
            self.observe_epoch(&items[2.min(items.len())..]);
        }
        match items.get(1) {
            Some(Value::Int(f @ (0 | 1))) => Ok(Recorded {
                lsn,
                forced: *f == 1,
            }),
            _ => Err(self.unexpected("get", &v)),
        }
    }

    fn maintain(&self) {
        match self.exec("epoch (EVALSHA)", |c| run_script(c, &self.epoch, None, &[])) {
            Ok(Value::Array(items)) => self.observe_epoch(&items),
            Ok(v) => debug!(target: "dlb", "{}", self.unexpected("epoch", &v)),
            Err(e) => debug!(target: "dlb", "{e}"),
        }
        if !self.policy_checked.swap(true, Ordering::Relaxed) {
            self.check_eviction_policy();
        }
    }

    fn last_loss(&self) -> Option<Instant> {
        self.loss.last_loss()
    }

    fn warning(&self) -> Option<String> {
        self.policy_warning.lock().clone()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> RedisStore {
        RedisStore::new(&RedisStoreConfig::standalone(url)).unwrap()
    }

    #[test]
    fn keys_are_bounded() {
        let s = store("redis://127.0.0.1:1");
        assert_eq!(s.redis_key("repo:a/b"), "dlb:lsn:repo:a/b");
        let k128 = "k".repeat(MAX_VERBATIM_KEY);
        assert_eq!(s.redis_key(&k128), format!("dlb:lsn:{k128}"));
        let long = "k".repeat(1024);
        let h = s.redis_key(&long);
        assert!(
            h.starts_with("dlb:lsn:#sha1:") && h.ends_with(":1024"),
            "{h}"
        );
        assert_eq!(h.len(), "dlb:lsn:#sha1:".len() + 40 + ":1024".len());
        assert_eq!(s.redis_key(&long), h, "stable");
        let mut other = long.clone();
        other.replace_range(1023.., "j");
        assert_ne!(s.redis_key(&other), h);
        let mut other = long.clone();
        other.replace_range(0..1, "j");
        assert_ne!(s.redis_key(&other), h);
    }

    #[test]
    fn config_errors_name_the_field_and_hide_passwords() {
        let err = |c: RedisStoreConfig| RedisStore::new(&c).unwrap_err();
        // TLS URLs are accepted; a CA file that is missing or holds no certificate is not.
        assert!(RedisStore::new(&RedisStoreConfig::standalone("rediss://u:s3cret@h:6380")).is_ok());
        let mut c = RedisStoreConfig::standalone("rediss://u:s3cret@h:6380");
        c.tls_ca_file = Some("/nonexistent/ca.pem".into());
        let e = err(c.clone());
        assert!(
            matches!(&e, Error::Config { field, .. } if field == "lsn_store.redis.tls_ca_file"),
            "{e}"
        );
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        c.tls_ca_file = Some("Cargo.toml".into());
        let e = err(c);
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = err(RedisStoreConfig::standalone("redis://u:s3cret@h:notaport"));
        assert!(
            matches!(&e, Error::Config { field, .. } if field == "lsn_store.redis.url"),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = err(RedisStoreConfig::cluster([
            "redis://h:1",
            "http://u:s3cret@h:2",
        ]));
        assert!(
            matches!(&e, Error::Config { field, .. } if field == "lsn_store.redis.cluster[1]"),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let mut c = RedisStoreConfig::standalone("redis://h:1");
        c.cluster = vec!["redis://h:2".into()];
        assert!(matches!(err(c), Error::Config { field, .. } if field == "lsn_store.redis"));
        let mut c = RedisStoreConfig::standalone("redis://h:1");
        c.pool_size = 0;
        assert!(
            matches!(err(c), Error::Config { field, .. } if field == "lsn_store.redis.pool_size")
        );
        let s = store("redis://u:s3cret@127.0.0.1:1");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn unreachable_redis_is_a_store_error_without_the_password() {
        // Port 1 on loopback: connection refused at once.
        let s = store("redis://u:s3cret@127.0.0.1:1");
        let e = s.get("k").unwrap_err();
        assert!(matches!(e, Error::Store { .. }), "{e:?}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        let e = s
            .record("k", Lsn::from_u64(1), Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(e, Error::Store { .. }), "{e:?}");
        assert_eq!(s.kind(), "redis");
    }
}
