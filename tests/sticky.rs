//! Primary sticking against the real replication cluster: read-your-writes.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use dlb::{Balancer, Error, Lsn, LsnStoreConfig, NoCaughtUpPolicy, Reason, Role};

fn live_checks(lb: &Balancer) -> u64 {
    let m = lb.metrics_text();
    let line = m
        .lines()
        .find(|l| l.starts_with("dlb_live_lsn_checks_total "))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

struct Outcome {
    stale: usize,
    by_reason: HashMap<Reason, usize>,
    by_addr: HashMap<String, usize>,
}

/// Writes a row, records the key's LSN (when `sticky`), picks a host and reads the row there.
fn write_then_read(lb: &Balancer, table: &str, rounds: i64, sticky: bool) -> Outcome {
    // A background thread keeps replica 1 alternating between lagging and catching up.
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = replica_client(1);
            while !stop.load(Ordering::Relaxed) {
                c.simple_query("SELECT pg_wal_replay_pause()").unwrap();
                std::thread::sleep(Duration::from_millis(30));
                c.simple_query("SELECT pg_wal_replay_resume()").unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            c.simple_query("SELECT pg_wal_replay_resume()").unwrap();
        })
    };
    let mut readers = Readers::default();
    let mut out = Outcome {
        stale: 0,
        by_reason: HashMap::new(),
        by_addr: HashMap::new(),
    };
    for id in 0..rounds {
        let key = format!("repo/{}", id % 7);
        insert_row(lb, table, id, &key);
        let route = if sticky {
            lb.record_lsn(&key).unwrap();
            lb.pick_replica(Some(&key)).unwrap()
        } else {
            lb.pick_replica(None).unwrap()
        };
        if !readers.sees_row(&route, table, id) {
            out.stale += 1;
        }
        *out.by_reason.entry(route.reason()).or_default() += 1;
        *out.by_addr.entry(route.addr().to_string()).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    flapper.join().unwrap();
    out
}

#[test]
fn sticky_reads_never_see_stale_data() {
    let _l = lock_cluster();
    // Default lag thresholds: the paused replica stays in rotation, so only sticking protects.
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    setup_table(&lb, "dlb_ryw_sticky");
    pause_replay(2);

    let out = write_then_read(&lb, "dlb_ryw_sticky", 300, true);
    assert_eq!(
        out.stale, 0,
        "stale reads with sticking: {:?}",
        out.by_reason
    );
    assert_eq!(
        out.by_addr.get(replica_addr(2)),
        None,
        "the paused replica was picked"
    );
    let replica_reads: usize = out
        .by_reason
        .iter()
        .filter(|(r, _)| r.role() == Role::Replica)
        .map(|(_, n)| n)
        .sum();
    assert!(
        replica_reads > 0,
        "no read went to the caught-up replica: {:?}",
        out.by_reason
    );
    assert_eq!(
        lb.status().healthy_replicas,
        2,
        "the paused replica was never quarantined"
    );
}

#[test]
fn without_sticking_the_same_loop_reads_stale_data() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    setup_table(&lb, "dlb_ryw_plain");
    pause_replay(2);
    let out = write_then_read(&lb, "dlb_ryw_plain", 60, false);
    assert!(
        out.stale > 0,
        "this setup must produce stale reads without sticking"
    );
}

#[test]
fn keys_without_an_lsn_still_spread_over_replicas() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let mut by_addr: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let r = lb.pick_replica(Some("never-written")).unwrap();
        assert_eq!(r.reason(), Reason::NoLsnRecorded);
        *by_addr.entry(r.addr().to_string()).or_default() += 1;
    }
    assert_eq!(by_addr.len(), 2, "{by_addr:?}");
}

#[test]
fn an_lsn_every_replica_has_passed_is_served_from_the_cache() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    lb.record_lsn_value("old", Lsn::from_u64(1)).unwrap();
    let before = live_checks(&lb);
    let mut by_addr: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let r = lb.pick_replica(Some("old")).unwrap();
        assert_eq!(
            (r.role(), r.reason()),
            (Role::Replica, Reason::CaughtUpCached)
        );
        *by_addr.entry(r.addr().to_string()).or_default() += 1;
    }
    assert_eq!(live_checks(&lb), before, "the cache path needs no query");
    assert_eq!(
        by_addr.len(),
        2,
        "round-robin among caught-up replicas: {by_addr:?}"
    );
    // A causal token works the same way.
    let r = lb.pick_replica_min_lsn(Lsn::from_u64(1)).unwrap();
    assert_eq!(r.reason(), Reason::CaughtUpCached);
}

#[test]
fn live_check_when_the_cache_is_behind_then_cache() {
    let _l = lock_cluster();
    // The monitor checks only at start-up, so only live checks can refresh the cache.
    let lb = Balancer::new(
        config()
            .replica_check_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    generate_wal(1);
    let lsn = lb.record_lsn("fresh").unwrap();
    wait_until("a live check finds a caught-up replica", WAIT, || {
        lb.pick_replica(Some("fresh")).unwrap().reason() == Reason::CaughtUpLive
    });
    let r = lb.pick_replica(Some("fresh")).unwrap();
    assert_eq!(
        r.reason(),
        Reason::CaughtUpCached,
        "the live answer updated the cache"
    );
    let replayed: Lsn = lb
        .status()
        .replicas
        .iter()
        .filter_map(|r| r.replay_lsn.as_ref()?.parse().ok())
        .max()
        .unwrap();
    assert!(replayed >= lsn);
}

#[test]
fn no_caught_up_replica_policy() {
    let _l = lock_cluster();
    let lb = Balancer::new(
        config()
            .no_caught_up_replica(NoCaughtUpPolicy::Error)
            .build()
            .unwrap(),
    )
    .unwrap();
    let fallback = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    wait_healthy(&fallback, 2);
    pause_replay(1);
    pause_replay(2);
    generate_wal(1);
    let lsn = lb.record_lsn("k").unwrap();
    match lb.pick_replica(Some("k")) {
        Err(e @ Error::NoCaughtUpReplica { .. }) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains(&lsn.to_string()), "{e}");
        }
        other => panic!("expected NoCaughtUpReplica, got {other:?}"),
    }
    assert!(matches!(
        lb.pick_replica_min_lsn(lsn),
        Err(Error::NoCaughtUpReplica { .. })
    ));
    let r = fallback.pick_replica_min_lsn(lsn).unwrap();
    assert_eq!((r.role(), r.reason()), (Role::Primary, Reason::NotCaughtUp));
    // Resumed: the same key is served by a replica again.
    resume_replay(1);
    resume_replay(2);
    wait_until("the key is served by a replica", WAIT, || {
        lb.pick_replica(Some("k"))
            .is_ok_and(|r| r.role() == Role::Replica)
    });
}

