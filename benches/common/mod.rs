//! Helpers shared by the benchmarks: the test cluster (started through `scripts/testenv.sh`
//! when `DLB_TEST_PRIMARY` is unset), its lock, statistics and formatting.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dlb::{Balancer, Reason};
use postgres::NoTls;

pub fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("metric {prefix:?} not in metrics_text()"))
        .trim()
        .parse()
        .expect("metric value")
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// --- test cluster -------------------------------------------------------------------------

pub struct TestEnv {
    pub primary: String,
    pub replicas: Vec<String>,
    /// `DLB_TEST_REDIS` (empty when unset).
    pub redis: String,
    /// `DLB_TEST_REDIS_CLUSTER`, split (empty when unset).
    pub redis_cluster: Vec<String>,
}

/// The cluster from `DLB_TEST_PRIMARY` / `DLB_TEST_REPLICAS`, or, when `DLB_TEST_PRIMARY` is
/// unset, from `scripts/testenv.sh` (started with `up`, then read from `env`).
pub fn test_env() -> TestEnv {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let (primary, replicas, redis, cluster) = match std::env::var("DLB_TEST_PRIMARY") {
        Ok(p) => (
            p,
            std::env::var("DLB_TEST_REPLICAS")
                .expect("DLB_TEST_PRIMARY is set but DLB_TEST_REPLICAS is not"),
            var("DLB_TEST_REDIS"),
            var("DLB_TEST_REDIS_CLUSTER"),
        ),
        Err(_) => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let script = root.join("scripts/testenv.sh");
            eprintln!("DLB_TEST_PRIMARY unset: running bash {}", script.display());
            let status = Command::new("bash")
                .arg(&script)
                .arg("up")
                .current_dir(root)
                .stdout(std::io::stderr())
                .status()
                .expect("cannot run bash");
            assert!(status.success(), "scripts/testenv.sh up failed: {status}");
            let out = Command::new("bash")
                .arg(&script)
                .arg("env")
                .current_dir(root)
                .output()
                .expect("cannot run bash");
            assert!(out.status.success(), "scripts/testenv.sh env failed");
            let mut vars = parse_exports(&String::from_utf8_lossy(&out.stdout));
            let mut take = |k: &str| {
                vars.remove(k)
                    .unwrap_or_else(|| panic!("scripts/testenv.sh env printed no {k}"))
            };
            (
                take("DLB_TEST_PRIMARY"),
                take("DLB_TEST_REPLICAS"),
                take("DLB_TEST_REDIS"),
                take("DLB_TEST_REDIS_CLUSTER"),
            )
        }
    };
    let replicas: Vec<String> = replicas
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(replicas.len(), 2, "the bench expects 2 replicas");
    TestEnv {
        primary,
        replicas,
        redis,
        redis_cluster: cluster
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
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

pub fn shell_unquote(s: &str) -> String {
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

/// The replica's DSN: the primary's key=value DSN with host and port replaced.
pub fn replica_dsn(primary: &str, host_port: &str) -> String {
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    let rest: Vec<&str> = primary
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .collect();
    format!("host={host} port={port} {}", rest.join(" "))
}

/// The integration tests' cluster lock (an exclusive `flock`), held until dropped.
pub fn lock_cluster() -> File {
    let file = File::create("/tmp/dlb-tests.lock").expect("lock file");
    eprintln!("waiting for the cluster lock /tmp/dlb-tests.lock (tests running?)");
    // SAFETY: plain flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

/// Resumes WAL replay on every replica (a test that died may have left one paused).
pub fn resume_replay(env: &TestEnv) {
    for hp in &env.replicas {
        let mut c = postgres::Client::connect(&replica_dsn(&env.primary, hp), NoTls)
            .unwrap_or_else(|e| panic!("connect to replica {hp}: {e}"));
        c.simple_query("SELECT pg_wal_replay_resume()")
            .unwrap_or_else(|e| panic!("resume replay on {hp}: {e}"));
    }
}

pub fn wait_healthy(lb: &Balancer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while lb.status().healthy_replicas != n {
        assert!(
            Instant::now() < deadline,
            "replicas not healthy after 30 s: {}",
            lb.status().to_json()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn picks_total(lb: &Balancer, reason: Reason) -> u64 {
    let prefix = format!(
        "dlb_picks_total{{role=\"{}\",reason=\"{}\"}} ",
        reason.role().as_str(),
        reason.as_str()
    );
    metric(&lb.metrics_text(), &prefix)
}
