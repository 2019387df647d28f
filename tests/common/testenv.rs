//! The Rust client of the test environment (`scripts/testenv.sh`: a PostgreSQL primary and two
//! streaming replicas, cluster 2 (an independent PostgreSQL cluster: a primary and two streaming
//! replicas), Redis, a Redis Cluster and a TLS-only Redis, all on loopback), shared
//! by the integration tests (`tests/common/mod.rs`) and the benchmarks (`benches/common/mod.rs`
//! includes this file with `#[path]`, as benches cannot depend on tests otherwise).
//!
//! It reads the environment's addresses, takes the cluster lock shared with every other suite,
//! connects to the nodes and drives the script (pause/resume replay, stop/start a replica or
//! Redis). Nothing here may print to stdout: the benchmarks' stdout is `BENCHMARKS.md`.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Connection details of the test environment.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// libpq key=value DSN of the primary.
    pub primary: String,
    /// `host:port` of replica 1 and replica 2.
    pub replicas: Vec<String>,
    /// Cluster 2 (its own initdb: another `system_identifier`): the DSN of its primary and
    /// `host:port` of its two replicas (empty when `DLB_TEST_PRIMARY` is set but
    /// `DLB_TEST_CLUSTER2_PRIMARY` is not: an environment made by an older script).
    pub cluster2_primary: String,
    pub cluster2_replicas: Vec<String>,
    /// `redis://` URL of the test Redis (empty when `DLB_TEST_PRIMARY` is set but
    /// `DLB_TEST_REDIS` is not; likewise for the other Redis fields).
    pub redis: String,
    /// `redis://` URLs of the three masters of the test Redis Cluster.
    pub redis_cluster: Vec<String>,
    /// The test Redis as an ACL user with a password (`redis://user:password@host:port`).
    pub redis_auth: String,
    /// A TLS-only Redis (`rediss://`) and the PEM file of the test CA that signed its
    /// certificate.
    pub redis_tls: String,
    pub redis_tls_ca: String,
    /// The TLS-only PostgreSQL cluster (`DLB_TEST_TLS_*`); `None` when not exported.
    pub tls: Option<TlsEnv>,
    /// `scripts/testenv.sh` (`DLB_TESTENV_SCRIPT` when set).
    script: String,
}

/// The TLS-only PostgreSQL cluster of the test environment (`scripts/testenv/postgres_tls.sh`).
#[derive(Debug, Clone)]
pub struct TlsEnv {
    /// key=value DSN of its primary (no TLS keys: tests add them).
    pub primary: String,
    /// `host:port` of replica 1 (certificate for 127.0.0.1 and localhost) and replica 2
    /// (certificate for another name).
    pub replicas: Vec<String>,
    /// PEM files: the CA that signed the servers' certificates, and one that signed nothing.
    pub ca: String,
    pub wrong_ca: String,
    /// The client certificate and key of [`TlsEnv::cert_user`], who must present them.
    pub client_cert: String,
    pub client_key: String,
    pub cert_user: String,
    /// A user who must authenticate with SCRAM-SHA-256 and this password (the server offers
    /// SCRAM-SHA-256-PLUS over TLS); empty in an environment made by an older script.
    pub scram_user: String,
    pub scram_password: String,
    /// The Unix socket directory of each node (primary, replica 1, replica 2): plain
    /// connections for the tests' own housekeeping.
    pub sockets: Vec<String>,
}

/// The file lock every suite that uses the environment holds (Rust, C, Go, Ruby), unless
/// `DLB_TESTS_LOCK` names another (for a second test environment on other ports).
pub const CLUSTER_LOCK: &str = "/tmp/dlb-tests.lock";

/// The cluster lock's path: `DLB_TESTS_LOCK`, else [`CLUSTER_LOCK`].
pub fn cluster_lock_path() -> String {
    std::env::var("DLB_TESTS_LOCK").unwrap_or_else(|_| CLUSTER_LOCK.to_string())
}

/// Generous bound for cluster state changes (checks run every 100 ms in tests).
pub const WAIT: Duration = Duration::from_secs(30);

/// The repository: the root package's directory, or its parent for a workspace member
/// (`cli/`, whose tests include this module too).
fn repo_root() -> &'static Path {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if dir.join("scripts/testenv.sh").is_file() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    }
}

