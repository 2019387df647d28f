//! What the workers share, count and do: write, record, read back three ways.

use crate::*;

// ---------------------------------------------------------------------------------------------
// shared state and counters

/// What the workers and the injector share.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) stop: AtomicBool,
    pub(crate) next_id: AtomicI64,
    /// The fault in force (or the last one), for stale-read reports.
    pub(crate) fault: Mutex<String>,
}

impl Shared {
    pub(crate) fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    pub(crate) fn log(&self, msg: &str) {
        println!("[{:8.3}s] {msg}", self.elapsed());
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) cycles: u64,
    /// Reads checked, by path.
    pub(crate) reads: BTreeMap<&'static str, u64>,
    pub(crate) stale: Vec<String>,
    /// `op: class` -> count.
    pub(crate) errors: BTreeMap<String, u64>,
    /// The slowest cycle.
    pub(crate) max_cycle: Duration,
}

impl Stats {
    pub(crate) fn merge(&mut self, o: &Stats) {
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

pub(crate) const STAGES: [&str; 8] = [
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
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) stats: Mutex<Stats>,
    /// Milliseconds since the start when the worker last finished a step.
    pub(crate) progress_ms: AtomicU64,
    pub(crate) stage: AtomicUsize,
}

impl Worker {
    pub(crate) fn step(&self, shared: &Shared, stage: usize) {
        self.stage.store(stage, Ordering::Relaxed);
        self.progress_ms
            .store(shared.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

pub(crate) fn dlb_class(e: &Error) -> &'static str {
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

pub(crate) fn pg_class(e: &postgres::Error) -> String {
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
pub(crate) fn dsn_read(
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

pub(crate) struct Cycle<'a> {
    pub(crate) lb: &'a Balancer,
    pub(crate) shared: &'a Shared,
    pub(crate) me: &'a Worker,
    pub(crate) stats: Stats,
    pub(crate) cache: HashMap<String, postgres::Client>,
}

impl Cycle<'_> {
    pub(crate) fn error(&mut self, what: String) {
        *self.stats.errors.entry(what).or_default() += 1;
    }

    pub(crate) fn checked(
        &mut self,
        path: &'static str,
        found: bool,
        id: i64,
        key: &str,
        detail: String,
    ) {
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
    pub(crate) fn read_pick(
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

    pub(crate) fn run(&mut self, n: u64) {
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

pub(crate) fn worker_loop(lb: &Balancer, shared: &Shared, me: &Worker, max_cycles: u64) {
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
