//! Helpers shared by the benchmarks: the test cluster (through the integration tests' client
//! of `scripts/testenv.sh`, which starts it when `DLB_TEST_PRIMARY` is unset), its lock,
//! statistics and formatting.
#![allow(dead_code)]

use std::fs::File;
use std::time::Duration;

use dlb::{Balancer, ConfigBuilder, ConnectivityConfig, Reason};

// Benches cannot depend on the tests' crate: the file is included as a module of its own.
#[path = "../../tests/common/testenv.rs"]
mod testenv;

pub use testenv::*;

/// Whether this is a smoke run, whose numbers are not for reporting: `DLB_BENCH_QUICK=1`, or
/// the bench was started by `cargo test --all-targets` (which runs a `harness = false` bench
/// without the `--bench` argument that `cargo bench` passes): the test command checks that
/// every bench still runs and that its assertions hold, not how fast it goes.
pub fn quick() -> bool {
    let asked = std::env::var_os("DLB_BENCH_QUICK").is_some_and(|v| v != "0");
    asked || !std::env::args().any(|a| a == "--bench")
}

/// Rounds of a measurement: `DLB_BENCH_ROUNDS`, else `default` (2 in a smoke run).
pub fn rounds(default: usize) -> usize {
    std::env::var("DLB_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 2 } else { default })
}

/// Health settings for a bench that asserts where its picks went: it saturates the machine on
/// purpose, and a probe may then miss the default 100 ms deadline and take a replica out for a
/// second (a run in CI lost 8% of the pick bench's picks to the primary that way). A bench
/// measures picks, not the health rules: its probes get 2 s and three chances.
pub fn tolerant_probes(b: ConfigBuilder) -> ConfigBuilder {
    let mut connectivity = ConnectivityConfig::default();
    connectivity.failure_threshold = 3;
    b.probe_timeout(Duration::from_secs(2))
        .connectivity(connectivity)
}

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

// --- test cluster (the client shared with the integration tests) ---------------------------

/// The integration tests' cluster lock ([`cluster_lock_path`]), held until dropped.
pub fn lock_cluster() -> File {
    eprintln!(
        "waiting for the cluster lock {} (tests running?)",
        cluster_lock_path()
    );
    flock_cluster()
}

/// Resumes WAL replay on every replica (a test that died may have left one paused).
pub fn resume_replays() {
    for n in 1..=env().replicas.len() {
        resume_replay(n);
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
