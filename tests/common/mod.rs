//! Shared support for integration tests against the real test cluster
//! (`scripts/testenv.sh`: a primary and two streaming replicas on loopback, and Redis).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Connection details of the test cluster.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// libpq key=value DSN of the primary.
    pub primary: String,
    /// `host:port` of replica 1 and replica 2.
    pub replicas: Vec<String>,
    /// `redis://` URL of the test Redis.
    pub redis: String,
    /// `redis://` URLs of the three masters of the test Redis Cluster.
    pub redis_cluster: Vec<String>,
    /// The test Redis as an ACL user with a password (`redis://user:password@host:port`).
    pub redis_auth: String,
    /// A TLS-only Redis (`rediss://`) and the PEM file of the test CA that signed its
    /// certificate.
    pub redis_tls: String,
    pub redis_tls_ca: String,
    script: String,
}

fn repo_root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// The test cluster, started with `scripts/testenv.sh up` unless `DLB_TEST_PRIMARY` is set.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = format!("{}/scripts/testenv.sh", repo_root());
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        if !vars.contains_key("DLB_TEST_PRIMARY") {
            run(&script, &["up"]);
            let out = Command::new("bash")
                .arg(&script)
                .arg("env")
                .output()
                .expect("testenv env");
            assert!(out.status.success(), "testenv.sh env failed");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    vars.insert(k.to_string(), v.trim_matches('\'').to_string());
                }
            }
        }
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} not set"))
        };
        TestEnv {
            primary: get("DLB_TEST_PRIMARY"),
            replicas: get("DLB_TEST_REPLICAS")
                .split(',')
                .map(str::to_string)
                .collect(),
            redis: get("DLB_TEST_REDIS"),
            redis_cluster: get("DLB_TEST_REDIS_CLUSTER")
                .split(',')
                .map(str::to_string)
                .collect(),
            redis_auth: get("DLB_TEST_REDIS_AUTH"),
            redis_tls: get("DLB_TEST_REDIS_TLS"),
            redis_tls_ca: get("DLB_TEST_REDIS_TLS_CA"),
            script: vars.get("DLB_TESTENV_SCRIPT").cloned().unwrap_or(script),
        }
    })
}

fn run(script: &str, args: &[&str]) {
    let st = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run testenv.sh");
    assert!(st.success(), "testenv.sh {args:?} failed");
}

/// Serializes tests that use the cluster (across test binaries too: a file lock), so that
/// pausing or stopping a replica in one test cannot disturb another. Released on drop, which
/// also restores every replica (resumed, running).
pub struct ClusterLock {
    _file: File,
}

pub fn lock_cluster() -> ClusterLock {
    let e = env();
    let file = File::create("/tmp/dlb-tests.lock").expect("lock file");
    // SAFETY: plain flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock");
    let l = ClusterLock { _file: file };
    if let Err(e) = restore(e) {
        panic!("cannot restore the test cluster: {e}");
    }
    l
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed test unwinds.
        if let Err(e) = restore(env()) {
            eprintln!("warning: cannot restore the test cluster: {e}");
        }
    }
}

/// Every replica running and replaying, and the standalone Redis running.
fn restore(e: &TestEnv) -> Result<(), String> {
    let st = Command::new("bash")
        .arg(&e.script)
        .arg("start-redis")
        .stdout(std::process::Stdio::null())
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return Err("start-redis failed".into());
    }
    for n in 1..=2 {
        let st = Command::new("bash")
            .arg(&e.script)
            .args(["start-replica", &n.to_string()])
            .status();
        if !st.is_ok_and(|s| s.success()) {
            return Err(format!("start-replica {n} failed"));
        }
        let mut c = postgres::Client::connect(&replica_dsn(n), postgres::NoTls)
            .map_err(|e| e.to_string())?;
        c.simple_query("SELECT pg_wal_replay_resume()")
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Replica `n` (1 or 2) as `host:port`.
pub fn replica_addr(n: usize) -> &'static str {
    &env().replicas[n - 1]
}

/// The primary's DSN with host and port replaced by replica `n`'s.
pub fn replica_dsn(n: usize) -> String {
    let (host, port) = replica_addr(n).rsplit_once(':').unwrap();
    // Replace, not append: a second `host=` adds a host in libpq syntax.
    let rest: Vec<&str> = env()
        .primary
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .collect();
    format!("host={host} port={port} {}", rest.join(" "))
}

