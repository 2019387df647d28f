//! Sticky picks (`Balancer::pick_replica(Some(key))`) against a GitLab-style baseline that
//! asks the replica live on every sticky read, both measured in the same run.
//!
//! * (a) dlb, steady state: the key's LSN (`0/1`) has been replayed by every replica, so every
//!   pick is answered from the replay positions the monitor caches. Picks/s on one thread, and
//!   replica queries per pick (`dlb_live_lsn_checks_total` before/after).
//! * (b) baseline, same key, same thread: for every sticky read, the key's LSN from a
//!   [`dlb::MemoryStore`] (the same store dlb uses, so the difference is the query), then
//!   `SELECT pg_last_wal_replay_lsn()` on a pooled connection (r2d2 + r2d2_postgres) to the
//!   round-robin candidate (a mutex-guarded index, as GitLab's host list), compared with the
//!   key's LSN. When the candidate is behind it asks the next replica, and so on; none caught up:
//!   the primary (GitLab's `select_up_to_date_host`). At steady state that is one query per
//!   read.
//! * (c) read-your-writes loop: insert a row on the primary (`lb.write_conn()`), `record_lsn(key)`,
//!   then 10 sticky picks; iterations alternate between dlb and the baseline. Reports replica
//!   queries per sticky pick, where the picks went, and pick latency.
//!
//! Needs the test cluster: when `DLB_TEST_PRIMARY` is unset this runs
//! `bash scripts/testenv.sh up` and reads `bash scripts/testenv.sh env`. Holds the integration
//! tests' cluster lock (`/tmp/dlb-tests.lock`) while it measures. Creates (and truncates) the
//! table `dlb_bench_sticky` on the primary.
//!
//! Run: `cargo bench --bench sticky`. `DLB_BENCH_QUICK=1` (and a run by `cargo test`) divides every iteration count by 10
//! (smoke test). `DLB_BENCH_ROUNDS=N` sets the number of rounds of (a)/(b).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::*;
use dlb::{Balancer, Config, Lsn, LsnStore, MemoryStore, Reason, Role};
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

/// (a): dlb sticky picks per round.
const DLB_PICKS: u64 = 2_000_000;
/// (b): baseline sticky reads per round (each one a query).
const BASELINE_PICKS: u64 = 5_000;
const DEFAULT_ROUNDS: usize = 5;
/// (c): loop iterations per side (each: 1 insert, 1 record_lsn, 10 sticky picks).
const LOOP_ITERS: u64 = 300;
const PICKS_PER_WRITE: usize = 10;

const KEY_OLD: &str = "bench:steady";
const KEY_LOOP: &str = "bench:loop";
const TABLE: &str = "dlb_bench_sticky";

