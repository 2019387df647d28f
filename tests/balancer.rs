//! Core balancer behaviour against the real replication cluster.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use dlb::{Balancer, Reason, Role};

fn count_picks(lb: &Balancer, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = lb.pick_replica(None).unwrap();
        *counts.entry(r.addr().to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn reads_alternate_over_both_replicas() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let mut last = String::new();
    for _ in 0..100 {
        let r = lb.pick_replica(None).unwrap();
        assert_eq!(r.role(), Role::Replica);
        assert_eq!(r.reason(), Reason::RoundRobin);
        assert_ne!(r.addr(), last, "consecutive picks must alternate");
        last = r.addr().to_string();
    }
    let counts = count_picks(&lb, 1000);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts[replica_addr(1)], 500, "{counts:?}");
    assert_eq!(counts[replica_addr(2)], 500, "{counts:?}");

    // The DSN handed out is the primary's with host and port swapped, and it really connects
    // to a standby.
    let r = lb.pick_replica(None).unwrap();
    assert!(
        r.dsn()
            .contains(&format!("port={}", r.addr().rsplit_once(':').unwrap().1))
    );
    let mut c = postgres::Client::connect(r.dsn(), postgres::NoTls).unwrap();
    let in_recovery: bool = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);

    // read_conn() gives a pooled connection on the picked replica; write_conn() the primary.
    let mut rc = lb.read_conn(None).unwrap();
    assert_eq!(rc.route().role(), Role::Replica);
    let in_recovery: bool = rc
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let mut wc = lb.write_conn().unwrap();
    assert_eq!(wc.route().reason(), Reason::Write);
    let in_recovery: bool = wc
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(!in_recovery);
}

