//! Chaos soak: read-your-writes under random faults, against the real test environment
//! (`scripts/testenv.sh`). Zero stale reads is the pass condition.
//!
//! Three balancers run side by side, each with its own workers:
//! * `memory`: the embedded store, replicas listed directly;
//! * `redis`: the standalone Redis store, replica 2 behind a TCP proxy (which delays or stalls);
//! * `cluster`: the Redis Cluster store, replicas found through DNS SRV (a real dnsmasq).
//!
//! Every worker loops: INSERT a row on the primary (`write_conn`), `record_lsn(key)` (the
//! returned LSN is the causal token), then reads the row back through `read_conn(Some(key))`,
//! through the DSN `pick_replica(Some(key))` hands out, and through the DSN of
//! `pick_replica_min_lsn(token)`. A row not found is a **stale read**. A failed write or
//! record skips the reads (an `Error::Store` that carries the LSN still reads through
//! `pick_replica_min_lsn` with it, as the README tells callers to); errors are counted by class.
//!
//! Meanwhile a fault injector applies one fault at a time at random (seeded) intervals: replay
//! pause, immediate kill and fast stop of a replica (then restart), SIGSTOP/SIGCONT of a
//! replica's postmaster and backends, `pg_terminate_backend` of dlb's connections, write bursts
//! past the lag thresholds, a slow proxy, a proxy that stops forwarding (sockets open), a
//! Redis outage, DNS record churn and a primary restart. After the chaos phase it measures how
//! long each balancer takes to have every replica healthy again, stops the workers and prints
//! the report.
//!
//! Run it under the cluster lock (`make soak DURATION=3600`, or as `scripts/test.sh` does):
//!
//! ```sh
//! eval "$(bash scripts/testenv.sh env)"
//! flock /tmp/dlb-tests.lock cargo run --example soak -- --seconds 60 [--seed N] [--workers N]
//! ```
//!
//! SIGINT or SIGTERM ends the chaos early; the soak then restores the environment and reports.
//!
//! Exit status: 0 when every read was fresh, the balancers recovered and the environment was
//! restored; 1 on a stale read, a hang or no recovery; 2 when the environment cannot be
//! restored (replicas running and replaying, Redis up); 3 on a panic of the soak itself.
//!
//! An example rather than a test: it is a long-running program with its own arguments and
//! report, built by `cargo test --all-targets` (so it always compiles) but run only on demand.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::dnsmasq::Dnsmasq;
use common::proxy::Proxy;
use common::{env, replica_addr, replica_dsn, run_testenv};
use dlb::{Balancer, Config, DnsConfig, Error, LsnStoreConfig, RedisStoreConfig, Route};

/// The `application_name` of dlb's connections (the target of the backend cuts).
const APP: &str = "dlb-soak";
/// A worker that has not finished a step for this long is reported as hung.
const HANG: Duration = Duration::from_secs(30);
/// How long the balancers get to have every replica healthy after the last fault.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);
const TABLE: &str = "dlb_soak";
const FILLER: &str = "dlb_soak_filler";
/// Set by SIGINT/SIGTERM: the chaos ends early, and the soak still restores and reports.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// arguments, randomness