/// The test environment: from the `DLB_TEST_*` variables when `DLB_TEST_PRIMARY` is set (as
/// after `eval "$(bash scripts/testenv.sh env)"`), else from `scripts/testenv.sh`, started
/// with `up` and then read from `env`.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(TestEnv::load)
}

impl TestEnv {
    fn load() -> TestEnv {
        let default_script = repo_root().join("scripts/testenv.sh");
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        if !vars.contains_key("DLB_TEST_PRIMARY") {
            eprintln!(
                "DLB_TEST_PRIMARY unset: running bash {}",
                default_script.display()
            );
            // Its progress goes to stderr: stdout may be a report (the benchmarks').
            let status = Command::new("bash")
                .arg(&default_script)
                .arg("up")
                .current_dir(repo_root())
                .stdout(std::io::stderr())
                .status()
                .expect("cannot run bash");
            assert!(status.success(), "scripts/testenv.sh up failed: {status}");
            let out = Command::new("bash")
                .arg(&default_script)
                .arg("env")
                .current_dir(repo_root())
                .output()
                .expect("cannot run bash");
            assert!(out.status.success(), "scripts/testenv.sh env failed");
            vars.extend(parse_exports(&String::from_utf8_lossy(&out.stdout)));
        }
        let required = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} not set (see scripts/testenv.sh env)"))
        };
        let optional = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let replicas = list(required("DLB_TEST_REPLICAS"));
        assert_eq!(
            replicas.len(),
            2,
            "DLB_TEST_REPLICAS must name the 2 replicas of the test environment"
        );
        let cluster2_replicas = list(optional("DLB_TEST_CLUSTER2_REPLICAS"));
        assert!(
            cluster2_replicas.is_empty() || cluster2_replicas.len() == 2,
            "DLB_TEST_CLUSTER2_REPLICAS must name the 2 replicas of cluster 2"
        );
        TestEnv {
            primary: required("DLB_TEST_PRIMARY"),
            replicas,
            cluster2_primary: optional("DLB_TEST_CLUSTER2_PRIMARY"),
            cluster2_replicas,
            redis: optional("DLB_TEST_REDIS"),
            redis_cluster: list(optional("DLB_TEST_REDIS_CLUSTER")),
            redis_auth: optional("DLB_TEST_REDIS_AUTH"),
            redis_tls: optional("DLB_TEST_REDIS_TLS"),
            redis_tls_ca: optional("DLB_TEST_REDIS_TLS_CA"),
            tls: vars.get("DLB_TEST_TLS_PRIMARY").map(|primary| TlsEnv {
                primary: primary.clone(),
                replicas: list(required("DLB_TEST_TLS_REPLICAS")),
                ca: required("DLB_TEST_TLS_CA"),
                wrong_ca: required("DLB_TEST_TLS_WRONG_CA"),
                client_cert: required("DLB_TEST_TLS_CLIENT_CERT"),
                client_key: required("DLB_TEST_TLS_CLIENT_KEY"),
                cert_user: required("DLB_TEST_TLS_CERT_USER"),
                scram_user: optional("DLB_TEST_TLS_SCRAM_USER"),
                scram_password: optional("DLB_TEST_TLS_SCRAM_PASSWORD"),
                sockets: list(required("DLB_TEST_TLS_SOCKETS")),
            }),
            script: vars
                .get("DLB_TESTENV_SCRIPT")
                .cloned()
                .unwrap_or_else(|| default_script.display().to_string()),
        }
    }

    /// Runs `scripts/testenv.sh ARGS` with its progress to `stdout`; false when it fails.
    fn run(&self, args: &[&str], stdout: impl Into<Stdio>) -> bool {
        Command::new("bash")
            .arg(&self.script)
            .args(args)
            .stdout(stdout)
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Parses `export K='V'` lines (shell single quoting, `'\''` for a quote).
pub fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), shell_unquote(v.trim())))
        .collect()
}

fn shell_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Takes [`CLUSTER_LOCK`] (an exclusive `flock`, across processes), held until the file is
/// dropped, so that pausing or stopping a replica in one suite cannot disturb another.
pub fn flock_cluster() -> File {
    let file = File::create(cluster_lock_path()).expect("lock file");
    // SAFETY: plain flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

/// Replica `n` (1 or 2) as `host:port`.
pub fn replica_addr(n: usize) -> &'static str {
    &env().replicas[n - 1]
}