#[test]
fn lagging_replica_is_quarantined_and_readmitted() {
    let _l = lock_cluster();
    let lb = Balancer::new(lag_config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let lagging = replica_addr(2);

    pause_replay(2);
    // Keep writing until the paused replica is over both thresholds and quarantined.
    wait_until("the paused replica is quarantined for lag", WAIT, || {
        generate_wal(128);
        replica_state(&lb, lagging) == ("quarantined".into(), Some("lag".into()))
    });
    let counts = count_picks(&lb, 200);
    assert_eq!(counts.get(replica_addr(1)), Some(&200), "{counts:?}");
    let metrics = lb.metrics_text();
    assert!(
        metrics.contains("dlb_quarantines_total{reason=\"lag\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("dlb_replica_up{{replica=\"{lagging}\"}} 0")),
        "{metrics}"
    );

    resume_replay(2);
    wait_until("the replica is re-admitted after resume", WAIT, || {
        replica_state(&lb, lagging).0 == "healthy"
    });
    let counts = count_picks(&lb, 200);
    assert_eq!(counts.get(lagging), Some(&100), "{counts:?}");
    assert!(
        lb.metrics_text()
            .contains("dlb_readmissions_total{reason=\"lag\"} 1")
    );
}

#[test]
fn idle_primary_does_not_quarantine_a_caught_up_replica() {
    let _l = lock_cluster();
    // Time threshold tiny: only byte lag keeps caught-up replicas in.
    let lb = Balancer::new(
        config()
            .max_lag_bytes(0)
            .max_lag(Duration::from_millis(1))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    let checks = lb.status().checks;
    wait_until("ten more checks", WAIT, || {
        lb.status().checks >= checks + 10
    });
    assert_eq!(lb.status().healthy_replicas, 2, "{}", lb.status().to_json());
}

#[test]
fn stopped_replica_is_avoided_and_comes_back() {
    let _l = lock_cluster();
    let lb = Balancer::new(
        config()
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    let down = replica_addr(1);
    stop_replica(1);
    wait_until("the stopped replica is quarantined", WAIT, || {
        replica_state(&lb, down) == ("quarantined".into(), Some("unreachable".into()))
    });
    let counts = count_picks(&lb, 100);
    assert_eq!(counts.get(replica_addr(2)), Some(&100), "{counts:?}");
    // Reads through read_conn() keep working meanwhile.
    for _ in 0..10 {
        let mut c = lb.read_conn(None).unwrap();
        c.query_one("SELECT 1", &[]).unwrap();
    }
    start_replica(1);
    wait_until("the restarted replica is re-admitted", WAIT, || {
        replica_state(&lb, down).0 == "healthy"
    });
    let counts = count_picks(&lb, 100);
    assert_eq!(counts.get(down), Some(&50), "{counts:?}");
}

#[test]
fn no_replicas_means_every_read_goes_to_the_primary() {
    let _l = lock_cluster();
    for json in [
        format!(r#"{{"primary": "{}"}}"#, env().primary),
        format!(r#"{{"primary": "{}", "replicas": null}}"#, env().primary),
        format!(
            r#"{{"primary": "{}", "replicas": {{"hosts": []}}}}"#,
            env().primary
        ),
    ] {
        let lb = Balancer::from_json(&json).unwrap();
        for key in [None, Some("k")] {
            let r = lb.pick_replica(key).unwrap();
            assert_eq!(r.role(), Role::Primary);
            assert_eq!(r.reason(), Reason::NoReplicasConfigured);
        }
        let mut c = lb.read_conn(None).unwrap();
        let in_recovery: bool = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(!in_recovery);
        assert!(
            lb.metrics_text()
                .contains("dlb_picks_total{role=\"primary\",reason=\"no_replicas_configured\"} 3")
        );
    }
}

#[test]
fn all_replicas_down_falls_back_to_the_primary_with_a_reason() {
    let _l = lock_cluster();
    // Nothing listens on these ports.
    let lb = Balancer::new(
        dlb::Config::builder(env().primary.clone())
            .replica_hosts(["127.0.0.1:1", "127.0.0.1:2"])
            .replica_check_interval(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
    .unwrap();
    let r = lb.pick_replica(None).unwrap();
    assert_eq!(
        (r.role(), r.reason()),
        (Role::Primary, Reason::NoHealthyReplica)
    );
    let mut c = lb.read_conn(None).unwrap();
    c.query_one("SELECT 1", &[]).unwrap();
}

fn monitor_threads() -> usize {
    threads_named("dlb-monitor")
}

#[test]
fn dropping_the_balancer_stops_its_thread_and_closes_connections() {
    let _l = lock_cluster();
    let app = format!("dlb_drop_test_{}", std::process::id());
    let primary = format!("{} application_name={app}", env().primary);
    let lb = Balancer::new(
        dlb::Config::builder(primary)
            .replica_hosts(env().replicas.clone())
            .replica_check_interval(Duration::from_millis(50))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    // The first check runs on this thread, inside `Balancer::new`: the monitor thread may not
    // have named itself yet.
    wait_until("the monitor thread starts", WAIT, || monitor_threads() == 1);
    let mut observer = replica_client(1);
    let sessions = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0)
    };
    assert!(
        sessions(&mut observer) >= 1,
        "the monitor holds a probe connection"
    );
    // One shared scheduler for the replica pools (two threads) and one for the primary's (one
    // thread); another test's balancer may still be going away.
    wait_until("the pool schedulers' threads", WAIT, || {
        threads_named("dlb-pool-") == 3
    });
    drop(lb);
    // Joined by the drop; its /proc entry may outlive the join for a moment.
    wait_until("the monitor thread is gone", WAIT, || {
        monitor_threads() == 0
    });
    // Not after the pools' next reaper run, 30 s away: WAIT would run out first.
    wait_until("the pool scheduler's threads exit", WAIT / 2, || {
        threads_named("dlb-pool-") == 0
    });
    wait_until("the balancer's connections are closed", WAIT, || {
        sessions(&mut observer) == 0
    });
}

#[test]
fn primary_down_is_a_clear_error_on_first_write_and_never_shows_the_password() {
    // Serialized with the others: the thread counts of the drop test see every balancer.
    let _l = lock_cluster();
    let lb = Balancer::new(
        dlb::Config::builder("host=127.0.0.1 port=1 user=app password=sekrit-pw dbname=app")
            .replica_hosts(["127.0.0.1:2"])
            .connect_timeout(Duration::from_millis(200))
            .checkout_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    let err = lb.write_conn().unwrap_err();
    assert!(
        matches!(err, dlb::Error::PrimaryUnavailable { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("primary 127.0.0.1:1 unavailable"), "{msg}");
    assert!(err.is_retryable());
    let err = lb.record_lsn("k").unwrap_err();
    assert!(
        matches!(err, dlb::Error::PrimaryUnavailable { .. }),
        "{err:?}"
    );
    let route = lb.primary();
    assert!(
        route.dsn().contains("sekrit-pw"),
        "callers get the real DSN"
    );
    for text in [
        msg,
        err.to_string(),
        format!("{route:?} {route}"),
        format!("{lb:?}"),
        lb.status().to_json(),
        lb.metrics_text(),
        format!("{:?}", lb.pick_replica(None).unwrap()),
    ] {
        assert!(!text.contains("sekrit-pw"), "password leaked: {text}");
    }
    assert!(lb.status().to_json().contains("password=********"));
}

#[test]
fn status_and_metrics_describe_every_host() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    for _ in 0..10 {
        lb.pick_replica(None).unwrap();
    }
    let st = lb.status();
    assert!(st.primary_lsn.is_some());
    assert_eq!(st.replicas.len(), 2);
    for r in &st.replicas {
        assert_eq!(r.state, "healthy");
        assert!(r.replay_lsn.is_some());
        assert!(r.last_error.is_none());
    }
    let json: serde_json::Value = serde_json::from_str(&st.to_json()).unwrap();
    assert_eq!(json["replicas"][0]["state"], "healthy");
    let m = lb.metrics_text();
    assert!(
        m.contains("dlb_picks_total{role=\"replica\",reason=\"round_robin\"} 10"),
        "{m}"
    );
    for addr in &env().replicas {
        assert!(
            m.contains(&format!("dlb_replica_lag_bytes{{replica=\"{addr}\"}}")),
            "{m}"
        );
        assert!(
            m.contains(&format!("dlb_replica_lag_seconds{{replica=\"{addr}\"}}")),
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "dlb_replica_state{{replica=\"{addr}\",state=\"healthy\"}} 1"
            )),
            "{m}"
        );
    }
    assert!(m.contains("# TYPE dlb_pool_connections gauge"));
}

#[test]
fn report_failure_knows_our_hosts() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let r = lb.pick_replica(None).unwrap();
    assert!(lb.report_failure(r.dsn()));
    assert!(lb.report_failure(r.addr()));
    assert!(!lb.report_failure("host=elsewhere port=1"));
    assert!(lb.metrics_text().contains("dlb_reported_failures_total 2"));
}

/// A forked child that drops a balancer it inherited neither panics nor closes the parent's
/// connections (they are the same sockets).
/// Runs `child` in a forked child (which leaves with `_exit(0)` when it returns and 1 when it
/// panics) and returns the child's wait status once it has exited.
fn in_forked_child(child: impl FnOnce()) -> i32 {
    // SAFETY: the callers' closures only drop inherited values and leave with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
fn a_forked_child_drops_an_inherited_balancer_without_harm() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    // An idle pooled connection to the primary that the child inherits.
    let pid_before: i32 = lb
        .write_conn()
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // The child only drops the balancer (which, in a child, only checks its pid and forgets
    // its parts); `lb` is its copy (read out of the parent's memory image).
    let lb_ptr = &raw const lb;
    // SAFETY: in the child, `lb` is never used again after this read.
    let status = in_forked_child(|| drop(unsafe { std::ptr::read(lb_ptr) }));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's drop failed (status {status})"
    );
    // The parent's pooled connection is the same session, still open.
    let pid_after: i32 = lb
        .write_conn()
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        pid_after, pid_before,
        "the child closed the parent's connection"
    );
}

/// Closing a `postgres::Client` runs a runtime of its own: on a tokio worker that panics
/// ("Cannot start a runtime from within a runtime") unless dlb closes its connections on a
/// thread of its own. Async callers run dlb's blocking calls with `spawn_blocking`, but picks
/// (no I/O) and dropping the balancer happen on the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_used_and_dropped_on_a_tokio_worker() {
    // The test's own helpers block (restoring the cluster uses postgres clients).
    let lock = tokio::task::block_in_place(lock_cluster);
    let lb = std::sync::Arc::new(Balancer::new(config().build().unwrap()).unwrap());
    wait_healthy(&lb, 2);
    let blocking = lb.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = blocking.read_conn(None).unwrap();
        c.query_one("SELECT 1", &[]).unwrap();
        let mut w = blocking.write_conn().unwrap();
        w.query_one("SELECT 1", &[]).unwrap();
    })
    .await
    .unwrap();
    for _ in 0..100 {
        assert_eq!(lb.pick_replica(None).unwrap().role(), Role::Replica);
    }
    // Pooled and probe connections are open: dropping the balancer here closes them all.
    assert!(lb.status().primary.pool_connections >= 1);
    let lb = std::sync::Arc::into_inner(lb).unwrap();
    drop(lb);
    tokio::task::block_in_place(move || drop(lock));
}

/// A replica connection back in the pool whose backend was terminated (a replica restart does
/// the same): without a test query on checkout, the next read on it fails once; its `Conn`
/// reports the replica and discards the connection, and the reads after it work. With
/// `pool.check_idle_after_ms` at 0 the check on checkout finds it first and no read fails.
#[test]
fn a_terminated_pooled_connection_fails_one_read_is_reported_and_discarded() {
    let _l = lock_cluster();
    for check_every in [None, Some(Duration::ZERO)] {
        let mut b = config_for(&env().primary, &[replica_addr(1)]).pool_max_size(1);
        if let Some(d) = check_every {
            b = b.check_idle_after(d);
        }
        let lb = Balancer::new(b.build().unwrap()).unwrap();
        wait_healthy(&lb, 1);
        let backend = |c: &mut dlb::Conn| -> i32 {
            c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
        };
        let old = {
            let mut c = lb.read_conn(None).unwrap();
            assert_eq!(c.route().role(), Role::Replica);
            backend(&mut c)
        };
        let mut replica = replica_client(1);
        replica
            .execute("SELECT pg_terminate_backend($1)", &[&old])
            .unwrap();
        wait_until("the backend is gone", WAIT, || {
            let n: i64 = replica
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&old],
                )
                .unwrap()
                .get(0);
            n == 0
        });
        let reported = || {
            lb.metrics_text()
                .lines()
                .any(|l| l == "dlb_reported_failures_total 1")
        };
        let first = lb
            .read_conn(None)
            .unwrap()
            .query_one("SELECT 1", &[])
            .map(|_| ());
        match check_every {
            None => {
                assert!(first.is_err(), "no test query on checkout by default");
                assert!(reported(), "{}", lb.metrics_text());
            }
            Some(_) => {
                assert!(first.is_ok(), "checked on checkout: {first:?}");
                assert!(!reported(), "{}", lb.metrics_text());
            }
        }
        // Later reads work, on a new connection (on the primary while the replica is out).
        for _ in 0..5 {
            let mut c = lb.read_conn(None).unwrap();
            assert_ne!(backend(&mut c), old);
        }
        wait_healthy(&lb, 1);
        let mut c = lb.read_conn(None).unwrap();
        assert_eq!(c.route().role(), Role::Replica);
        assert_ne!(backend(&mut c), old);
    }
}