struct Args {
    seconds: u64,
    seed: u64,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let var = |k: &str| std::env::var(k).ok();
    let mut a = Args {
        seconds: var("DLB_SOAK_SECONDS")
            .map_or(Ok(60), |v| v.parse())
            .map_err(|e| format!("DLB_SOAK_SECONDS: {e}"))?,
        seed: var("DLB_SOAK_SEED")
            .map_or_else(
                || {
                    Ok(std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64
                        % 1_000_000_000)
                },
                |v| v.parse(),
            )
            .map_err(|e| format!("DLB_SOAK_SEED: {e}"))?,
        workers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match arg.as_str() {
            "--seconds" => a.seconds = value("--seconds")?,
            "--seed" => a.seed = value("--seed")?,
            "--workers" => a.workers = value("--workers")? as usize,
            "-h" | "--help" => {
                println!(
                    "usage: soak [--seconds N (60)] [--seed N (from the clock)] [--workers N per balancer (2)]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.seconds == 0 || a.workers == 0 || a.workers > 16 {
        return Err("--seconds must be at least 1 and --workers from 1 to 16".into());
    }
    Ok(a)
}

/// SplitMix64: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    fn replica(&mut self) -> usize {
        self.range(1, 2) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// shared state and counters

/// What the workers and the injector share.
struct Shared {
    start: Instant,
    stop: AtomicBool,
    next_id: AtomicI64,
    /// The fault in force (or the last one), for stale-read reports.
    fault: Mutex<String>,
}

impl Shared {
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    fn log(&self, msg: &str) {
        println!("[{:8.3}s] {msg}", self.elapsed());
    }
}

#[derive(Default)]
struct Stats {
    cycles: u64,
    /// Reads checked, by path.
    reads: BTreeMap<&'static str, u64>,
    stale: Vec<String>,
    /// `op: class` -> count.
    errors: BTreeMap<String, u64>,
    /// The slowest cycle.
    max_cycle: Duration,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.cycles += o.cycles;
        for (k, v) in &o.reads {
            *self.reads.entry(k).or_default() += v;
        }
        self.stale.extend(o.stale.iter().cloned());
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.max_cycle = self.max_cycle.max(o.max_cycle);
    }
}

const STAGES: [&str; 8] = [
    "write",
    "record_lsn",
    "read_conn",
    "pick_replica(key)",
    "read via key DSN",
    "pick_replica_min_lsn",
    "read via token DSN",
    "between cycles",
];

/// One worker as the main thread sees it.
struct Worker {
    name: String,
    stats: Mutex<Stats>,
    /// Milliseconds since the start when the worker last finished a step.
    progress_ms: AtomicU64,
    stage: AtomicUsize,
}

impl Worker {
    fn step(&self, shared: &Shared, stage: usize) {
        self.stage.store(stage, Ordering::Relaxed);
        self.progress_ms
            .store(shared.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn dlb_class(e: &Error) -> &'static str {
    match e {
        Error::PrimaryUnavailable { .. } => "primary_unavailable",
        Error::ReplicaUnavailable { .. } => "replica_unavailable",
        Error::NoCaughtUpReplica { .. } => "no_caught_up_replica",
        Error::Store { .. } => "store",
        Error::Query { .. } => "query",
        Error::InvalidKey { .. } => "invalid_key",
        Error::InvalidLsn { .. } => "invalid_lsn",
        Error::Config { .. } => "config",
        _ => "other",
    }
}

fn pg_class(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("sqlstate {}", db.code().code());
    }
    if e.is_closed() {
        return "connection closed".into();
    }
    let s = e.to_string().to_lowercase();
    for (needle, class) in [
        ("refused", "connection refused"),
        ("timed out", "timeout"),
        ("timeout", "timeout"),
        ("reset", "connection reset"),
        ("unexpected eof", "unexpected eof"),
        ("broken pipe", "broken pipe"),
    ] {
        if s.contains(needle) {
            return class.into();
        }
    }
    let mut s = e.to_string();
    s.truncate(60);
    s
}

// ---------------------------------------------------------------------------------------------
// the workers

/// Reads row `id` through a connection of our own to the DSN `route` hands out (one cached
/// connection per DSN, reopened after an error).
fn dsn_read(
    cache: &mut HashMap<String, postgres::Client>,
    route: &Route,
    id: i64,
) -> Result<bool, String> {
    if !cache.contains_key(route.dsn()) {
        let mut cfg: postgres::Config = route
            .dsn()
            .parse()
            .map_err(|e: postgres::Error| format!("dsn parse: {}", pg_class(&e)))?;
        cfg.application_name("dlb-soak-reader")
            .connect_timeout(Duration::from_secs(2));
        let c = cfg
            .connect(postgres::NoTls)
            .map_err(|e| format!("dsn connect: {}", pg_class(&e)))?;
        cache.insert(route.dsn().to_string(), c);
    }
    let c = cache.get_mut(route.dsn()).expect("just inserted");
    match c.query_opt(&format!("SELECT 1 FROM {TABLE} WHERE id = $1"), &[&id]) {
        Ok(row) => Ok(row.is_some()),
        Err(e) => {
            cache.remove(route.dsn());
            Err(format!("dsn query: {}", pg_class(&e)))
        }
    }
}

struct Cycle<'a> {
    lb: &'a Balancer,
    shared: &'a Shared,
    me: &'a Worker,
    stats: Stats,
    cache: HashMap<String, postgres::Client>,
}

impl Cycle<'_> {
    fn error(&mut self, what: String) {
        *self.stats.errors.entry(what).or_default() += 1;
    }

    fn checked(&mut self, path: &'static str, found: bool, id: i64, key: &str, detail: String) {
        *self.stats.reads.entry(path).or_default() += 1;
        if !found {
            let fault = self.shared.fault.lock().unwrap().clone();
            let msg = format!(
                "STALE READ t={:.3}s worker={} path={path} key={key} id={id} {detail} (fault: {fault})",
                self.shared.elapsed(),
                self.me.name
            );
            self.shared.log(&msg);
            self.stats.stale.push(msg);
        }
    }

    /// A DSN read of a pick (`stages`: the pick's, then the read's); counts the pick's error or
    /// the read's result.
    fn read_pick(
        &mut self,
        path: &'static str,
        pick: impl FnOnce(&Balancer) -> dlb::Result<Route>,
        id: i64,
        key: &str,
        stages: (usize, usize),
    ) {
        self.me.step(self.shared, stages.0);
        match pick(self.lb) {
            Err(e) => self.error(format!("{path} pick: {}", dlb_class(&e))),
            Ok(route) => {
                self.me.step(self.shared, stages.1);
                match dsn_read(&mut self.cache, &route, id) {
                    Ok(found) => self.checked(path, found, id, key, format!("route={route}")),
                    Err(class) => self.error(format!("{path}: {class}")),
                }
            }
        }
    }

    fn run(&mut self, n: u64) {
        let started = Instant::now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let key = format!("soak:{}:{}", self.me.name, n % 16);
        self.me.step(self.shared, 0);
        let written = self
            .lb
            .write_conn()
            .map_err(|e| dlb_class(&e).to_string())
            .and_then(|mut c| {
                c.execute(
                    &format!("INSERT INTO {TABLE} (id, key) VALUES ($1, $2)"),
                    &[&id, &key],
                )
                .map_err(|e| pg_class(&e))
            });
        if let Err(class) = written {
            self.error(format!("write: {class}"));
            return;
        }
        self.me.step(self.shared, 1);
        let token = match self.lb.record_lsn(&key) {
            Ok(lsn) => lsn,
            Err(e) => {
                self.error(format!("record_lsn: {}", dlb_class(&e)));
                // The write happened: a store error carries its LSN, a causal token to read with.
                if let Some(lsn) = e.lsn() {
                    let pick = |lb: &Balancer| lb.pick_replica_min_lsn(lsn);
                    self.read_pick("token after store error", pick, id, &key, (5, 6));
                }
                return;
            }
        };
        self.me.step(self.shared, 2);
        match self.lb.read_conn(Some(&key)) {
            Err(e) => self.error(format!("read_conn: {}", dlb_class(&e))),
            Ok(mut conn) => {
                match conn.query_opt(&format!("SELECT 1 FROM {TABLE} WHERE id = $1"), &[&id]) {
                    Ok(row) => {
                        let detail = format!("route={} token={token}", conn.route());
                        self.checked("read_conn(key)", row.is_some(), id, &key, detail)
                    }
                    Err(e) => self.error(format!("read_conn query: {}", pg_class(&e))),
                }
            }
        }
        let pick = |lb: &Balancer| lb.pick_replica(Some(&key));
        self.read_pick("DSN of pick_replica(key)", pick, id, &key, (3, 4));
        let pick = |lb: &Balancer| lb.pick_replica_min_lsn(token);
        self.read_pick("DSN of pick_replica_min_lsn", pick, id, &key, (5, 6));
        self.stats.cycles += 1;
        self.stats.max_cycle = self.stats.max_cycle.max(started.elapsed());
    }
}

fn worker_loop(lb: &Balancer, shared: &Shared, me: &Worker, max_cycles: u64) {
    let mut cycle = Cycle {
        lb,
        shared,
        me,
        stats: Stats::default(),
        cache: HashMap::new(),
    };
    for n in 0..max_cycles {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        cycle.run(n);
        me.step(shared, 7);
        // Publish what this cycle counted (the main thread reads it even if we hang later).
        if n % 16 == 0 || !cycle.stats.stale.is_empty() {
            me.stats
                .lock()
                .unwrap()
                .merge(&std::mem::take(&mut cycle.stats));
        }
    }
    me.stats.lock().unwrap().merge(&cycle.stats);
}

// ---------------------------------------------------------------------------------------------
// the faults

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PauseReplay,
    KillReplica,
    FastStopReplica,
    FreezeReplica,
    TerminateBackends,
    WriteBurst,
    SlowProxy,
    StalledProxy,
    RedisOutage,
    DnsChurn,
    RestartPrimary,
}

