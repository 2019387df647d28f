//! Pick path without a key: `Balancer::pick_replica(None)`, picks per second with 1 and 2
//! threads, against a baseline measured in the same run.
//!
//! Baseline: a mutex-guarded round-robin index over the replica DSNs, as GitLab's load
//! balancer does it (`HostList#next`: `@mutex.synchronize { @index = (@index + 1) % n }`),
//! returning an `Arc<String>` clone (dlb's pick returns a `Route`, i.e. an `Arc<Host>` clone).
//! The baseline clones the `Arc` after releasing the lock, which keeps its critical section as
//! short as it can be.
//!
//! Needs the test cluster: when `DLB_TEST_PRIMARY` is unset this runs
//! `bash scripts/testenv.sh up` and reads `bash scripts/testenv.sh env`. Holds the integration
//! tests' cluster lock (`/tmp/dlb-tests.lock`) while it measures, so that no test pauses or
//! stops a replica mid-run.
//!
//! Run: `cargo bench --bench pick`. `DLB_BENCH_QUICK=1` divides every iteration count by 10
//! (smoke test; numbers not for reporting). `DLB_BENCH_ROUNDS=N` sets the number of rounds.

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dlb::{Balancer, Config, Reason};

/// Picks per thread for dlb in one measurement.
const DLB_ITERS: u64 = 20_000_000;
/// Picks per thread for the baseline in one measurement.
const BASELINE_ITERS: u64 = 10_000_000;
const DEFAULT_ROUNDS: usize = 7;
const THREADS: [usize; 2] = [1, 2];