#[test]
fn prepare_cached_prepares_once_per_pooled_connection() {
    // No cluster lock: a primary-only balancer, reading only.
    let config = dlb::Config::builder(env().primary.clone())
        .pool_max_size(1)
        .build()
        .unwrap();
    let lb = Balancer::new(config).unwrap();
    const SQL: &str = "SELECT $1::int + 1 AS prepare_cached_probe";
    let prepared_here = |c: &mut dlb::Conn| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_prepared_statements \
             WHERE statement = 'SELECT $1::int + 1 AS prepare_cached_probe'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    for n in 0..3 {
        // The pool holds one connection: every borrower gets the same one.
        let mut c = lb.read_conn(None).unwrap();
        let st = c.prepare_cached(SQL).unwrap();
        let v: i32 = c.query_one(&st, &[&n]).unwrap().get(0);
        assert_eq!(v, n + 1);
        assert_eq!(
            prepared_here(&mut c),
            1,
            "borrower {n}: prepared once in all"
        );
    }
    let mut c = lb.read_conn(None).unwrap();
    c.clear_statement_cache();
    let st = c.prepare_cached(SQL).unwrap();
    assert_eq!(c.query_one(&st, &[&1]).unwrap().get::<_, i32>(0), 2);
    assert_eq!(
        prepared_here(&mut c),
        1,
        "prepared anew after clearing the cache, the old one closed"
    );
    // A bad statement is the server's error, and nothing is kept.
    assert!(c.prepare_cached("SELECT FROM no_such_table_here").is_err());
    assert_eq!(c.query_one(&st, &[&2]).unwrap().get::<_, i32>(0), 3);
}

/// A `Conn` the child inherited, dropped there while the child panics (which discards a
/// connection, as a broken one is): closing it would send the parent's session a Terminate
/// over the shared socket. In the child it is leaked instead.
#[test]
fn a_forked_child_drops_an_inherited_conn_without_closing_the_parents_session() {
    // No cluster lock: a primary-only balancer, reading only.
    let lb = Balancer::new(dlb::Config::builder(env().primary.clone()).build().unwrap()).unwrap();
    let mut conn = lb.read_conn(None).unwrap();
    let pid_before: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // The child drops its copy of the `Conn` during a panic.
    let conn_ptr = &raw const conn;
    let status = in_forked_child(|| {
        // SAFETY: in the child, `conn` is never used again after this read.
        let _dropped_while_panicking = unsafe { std::ptr::read(conn_ptr) };
        panic!("drop the inherited Conn while panicking");
    });
    assert!(
        libc::WIFEXITED(status),
        "the child did not exit (status {status})"
    );
    let pid_after: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("the child closed the parent's session")
        .get(0);
    assert_eq!(pid_after, pid_before);
    // In the child, a report is refused rather than acted on (it is checked here, in the
    // parent, that a report still works).
    assert!(lb.report_failure(&env().primary));
}