const KINDS: [Kind; 11] = [
    Kind::PauseReplay,
    Kind::KillReplica,
    Kind::FastStopReplica,
    Kind::FreezeReplica,
    Kind::TerminateBackends,
    Kind::WriteBurst,
    Kind::SlowProxy,
    Kind::StalledProxy,
    Kind::RedisOutage,
    Kind::DnsChurn,
    Kind::RestartPrimary,
];

/// The faults that take a replica out of the rotation.
const REPLICA_KINDS: [Kind; 6] = [
    Kind::PauseReplay,
    Kind::KillReplica,
    Kind::FastStopReplica,
    Kind::FreezeReplica,
    Kind::SlowProxy,
    Kind::StalledProxy,
];

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::PauseReplay => "replay pause/resume",
        Kind::KillReplica => "replica kill (-m immediate) + restart",
        Kind::FastStopReplica => "replica fast stop + restart",
        Kind::FreezeReplica => "replica SIGSTOP/SIGCONT",
        Kind::TerminateBackends => "pg_terminate_backend of dlb's connections",
        Kind::WriteBurst => "write burst",
        Kind::SlowProxy => "slow proxy in front of replica 2",
        Kind::StalledProxy => "stalled proxy in front of replica 2 (sockets open)",
        Kind::RedisOutage => "Redis stop/start",
        Kind::DnsChurn => "DNS record churn",
        Kind::RestartPrimary => "primary restart (-m fast)",
    }
}

