//! "Sticking never loses protection": scenarios run against every LSN store (the memory store
//! in `tests/sticky.rs`, Redis standalone and Cluster in `tests/redis_store.rs`), on the real
//! replication cluster. The caller holds the [`super::lock_cluster`] lock.

use std::time::Duration;

use dlb::{Balancer, LsnStoreConfig, Reason, Role};

use super::*;

fn balancer(store: &LsnStoreConfig, sticky_ttl: Duration) -> Balancer {
    let lb = Balancer::new(
        config()
            .lsn_store(store.clone())
            .sticky_ttl(sticky_ttl)
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    lb
}

/// A write is recorded, then its key forced to the primary for a short while. When the force
/// ends, the key is still protected by its LSN: with replica 2 paused (and still in rotation),
/// no read for the key sees stale data, through `read_conn` or through the handed-out DSN, and
/// replica 2 is never picked.
pub fn force_expiry_keeps_the_lsn(store: &LsnStoreConfig, table: &str) {
    let lb = balancer(store, Duration::from_secs(3600));
    setup_table(&lb, table);
    pause_replay(2);
    let key = "repo/forced-then-expired";
    insert_row(&lb, table, 1, key);
    let lsn = lb.record_lsn(key).unwrap();
    lb.force_primary(key, Duration::from_millis(300)).unwrap();
    let r = lb.pick_replica(Some(key)).unwrap();
    assert_eq!(
        (r.role(), r.reason()),
        (Role::Primary, Reason::ForcedPrimary)
    );
    wait_until("the force ends", WAIT, || {
        lb.pick_replica(Some(key)).unwrap().reason() != Reason::ForcedPrimary
    });
    let mut readers = Readers::default();
    let mut stale = Vec::new();
    for i in 0..60 {
        let route = lb.pick_replica(Some(key)).unwrap();
        if route.addr() == replica_addr(2) || !readers.sees_row(&route, table, 1) {
            stale.push(format!("pick {i}: {route}"));
        }
        let mut conn = lb.read_conn(Some(key)).unwrap();
        let rows = conn
            .query(&format!("SELECT 1 FROM {table} WHERE id = 1"), &[])
            .unwrap();
        if conn.route().addr() == replica_addr(2) || rows.is_empty() {
            stale.push(format!("read_conn {i}: {}", conn.route()));
        }
    }
    assert!(
        stale.is_empty(),
        "the paused replica served reads after the force ended ({} of 120): {stale:?}",
        stale.len()
    );
    assert_eq!(
        lb.recorded_lsn(key).unwrap(),
        Some(lsn),
        "the force kept the LSN"
    );
    let r = lb.pick_replica(Some(key)).unwrap();
    assert!(
        matches!(
            r.reason(),
            Reason::CaughtUpCached | Reason::CaughtUpLive | Reason::NotCaughtUp
        ),
        "{r}"
    );
}

/// Nothing shortens a force or erases an LSN: a `record_lsn` after a long force keeps the key
/// forced past `sticky_ttl_s`; a shorter force after a long one ends nothing; a zero force
/// keeps the recorded LSN. "Past" is observed, not slept: a marker key recorded (or forced)
/// at the same moment with the short TTL must be gone first.
pub fn nothing_shortens_a_force(store: &LsnStoreConfig) {
    // The shortest sticky TTL there is (1 s): an old-style record would cut the force to it.
    let lb = balancer(store, Duration::from_secs(1));
    let long = Duration::from_secs(3600);

    // record_lsn after a long force.
    lb.force_primary("forced", long).unwrap();
    let lsn = lb.record_lsn("forced").unwrap();
    lb.record_lsn("marker").unwrap();
    assert_eq!(
        lb.pick_replica(Some("forced")).unwrap().reason(),
        Reason::ForcedPrimary
    );
    wait_until("the marker's sticky TTL runs out", WAIT, || {
        lb.recorded_lsn("marker").unwrap().is_none()
    });
    assert_eq!(
        lb.pick_replica(Some("forced")).unwrap().reason(),
        Reason::ForcedPrimary,
        "record_lsn shortened the force to sticky_ttl_s"
    );
    assert!(lb.recorded_lsn("forced").unwrap() >= Some(lsn));

    // A shorter force after a long one.
    lb.force_primary("twice", long).unwrap();
    lb.force_primary("twice", Duration::from_millis(200))
        .unwrap();
    lb.force_primary("short", Duration::from_millis(200))
        .unwrap();
    wait_until("the short force ends", WAIT, || {
        lb.pick_replica(Some("short")).unwrap().reason() != Reason::ForcedPrimary
    });
    assert_eq!(
        lb.pick_replica(Some("twice")).unwrap().reason(),
        Reason::ForcedPrimary,
        "a shorter force cut a longer one"
    );

    // A zero force keeps the LSN (and forces nothing).
    let lsn = lb.record_lsn("zero").unwrap();
    lb.force_primary("zero", Duration::ZERO).unwrap();
    assert_eq!(lb.recorded_lsn("zero").unwrap(), Some(lsn));
    let r = lb.pick_replica(Some("zero")).unwrap();
    assert!(
        !matches!(r.reason(), Reason::ForcedPrimary | Reason::NoLsnRecorded),
        "{r}"
    );
}

/// Huge TTLs: `sticky_ttl_s` of 10 years works, more is a configuration error naming the
/// field, and `force_primary` with `Duration::MAX` neither panics nor loses the LSN.
pub fn huge_ttls(store: &LsnStoreConfig) {
    let lb = balancer(store, dlb::MAX_TTL);
    let lsn = lb.record_lsn("huge").unwrap();
    assert_eq!(lb.recorded_lsn("huge").unwrap(), Some(lsn));
    lb.force_primary("huge", Duration::MAX).unwrap();
    lb.force_primary("huge", Duration::from_secs(u64::MAX))
        .unwrap();
    assert_eq!(
        lb.pick_replica(Some("huge")).unwrap().reason(),
        Reason::ForcedPrimary
    );
    assert!(lb.record_lsn("huge").unwrap() >= lsn);
    assert!(lb.recorded_lsn("huge").unwrap() >= Some(lsn));

    for ttl_s in [dlb::MAX_TTL.as_secs() + 1, u64::MAX] {
        let mut c = config().lsn_store(store.clone()).build().unwrap();
        c.sticky_ttl_s = ttl_s;
        match Balancer::new(c) {
            Err(e @ dlb::Error::Config { .. }) => {
                assert!(e.to_string().contains("sticky_ttl_s"), "{e}");
                assert!(e.to_string().contains("at most"), "{e}");
            }
            other => panic!("sticky_ttl_s {ttl_s}: expected a config error, got {other:?}"),
        }
        let json = format!(r#"{{"primary": "host=h", "sticky_ttl_s": {ttl_s}}}"#);
        let e = dlb::Config::from_json(&json).unwrap_err();
        assert!(
            matches!(&e, dlb::Error::Config { field, .. } if field == "sticky_ttl_s"),
            "{e}"
        );
    }
}
