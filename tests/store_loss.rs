//! Drills on a real Redis LSN store that forgets: a `FLUSHALL`, a restart without persistence
//! (the test environment's Redis keeps nothing on disk) and an eviction under
//! `allkeys-lru`. Keys are recorded while both replicas have replay paused (so a replica read
//! is stale), then the store loses them, and every read right after must still see its row:
//! through the DSN `pick_replica(Some(key))` hands out and through `read_conn(Some(key))`.
//! The same for the embedded store when it drops entries at its entry cap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dlb::{Balancer, LsnStore, LsnStoreConfig, MemoryStore, Reason, RedisStoreConfig, Role, Route};

const KEYS: i64 = 20;

/// Replays resumed, and Redis's memory settings back to the test environment's, when dropped
/// (also when the drill fails).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if let Ok(mut c) = redis_conn() {
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg("0")
                .arg("maxmemory-policy")
                .arg("noeviction")
                .query(&mut c);
        }
        let _ = restore();
    }
}

fn redis_conn() -> redis::RedisResult<redis::Connection> {
    redis::Client::open(env().redis.as_str())?.get_connection()
}

fn balancer(test: &str) -> Balancer {
    let mut store = RedisStoreConfig::standalone(env().redis.clone());
    store.key_prefix = format!("dlb:test:loss:{test}:{}:", std::process::id());
    let lb = Balancer::new(
        config()
            // Paused replicas stay in rotation: only freshness keeps reads off them.
            .max_lag_bytes(u64::MAX / 2)
            .max_lag(Duration::from_secs(3600))
            .lsn_store(LsnStoreConfig::Redis(store))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    lb
}

fn sees(route: &Route, table: &str, id: i64) -> Result<bool, String> {
    let mut c =
        postgres::Client::connect(route.dsn(), postgres::NoTls).map_err(|e| e.to_string())?;
    c.query_opt(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id])
        .map(|r| r.is_some())
        .map_err(|e| e.to_string())
}

/// Records `KEYS` keys with both replicas paused, makes the store lose them (`lose`), then
/// reads each key's row once through the handed-out DSN and once through `read_conn`.
fn drill(test: &str, lose: impl FnOnce()) {
    let _l = lock_cluster();
    let _restore = Restore;
    let table = format!("dlb_loss_{test}");
    let lb = balancer(test);
    setup_table(&lb, &table);
    pause_replay(1);
    pause_replay(2);
    for id in 0..KEYS {
        insert_row(&lb, &table, id, "k");
        lb.record_lsn(&format!("loss/{id}")).unwrap();
    }
    let key0 = lb.pick_replica(Some("loss/0")).unwrap();
    assert_eq!(key0.role(), Role::Primary, "replicas are paused: {key0}");

    lose();

    let mut bad = Vec::new();
    let mut reasons = Vec::new();
    for id in 0..KEYS {
        let key = format!("loss/{id}");
        let route = lb.pick_replica(Some(&key)).unwrap();
        reasons.push(route.reason());
        match sees(&route, &table, id) {
            Ok(true) => {}
            other => bad.push(format!("dsn: row {id} on {route}: {other:?}")),
        }
        let mut conn = lb.read_conn(Some(&key)).unwrap();
        let route = conn.route().clone();
        match conn.query_opt(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id]) {
            Ok(Some(_)) => {}
            other => bad.push(format!("read_conn: row {id} on {route}: {other:?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{test}: {} stale reads after the store lost its keys:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Nothing recorded any more, and the loss seen: the primary, not a round-robin replica.
    assert!(
        reasons.iter().all(|r| *r == Reason::NotCaughtUp),
        "{reasons:?}"
    );
    let status = lb.status();
    assert!(
        status.lsn_store_loss_age_ms.is_some(),
        "status tells of the loss: {}",
        status.to_json()
    );
}

/// A Redis that may evict recorded LSNs (`maxmemory-policy` other than `noeviction`) is a
/// standing warning in status, not only a log line.
#[test]
fn an_evicting_redis_is_a_status_warning() {
    let _l = lock_cluster();
    let _restore = Restore;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut redis_conn().unwrap())
        .unwrap();
    let lb = balancer("policy");
    wait_until("status warns of the eviction policy", WAIT, || {
        lb.status()
            .lsn_store_warning
            .is_some_and(|w| w.contains("allkeys-lru"))
    });
    assert_eq!(lb.status().lsn_store_loss_age_ms, None);
}

#[test]
fn a_redis_flush_sends_forgotten_keys_to_the_primary() {
    drill("flush", || {
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut redis_conn().unwrap())
            .unwrap();
    });
}

#[test]
fn a_redis_restart_without_persistence_sends_forgotten_keys_to_the_primary() {
    drill("restart", || {
        stop_redis();
        start_redis();
    });
}

#[test]
fn a_redis_eviction_sends_forgotten_keys_to_the_primary() {
    drill("evict", || {
        let mut c = redis_conn().unwrap();
        let used: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
        let used: u64 = used
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("allkeys-lru")
            .arg("maxmemory")
            .arg((used + (1 << 20)).to_string())
            .query(&mut c)
            .unwrap();
        // Filler until none of the drill's keys is left (allkeys-lru: the oldest go first).
        let pad = "x".repeat(4096);
        let mut n = 0u64;
        wait_until("Redis evicts the drill's keys", WAIT, || {
            for _ in 0..256 {
                let _: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("dlb:filler:{n}"))
                    .arg(&pad)
                    .query(&mut c);
                n += 1;
            }
            let left: Vec<String> = redis::cmd("KEYS")
                .arg("dlb:test:loss:evict:*")
                .query(&mut c)
                .unwrap();
            left.is_empty()
        });
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("0")
            .query(&mut c)
            .unwrap();
        // Filler out again, key by key: a flush would be a loss of its own.
        let filler: Vec<String> = redis::cmd("KEYS")
            .arg("dlb:filler:*")
            .query(&mut c)
            .unwrap();
        for chunk in filler.chunks(512) {
            let _: () = redis::cmd("DEL").arg(chunk).query(&mut c).unwrap();
        }
    });
}

/// The embedded store at its entry cap (16 entries, one per shard, for the drill's 20 keys)
/// drops entries to take new keys: every read right after still sees its row (a key whose
/// entry was dropped is read from the primary, as after a Redis loss, never round-robin).
#[test]
fn a_full_memory_store_sends_dropped_keys_to_the_primary() {
    let _l = lock_cluster();
    let _restore = Restore;
    let table = "dlb_loss_memory_cap";
    let store = Arc::new(MemoryStore::with_max_entries(16));
    let lb = Balancer::with_store(
        config()
            .max_lag_bytes(u64::MAX / 2)
            .max_lag(Duration::from_secs(3600))
            .build()
            .unwrap(),
        store.clone(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    setup_table(&lb, table);
    pause_replay(1);
    pause_replay(2);
    for id in 0..KEYS {
        insert_row(&lb, table, id, "k");
        lb.record_lsn(&format!("cap/{id}")).unwrap();
    }
    assert!(store.len() <= 16, "{} entries", store.len());
    assert!(
        store.last_loss().is_some(),
        "20 keys in 16 entries: some dropped"
    );
    let mut bad = Vec::new();
    for id in 0..KEYS {
        let key = format!("cap/{id}");
        let route = lb.pick_replica(Some(&key)).unwrap();
        if route.reason() != Reason::NotCaughtUp {
            bad.push(format!("{key}: {route}"));
        }
        match sees(&route, table, id) {
            Ok(true) => {}
            other => bad.push(format!("dsn: row {id} on {route}: {other:?}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