/// The testenv's base directory (where the data dirs are).
fn testenv_dir() -> String {
    std::env::var("DLB_TESTENV_DIR").unwrap_or_else(|_| "/tmp/dlb-testenv".into())
}

/// Replica `n`'s postmaster and its children (backends, startup, walreceiver...), found through
/// `postmaster.pid` in its data dir and the parent pids in /proc.
fn replica_pids(n: usize) -> Vec<i32> {
    let pidfile = format!("{}/replica{n}/data/postmaster.pid", testenv_dir());
    let Some(pm) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    else {
        return Vec::new();
    };
    let mut pids = vec![pm];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(pm) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn signal_all(pids: &[i32], sig: libc::c_int) -> usize {
    // SAFETY: kill(2) on pids of the test environment's servers.
    pids.iter()
        .filter(|&&p| unsafe { libc::kill(p, sig) } == 0)
        .count()
}

fn srv_records(ports: &[String]) -> Vec<String> {
    let mut r = vec!["host-record=pg.test,127.0.0.1".to_string()];
    for p in ports {
        r.push(format!("srv-host=replica.pg.test,pg.test,{p}"));
    }
    r
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':').map_or("5432", |(_, p)| p).to_string()
}

/// Runs one SQL statement on a server of the environment; errors are returned, not counted.
fn sql(dsn: &str, query: &str) -> Result<u64, String> {
    let mut cfg: postgres::Config = dsn.parse().map_err(|e| format!("{e}"))?;
    cfg.connect_timeout(Duration::from_secs(2));
    let mut c = cfg.connect(postgres::NoTls).map_err(|e| pg_class(&e))?;
    c.execute(query, &[]).map_err(|e| pg_class(&e))
}

struct Chaos {
    rng: Rng,
    shared: Arc<Shared>,
    proxy: Proxy,
    dns: Dnsmasq,
    full_dns: Vec<String>,
    faults: BTreeMap<Kind, u64>,
    /// Faults that could not be applied (a command failed), by kind.
    failed: BTreeMap<Kind, u64>,
    sequence: Vec<String>,
    /// When the last fault was lifted: its revert began (resume, restart, SIGCONT, Redis or
    /// DNS back), or, for a fault without a revert (a cut, a burst, a primary restart), when
    /// it was over.
    lifted: Option<Instant>,
}

impl Chaos {
    /// Holds the fault for `d`; the revert follows at once.
    fn hold(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.lifted = Some(Instant::now());
    }

    fn announce(&mut self, kind: Kind, what: String) {
        *self.faults.entry(kind).or_default() += 1;
        let line = format!("fault #{} {what}", self.sequence.len() + 1);
        self.shared.log(&line);
        self.sequence
            .push(format!("{:.3}s {what}", self.shared.elapsed()));
        *self.shared.fault.lock().unwrap() = what;
    }

    fn done(&mut self, kind: Kind, ok: bool) {
        self.lifted.get_or_insert_with(Instant::now);
        if !ok {
            *self.failed.entry(kind).or_default() += 1;
            self.shared
                .log(&format!("  {}: a command failed", kind_name(kind)));
        }
        let mut f = self.shared.fault.lock().unwrap();
        *f = format!("none (last: {f})");
    }

