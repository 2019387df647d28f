//! Freshness on the real replication cluster: who answers behind each address, stalled
//! replicas, replica DSNs, connections handed back mid-transaction.

mod common;

use std::time::Duration;

use common::*;
use dlb::{Balancer, Role};

#[test]
fn status_shows_who_answers_behind_each_address() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let st = lb.status();
    let system = st
        .primary
        .system_identifier
        .clone()
        .expect("primary identity");
    assert!(st.primary.timeline.is_some_and(|t| t >= 1), "{st:?}");
    for r in &st.replicas {
        assert_eq!(r.host.system_identifier.as_ref(), Some(&system), "{r:?}");
        let port = r.host.addr.rsplit(':').next().unwrap();
        let seen = r.host.server_addr.as_deref().expect("server address");
        assert!(
            seen.ends_with(&format!(":{port}")),
            "{seen} vs {}",
            r.host.addr
        );
        assert_eq!(r.host.timeline, st.primary.timeline, "{r:?}");
    }
}

#[test]
fn a_failed_probe_forgets_the_cached_replay_position() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let addr = replica_addr(1);
    assert!(replica_status(&lb, addr).replay_lsn.is_some());
    stop_replica(1);
    wait_until("the stopped replica is quarantined", WAIT, || {
        replica_status(&lb, addr).state == "quarantined"
    });
    // A server that comes back at this address may have reopened below its old position (a
    // crash-restart, a replacement): nothing known of the old one is trusted.
    let r = replica_status(&lb, addr);
    assert_eq!(r.replay_lsn, None, "{r:?}");
    assert_eq!(r.host.server_addr, None, "{r:?}");
    start_replica(1);
    wait_healthy(&lb, 2);
    assert!(replica_status(&lb, addr).replay_lsn.is_some());
}

#[test]
fn a_replica_that_stops_replaying_is_stalled_under_the_byte_threshold() {
    let _l = lock_cluster();
    let lb = Balancer::new(
        config()
            .max_lag_bytes(u64::MAX / 2)
            .max_replay_stall(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    setup_table(&lb, "dlb_stall_test");
    wait_healthy(&lb, 2);
    let addr = replica_addr(1);
    pause_replay(1);
    // A trickle of writes: far under max_lag_bytes, but replica 1 replays none of it.
    let mut id = 0;
    wait_until("the paused replica is quarantined as stalled", WAIT, || {
        id += 1;
        insert_row(&lb, "dlb_stall_test", id, "k");
        replica_status(&lb, addr).reason == Some("stalled")
    });
    let r = replica_status(&lb, addr);
    assert!(r.lag_bytes > 0 && r.lag_bytes < 1 << 20, "{r:?}");
    assert!(
        lb.metrics_text()
            .contains("dlb_quarantines_total{reason=\"stalled\"} 1"),
        "{}",
        lb.metrics_text()
    );
    for _ in 0..20 {
        assert_ne!(lb.pick_replica(None).unwrap().addr(), addr);
    }
    resume_replay(1);
    wait_healthy(&lb, 2);
}

#[test]
fn replica_dsns_leave_target_session_attrs_to_the_primary() {
    let _l = lock_cluster();
    let primary = format!("{} target_session_attrs=read-write", env().primary);
    let lb = Balancer::new(
        dlb::Config::builder(primary)
            .replica_hosts(env().replicas.clone())
            .replica_check_interval(Duration::from_millis(100))
            .probe_timeout(Duration::from_millis(1000))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    assert!(
        lb.primary()
            .dsn()
            .contains("target_session_attrs=read-write")
    );
    let r = lb.pick_replica(None).unwrap();
    assert_eq!(r.role(), Role::Replica);
    assert!(
        !r.dsn().contains("target_session_attrs"),
        "{}",
        r.redacted_dsn()
    );
    let mut c = postgres::Client::connect(r.dsn(), postgres::NoTls).unwrap();
    let standby: bool = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(standby);
    let mut conn = lb.read_conn(None).unwrap();
    assert_eq!(conn.route().role(), Role::Replica);
    conn.query_one("SELECT 1", &[]).unwrap();
}

#[test]
fn a_connection_given_back_inside_a_transaction_is_rolled_back() {
    // The primary only, one pooled connection: every read gets the same connection back.
    let lb = Balancer::new(
        dlb::Config::builder(env().primary.clone())
            .pool_max_size(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    let table = format!("dlb_txn_test_{}", std::process::id());
    primary_client()
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int)"
        ))
        .unwrap();
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    {
        let mut conn = lb.read_conn(None).unwrap();
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .unwrap();
        assert_eq!(count(&mut conn), 0);
        // Dropped without COMMIT or ROLLBACK: back to the pool inside the transaction.
    }
    primary_client()
        .execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
        .unwrap();
    {
        let mut conn = lb.read_conn(None).unwrap();
        assert_eq!(count(&mut conn), 1, "the next reader sees committed data");
        // An aborted transaction left behind.
        conn.batch_execute("BEGIN").unwrap();
        assert!(conn.batch_execute("SELECT 1/0").is_err());
    }
    let mut conn = lb.read_conn(None).unwrap();
    assert_eq!(count(&mut conn), 1);
    conn.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn a_replica_that_flapped_is_back_soon_after_the_storm() {
    let _l = lock_cluster();
    let mut c = dlb::ConnectivityConfig::default();
    c.flap_threshold = 2;
    let lb = Balancer::new(config().connectivity(c).build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let addr = replica_addr(1);
    for round in 0..2 {
        stop_replica(1);
        wait_until("the stopped replica is out", WAIT, || {
            replica_status(&lb, addr).state == "quarantined"
        });
        start_replica(1);
        if round == 0 {
            wait_healthy(&lb, 2);
        }
    }
    wait_until("the replica is held out for flapping", WAIT, || {
        replica_status(&lb, addr).reason == Some("flapping")
    });
    // The storm is over and it answers: with the default hold it serves again soon (the old
    // default held it out for five minutes, with every read on the other replica).
    wait_until("the flapping replica serves again", WAIT, || {
        replica_status(&lb, addr).state == "healthy"
    });
    assert!(
        lb.metrics_text()
            .contains("dlb_quarantines_total{reason=\"flapping\"} 1"),
        "{}",
        lb.metrics_text()
    );
}

/// A primary that answers `record_lsn`'s query with a NULL position (here: a function that
/// shadows PostgreSQL's through the DSN's `search_path`, as a hostile or misconfigured server
/// could) gives a clear `Error::Query`, never a panic.
#[test]
fn record_lsn_on_a_primary_answering_null_is_an_error() {
    let _l = lock_cluster();
    let mut admin = primary_client();
    admin
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS dlb_null; \
             CREATE OR REPLACE FUNCTION dlb_null.pg_current_wal_insert_lsn() RETURNS pg_lsn \
               LANGUAGE sql AS 'SELECT NULL::pg_lsn'",
        )
        .unwrap();
    let primary = format!(
        "{} options='-c search_path=dlb_null,pg_catalog'",
        env().primary
    );
    let lb = Balancer::new(config_for(&primary, &[]).build().unwrap()).unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lb.record_lsn("hostile/key")
    }));
    admin.batch_execute("DROP SCHEMA dlb_null CASCADE").unwrap();
    match got {
        Ok(Err(dlb::Error::Query { message, .. })) => {
            assert!(message.contains("NULL"), "{message}")
        }
        other => panic!("expected a query error, got {other:?}"),
    }
}
