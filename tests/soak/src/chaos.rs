//! The fault injector: one fault at a time, at seeded random intervals, and its undoing.

use crate::*;

// ---------------------------------------------------------------------------------------------
// the faults

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
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
    BlackHoleReplica,
    BlackHoleRedis,
    BlackHoleDns,
}

pub(crate) const KINDS: [Kind; 14] = [
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
    Kind::BlackHoleReplica,
    Kind::BlackHoleRedis,
    Kind::BlackHoleDns,
];

/// The faults that take a replica out of the rotation.
pub(crate) const REPLICA_KINDS: [Kind; 7] = [
    Kind::PauseReplay,
    Kind::KillReplica,
    Kind::FastStopReplica,
    Kind::FreezeReplica,
    Kind::SlowProxy,
    Kind::StalledProxy,
    Kind::BlackHoleReplica,
];

pub(crate) fn kind_name(k: Kind) -> &'static str {
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
        Kind::BlackHoleReplica => "packets to the proxy of replica 2 dropped (iptables)",
        Kind::BlackHoleRedis => "packets to Redis dropped (iptables)",
        Kind::BlackHoleDns => "packets to the DNS server dropped (iptables)",
    }
}

/// The testenv's base directory (where the data dirs are).
pub(crate) fn testenv_dir() -> String {
    std::env::var("DLB_TESTENV_DIR").unwrap_or_else(|_| "/tmp/dlb-testenv".into())
}

/// Replica `n`'s postmaster and its children (backends, startup, walreceiver...), found through
/// `postmaster.pid` in its data dir and the parent pids in /proc.
pub(crate) fn replica_pids(n: usize) -> Vec<i32> {
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

pub(crate) fn signal_all(pids: &[i32], sig: libc::c_int) -> usize {
    // SAFETY: kill(2) on pids of the test environment's servers.
    pids.iter()
        .filter(|&&p| unsafe { libc::kill(p, sig) } == 0)
        .count()
}

pub(crate) fn srv_records(ports: &[String]) -> Vec<String> {
    let mut r = vec!["host-record=pg.test,127.0.0.1".to_string()];
    for p in ports {
        r.push(format!("srv-host=replica.pg.test,pg.test,{p}"));
    }
    r
}

pub(crate) fn port_of(addr: &str) -> String {
    addr.rsplit_once(':').map_or("5432", |(_, p)| p).to_string()
}

/// Runs one SQL statement on a server of the environment; errors are returned, not counted.
pub(crate) fn sql(dsn: &str, query: &str) -> Result<u64, String> {
    let mut cfg: postgres::Config = dsn.parse().map_err(|e| format!("{e}"))?;
    cfg.connect_timeout(Duration::from_secs(2));
    let mut c = cfg.connect(postgres::NoTls).map_err(|e| pg_class(&e))?;
    c.execute(query, &[]).map_err(|e| pg_class(&e))
}

pub(crate) struct Chaos {
    pub(crate) rng: Rng,
    pub(crate) shared: Arc<Shared>,
    pub(crate) proxy: Proxy,
    pub(crate) dns: Dnsmasq,
    pub(crate) full_dns: Vec<String>,
    pub(crate) faults: BTreeMap<Kind, u64>,
    /// Faults that could not be applied (a command failed), by kind.
    pub(crate) failed: BTreeMap<Kind, u64>,
    pub(crate) sequence: Vec<String>,
    /// When the last fault was lifted: its revert began (resume, restart, SIGCONT, Redis or
    /// DNS back), or, for a fault without a revert (a cut, a burst, a primary restart), when
    /// it was over.
    pub(crate) lifted: Option<Instant>,
}

impl Chaos {
    /// Holds the fault for `d`; the revert follows at once.
    pub(crate) fn hold(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.lifted = Some(Instant::now());
    }

    pub(crate) fn announce(&mut self, kind: Kind, what: String) {
        *self.faults.entry(kind).or_default() += 1;
        let line = format!("fault #{} {what}", self.sequence.len() + 1);
        self.shared.log(&line);
        self.sequence
            .push(format!("{:.3}s {what}", self.shared.elapsed()));
        *self.shared.fault.lock().unwrap() = what;
    }

    pub(crate) fn done(&mut self, kind: Kind, ok: bool) {
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
    pub(crate) fn one(&mut self, kinds: &[Kind]) {
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
            Kind::BlackHoleReplica | Kind::BlackHoleRedis | Kind::BlackHoleDns => {
                let (what, port) = match kind {
                    Kind::BlackHoleReplica => ("the proxy of replica 2", port_of(&self.proxy.addr)),
                    Kind::BlackHoleRedis => ("Redis", port_of(&env().redis)),
                    _ => ("the DNS server", self.dns.port.to_string()),
                };
                self.announce(kind, format!("packets to {what} dropped for {hold:?}"));
                let ok = common::black_hole::rule("-I", &port).is_ok();
                self.hold(hold);
                common::black_hole::rule("-D", &port).is_ok() && ok
            }
        };
        self.done(kind, ok);
    }
}