    /// Applies one random fault of `kinds`, holds it, reverts it.
    fn one(&mut self, kinds: &[Kind]) {
        let kind = kinds[self.rng.range(0, kinds.len() as u64 - 1) as usize];
        self.lifted = None;
        let n = self.rng.replica();
        let hold = self.rng.millis(300, 4000);
        let ok = match kind {
            Kind::PauseReplay => {
                self.announce(kind, format!("pause replay on replica {n} for {hold:?}"));
                let ok = run_testenv(&["pause-replica", &n.to_string()]);
                self.hold(hold);
                run_testenv(&["resume-replica", &n.to_string()]) && ok
            }
            Kind::KillReplica | Kind::FastStopReplica => {
                let mode = if kind == Kind::KillReplica {
                    "immediate"
                } else {
                    "fast"
                };
                self.announce(
                    kind,
                    format!("stop replica {n} -m {mode}, down for {hold:?}"),
                );
                let ok = run_testenv(&["stop-replica", &n.to_string(), mode]);
                self.hold(hold);
                run_testenv(&["start-replica", &n.to_string()]) && ok
            }
            Kind::FreezeReplica => {
                let pids = replica_pids(n);
                self.announce(
                    kind,
                    format!(
                        "SIGSTOP replica {n} ({} processes) for {hold:?}",
                        pids.len()
                    ),
                );
                let stopped = signal_all(&pids, libc::SIGSTOP);
                self.hold(hold);
                signal_all(&pids, libc::SIGCONT) == stopped && stopped > 0
            }
            Kind::TerminateBackends => {
                self.announce(
                    kind,
                    "pg_terminate_backend of dlb's connections on every server".into(),
                );
                let q = format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = '{APP}' AND pid <> pg_backend_pid()"
                );
                let mut cut = 0;
                for dsn in [env().primary.clone(), replica_dsn(1), replica_dsn(2)] {
                    cut += sql(&dsn, &q).unwrap_or(0);
                }
                self.shared.log(&format!("  {cut} connections cut"));
                true
            }
            Kind::WriteBurst => {
                let mib = self.rng.range(8, 64);
                self.announce(kind, format!("write burst of ~{mib} MiB of WAL"));
                let mut ok = true;
                for _ in 0..mib / 4 {
                    ok &= sql(
                        &env().primary,
                        &format!("INSERT INTO {FILLER} SELECT repeat('x', 1000) FROM generate_series(1, 4096)"),
                    )
                    .is_ok();
                }
                ok &= sql(&env().primary, &format!("TRUNCATE {FILLER}")).is_ok();
                ok
            }
            Kind::SlowProxy => {
                let delay = self.rng.millis(20, 600);
                self.announce(
                    kind,
                    format!("proxy to replica 2 delays every reply by {delay:?} for {hold:?}"),
                );
                self.proxy.set_delay(delay);
                self.hold(hold);
                self.proxy.set_delay(Duration::ZERO);
                true
            }
            Kind::StalledProxy => {
                self.announce(
                    kind,
                    format!("proxy to replica 2 forwards nothing for {hold:?}"),
                );
                self.proxy.set_stalled(true);
                self.hold(hold);
                self.proxy.set_stalled(false);
                true
            }
            Kind::RedisOutage => {
                self.announce(kind, format!("Redis down for {hold:?}"));
                let ok = run_testenv(&["stop-redis"]);
                self.hold(hold);
                run_testenv(&["start-redis"]) && ok
            }
            Kind::DnsChurn => {
                let r1 = port_of(replica_addr(1));
                let r2 = port_of(replica_addr(2));
                let px = port_of(&self.proxy.addr);
                let sets: [(&str, Vec<String>); 6] = [
                    ("replica 1 only", vec![r1.clone()]),
                    ("replica 2 only", vec![r2.clone()]),
                    ("replica 1 and the proxy", vec![r1.clone(), px.clone()]),
                    ("the proxy only", vec![px.clone()]),
                    ("all three entries", vec![r1, r2, px]),
                    ("no record (empty answer)", vec![]),
                ];
                let pick = self.rng.range(0, sets.len() as u64) as usize;
                if pick == sets.len() {
                    self.announce(kind, format!("DNS server down for {hold:?}"));
                    self.dns.stop();
                } else {
                    let (what, ports) = &sets[pick];
                    self.announce(kind, format!("DNS answers {what} for {hold:?}"));
                    self.dns.set_records(&srv_records(ports));
                }
                self.hold(hold);
                let full = self.full_dns.clone();
                self.dns.set_records(&full);
                true
            }
            Kind::RestartPrimary => {
                self.announce(kind, "restart the primary (-m fast)".into());
                run_testenv(&["restart-primary", "fast"])
            }
        };
        self.done(kind, ok);
    }
}

// ---------------------------------------------------------------------------------------------
// set-up, recovery, restore, report

fn balancer(
    name: &str,
    b: dlb::ConfigBuilder,
    store: Option<RedisStoreConfig>,
) -> Result<Balancer, String> {
    let mut b = b
        .replica_check_interval(Duration::from_millis(200))
        .probe_timeout(Duration::from_millis(500))
        .max_lag_bytes(1 << 20)
        .max_lag(Duration::from_millis(200))
        .max_replay_stall(Duration::from_secs(2))
        .pool_max_size(8)
        .connect_timeout(Duration::from_secs(1))
        .checkout_timeout(Duration::from_secs(3));
    if let Some(s) = store {
        b = b.lsn_store(LsnStoreConfig::Redis(s));
    }
    let cfg = b.build().map_err(|e| format!("{name}: {e}"))?;
    Balancer::new(cfg).map_err(|e| format!("{name}: {e}"))
}

/// Every replica running and replaying, nothing frozen, Redis (and the rest of the environment)
/// up. Errors instead of panicking: it also runs after a failure.
fn restore_env() -> Result<(), String> {
    for n in 1..=2 {
        signal_all(&replica_pids(n), libc::SIGCONT);
    }
    if !run_testenv(&["up"]) {
        return Err("testenv.sh up failed".into());
    }
    common::restore()?;
    if !run_testenv(&["status"]) {
        return Err("testenv.sh status: not everything is up".into());
    }
    Ok(())
}

