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
//! Run: `cargo bench --bench pick`. `DLB_BENCH_QUICK=1` (and a run by `cargo test`) divides every iteration count by 10
//! (smoke test; numbers not for reporting). `DLB_BENCH_ROUNDS=N` sets the number of rounds.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::*;
use dlb::{Balancer, Config, Reason};

/// Picks per thread for dlb in one measurement.
const DLB_ITERS: u64 = 20_000_000;
/// Picks per thread for the baseline in one measurement.
const BASELINE_ITERS: u64 = 10_000_000;
const DEFAULT_ROUNDS: usize = 7;
const THREADS: [usize; 2] = [1, 2];

fn main() {
    let quick = quick();
    let div = if quick { 10 } else { 1 };
    let rounds = rounds(DEFAULT_ROUNDS);
    let (dlb_iters, base_iters) = (DLB_ITERS / div, BASELINE_ITERS / div);

    let env = env();
    let _lock = lock_cluster();
    let config =
        tolerant_probes(Config::builder(env.primary.clone()).replica_hosts(env.replicas.clone()))
            .build()
            .expect("bench config");
    let lb = Balancer::new(config).expect("balancer");
    wait_healthy(&lb, env.replicas.len());

    let baseline = MutexRoundRobin::new(
        (1..=env.replicas.len())
            .map(|n| Arc::new(replica_dsn(n)))
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
        "some dlb picks were not round-robin replica picks: status {}\npicks: {}",
        lb.status().to_json(),
        lb.metrics_text()
            .lines()
            .filter(|l| l.contains("picks_total{"))
            .collect::<Vec<_>>()
            .join(", ")
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
