//! The read path end to end: a pooled connection and a point `SELECT`, through dlb and through
//! the alternatives a caller has, all measured in one run, in alternating rounds.
//!
//! * (a) throughput, `THREADS` threads for `ROUND` each, every read: get a connection, run
//!   `SELECT v FROM dlb_bench_read WHERE id = $1` (`query_one`: the same client code
//!   everywhere), give the connection back. Sides:
//!   - dlb `read_conn(None)` (keyless) and `read_conn(Some(key))` (sticky, the key's LSN
//!     replayed by both replicas: served from the cache, plus the check on the very connection);
//!   - direct r2d2 pools to the two replicas with r2d2's defaults (a test query on every
//!     checkout, 10 connections), round-robin over the pools;
//!   - tuned direct pools (no test query, `THREADS` connections each, opened up front);
//!   - pgpool-II in statement-level load balancing (`scripts/bench.sh` starts it on its own
//!     port in front of the same primary and replicas; `DLB_BENCH_PGPOOL` = its DSN), through a
//!     tuned pool; skipped when unset;
//!   - the primary only, through a tuned pool;
//!   - dlb `read_conn(None)` with `Conn::prepare_cached` (the opt-in statement cache: one
//!     round trip per read where `query_one(sql_text)` makes two; not the same client code).
//!
//!   Ratios are per round, against the tuned direct pools of the same round; medians. "Client
//!   CPU per read": the bench process's CPU time (all threads, `getrusage`) over its reads,
//!   where the time goes on this side of the socket.
//! * (b) write → record → first sticky read: insert a row (`write_conn`), `record_lsn(key)`,
//!   then time the first sticky read's routing: `read_conn(Some(key))` (the check runs on the
//!   connection it hands out), `pick_replica(Some(key))` (DSN handoff: the replica's live
//!   checker, on the caller's thread), and the one-query baseline of BENCHMARKS.md §2c (`pg_last_wal_replay_lsn()` on
//!   a connection from r2d2 pools with defaults, GitLab's `select_up_to_date_host`).
//!   Iterations alternate between the three; p50/p99.
//!
//! Needs the test cluster (see `benches/common`). Holds the tests' cluster lock while it
//! measures. Run: `cargo bench --bench readpath` (`DLB_BENCH_SIDE=N`: side N of (a) alone for
//! 10 s, to profile it); `DLB_BENCH_QUICK=1` (and a run by `cargo test`): a smoke run.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::*;
use dlb::{Balancer, Config, Lsn, Role};
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

type PgPool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

const THREADS: usize = 8;
const ROWS: i32 = 1000;
const TABLE: &str = "dlb_bench_read";
const QUERY: &str = "SELECT v FROM dlb_bench_read WHERE id = $1";
const KEY_OLD: &str = "bench:read:steady";
const KEY_LOOP: &str = "bench:read:loop";

/// How a side gets a connection and reads.
trait Reader: Sync {
    fn read(&self, id: i32);
}

struct Dlb<'a> {
    lb: &'a Balancer,
    key: Option<&'a str>,
    /// Through `Conn::prepare_cached` (one round trip per read instead of two).
    cached: bool,
}

impl Reader for Dlb<'_> {
    fn read(&self, id: i32) {
        let mut c = self.lb.read_conn(self.key).expect("read_conn");
        if self.cached {
            let st = c.prepare_cached(QUERY).expect("prepare");
            black_box(c.query_one(&st, &[&id]).expect("dlb read"));
        } else {
            black_box(c.query_one(QUERY, &[&id]).expect("dlb read"));
        }
    }
}

struct Pools {
    pools: Vec<PgPool>,
    next: AtomicUsize,
}

impl Pools {
    fn new(dsns: &[String], tuned: bool) -> Pools {
        let pools = dsns
            .iter()
            .map(|dsn| {
                let cfg: postgres::Config = dsn.parse().expect("dsn");
                let m = PostgresConnectionManager::new(cfg, NoTls);
                if tuned {
                    r2d2::Pool::builder()
                        .max_size(THREADS as u32)
                        .min_idle(Some(THREADS as u32))
                        .test_on_check_out(false)
                        .build(m)
                } else {
                    r2d2::Pool::new(m)
                }
                .expect("pool")
            })
            .collect();
        Pools {
            pools,
            next: AtomicUsize::new(0),
        }
    }
}

impl Reader for Pools {
    fn read(&self, id: i32) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pools.len();
        let mut c = self.pools[i].get().expect("checkout");
        black_box(c.query_one(QUERY, &[&id]).expect("direct read"));
    }
}

/// CPU time this process got so far (all threads: the bench's and dlb's): user, system.
fn process_cpu() -> [Duration; 2] {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    [tv(ru.ru_utime), tv(ru.ru_stime)]
}