/// Restores the environment when dropped (a panic included).
struct RestoreGuard;

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        for n in 1..=2 {
            signal_all(&replica_pids(n), libc::SIGCONT);
        }
    }
}

/// `dlb_*_total{..., label="value"...} N` lines of `metric`, summed by the value of `label`
/// (and `role` when present).
fn metric_by(text: &str, metric: &str, label: &str, into: &mut BTreeMap<String, u64>) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let get = |name: &str| {
            labels.split(',').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim_matches('"').to_string())
            })
        };
        let Some(v) = get(label) else { continue };
        let key = match get("role") {
            Some(role) => format!("{role}/{v}"),
            None => v,
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *into.entry(key).or_default() += n;
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let e = env();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        next_id: AtomicI64::new(1),
        fault: Mutex::new("none".into()),
    });
    println!(
        "soak: seed {} ({} s of chaos, {} workers per balancer; rerun the same fault choices with --seed {})",
        args.seed, args.seconds, args.workers, args.seed
    );
    restore_env()?;
    sql(&e.primary, &format!("DROP TABLE IF EXISTS {TABLE}"))?;
    sql(
        &e.primary,
        &format!("CREATE TABLE {TABLE} (id bigint PRIMARY KEY, key text NOT NULL)"),
    )?;
    sql(
        &e.primary,
        &format!("CREATE TABLE IF NOT EXISTS {FILLER} (pad text)"),
    )?;

    let primary = format!("{} application_name={APP}", e.primary);
    let proxy = Proxy::start(replica_addr(2));
    let full_dns = srv_records(&[port_of(replica_addr(1)), port_of(replica_addr(2))]);
    let dns = Dnsmasq::start(&full_dns);
    let prefix = format!("dlb:soak:{}:", args.seed);
    let mut redis = RedisStoreConfig::standalone(e.redis.clone());
    redis.key_prefix = prefix.clone();
    let mut cluster = RedisStoreConfig::cluster(e.redis_cluster.clone());
    cluster.key_prefix = prefix;
    let mut dns_cfg = DnsConfig::new("replica.pg.test", "127.0.0.1", dns.port);
    dns_cfg.refresh_interval_ms = 1000;
    dns_cfg.timeout_ms = 500;
    let proxy_addr = proxy.addr.clone();
    let lbs: Vec<(&str, Arc<Balancer>, Vec<String>)> = vec![
        (
            "memory",
            Arc::new(balancer(
                "memory",
                Config::builder(&primary).replica_hosts([replica_addr(1), replica_addr(2)]),
                None,
            )?),
            vec![replica_addr(1).to_string(), replica_addr(2).to_string()],
        ),
        (
            "redis",
            Arc::new(balancer(
                "redis",
                Config::builder(&primary).replica_hosts([replica_addr(1), proxy_addr.as_str()]),
                Some(redis),
            )?),
            vec![replica_addr(1).to_string(), proxy_addr.clone()],
        ),
        (
            "cluster",
            Arc::new(balancer(
                "cluster",
                Config::builder(&primary).replica_dns(dns_cfg),
                Some(cluster),
            )?),
            vec![replica_addr(1).to_string(), replica_addr(2).to_string()],
        ),
    ];
    for (name, lb, want) in &lbs {
        wait_rotation(lb, want, Duration::from_secs(30)).ok_or(format!(
            "{name}: replicas not healthy at start: {}",
            lb.status().to_json()
        ))?;
    }
    shared.log("every balancer sees both replicas healthy; starting workers and faults");

    // Workers.
    let max_cycles = args.seconds.saturating_add(120).saturating_mul(5000);
    let mut workers: Vec<(Arc<Worker>, JoinHandle<()>)> = Vec::new();
    for (name, lb, _) in &lbs {
        for w in 0..args.workers {
            let me = Arc::new(Worker {
                name: format!("{name}-{w}"),
                stats: Mutex::new(Stats::default()),
                progress_ms: AtomicU64::new(0),
                stage: AtomicUsize::new(7),
            });
            let (lb, sh, me2) = (lb.clone(), shared.clone(), me.clone());
            let h = std::thread::Builder::new()
                .name(format!("soak-{}", me.name))
                .spawn(move || worker_loop(&lb, &sh, &me2, max_cycles))
                .map_err(|e| e.to_string())?;
            workers.push((me, h));
        }
    }

    // Chaos.
    let mut chaos = Chaos {
        rng: Rng(args.seed),
        shared: shared.clone(),
        proxy,
        dns,
        full_dns,
        faults: BTreeMap::new(),
        failed: BTreeMap::new(),
        sequence: Vec::new(),
        lifted: None,
    };
    let deadline = Duration::from_secs(args.seconds);
    let mut hangs: Vec<String> = Vec::new();
    let max_faults = args.seconds.saturating_mul(10);
    let over = |sh: &Shared| sh.start.elapsed() >= deadline || INTERRUPTED.load(Ordering::Relaxed);
    while !over(&shared) && (chaos.sequence.len() as u64) < max_faults {
        let gap = chaos.rng.millis(200, 2500);
        let until = Instant::now() + gap;
        while Instant::now() < until && !over(&shared) {
            check_hangs(&shared, &workers, &mut hangs);
            std::thread::sleep(Duration::from_millis(50));
        }
        if over(&shared) {
            break;
        }
        chaos.one(&KINDS);
        check_hangs(&shared, &workers, &mut hangs);
    }
    // The last fault takes a replica out (drawn among those kinds), so that the time to full
    // rotation after it measures a recovery: after a Redis outage or a cut it would be zero.
    if !INTERRUPTED.load(Ordering::Relaxed) {
        shared.log("final fault, drawn among the faults that take a replica out:");
        chaos.one(&REPLICA_KINDS);
    }
    let last_fault_end = chaos.lifted.unwrap_or_else(Instant::now);
    shared.log("chaos over (the last fault is reverted); waiting for full rotation");

    // Recovery: every balancer's replicas healthy again, each timed on its own.
    let mut rotation: Vec<(String, Option<Duration>)> = lbs
        .iter()
        .map(|(name, ..)| (name.to_string(), None))
        .collect();
    // How long the revert command itself took: a balancer already in full rotation at the
    // first check came back within that.
    let first_check = last_fault_end.elapsed();
    while rotation.iter().any(|(_, t)| t.is_none()) && last_fault_end.elapsed() < RECOVERY_TIMEOUT {
        for ((_, lb, want), (_, t)) in lbs.iter().zip(rotation.iter_mut()) {
            if t.is_none() && in_rotation(lb, want) {
                *t = Some(last_fault_end.elapsed());
            }
        }
        check_hangs(&shared, &workers, &mut hangs);
        std::thread::sleep(Duration::from_millis(20));
    }
    for ((name, lb, _), (_, t)) in lbs.iter().zip(&rotation) {
        if t.is_none() {
            shared.log(&format!(
                "{name}: NOT back to full rotation: {}",
                lb.status().to_json()
            ));
        }
    }
    // A little more traffic in full rotation, then stop.
    std::thread::sleep(Duration::from_secs(2));
    shared.stop.store(true, Ordering::Relaxed);
    let join_deadline = Instant::now() + HANG;
    while workers.iter().any(|(_, h)| !h.is_finished()) && Instant::now() < join_deadline {
        check_hangs(&shared, &workers, &mut hangs);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut total = Stats::default();
    let mut per_lb: BTreeMap<String, u64> = BTreeMap::new();
    for (w, h) in workers {
        if !h.is_finished() {
            hangs.push(format!(
                "{} did not stop within {HANG:?} (stage: {})",
                w.name,
                STAGES[w.stage.load(Ordering::Relaxed)]
            ));
            continue; // left running: the process exits
        }
        if h.join().is_err() {
            hangs.push(format!("{} panicked", w.name));
        }
        let s = w.stats.lock().unwrap();
        *per_lb
            .entry(w.name.rsplit_once('-').unwrap().0.to_string())
            .or_default() += s.cycles;
        total.merge(&s);
    }
    let mut picks = BTreeMap::new();
    let mut quarantines = BTreeMap::new();
    for (_, lb, _) in &lbs {
        let m = lb.metrics_text();
        metric_by(&m, "dlb_picks_total", "reason", &mut picks);
        metric_by(&m, "dlb_quarantines_total", "reason", &mut quarantines);
    }
    let recovered = rotation.iter().all(|(_, t)| t.is_some());
    shared.log(&format!(
        "the first rotation check came {:.2} s after the last fault was lifted (once its revert command returned)",
        first_check.as_secs_f64()
    ));
    report(
        args,
        &shared,
        &chaos,
        &total,
        &per_lb,
        &picks,
        &quarantines,
        &rotation,
        &hangs,
    );
    drop(lbs);
    Ok(total.stale.is_empty() && hangs.is_empty() && recovered)
}