#[test]
fn forced_primary() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    lb.force_primary("critical", Duration::from_secs(60))
        .unwrap();
    let r = lb.pick_replica(Some("critical")).unwrap();
    assert_eq!(
        (r.role(), r.reason()),
        (Role::Primary, Reason::ForcedPrimary)
    );
    lb.record_lsn("critical").unwrap();
    assert_eq!(
        lb.pick_replica(Some("critical")).unwrap().reason(),
        Reason::ForcedPrimary
    );
    assert_eq!(lb.pick_primary().reason(), Reason::ForcedPrimary);
    assert!(
        lb.metrics_text()
            .contains("dlb_picks_total{role=\"primary\",reason=\"forced_primary\"} 3")
    );
}

#[test]
fn concurrent_writers_never_move_a_key_backwards() {
    let _l = lock_cluster();
    let lb = Arc::new(Balancer::new(config().build().unwrap()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let lb = lb.clone();
            std::thread::spawn(move || {
                let mut max = Lsn::ZERO;
                for i in 0..40u64 {
                    let lsn = if i % 2 == 0 {
                        lb.write_conn()
                            .unwrap()
                            .batch_execute("SELECT txid_current()")
                            .unwrap();
                        lb.record_lsn("hot").unwrap()
                    } else {
                        // Older positions arriving late (e.g. from slow requests) must not win.
                        let old = Lsn::from_u64(t * 1000 + i);
                        lb.record_lsn_value("hot", old).unwrap();
                        old
                    };
                    max = max.max(lsn);
                    assert!(lb.recorded_lsn("hot").unwrap().unwrap() >= max);
                }
                max
            })
        })
        .collect();
    let max = threads
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    assert_eq!(lb.recorded_lsn("hot").unwrap(), Some(max));
}

#[test]
fn bad_keys_and_lsns_get_clear_errors() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().build().unwrap()).unwrap();
    let long = "k".repeat(dlb::MAX_KEY_LEN + 1);
    for bad in ["", long.as_str()] {
        for e in [
            lb.record_lsn(bad).unwrap_err(),
            lb.record_lsn_value(bad, Lsn::ZERO).unwrap_err(),
            lb.pick_replica(Some(bad)).unwrap_err(),
            lb.force_primary(bad, Duration::from_secs(1)).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidKey { .. }), "{e:?}");
            assert!(e.to_string().starts_with("invalid key: key is "), "{e}");
        }
    }
    assert!(
        lb.record_lsn_value(&"k".repeat(dlb::MAX_KEY_LEN), Lsn::ZERO)
            .is_ok()
    );
    let e = "12/zz".parse::<Lsn>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid LSN \"12/zz\": the part after '/' is not hexadecimal"
    );
}

#[test]
fn memory_store_force_expiry_keeps_the_lsn() {
    let _l = lock_cluster();
    protection::force_expiry_keeps_the_lsn(&LsnStoreConfig::Memory {}, "dlb_protect_memory");
}

#[test]
fn memory_store_nothing_shortens_a_force() {
    let _l = lock_cluster();
    protection::nothing_shortens_a_force(&LsnStoreConfig::Memory {});
}

#[test]
fn memory_store_huge_ttls() {
    let _l = lock_cluster();
    protection::huge_ttls(&LsnStoreConfig::Memory {});
}

/// An async caller's sticky picks after writes (live checks) on a tokio worker: the check on
/// the caller's thread drives a connection's runtime, which would panic there ("Cannot start a
/// runtime from within a runtime"); the checker's thread answers instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_picks_with_live_checks_on_a_tokio_worker() {
    const TABLE: &str = "dlb_test_sticky_async";
    let lock = tokio::task::block_in_place(lock_cluster);
    let lb = tokio::task::block_in_place(|| {
        let lb = Balancer::new(config().build().unwrap()).unwrap();
        wait_healthy(&lb, 2);
        setup_table(&lb, TABLE);
        lb
    });
    let checks = |lb: &Balancer| {
        let text = lb.metrics_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("dlb_live_lsn_checks_total "))
            .unwrap()
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let before = checks(&lb);
    for id in 0..5 {
        tokio::task::block_in_place(|| {
            insert_row(&lb, TABLE, id, "async");
            lb.record_lsn("async").unwrap();
        });
        // On the worker itself, as an async caller that does not know a pick may block.
        let r = lb.pick_replica(Some("async")).unwrap();
        assert!(
            matches!(
                r.reason(),
                Reason::CaughtUpLive | Reason::CaughtUpCached | Reason::NotCaughtUp
            ),
            "{r}"
        );
    }
    assert!(checks(&lb) > before, "no live check ran");
    tokio::task::block_in_place(move || {
        drop(lb);
        drop(lock);
    });
}
