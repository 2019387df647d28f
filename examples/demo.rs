//! A narrated, live tour of dlb against a local primary and two streaming replicas.
//!
//! Run it with `make demo` (which starts the cluster, runs this, and stops the cluster).
//! It reads the cluster from `DLB_TEST_PRIMARY`, `DLB_TEST_REPLICAS` and
//! `DLB_TESTENV_SCRIPT` (printed by `scripts/testenv.sh env`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use dlb::{Balancer, Config};

/// Prints dlb's own log lines (quarantines, re-admissions...) as they happen.
struct Logger;
impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "dlb" && m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            println!("      [dlb log] {:<5} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run `make demo`"))
}

fn testenv(args: &[&str]) {
    let ok = Command::new("bash")
        .arg(var("DLB_TESTENV_SCRIPT"))
        .args(args)
        .output()
        .unwrap();
    assert!(ok.status.success(), "testenv.sh {args:?} failed");
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(lb: &Balancer, addr: &str) -> String {
    let st = lb.status();
    let r = st.replicas.iter().find(|r| r.host.addr == addr).unwrap();
    match r.reason {
        Some(why) => format!("{} ({why})", r.state),
        None => r.state.to_string(),
    }
}

fn spread(lb: &Balancer, key: Option<&str>, n: usize) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let r = lb.pick_replica(key).unwrap();
        *by.entry(format!(
            "{} {} ({})",
            r.role().as_str(),
            r.addr(),
            r.reason()
        ))
        .or_default() += 1;
    }
    by.iter()
        .map(|(k, v)| format!("\n      {v:>4} × {k}"))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    log::set_logger(&Logger).expect("no other logger is installed");
    log::set_max_level(log::LevelFilter::Info);
    let replicas: Vec<String> = var("DLB_TEST_REPLICAS")
        .split(',')
        .map(String::from)
        .collect();
    let (r1, r2) = (replicas[0].as_str(), replicas[1].as_str());

    println!("\n1. Start a balancer over one primary and two replicas (checks every 200 ms).");
    let config = Config::builder(var("DLB_TEST_PRIMARY"))
        .replica_hosts(replicas.clone())
        .replica_check_interval(Duration::from_millis(200))
        .max_lag_bytes(64 * 1024)
        .max_lag(Duration::from_millis(500))
        .probe_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()?;
    let lb = Balancer::new(config)?;
    wait("both replicas are healthy", || {
        lb.status().healthy_replicas == 2
    });
    println!(
        "   replicas: {r1} {}, {r2} {}",
        state(&lb, r1),
        state(&lb, r2)
    );

    println!(
        "\n2. Reads without a key spread round-robin over the replicas (no lock, no I/O per pick):"
    );
    for i in 1..=4 {
        let mut c = lb.read_conn(None)?;
        let port: i32 = c.query_one("SELECT inet_server_port()", &[])?.get(0);
        println!(
            "   read {i}: {} → the server on port {port} answered",
            c.route()
        );
    }
    println!("   1000 picks:{}", spread(&lb, None, 1000));

    println!(
        "\n3. Primary sticking: write a tag, record the LSN for the repository, read it back."
    );
    let repo = "gitlab-org/container-registry";
    let key = format!("repo:{repo}");
    let mut w = lb.write_conn()?;
    w.batch_execute("CREATE TABLE IF NOT EXISTS demo_tags (repo text, name text)")?;
    w.execute("INSERT INTO demo_tags VALUES ($1, 'v1.0')", &[&repo])?;
    drop(w);
    let token = lb.record_lsn(&key)?;
    println!("   recorded LSN {token} for {key} (also a causal token callers can carry)");
    let mut r = lb.read_conn(Some(&key))?;
    let n: i64 = r
        .query_one("SELECT count(*) FROM demo_tags WHERE repo = $1", &[&repo])?
        .get(0);
    println!("   sticky read via {} sees {n} tag(s)", r.route());
    drop(r);

    println!("\n4. Pause WAL replay on {r2} and keep writing: it falls behind.");
    testenv(&["pause-replica", "2"]);
    let mut w = lb.write_conn()?;
    w.execute("INSERT INTO demo_tags VALUES ($1, 'v1.1')", &[&repo])?;
    drop(w);
    lb.record_lsn(&key)?;
    println!(
        "   sticky picks for {key} right after the write:{}",
        spread(&lb, Some(&key), 20)
    );
    wait("the paused replica is quarantined", || {
        lb.write_conn()
            .and_then(|mut w| {
                w.execute("INSERT INTO demo_tags SELECT 'filler', repeat('x', 1000) FROM generate_series(1, 100)", &[])
                    .map_err(|e| dlb::Error::Query { host: "primary".into(), message: e.to_string() })
            })
            .is_ok()
            && state(&lb, r2).starts_with("quarantined")
    });
    println!(
        "   {r2} is now {}; reads without a key:{}",
        state(&lb, r2),
        spread(&lb, None, 10)
    );

    println!("\n5. Resume replay on {r2}: it catches up and is re-admitted.");
    testenv(&["resume-replica", "2"]);
    wait("the replica is re-admitted", || state(&lb, r2) == "healthy");
    println!(
        "   {r2} is {}; reads:{}",
        state(&lb, r2),
        spread(&lb, None, 10)
    );

    println!("\n6. Stop {r1} (pg_ctl stop -m immediate): reads continue on {r2}.");
    testenv(&["stop-replica", "1"]);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut broken = 0;
    for _ in 0..10 {
        // A pooled connection the stop broke fails its query once; dropping it reports the
        // replica (it leaves the rotation at once), and the retry goes elsewhere.
        let mut c = lb.read_conn(None)?;
        if let Err(e) = c.query_one("SELECT 1", &[]) {
            broken += 1;
            println!("   a read on a connection the stop broke failed ({e}); retried");
            drop(c);
            c = lb.read_conn(None)?;
            c.query_one("SELECT 1", &[])?;
        }
        *served.entry(c.route().to_string()).or_default() += 1;
    }
    println!("   10 reads right after the stop, all answered ({broken} retried once): {served:?}");
    wait("the stopped replica is quarantined", || {
        state(&lb, r1).starts_with("quarantined")
    });
    println!(
        "   {r1} is {}; reads:{}",
        state(&lb, r1),
        spread(&lb, None, 10)
    );
    testenv(&["start-replica", "1"]);
    wait("the restarted replica is re-admitted", || {
        state(&lb, r1) == "healthy"
    });
    println!("   restarted: {r1} is {}", state(&lb, r1));

    println!("\n7. Metrics (Prometheus text, non-zero samples):");
    for line in lb.metrics_text().lines() {
        if !line.starts_with('#') && !line.ends_with(" 0") {
            println!("   {line}");
        }
    }
    println!(
        "\n8. Status report (JSON, passwords redacted):\n   {}",
        lb.status().to_json()
    );
    Ok(())
}