/// Whether `lb` has exactly the replicas `want` healthy.
fn in_rotation(lb: &Balancer, want: &[String]) -> bool {
    let st = lb.status();
    let mut healthy: Vec<&str> = st
        .replicas
        .iter()
        .filter(|r| r.state == "healthy")
        .map(|r| r.host.addr.as_str())
        .collect();
    healthy.sort_unstable();
    let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
    w.sort_unstable();
    healthy == w
}

/// Waits until `lb` has exactly the replicas `want` healthy; `Some` when it did in `timeout`.
fn wait_rotation(lb: &Balancer, want: &[String], timeout: Duration) -> Option<()> {
    let end = Instant::now() + timeout;
    while !in_rotation(lb, want) {
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(())
}

fn check_hangs(
    shared: &Shared,
    workers: &[(Arc<Worker>, JoinHandle<()>)],
    hangs: &mut Vec<String>,
) {
    let now = shared.start.elapsed().as_millis() as u64;
    for (w, h) in workers {
        let since = now.saturating_sub(w.progress_ms.load(Ordering::Relaxed));
        if !h.is_finished()
            && w.progress_ms.load(Ordering::Relaxed) > 0
            && since > HANG.as_millis() as u64
        {
            let msg = format!(
                "{} stuck for {} ms in {}",
                w.name,
                since,
                STAGES[w.stage.load(Ordering::Relaxed)]
            );
            if !hangs
                .iter()
                .any(|h| h.starts_with(&format!("{} stuck", w.name)))
            {
                shared.log(&format!(
                    "HANG: {msg} (fault: {})",
                    shared.fault.lock().unwrap()
                ));
                hangs.push(msg);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    shared: &Shared,
    chaos: &Chaos,
    total: &Stats,
    per_lb: &BTreeMap<String, u64>,
    picks: &BTreeMap<String, u64>,
    quarantines: &BTreeMap<String, u64>,
    rotation: &[(String, Option<Duration>)],
    hangs: &[String],
) {
    if INTERRUPTED.load(Ordering::Relaxed) {
        println!("\nsoak: interrupted: the chaos ended early");
    }
    println!(
        "\n## soak report (seed {}, {} s of chaos, {:.1} s in all)\n",
        args.seed,
        args.seconds,
        shared.elapsed()
    );
    let per: Vec<String> = per_lb.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "- cycles (write, record_lsn, 3 reads): {} ({})",
        total.cycles,
        per.join(", ")
    );
    let reads: u64 = total.reads.values().sum();
    println!("- reads checked: {reads}");
    for (k, v) in &total.reads {
        println!("  - {k}: {v}");
    }
    println!("- **stale reads: {}**", total.stale.len());
    for s in &total.stale {
        println!("  - {s}");
    }
    println!("- slowest cycle: {:.2} s", total.max_cycle.as_secs_f64());
    let nfaults: u64 = chaos.faults.values().sum();
    println!("- faults: {nfaults}");
    for (k, v) in &chaos.faults {
        let failed = chaos
            .failed
            .get(k)
            .map_or(String::new(), |f| format!(" ({f} with a failed command)"));
        println!("  - {}: {v}{failed}", kind_name(*k));
    }
    let nerr: u64 = total.errors.values().sum();
    println!("- errors: {nerr}");
    for (k, v) in &total.errors {
        println!("  - {k}: {v}");
    }
    println!("- picks by role/reason (dlb_picks_total, 3 balancers):");
    for (k, v) in picks {
        println!("  - {k}: {v}");
    }
    println!("- quarantines by reason (dlb_quarantines_total):");
    for (k, v) in quarantines {
        println!("  - {k}: {v}");
    }
    println!(
        "- time to full rotation (every replica healthy in status()) after the last fault was lifted ({}):",
        chaos.sequence.last().map_or("no fault", String::as_str)
    );
    for (name, t) in rotation {
        match t {
            Some(t) => println!("  - {name}: {:.2} s", t.as_secs_f64()),
            None => println!("  - {name}: NOT RECOVERED within {RECOVERY_TIMEOUT:?}"),
        }
    }
    if !hangs.is_empty() {
        println!("- **hangs: {}**", hangs.len());
        for h in hangs {
            println!("  - {h}");
        }
    }
    println!("- fault sequence:");
    for s in &chaos.sequence {
        println!("  - {s}");
    }
}

/// Marks every descriptor inherited above stderr close-on-exec, so that nothing this soak
/// starts inherits one: under `flock /tmp/dlb-tests.lock soak` (without `-o`), a primary or a
/// Redis restarted through testenv.sh would otherwise hold the cluster lock for as long as it
/// runs, and every other suite on the machine would wait for it.
fn close_inherited_fds_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on our own descriptors (one may be the directory's, gone).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn main() {
    close_inherited_fds_on_exec();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(64);
        }
    };
    let guard = RestoreGuard;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&args)));
    drop(guard);
    let restored = restore_env();
    if let Err(e) = &restored {
        eprintln!("soak: the environment could not be restored: {e}");
    }
    let code = match outcome {
        Err(_) => {
            eprintln!("soak: panicked (seed {})", args.seed);
            3
        }
        Ok(Err(e)) => {
            eprintln!("soak: {e} (seed {})", args.seed);
            1
        }
        Ok(Ok(_)) if restored.is_err() => 2,
        Ok(Ok(true)) => {
            println!(
                "\nsoak: PASS (seed {}): no stale read, no hang, full rotation restored",
                args.seed
            );
            0
        }
        Ok(Ok(false)) => {
            println!(
                "\nsoak: FAIL (seed {}): see the stale reads, hangs or recovery above",
                args.seed
            );
            1
        }
    };
    std::process::exit(code);
}