fn main() {
    let quick = std::env::var_os("DLB_BENCH_QUICK").is_some_and(|v| v != "0");
    let div = if quick { 10 } else { 1 };
    let rounds: usize = std::env::var("DLB_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let (dlb_iters, base_iters) = (DLB_ITERS / div, BASELINE_ITERS / div);

    let env = test_env();
    let _lock = lock_cluster();
    let config = Config::builder(env.primary.clone())
        .replica_hosts(env.replicas.clone())
        .build()
        .expect("bench config");
    let lb = Balancer::new(config).expect("balancer");
    wait_healthy(&lb, env.replicas.len());

    let baseline = MutexRoundRobin::new(
        env.replicas
            .iter()
            .map(|hp| Arc::new(replica_dsn(&env.primary, hp)))
            .collect(),
    );

    eprintln!(
        "pick bench: {rounds} rounds, dlb {dlb_iters} picks/thread, baseline {base_iters} \
         picks/thread, threads {THREADS:?}, loadavg at start: {}",
        loadavg()
    );

    // Warm-up (caches, thread-local epoch handles and counter stripes, CPU frequency).
    for &t in &THREADS {
        run_threads(t, dlb_iters / 10, || pick_dlb(&lb));
        run_threads(t, base_iters / 10, || pick_baseline(&baseline));
    }

    let rr_before = picks_total(&lb, Reason::RoundRobin);
    let mut dlb_total = 0u64;
    let mut results: Vec<Results> = THREADS.iter().map(|_| Results::default()).collect();
    for round in 0..rounds {
        for (ti, &t) in THREADS.iter().enumerate() {
            // Alternate which side goes first so a slow drift in machine load hits both.
            let measure_base = || run_threads(t, base_iters, || pick_baseline(&baseline));
            let measure_dlb = || run_threads(t, dlb_iters, || pick_dlb(&lb));
            let (b, d) = if round % 2 == 0 {
                let b = measure_base();
                (b, measure_dlb())
            } else {
                let d = measure_dlb();
                (measure_base(), d)
            };
            dlb_total += dlb_iters * t as u64;
            eprintln!(
                "round {round} threads {t}: baseline {} picks/s (cpu/wall {:.2}), dlb {} \
                 picks/s (cpu/wall {:.2}), ratio {:.2}",
                fmt_rate(b.rate),
                b.cpu_per_wall,
                fmt_rate(d.rate),
                d.cpu_per_wall,
                d.rate / b.rate
            );
            let r = &mut results[ti];
            r.base.push(b.rate);
            r.dlb.push(d.rate);
            r.ratio.push(d.rate / b.rate);
            r.base_cpu.push(b.cpu_per_wall);
            r.dlb_cpu.push(d.cpu_per_wall);
        }
    }

    // Every measured dlb pick must have been a replica round-robin pick (not a fallback to
    // the primary because a replica dropped out mid-run).
    let rr_picks = picks_total(&lb, Reason::RoundRobin) - rr_before;
    assert_eq!(
        rr_picks,
        dlb_total,
        "some dlb picks were not round-robin replica picks: status {}",
        lb.status().to_json()
    );
    assert_eq!(lb.status().healthy_replicas, env.replicas.len());

    println!();
    println!(
        "## pick_replica(None): picks/s (median of {rounds} rounds; ratio = median of per-round \
         dlb/baseline)"
    );
    println!();
    println!(
        "| threads | baseline (Mutex<usize> RR) picks/s | dlb picks/s | ratio dlb/baseline | ratio min..max | CPU/wall baseline, dlb |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (ti, &t) in THREADS.iter().enumerate() {
        let r = &results[ti];
        println!(
            "| {t} | {} | {} | {:.2}x | {:.2}..{:.2} | {:.2}, {:.2} |",
            fmt_rate(median(&r.base)),
            fmt_rate(median(&r.dlb)),
            median(&r.ratio),
            min(&r.ratio),
            max(&r.ratio),
            median(&r.base_cpu),
            median(&r.dlb_cpu)
        );
    }
    println!();
    println!(
        "CPU/wall: CPU time the measuring threads got (CLOCK_THREAD_CPUTIME_ID, summed) over \
         wall time, median; below the thread count means the threads did not all run all the \
         time (other load on the machine, or, for the baseline, threads asleep on the mutex)."
    );
    println!();
    println!(
        "dlb picks checked: {rr_picks} round_robin picks counted by dlb_picks_total; \
         nproc {}; loadavg at end: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
}

#[inline(never)]
fn pick_dlb(lb: &Balancer) {
    black_box(lb.pick_replica(black_box(None)).expect("pick"));
}

#[inline(never)]
fn pick_baseline(rr: &MutexRoundRobin) {
    black_box(rr.next());
}

/// GitLab-style host list: a mutex around the round-robin index.
struct MutexRoundRobin {
    hosts: Vec<Arc<String>>,
    index: Mutex<usize>,
}

impl MutexRoundRobin {
    fn new(hosts: Vec<Arc<String>>) -> Self {
        assert!(!hosts.is_empty());
        MutexRoundRobin {
            hosts,
            index: Mutex::new(0),
        }
    }

    fn next(&self) -> Arc<String> {
        let i = {
            let mut index = self.index.lock().unwrap();
            let i = *index;
            *index = (i + 1) % self.hosts.len();
            i
        };
        self.hosts[i].clone()
    }
}

#[derive(Default)]
struct Results {
    base: Vec<f64>,
    dlb: Vec<f64>,
    ratio: Vec<f64>,
    base_cpu: Vec<f64>,
    dlb_cpu: Vec<f64>,
}

struct Measure {
    /// Calls per second, all threads together.
    rate: f64,
    /// CPU time of the measuring threads over wall time.
    cpu_per_wall: f64,
}

/// Runs `f` `iters` times on each of `threads` threads started together; the rate is measured
/// from the common start to the last thread's end.
fn run_threads(threads: usize, iters: u64, f: impl Fn() + Sync) -> Measure {
    let barrier = Barrier::new(threads + 1);
    let (elapsed, cpu) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let cpu0 = thread_cpu_time();
                    for _ in 0..iters {
                        f();
                    }
                    thread_cpu_time() - cpu0
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let cpu: Duration = hs.into_iter().map(|h| h.join().unwrap()).sum();
        (start.elapsed(), cpu)
    });
    Measure {
        rate: (iters * threads as u64) as f64 / elapsed.as_secs_f64(),
        cpu_per_wall: cpu.as_secs_f64() / elapsed.as_secs_f64(),
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn picks_total(lb: &Balancer, reason: Reason) -> u64 {
    let prefix = format!(
        "dlb_picks_total{{role=\"{}\",reason=\"{}\"}} ",
        reason.role().as_str(),
        reason.as_str()
    );
    metric(&lb.metrics_text(), &prefix)
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("metric {prefix:?} not in metrics_text()"))
        .trim()
        .parse()
        .expect("metric value")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// --- test cluster -------------------------------------------------------------------------

struct TestEnv {
    primary: String,
    replicas: Vec<String>,
}

/// The cluster from `DLB_TEST_PRIMARY` / `DLB_TEST_REPLICAS`, or, when `DLB_TEST_PRIMARY` is
/// unset, from `scripts/testenv.sh` (started with `up`, then read from `env`).
fn test_env() -> TestEnv {
    let (primary, replicas) = match std::env::var("DLB_TEST_PRIMARY") {
        Ok(p) => (
            p,
            std::env::var("DLB_TEST_REPLICAS")
                .expect("DLB_TEST_PRIMARY is set but DLB_TEST_REPLICAS is not"),
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
            (take("DLB_TEST_PRIMARY"), take("DLB_TEST_REPLICAS"))
        }
    };
    let replicas: Vec<String> = replicas
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(replicas.len(), 2, "the bench expects 2 replicas");
    TestEnv { primary, replicas }
}

/// Parses `export K='V'` lines (shell single quoting, `'\''` for a quote).
fn parse_exports(text: &str) -> HashMap<String, String> {
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

/// The replica's DSN: the primary's key=value DSN with host and port replaced.
fn replica_dsn(primary: &str, host_port: &str) -> String {
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    let rest: Vec<&str> = primary
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .collect();
    format!("host={host} port={port} {}", rest.join(" "))
}

/// The integration tests' cluster lock (an exclusive `flock`), held until dropped.
fn lock_cluster() -> File {
    let file = File::create("/tmp/dlb-tests.lock").expect("lock file");
    eprintln!("waiting for the cluster lock /tmp/dlb-tests.lock (tests running?)");
    // SAFETY: plain flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

fn wait_healthy(lb: &Balancer, n: usize) {
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