fn main() {
    let quick = quick();
    let div = if quick { 10 } else { 1 };
    let rounds = rounds(DEFAULT_ROUNDS);
    let (dlb_picks, base_picks, loop_iters) =
        (DLB_PICKS / div, BASELINE_PICKS / div, LOOP_ITERS / div);

    let env = env();
    let _lock = lock_cluster();
    resume_replays();
    let config =
        tolerant_probes(Config::builder(env.primary.clone()).replica_hosts(env.replicas.clone()))
            .build()
            .expect("bench config");
    let lb = Balancer::new(config).expect("balancer");
    wait_healthy(&lb, env.replicas.len());
    let gitlab = GitLabStyle::new(env);

    eprintln!(
        "sticky bench: {rounds} rounds of (a) {dlb_picks} dlb picks / (b) {base_picks} baseline \
         reads; (c) {loop_iters} write+{PICKS_PER_WRITE}-pick iterations per side; loadavg at \
         start: {}",
        loadavg()
    );

    // ---- (a) and (b): steady state ------------------------------------------------------
    lb.record_lsn_value(KEY_OLD, Lsn::from_u64(1))
        .expect("record");
    gitlab
        .store
        .record(KEY_OLD, Lsn::from_u64(1), Duration::from_secs(3600))
        .expect("record");
    // Warm-up: pool connections, caches.
    for _ in 0..base_picks / 10 {
        black_box(gitlab.sticky_pick(KEY_OLD));
    }
    for _ in 0..dlb_picks / 10 {
        black_box(lb.pick_replica(Some(KEY_OLD)).expect("pick"));
    }

    let cached_before = picks_total(&lb, Reason::CaughtUpCached);
    let live_before = live_checks(&lb);
    let mut dlb_total = 0u64;
    let (mut base_rates, mut dlb_rates, mut ratios) = (vec![], vec![], vec![]);
    let (mut base_queries, mut base_reads, mut base_on_replica) = (0u64, 0u64, 0u64);
    for round in 0..rounds {
        let measure_base = || {
            let (mut q, mut on_replica) = (0u64, 0u64);
            let t = Instant::now();
            for _ in 0..base_picks {
                let p = gitlab.sticky_pick(black_box(KEY_OLD));
                q += p.queries;
                on_replica += u64::from(p.replica.is_some());
            }
            (base_picks as f64 / t.elapsed().as_secs_f64(), q, on_replica)
        };
        let measure_dlb = || {
            let t = Instant::now();
            for _ in 0..dlb_picks {
                black_box(lb.pick_replica(black_box(Some(KEY_OLD))).expect("pick"));
            }
            dlb_picks as f64 / t.elapsed().as_secs_f64()
        };
        let ((b, q, on_replica), d) = if round % 2 == 0 {
            let b = measure_base();
            (b, measure_dlb())
        } else {
            let d = measure_dlb();
            (measure_base(), d)
        };
        dlb_total += dlb_picks;
        base_queries += q;
        base_reads += base_picks;
        base_on_replica += on_replica;
        eprintln!(
            "round {round}: baseline {} reads/s, dlb {} picks/s, ratio {:.0}",
            fmt_rate(b),
            fmt_rate(d),
            d / b
        );
        base_rates.push(b);
        dlb_rates.push(d);
        ratios.push(d / b);
    }
    let live = live_checks(&lb) - live_before;
    let cached = picks_total(&lb, Reason::CaughtUpCached) - cached_before;
    assert_eq!(
        cached,
        dlb_total,
        "every steady-state dlb pick should be a cached caught-up pick: status {}",
        lb.status().to_json()
    );
    assert_eq!(
        base_on_replica, base_reads,
        "baseline reads all on replicas"
    );

    // ---- (c): read-your-writes loop -----------------------------------------------------
    {
        let mut c = lb.write_conn().expect("primary");
        c.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, k text NOT NULL, \
             v bigint NOT NULL); TRUNCATE {TABLE}"
        ))
        .expect("bench table");
    }
    let mut dlb_loop = LoopStats::default();
    let mut base_loop = LoopStats::default();
    let insert = format!("INSERT INTO {TABLE} (k, v) VALUES ($1, $2)");
    let ttl = Duration::from_secs(lb.config().sticky_ttl_s);
    for i in 0..2 * loop_iters {
        let v = i as i64;
        lb.write_conn()
            .expect("primary")
            .execute(insert.as_str(), &[&KEY_LOOP, &v])
            .expect("insert");
        let lsn = lb.record_lsn(KEY_LOOP).expect("record_lsn");
        if i % 2 == 0 {
            let live0 = live_checks(&lb);
            for p in 0..PICKS_PER_WRITE {
                let t = Instant::now();
                let r = lb.pick_replica(Some(KEY_LOOP)).expect("pick");
                dlb_loop.pick(p, t.elapsed(), r.role() == Role::Replica);
                *dlb_loop.reasons.entry(r.reason().as_str()).or_default() += 1;
            }
            dlb_loop.queries += live_checks(&lb) - live0;
        } else {
            gitlab.store.record(KEY_LOOP, lsn, ttl).expect("record");
            for p in 0..PICKS_PER_WRITE {
                let t = Instant::now();
                let r = gitlab.sticky_pick(KEY_LOOP);
                base_loop.pick(p, t.elapsed(), r.replica.is_some());
                base_loop.queries += r.queries;
                let what = if r.replica.is_some() {
                    "replica (caught up, live)"
                } else {
                    "primary (none caught up)"
                };
                *base_loop.reasons.entry(what).or_default() += 1;
            }
        }
    }

    // ---- report ---------------------------------------------------------------------------
    let base_qpp = base_queries as f64 / base_reads as f64;
    let dlb_qpp = live as f64 / dlb_total as f64;
    println!();
    println!(
        "## (a)/(b) sticky pick, key LSN replayed by every replica, 1 thread (median of \
         {rounds} rounds)"
    );
    println!();
    println!("| path | sticky picks/s | replica queries per pick | ratio vs baseline |");
    println!("|---|---:|---:|---:|");
    println!(
        "| (b) baseline: live `pg_last_wal_replay_lsn()` per read | {} | {:.3} ({base_queries} / {base_reads}) | 1x |",
        fmt_rate(median(&base_rates)),
        base_qpp,
    );
    println!(
        "| (a) dlb `pick_replica(Some(key))`, cache path | {} | {:.6} ({live} / {dlb_total}) | {:.0}x (per-round {:.0}..{:.0}) |",
        fmt_rate(median(&dlb_rates)),
        dlb_qpp,
        median(&ratios),
        min(&ratios),
        max(&ratios)
    );
    println!();
    println!(
        "## (c) loop: INSERT on the primary, record_lsn(key), then {PICKS_PER_WRITE} sticky \
         picks ({loop_iters} iterations per side, alternating)"
    );
    println!();
    println!(
        "| path | replica queries per sticky pick | picks on a replica | mean pick latency: 1st after write / others | where the picks went |"
    );
    println!("|---|---:|---:|---:|---|");
    for (name, s) in [("baseline", &base_loop), ("dlb", &dlb_loop)] {
        println!(
            "| {name} | {:.3} ({} / {}) | {:.1}% | {} / {} | {} |",
            s.queries as f64 / s.picks as f64,
            s.queries,
            s.picks,
            100.0 * s.on_replica as f64 / s.picks as f64,
            fmt_dur(s.first_pick_time / s.first_picks.max(1) as u32),
            fmt_dur(s.later_pick_time / (s.picks - s.first_picks).max(1) as u32),
            s.reasons_text()
        );
    }
    println!();
    println!(
        "nproc {}; loadavg at end: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
}