/// The primary's DSN with host and port replaced by replica `n`'s (port 5432 if it has none).
pub fn replica_dsn(n: usize) -> String {
    dsn_at(&env().primary, replica_addr(n))
}

/// `dsn` with host and port replaced by `addr`'s (port 5432 if it has none).
pub fn dsn_at(dsn: &str, addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "5432"));
    // Replace, not append: a second `host=` adds a host in libpq syntax.
    let rest: Vec<&str> = dsn
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

/// Cluster 2's primary DSN; panics when the environment has no cluster 2.
pub fn cluster2_primary() -> &'static str {
    let p = &env().cluster2_primary;
    assert!(
        !p.is_empty(),
        "no cluster 2 in the test environment (DLB_TEST_CLUSTER2_PRIMARY unset): run scripts/testenv.sh up and eval its env again"
    );
    p
}

/// Cluster 2's replica `n` (1 or 2) as `host:port`.
pub fn cluster2_replica_addr(n: usize) -> &'static str {
    cluster2_primary();
    &env().cluster2_replicas[n - 1]
}

pub fn cluster2_primary_client() -> postgres::Client {
    postgres::Client::connect(cluster2_primary(), postgres::NoTls).expect("connect cluster 2")
}

pub fn cluster2_replica_client(n: usize) -> postgres::Client {
    postgres::Client::connect(
        &dsn_at(cluster2_primary(), cluster2_replica_addr(n)),
        postgres::NoTls,
    )
    .expect("connect cluster 2 replica")
}

/// Rebuilds cluster 2 from scratch (`testenv.sh reset-cluster2`); false when that failed.
/// Does not panic: it also runs while a failed test unwinds.
pub fn reset_cluster2() -> bool {
    env().run(&["reset-cluster2"], std::io::stderr())
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

/// Every replica running and replaying (a test that died may have left one paused or stopped),
/// and the standalone Redis running. Errors instead of panicking: it also runs while a failed
/// test unwinds.
pub fn restore() -> Result<(), String> {
    let e = env();
    if !e.run(&["start-redis"], Stdio::null()) {
        return Err("start-redis failed".into());
    }
    for n in 1..=e.replicas.len() {
        if !e.run(&["start-replica", &n.to_string()], std::io::stderr()) {
            return Err(format!("start-replica {n} failed"));
        }
        let mut c = postgres::Client::connect(&replica_dsn(n), postgres::NoTls)
            .map_err(|e| format!("connect to replica {n}: {e}"))?;
        c.simple_query("SELECT pg_wal_replay_resume()")
            .map_err(|e| format!("resume replay on replica {n}: {e}"))?;
    }
    Ok(())
}

/// Runs `scripts/testenv.sh ARGS` quietly (its progress discarded, its errors on stderr); false
/// when it fails. Never panics.
pub fn run_testenv(args: &[&str]) -> bool {
    env().run(args, Stdio::null())
}

fn run_script(args: &[&str]) {
    assert!(
        env().run(args, std::io::stderr()),
        "testenv.sh {args:?} failed"
    );
}

pub fn stop_replica(n: usize) {
    run_script(&["stop-replica", &n.to_string()]);
}

pub fn start_replica(n: usize) {
    run_script(&["start-replica", &n.to_string()]);
}

/// Stops the primary (`testenv.sh stop-primary`); [`start_primary`] brings it back.
pub fn stop_primary() {
    run_script(&["stop-primary"]);
}

/// Starts the primary if stopped and waits until both replicas stream from it; false when
/// that failed. Does not panic: it also runs while a failed test unwinds.
pub fn start_primary() -> bool {
    env().run(&["start-primary"], std::io::stderr())
}

/// Stops the standalone test Redis (see [`restore`]).
pub fn stop_redis() {
    run_script(&["stop-redis"]);
}

pub fn start_redis() {
    run_script(&["start-redis"]);
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

/// Waits until the balancer sees `n` healthy replicas; panics with its status after [`WAIT`].
pub fn wait_healthy(lb: &dlb::Balancer, n: usize) {
    let end = Instant::now() + WAIT;
    while lb.status().healthy_replicas != n {
        assert!(
            Instant::now() < end,
            "timed out after {WAIT:?} waiting until {n} replicas healthy: {}",
            lb.status().to_json()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
