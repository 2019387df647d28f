//! A soak run: the balancers, the phases (chaos, recovery), hang checks and the report.

use crate::*;

// ---------------------------------------------------------------------------------------------
// set-up, recovery, restore, report

pub(crate) fn balancer(
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
pub(crate) fn restore_env() -> Result<(), String> {
    for n in 1..=2 {
        signal_all(&replica_pids(n), libc::SIGCONT);
    }
    common::black_hole::clear();
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
pub(crate) struct RestoreGuard;

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        for n in 1..=2 {
            signal_all(&replica_pids(n), libc::SIGCONT);
        }
        common::black_hole::clear();
    }
}

/// `dlb_*_total{..., label="value"...} N` lines of `metric`, summed by the value of `label`
/// (and `role` when present).
pub(crate) fn metric_by(text: &str, metric: &str, label: &str, into: &mut BTreeMap<String, u64>) {
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

pub(crate) fn run(args: &Args) -> Result<bool, String> {
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
pub(crate) fn in_rotation(lb: &Balancer, want: &[String]) -> bool {
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
pub(crate) fn wait_rotation(lb: &Balancer, want: &[String], timeout: Duration) -> Option<()> {
    let end = Instant::now() + timeout;
    while !in_rotation(lb, want) {
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(())
}

pub(crate) fn check_hangs(
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
pub(crate) fn report(
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