/// Outcome of one baseline sticky read.
struct BasePick {
    /// Index of the replica the read goes to; `None`: the primary.
    replica: Option<usize>,
    /// Replica queries it took.
    queries: u64,
}

type PgPool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// GitLab-style sticking: a live replay-position query per sticky read.
struct GitLabStyle {
    pools: Vec<PgPool>,
    index: Mutex<usize>,
    store: Arc<MemoryStore>,
}

impl GitLabStyle {
    fn new(env: &TestEnv) -> Self {
        let pools = (1..=env.replicas.len())
            .map(|n| {
                let cfg: postgres::Config = replica_dsn(n).parse().expect("dsn");
                r2d2::Pool::builder()
                    .max_size(2)
                    .build(PostgresConnectionManager::new(cfg, NoTls))
                    .expect("baseline pool")
            })
            .collect();
        GitLabStyle {
            pools,
            index: Mutex::new(0),
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn next_index(&self) -> usize {
        let mut i = self.index.lock().unwrap();
        let v = *i;
        *i = (v + 1) % self.pools.len();
        v
    }

    fn sticky_pick(&self, key: &str) -> BasePick {
        let Some(want) = self.store.get(key).expect("store").lsn else {
            return BasePick {
                replica: Some(self.next_index()),
                queries: 0,
            };
        };
        let start = self.next_index();
        let n = self.pools.len();
        let mut queries = 0;
        for i in 0..n {
            let idx = (start + i) % n;
            let mut c = self.pools[idx].get().expect("baseline checkout");
            queries += 1;
            let row = c
                .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
                .expect("replay lsn");
            let replayed: Option<Lsn> = row
                .get::<_, Option<String>>(0)
                .map(|s| s.parse().expect("lsn"));
            if replayed.is_some_and(|l| l >= want) {
                return BasePick {
                    replica: Some(idx),
                    queries,
                };
            }
        }
        BasePick {
            replica: None,
            queries,
        }
    }
}

#[derive(Default)]
struct LoopStats {
    picks: u64,
    first_picks: u64,
    on_replica: u64,
    queries: u64,
    first_pick_time: Duration,
    later_pick_time: Duration,
    reasons: HashMap<&'static str, u64>,
}

impl LoopStats {
    fn pick(&mut self, nth: usize, took: Duration, on_replica: bool) {
        self.picks += 1;
        self.on_replica += u64::from(on_replica);
        if nth == 0 {
            self.first_picks += 1;
            self.first_pick_time += took;
        } else {
            self.later_pick_time += took;
        }
    }

    fn reasons_text(&self) -> String {
        let mut v: Vec<_> = self.reasons.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn live_checks(lb: &Balancer) -> u64 {
    metric(&lb.metrics_text(), "dlb_live_lsn_checks_total ")
}