pub fn primary_client() -> postgres::Client {
    postgres::Client::connect(&env().primary, postgres::NoTls).expect("connect primary")
}

pub fn replica_client(n: usize) -> postgres::Client {
    postgres::Client::connect(&replica_dsn(n), postgres::NoTls).expect("connect replica")
}

pub fn pause_replay(n: usize) {
    replica_client(n)
        .simple_query("SELECT pg_wal_replay_pause()")
        .expect("pause");
}

pub fn resume_replay(n: usize) {
    replica_client(n)
        .simple_query("SELECT pg_wal_replay_resume()")
        .expect("resume");
}

pub fn stop_replica(n: usize) {
    run(&env().script, &["stop-replica", &n.to_string()]);
}

pub fn start_replica(n: usize) {
    run(&env().script, &["start-replica", &n.to_string()]);
}

/// Stops the standalone test Redis (restored by the [`ClusterLock`]).
pub fn stop_redis() {
    run(&env().script, &["stop-redis"]);
}

pub fn start_redis() {
    run(&env().script, &["start-redis"]);
}

/// Writes about `kb` KiB of WAL on the primary in one transaction.
pub fn generate_wal(kb: usize) {
    let mut c = primary_client();
    c.batch_execute("CREATE TABLE IF NOT EXISTS dlb_wal_filler (pad text)")
        .unwrap();
    c.execute(
        "INSERT INTO dlb_wal_filler SELECT repeat('x', 1000) FROM generate_series(1, $1::int)",
        &[&(kb as i32)],
    )
    .unwrap();
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generous bound for cluster state changes (checks run every 100 ms in tests).
pub const WAIT: Duration = Duration::from_secs(30);

/// A config for the test cluster with both replicas and a fast monitor.
pub fn config() -> dlb::ConfigBuilder {
    dlb::Config::builder(env().primary.clone())
        .replica_hosts(env().replicas.clone())
        .replica_check_interval(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(1000))
}

/// State of the replica at `addr` in the balancer's status.
pub fn replica_state(lb: &dlb::Balancer, addr: &str) -> (String, Option<String>) {
    let st = lb.status();
    let r = st
        .replicas
        .iter()
        .find(|r| r.host.addr == addr)
        .expect("replica in status");
    (r.state.to_string(), r.reason.map(str::to_string))
}

pub fn wait_healthy(lb: &dlb::Balancer, n: usize) {
    wait_until(&format!("{n} replicas healthy"), WAIT, || {
        lb.status().healthy_replicas == n
    });
}

/// Creates the test table and waits until both replicas have it.
pub fn setup_table(lb: &dlb::Balancer, table: &str) {
    lb.write_conn()
        .unwrap()
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, key text)"
        ))
        .unwrap();
    for n in 1..=2 {
        let mut c = replica_client(n);
        wait_until("the table reaches the replicas", WAIT, || {
            c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .unwrap()
                .get(0)
        });
    }
}

/// Inserts row `(id, key)` into `table` (made by [`setup_table`]) on the primary.
pub fn insert_row(lb: &dlb::Balancer, table: &str, id: i64, key: &str) {
    lb.write_conn()
        .unwrap()
        .execute(
            &format!("INSERT INTO {table} VALUES ($1, $2)"),
            &[&id, &key],
        )
        .unwrap();
}

/// Connections to the hosts routes point at, one per host, reused across reads.
#[derive(Default)]
pub struct Readers(HashMap<String, postgres::Client>);

impl Readers {
    /// Whether row `id` of `table` is visible on the host `route` picked.
    pub fn sees_row(&mut self, route: &dlb::Route, table: &str, id: i64) -> bool {
        self.0
            .entry(route.addr().to_string())
            .or_insert_with(|| postgres::Client::connect(route.dsn(), postgres::NoTls).unwrap())
            .query_opt(&format!("SELECT key FROM {table} WHERE id = $1"), &[&id])
            .unwrap()
            .is_some()
    }
}

pub mod dnsmasq;
pub mod protection;
pub mod proxy;