/// Reads/s of `side` with `THREADS` threads for `dur`, and the client's CPU time per read
/// (user, system).
fn throughput(side: &dyn Reader, dur: Duration) -> (f64, [Duration; 2]) {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let cpu = process_cpu();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stop, done) = (&stop, &done);
            s.spawn(move || {
                let mut n = 0u64;
                let mut id = t as i32;
                while !stop.load(Ordering::Relaxed) {
                    side.read(id % ROWS + 1);
                    id = id.wrapping_add(7);
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    let reads = done.load(Ordering::Relaxed);
    let n = u32::try_from(reads.max(1)).unwrap_or(u32::MAX);
    let end = process_cpu();
    let cpu = [(end[0] - cpu[0]) / n, (end[1] - cpu[1]) / n];
    (reads as f64 / start.elapsed().as_secs_f64(), cpu)
}

fn main() {
    let quick = quick();
    let (rounds, round, iters) = if quick {
        (2, Duration::from_millis(500), 30)
    } else {
        (5, Duration::from_secs(3), 1000)
    };
    let env = env();
    let _lock = lock_cluster();
    resume_replays();
    let mut primary = primary_client();
    primary
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE}; \
             CREATE TABLE {TABLE} (id int PRIMARY KEY, v text); \
             INSERT INTO {TABLE} SELECT i, md5(i::text) FROM generate_series(1, {ROWS}) i"
        ))
        .expect("bench table");
    let lb = Balancer::new(
        // The same pool sizes as the tuned direct pools.
        Config::builder(env.primary.clone())
            .replica_hosts(env.replicas.clone())
            .pool_max_size(THREADS as u32)
            .pool_min_idle(THREADS as u32)
            .build()
            .expect("config"),
    )
    .expect("balancer");
    wait_healthy(&lb, env.replicas.len());
    lb.record_lsn(KEY_OLD).expect("record");
    let replicas: Vec<String> = (1..=env.replicas.len()).map(replica_dsn).collect();
    // The table is replicated before anyone reads it.
    let lsn = lb.recorded_lsn(KEY_OLD).expect("lsn").expect("recorded");
    for dsn in &replicas {
        let mut c = postgres::Client::connect(dsn, NoTls).expect("replica");
        let end = Instant::now() + WAIT;
        while replay_lsn_extended(&mut c).is_none_or(|l| l < lsn) {
            assert!(
                Instant::now() < end,
                "replica never replayed the bench table"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let defaults = Pools::new(&replicas, false);
    let tuned = Pools::new(&replicas, true);
    let primary_only = Pools::new(std::slice::from_ref(&env.primary), true);
    let pgpool = std::env::var("DLB_BENCH_PGPOOL")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|dsn| Pools::new(&[dsn], true));
    let keyless = Dlb {
        lb: &lb,
        key: None,
        cached: false,
    };
    let sticky = Dlb {
        lb: &lb,
        key: Some(KEY_OLD),
        cached: false,
    };
    let keyless_cached = Dlb {
        lb: &lb,
        key: None,
        cached: true,
    };
    let mut sides: Vec<(&str, &dyn Reader)> = vec![
        ("tuned direct pools (baseline)", &tuned),
        ("dlb `read_conn(None)`", &keyless),
        ("dlb `read_conn(Some(key))`", &sticky),
        ("direct pools, r2d2 defaults", &defaults),
        ("primary only (tuned pool)", &primary_only),
        (
            "dlb `read_conn(None)`, `prepare_cached` (one round trip per read)",
            &keyless_cached,
        ),
    ];
    if let Some(p) = &pgpool {
        sides.push(("pgpool-II, statement load balancing", p));
    }
    eprintln!(
        "readpath bench: {rounds} rounds of {} s per side, {THREADS} threads; loadavg {}",
        round.as_secs_f64(),
        loadavg()
    );
    // Profiling aid: `DLB_BENCH_SIDE=N` runs side N of (a) alone for 10 s (e.g. under
    // `perf record`) and stops.
    if let Some(i) = std::env::var("DLB_BENCH_SIDE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let (name, side) = sides[i];
        throughput(side, Duration::from_millis(500));
        let (rate, cpu) = throughput(side, Duration::from_secs(10));
        println!(
            "{name}: {} reads/s, client CPU per read: user {}, system {}",
            fmt_rate(rate),
            fmt_dur(cpu[0]),
            fmt_dur(cpu[1])
        );
        return;
    }
    // Warm every pool.
    for (_, side) in &sides {
        throughput(*side, Duration::from_millis(200));
    }
    let mut rates = vec![Vec::new(); sides.len()];
    let mut cpus = vec![Vec::new(); sides.len()];
    for r in 0..rounds {
        // Alternate the order: even rounds forwards, odd rounds backwards.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for i in order {
            let (rate, cpu) = throughput(sides[i].1, round);
            rates[i].push(rate);
            cpus[i].push([cpu[0].as_secs_f64(), cpu[1].as_secs_f64()]);
        }
    }
    println!(
        "\n## (a) point SELECTs/s through a pooled connection, {THREADS} threads (median of {rounds} rounds of {} s; ratio = median of per-round side/baseline)\n",
        round.as_secs_f64()
    );
    println!(
        "| side | reads/s | ratio vs tuned direct pools | ratio min..max | client CPU per read: user + system |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in sides.iter().enumerate() {
        let ratios: Vec<f64> = rates[i].iter().zip(&rates[0]).map(|(a, b)| a / b).collect();
        let cpu = |k: usize| {
            let v: Vec<f64> = cpus[i].iter().map(|c| c[k]).collect();
            fmt_dur(Duration::from_secs_f64(median(&v)))
        };
        println!(
            "| {name} | {} | {:.2}x | {:.2}..{:.2} | {} + {} |",
            fmt_rate(median(&rates[i])),
            median(&ratios),
            min(&ratios),
            max(&ratios),
            cpu(0),
            cpu(1)
        );
    }
    if pgpool.is_none() {
        println!("\npgpool-II: not measured (DLB_BENCH_PGPOOL unset; `scripts/bench.sh` sets it).");
    } else {
        let i = sides.len() - 1;
        let ratios: Vec<f64> = rates[1].iter().zip(&rates[i]).map(|(a, b)| a / b).collect();
        println!(
            "\ndlb keyless / pgpool-II: {:.2}x (per round {:.2}..{:.2})",
            median(&ratios),
            min(&ratios),
            max(&ratios)
        );
    }

    // ---- (b) write -> record -> first sticky read -------------------------------------------
    let gitlab = Pools::new(&replicas, false);
    let (mut via_conn, mut via_dsn, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let (mut conn_replica, mut dsn_replica, mut base_replica) = (0, 0, 0);
    let checks_before = metric(&lb.metrics_text(), "dlb_live_lsn_checks_total ");
    for i in 0..iters * 3 {
        lb.write_conn()
            .expect("write_conn")
            .execute(
                &format!("UPDATE {TABLE} SET v = md5(random()::text) WHERE id = $1"),
                &[&(i % ROWS + 1)],
            )
            .expect("write");
        let want = lb.record_lsn(KEY_LOOP).expect("record");
        let t = Instant::now();
        match i % 3 {
            0 => {
                let c = lb.read_conn(Some(KEY_LOOP)).expect("read_conn");
                via_conn.push(t.elapsed());
                conn_replica += usize::from(c.route().role() == Role::Replica);
            }
            1 => {
                let r = lb.pick_replica(Some(KEY_LOOP)).expect("pick");
                via_dsn.push(t.elapsed());
                dsn_replica += usize::from(r.role() == Role::Replica);
            }
            _ => {
                let n = gitlab.pools.len();
                let start = gitlab.next.fetch_add(1, Ordering::Relaxed);
                let mut found = false;
                for k in 0..n {
                    let mut c = gitlab.pools[(start + k) % n].get().expect("checkout");
                    if replay_lsn_extended(&mut c).is_some_and(|l| l >= want) {
                        found = true;
                        break;
                    }
                }
                base.push(t.elapsed());
                base_replica += usize::from(found);
            }
        }
    }
    let checks = metric(&lb.metrics_text(), "dlb_live_lsn_checks_total ") - checks_before;
    println!(
        "\n## (b) write, `record_lsn`, then the first sticky read's routing ({iters} iterations per side, alternating)\n"
    );
    println!("| path | p50 | p99 | p50 vs baseline | served by a replica |");
    println!("|---|---:|---:|---:|---:|");
    let b50 = pct(&base, 50);
    for (name, v, on) in [
        (
            "baseline: `pg_last_wal_replay_lsn()` on an r2d2 connection (defaults)",
            &base,
            base_replica,
        ),
        (
            "dlb `read_conn(Some(key))` (check on the connection it hands out)",
            &via_conn,
            conn_replica,
        ),
        (
            "dlb `pick_replica(Some(key))` (DSN handoff, live checker on the caller's thread)",
            &via_dsn,
            dsn_replica,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {:.2}x | {}/{} |",
            fmt_dur(pct(v, 50)),
            fmt_dur(pct(v, 99)),
            pct(v, 50).as_secs_f64() / b50.as_secs_f64(),
            on,
            v.len()
        );
    }
    println!(
        "\ndlb live checks (replica round trips) in (b): {checks} for {} first sticky reads; nproc {}; loadavg at end: {}",
        2 * iters,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
}

fn pct(v: &[Duration], p: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * p / 100).min(s.len() - 1)]
}

/// `pg_last_wal_replay_lsn()` through `query_one` (extended protocol), as the baseline asks.
fn replay_lsn_extended(c: &mut postgres::Client) -> Option<Lsn> {
    c.query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
        .ok()?
        .get::<_, Option<String>>(0)?
        .parse()
        .ok()
}
