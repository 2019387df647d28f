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
//! Run: `cargo bench --bench sticky`. `DLB_BENCH_QUICK=1` divides every iteration count by 10
//! (smoke test). `DLB_BENCH_ROUNDS=N` sets the number of rounds of (a)/(b).

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let quick = std::env::var_os("DLB_BENCH_QUICK").is_some_and(|v| v != "0");
    let div = if quick { 10 } else { 1 };
    let rounds: usize = std::env::var("DLB_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let (dlb_picks, base_picks, loop_iters) =
        (DLB_PICKS / div, BASELINE_PICKS / div, LOOP_ITERS / div);

    let env = test_env();
    let _lock = lock_cluster();
    resume_replay(&env);
    let config = Config::builder(env.primary.clone())
        .replica_hosts(env.replicas.clone())
        .build()
        .expect("bench config");
    let lb = Balancer::new(config).expect("balancer");
    wait_healthy(&lb, env.replicas.len());
    let gitlab = GitLabStyle::new(&env);

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
        let pools = env
            .replicas
            .iter()
            .map(|hp| {
                let cfg: postgres::Config = replica_dsn(&env.primary, hp).parse().expect("dsn");
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
        let Some(want) = self.store.get(key).expect("store") else {
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

fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
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

/// Resumes WAL replay on every replica (a test that died may have left one paused).
fn resume_replay(env: &TestEnv) {
    for hp in &env.replicas {
        let mut c = postgres::Client::connect(&replica_dsn(&env.primary, hp), NoTls)
            .unwrap_or_else(|e| panic!("connect to replica {hp}: {e}"));
        c.simple_query("SELECT pg_wal_replay_resume()")
            .unwrap_or_else(|e| panic!("resume replay on {hp}: {e}"));
    }
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
