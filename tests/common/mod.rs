//! Shared support for integration tests against the real test cluster
//! (`scripts/testenv.sh`: a primary and two streaming replicas on loopback, and Redis).
//! The client of the environment itself ([`testenv`]) is shared with the benchmarks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::time::Duration;

pub mod black_hole;
pub mod dnsmasq;
pub mod fake_pg;
pub mod hostile_dns;
pub mod protection;
pub mod proxy;
pub mod testenv;

pub use testenv::*;

/// Serializes tests that use the cluster (across test binaries too: [`CLUSTER_LOCK`]), so that
/// pausing or stopping a replica in one test cannot disturb another. Released on drop, which
/// also restores every replica (resumed, running) and Redis.
pub struct ClusterLock {
    _file: File,
}

pub fn lock_cluster() -> ClusterLock {
    env();
    let l = ClusterLock {
        _file: flock_cluster(),
    };
    if let Err(e) = restore() {
        panic!("cannot restore the test cluster: {e}");
    }
    l
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // Never panic here: this runs while a failed test unwinds.
        if let Err(e) = restore() {
            eprintln!("warning: cannot restore the test cluster: {e}");
        }
    }
}

/// Threads of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim().starts_with(prefix))
        .count()
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

/// A config for the test cluster with both replicas and a fast monitor.
pub fn config() -> dlb::ConfigBuilder {
    let replicas: Vec<&str> = env().replicas.iter().map(String::as_str).collect();
    config_for(&env().primary, &replicas)
}

/// [`config`] with low lag thresholds (64 KiB and 200 ms): a paused replica is quarantined
/// `lag` after a few [`generate_wal`] calls.
pub fn lag_config() -> dlb::ConfigBuilder {
    config()
        .max_lag_bytes(64 * 1024)
        .max_lag(Duration::from_millis(200))
}

/// A config with this primary DSN and these replica entries, and a fast monitor.
pub fn config_for(primary: &str, replicas: &[&str]) -> dlb::ConfigBuilder {
    dlb::Config::builder(primary.to_string())
        .replica_hosts(replicas.iter().map(|s| s.to_string()))
        .replica_check_interval(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(1000))
}

/// The status of the replica at `addr`.
pub fn replica_status(lb: &dlb::Balancer, addr: &str) -> dlb::ReplicaStatus {
    lb.status()
        .replicas
        .into_iter()
        .find(|r| r.host.addr == addr)
        .expect("replica in status")
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
