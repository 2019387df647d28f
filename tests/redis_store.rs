//! The Redis LSN store against a real Redis and a real Redis Cluster of three masters (both
//! started by `scripts/testenv.sh`): a fleet of balancers sharing recorded LSNs, monotonic
//! updates over the whole 64-bit range, and a Redis outage that degrades sticky reads to the
//! primary and heals by itself.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use dlb::{
    Balancer, Error, Lsn, LsnStore, LsnStoreConfig, PickOptions, Reason, RedisStore,
    RedisStoreConfig, Role,
};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Standalone,
    Cluster,
}

/// Store settings with a prefix of their own, so runs and tests never see each other's keys.
fn store_config(kind: Kind, test: &str) -> RedisStoreConfig {
    let mut c = match kind {
        Kind::Standalone => RedisStoreConfig::standalone(env().redis.clone()),
        Kind::Cluster => RedisStoreConfig::cluster(env().redis_cluster.clone()),
    };
    c.key_prefix = format!("dlb:test:{test}:{kind:?}:{}:", std::process::id());
    c
}

fn balancer(store: &RedisStoreConfig) -> Balancer {
    let config = config()
        .lsn_store(LsnStoreConfig::Redis(store.clone()))
        .build()
        .unwrap();
    let lb = Balancer::new(config).unwrap();
    wait_healthy(&lb, 2);
    lb
}

/// Two balancers (two service processes) share one Redis: a write recorded through one is
/// honoured by the other's picks, and the paused replica is never returned for the key.
fn fleet_shares_recorded_lsns(kind: Kind) {
    let _l = lock_cluster();
    let store = store_config(kind, "fleet");
    let writer = balancer(&store);
    let reader = balancer(&store);
    let table = format!("dlb_redis_fleet_{}", format!("{kind:?}").to_lowercase());
    setup_table(&writer, &table);
    pause_replay(2);

    let long_key = format!("repo/{}", "x".repeat(900));
    let mut readers = Readers::default();
    let mut by_reason: HashMap<Reason, usize> = HashMap::new();
    for id in 0..150i64 {
        let key = if id % 10 == 0 {
            long_key.clone()
        } else {
            format!("repo/{}", id % 7)
        };
        insert_row(&writer, &table, id, &key);
        let lsn = writer.record_lsn(&key).unwrap();
        assert!(reader.recorded_lsn(&key).unwrap() >= Some(lsn));

        let route = reader.pick_replica(Some(&key)).unwrap();
        assert_ne!(
            route.addr(),
            replica_addr(2),
            "the paused replica was picked for {key:.20}"
        );
        assert!(
            readers.sees_row(&route, &table, id),
            "stale read via {route} (row {id})"
        );
        *by_reason.entry(route.reason()).or_default() += 1;
    }
    // Replica 1 keeps replaying, so the reader's sticky reads are served by it, not all by
    // the primary.
    let on_replica: usize = by_reason
        .iter()
        .filter(|(r, _)| r.role() == Role::Replica)
        .map(|(_, n)| n)
        .sum();
    assert!(
        on_replica > 0,
        "no sticky read reached a replica: {by_reason:?}"
    );

    // A balancer on another prefix (another fleet) knows nothing of these keys: the sharing
    // above is what made the reader wait.
    let other = balancer(&store_config(kind, "other-fleet"));
    assert_eq!(
        other.pick_replica(Some("repo/1")).unwrap().reason(),
        Reason::NoLsnRecorded
    );
}

#[test]
fn standalone_fleet_shares_recorded_lsns() {
    fleet_shares_recorded_lsns(Kind::Standalone);
}

#[test]
fn cluster_fleet_shares_recorded_lsns() {
    fleet_shares_recorded_lsns(Kind::Cluster);
}

/// A small deterministic generator (xorshift) of LSNs spread over the whole 64-bit range.
fn lsns(seed: u64, n: usize) -> Vec<Lsn> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Lsn::from_u64(x >> (x % 4 * 8))
        })
        .collect()
}

/// Concurrent writers from several threads and both instances: the stored LSN is the largest
/// ever recorded. And LSNs above 2^53, where doubles lose precision, are ordered exactly.
fn monotonic_across_threads_and_instances(kind: Kind) {
    let _l = lock_cluster();
    let store = store_config(kind, "monotonic");
    let a = Arc::new(balancer(&store));
    let b = Arc::new(balancer(&store));
    let key = "repo/concurrent";
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let lb = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let values = lsns(0x9E37_79B9_7F4A_7C15 ^ t, 200);
                for &v in &values {
                    lb.record_lsn_value(key, v).unwrap();
                    // Never below what this thread itself recorded.
                    assert!(lb.recorded_lsn(key).unwrap() >= Some(v));
                }
                values.into_iter().max().unwrap()
            })
        })
        .collect();
    let max = threads.into_iter().map(|t| t.join().unwrap()).max();
    assert_eq!(a.recorded_lsn(key).unwrap(), max);
    assert_eq!(b.recorded_lsn(key).unwrap(), max);

    let high: Lsn = "FFFFFFFF/FFFFFF01".parse().unwrap();
    let lower: Lsn = "FFFFFFFF/FFFFFF00".parse().unwrap();
    a.record_lsn_value("repo/high", high).unwrap();
    b.record_lsn_value("repo/high", lower).unwrap();
    assert_eq!(a.recorded_lsn("repo/high").unwrap(), Some(high));
    // u64::MAX is an LSN like any other (no longer the mark of a forced key).
    let max = Lsn::from_u64(u64::MAX);
    a.record_lsn_value("repo/max", max).unwrap();
    b.record_lsn_value("repo/max", high).unwrap();
    assert_eq!(b.recorded_lsn("repo/max").unwrap(), Some(max));
    assert_ne!(
        b.pick_replica(Some("repo/max")).unwrap().reason(),
        Reason::ForcedPrimary
    );
    // 2^53 + 1 and 2^53 are the same double.
    let above = Lsn::from_u64((1 << 53) + 1);
    a.record_lsn_value("repo/2^53", above).unwrap();
    b.record_lsn_value("repo/2^53", Lsn::from_u64(1 << 53))
        .unwrap();
    assert_eq!(b.recorded_lsn("repo/2^53").unwrap(), Some(above));
    b.record_lsn_value("repo/2^53", Lsn::from_u64((1 << 53) + 2))
        .unwrap();
    assert_eq!(
        a.recorded_lsn("repo/2^53").unwrap(),
        Some(Lsn::from_u64((1 << 53) + 2))
    );
}

#[test]
fn standalone_is_monotonic_across_threads_and_instances() {
    monotonic_across_threads_and_instances(Kind::Standalone);
}

#[test]
fn cluster_is_monotonic_across_threads_and_instances() {
    monotonic_across_threads_and_instances(Kind::Cluster);
}

/// Keys spread over the cluster's masters (one slot per key, no hash tags needed), each a
/// hash whose `lsn` is 16 hex digits, with a TTL.
#[test]
fn cluster_keys_spread_over_every_master_with_a_ttl() {
    let _l = lock_cluster();
    let config = store_config(Kind::Cluster, "spread");
    let store = RedisStore::new(&config).unwrap();
    let keys: Vec<String> = (0..48).map(|i| format!("repo/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        store
            .record(
                k,
                Lsn::from_u64(i as u64 + 1),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
    }
    let mut per_node = Vec::new();
    for url in &env().redis_cluster {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", config.key_prefix))
            .query(&mut c)
            .unwrap();
        for k in &found {
            let v: String = redis::cmd("HGET").arg(k).arg("lsn").query(&mut c).unwrap();
            assert!(
                v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()),
                "{k} holds {v:?}"
            );
            let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut c).unwrap();
            assert!(ttl > 0 && ttl <= 60_000, "{k} has PTTL {ttl}");
        }
        per_node.push(found.len());
    }
    assert_eq!(per_node.iter().sum::<usize>(), keys.len(), "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "a master got no key: {per_node:?}"
    );
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.get(k).unwrap().lsn, Some(Lsn::from_u64(i as u64 + 1)));
    }
}

/// Redis stopped mid-test: sticky picks go to the primary with the store-error reason (never
/// a possibly stale replica), `record_lsn` reports a store error, reads without a key are
/// unaffected; after Redis restarts, sticking works again without any intervention.
#[test]
fn redis_outage_sends_sticky_reads_to_the_primary_until_it_returns() {
    let _l = lock_cluster();
    let mut store = store_config(Kind::Standalone, "outage");
    store.op_timeout_ms = 200;
    let lb = balancer(&store);
    let key = "repo/outage";
    lb.record_lsn(key).unwrap();
    assert_eq!(lb.pick_replica(Some(key)).unwrap().role(), Role::Replica);

    stop_redis();
    for _ in 0..20 {
        let route = lb.pick_replica(Some(key)).unwrap();
        assert_eq!(
            (route.role(), route.reason()),
            (Role::Primary, Reason::StoreError)
        );
        assert_eq!(lb.pick_replica(None).unwrap().role(), Role::Replica);
    }
    match lb.record_lsn(key) {
        Err(Error::Store { message, .. }) => assert!(message.contains("redis"), "{message}"),
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(
        lb.metrics_text()
            .lines()
            .any(|l| l.starts_with("dlb_store_errors_total ") && !l.ends_with(" 0")),
        "store errors are counted"
    );

    start_redis();
    // The restarted Redis kept nothing (no persistence in the test environment): record again.
    wait_until("sticking works again after Redis restarts", WAIT, || {
        lb.record_lsn(key).is_ok()
    });
    let route = lb.pick_replica(Some(key)).unwrap();
    assert_eq!(route.role(), Role::Replica, "{route}");
    assert_ne!(route.reason(), Reason::StoreError);
}

/// A Redis user with a password: the right one authenticates; a wrong one is a store error
/// (sticky reads go to the primary) that never shows either password, nor do status,
/// metrics or the store's `Debug`.
#[test]
fn passwords_authenticate_and_never_show() {
    let _l = lock_cluster();
    let auth = &env().redis_auth;
    let password = auth
        .rsplit_once('@')
        .and_then(|(creds, _)| creds.rsplit_once(':'))
        .map(|(_, p)| p.to_string())
        .expect("DLB_TEST_REDIS_AUTH has a password");
    let mut store = store_config(Kind::Standalone, "auth");
    store.url = Some(auth.clone());
    let lb = balancer(&store);
    lb.record_lsn_value("repo/auth", Lsn::from_u64(1)).unwrap();
    assert_eq!(
        lb.recorded_lsn("repo/auth").unwrap(),
        Some(Lsn::from_u64(1))
    );
    assert_eq!(
        lb.pick_replica(Some("repo/auth")).unwrap().reason(),
        Reason::CaughtUpCached
    );
    let text = format!(
        "{}\n{}\n{:?}",
        lb.status().to_json(),
        lb.metrics_text(),
        RedisStore::new(&store).unwrap()
    );
    assert!(!text.contains(&password), "the password leaked: {text}");

    let wrong = format!("wrong-{password}");
    let mut bad = store.clone();
    bad.url = Some(auth.replace(&password, &wrong));
    let lb = balancer(&bad);
    let err = lb
        .record_lsn_value("repo/auth", Lsn::from_u64(2))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert!(
        !message.contains(&wrong) && !message.contains(&password),
        "a password leaked: {message}"
    );
    let route = lb.pick_replica(Some("repo/auth")).unwrap();
    assert_eq!(
        (route.role(), route.reason()),
        (Role::Primary, Reason::StoreError)
    );
}

/// TLS (`rediss://`) to a TLS-only Redis whose certificate a private CA signed: with the CA
/// in `tls_ca_file` two balancers share recorded LSNs through it; with the system's roots the
/// certificate is not trusted, and plain `redis://` to the TLS port gets no answer: store
/// errors, and sticky reads go to the primary.
#[test]
fn tls_with_a_private_ca() {
    let _l = lock_cluster();
    let mut store = store_config(Kind::Standalone, "tls");
    store.url = Some(env().redis_tls.clone());
    store.tls_ca_file = Some(env().redis_tls_ca.clone());
    store.op_timeout_ms = 1000;
    let writer = balancer(&store);
    let reader = balancer(&store);
    let lsn = writer.record_lsn("repo/tls").unwrap();
    assert_eq!(reader.recorded_lsn("repo/tls").unwrap(), Some(lsn));
    let route = reader.pick_replica(Some("repo/tls")).unwrap();
    assert_ne!(route.reason(), Reason::StoreError, "{route}");

    let mut untrusted = store.clone();
    untrusted.tls_ca_file = None;
    let mut plain = store.clone();
    plain.url = Some(env().redis_tls.replacen("rediss://", "redis://", 1));
    // A CA file with a plain URL is a configuration error, naming the URL.
    assert!(matches!(
        dlb::RedisStore::new(&plain),
        Err(Error::Config { field, .. }) if field == "lsn_store.redis.url"
    ));
    plain.tls_ca_file = None;
    for (what, config) in [("system roots", untrusted), ("plain redis://", plain)] {
        let lb = balancer(&config);
        match lb.record_lsn_value("repo/tls", Lsn::from_u64(1)) {
            Err(Error::Store { message, .. }) => {
                if what == "system roots" {
                    assert!(message.contains("certificate"), "{what}: {message}");
                }
            }
            other => panic!("{what}: expected a store error, got {other:?}"),
        }
        let route = lb.pick_replica(Some("repo/tls")).unwrap();
        assert_eq!(
            (route.role(), route.reason()),
            (Role::Primary, Reason::StoreError),
            "{what}"
        );
    }
}

#[test]
fn standalone_force_expiry_keeps_the_lsn() {
    let _l = lock_cluster();
    let store = LsnStoreConfig::Redis(store_config(Kind::Standalone, "force-expiry"));
    protection::force_expiry_keeps_the_lsn(&store, "dlb_protect_standalone");
}

#[test]
fn cluster_force_expiry_keeps_the_lsn() {
    let _l = lock_cluster();
    let store = LsnStoreConfig::Redis(store_config(Kind::Cluster, "force-expiry"));
    protection::force_expiry_keeps_the_lsn(&store, "dlb_protect_cluster");
}

#[test]
fn standalone_nothing_shortens_a_force() {
    let _l = lock_cluster();
    let store = LsnStoreConfig::Redis(store_config(Kind::Standalone, "shorten"));
    protection::nothing_shortens_a_force(&store);
}

#[test]
fn cluster_nothing_shortens_a_force() {
    let _l = lock_cluster();
    let store = LsnStoreConfig::Redis(store_config(Kind::Cluster, "shorten"));
    protection::nothing_shortens_a_force(&store);
}

#[test]
fn standalone_huge_ttls() {
    let _l = lock_cluster();
    let config = store_config(Kind::Standalone, "huge");
    protection::huge_ttls(&LsnStoreConfig::Redis(config.clone()));
    // The entry lives about 10 years on the server.
    let mut c = redis::Client::open(env().redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // Stored per cluster: `key_prefix` + the primary's system identifier (hex) + `:huge`.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*:huge", config.key_prefix))
        .query(&mut c)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut c).unwrap();
    let max_ms = dlb::MAX_TTL.as_millis() as i64;
    assert!(pttl > max_ms - 3_600_000 && pttl <= max_ms, "PTTL {pttl}");
}

#[test]
fn cluster_huge_ttls() {
    let _l = lock_cluster();
    protection::huge_ttls(&LsnStoreConfig::Redis(store_config(Kind::Cluster, "huge")));
}

/// Redis stops after the write: `record_lsn` fails with a store error that carries the LSN it
/// read from the primary, and that LSN works as a causal token (the paused replica is never
/// picked for it, the row is visible where it is read).
#[test]
fn a_failed_record_returns_the_lsn_it_read() {
    let _l = lock_cluster();
    let mut store = store_config(Kind::Standalone, "failed-record");
    store.op_timeout_ms = 200;
    let lb = balancer(&store);
    let table = "dlb_redis_failed_record";
    setup_table(&lb, table);
    pause_replay(2);
    let before = lb.record_lsn("repo/failed").unwrap();
    insert_row(&lb, table, 1, "repo/failed");
    stop_redis();
    let e = lb.record_lsn("repo/failed").unwrap_err();
    assert!(matches!(e, Error::Store { .. }), "{e:?}");
    assert!(e.is_retryable());
    let lsn = e.lsn().expect("the store error carries the LSN");
    assert!(lsn > before, "{lsn} > {before}");
    assert!(e.to_string().contains(&lsn.to_string()), "{e}");
    let written: String = primary_client()
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    assert!(lsn <= written.parse().unwrap());
    // The same for an LSN the caller gave.
    let e = lb.record_lsn_value("repo/failed", lsn).unwrap_err();
    assert_eq!(e.lsn(), Some(lsn));
    // Other errors carry none.
    assert_eq!(lb.record_lsn("").unwrap_err().lsn(), None);

    let mut readers = Readers::default();
    for _ in 0..20 {
        let route = lb.pick_replica_min_lsn(lsn).unwrap();
        assert_ne!(route.addr(), replica_addr(2), "{route}");
        assert!(readers.sees_row(&route, table, 1), "stale read via {route}");
    }
}

/// The cluster client's node connections are never in `READONLY` mode (`CLIENT LIST` flag
/// `r`): a Redis replica would answer our reads itself, possibly stale, instead of
/// redirecting them to the master.
#[test]
fn cluster_node_connections_are_not_readonly() {
    let _l = lock_cluster();
    let config = store_config(Kind::Cluster, "readonly");
    let store = RedisStore::new(&config).unwrap();
    for i in 0..48 {
        let k = format!("repo/{i}");
        store
            .record(&k, Lsn::from_u64(1), std::time::Duration::from_secs(60))
            .unwrap();
        store.get(&k).unwrap();
    }
    let mut ours = 0;
    for url in &env().redis_cluster {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        for line in list.lines() {
            let flags = line
                .split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .unwrap_or("");
            assert!(!flags.contains('r'), "a READONLY connection: {line}");
            if line.contains("cmd=evalsha") || line.contains("cmd=eval ") {
                ours += 1;
            }
        }
    }
    assert!(ours > 0, "no connection of the store seen");
    drop(store);
}

/// The stored layout, read and written by hand: a value of the previous format (16 hex
/// digits) is read as its LSN and converted by the next record, keeping its life; whether a
/// key is forced is decided on the Redis server's clock.
fn stored_layout(kind: Kind) {
    let _l = lock_cluster();
    let config = store_config(kind, "layout");
    let store = RedisStore::new(&config).unwrap();
    let key = "repo/layout";
    let rkey = store.redis_key(key);
    // A plain connection to the node that holds the key (on a Cluster, the one master that
    // does not answer MOVED): no cluster client, no READONLY.
    let urls = match kind {
        Kind::Standalone => vec![env().redis.clone()],
        Kind::Cluster => env().redis_cluster.clone(),
    };
    let mut c = urls
        .iter()
        .map(|u| {
            redis::Client::open(u.as_str())
                .unwrap()
                .get_connection()
                .unwrap()
        })
        .find_map(|mut c| {
            let owner = redis::cmd("TYPE")
                .arg(&rkey)
                .query::<String>(&mut c)
                .is_ok();
            owner.then_some(c)
        })
        .expect("a node holds the key");
    let _: () = redis::cmd("SET")
        .arg(&rkey)
        .arg("0020000000000001")
        .arg("PX")
        .arg(600_000)
        .query(&mut c)
        .unwrap();
    let legacy = Lsn::from_u64(0x20_0000_0000_0001);
    assert_eq!(
        store.get(key).unwrap(),
        dlb::Recorded {
            lsn: Some(legacy),
            forced: false
        }
    );
    // 2^53 + 2 and 2^53 + 1 are different (as doubles they may not be).
    let older = Lsn::from_u64(0x20_0000_0000_0000);
    assert_eq!(
        store
            .record(key, older, std::time::Duration::from_secs(1))
            .unwrap(),
        legacy
    );
    let ty: String = redis::cmd("TYPE").arg(&rkey).query(&mut c).unwrap();
    assert_eq!(ty, "hash");
    let pttl: i64 = redis::cmd("PTTL").arg(&rkey).query(&mut c).unwrap();
    assert!(pttl > 500_000, "the converted entry kept its life: {pttl}");

    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut c).unwrap();
    let server_ms = secs * 1000 + micros / 1000;
    for (until, forced) in [(server_ms + 600_000, true), (server_ms - 1000, false)] {
        let _: () = redis::cmd("HSET")
            .arg(&rkey)
            .arg("forced_until")
            .arg(until)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            store.get(key).unwrap().forced,
            forced,
            "forced_until {until}"
        );
        assert_eq!(store.get(key).unwrap().lsn, Some(legacy));
    }
    store
        .force(key, std::time::Duration::from_secs(60))
        .unwrap();
    let until: i64 = redis::cmd("HGET")
        .arg(&rkey)
        .arg("forced_until")
        .query(&mut c)
        .unwrap();
    assert!(
        (server_ms + 59_000..server_ms + 600_000).contains(&until),
        "forced_until {until} is the server's now + 60 s"
    );
    // Something else at the key: reading it is an error, recording replaces it.
    let _: () = redis::cmd("DEL").arg(&rkey).query(&mut c).unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&rkey)
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert!(matches!(store.get(key), Err(Error::Store { .. })));
    assert_eq!(
        store
            .record(key, older, std::time::Duration::from_secs(60))
            .unwrap(),
        older
    );
    assert_eq!(store.get(key).unwrap().lsn, Some(older));
}

#[test]
fn standalone_stored_layout() {
    stored_layout(Kind::Standalone);
}

#[test]
fn cluster_stored_layout() {
    stored_layout(Kind::Cluster);
}

/// Per-call options: "cached only" never asks a store that may block (the read goes to the
/// primary, and no store error is counted), and a budget leaves a working store's answer as
/// it is.
#[test]
fn cached_only_picks_never_ask_redis() {
    let _l = lock_cluster();
    let lb = balancer(&store_config(Kind::Standalone, "cached-only"));
    let key = "repo/cached-only";
    lb.record_lsn(key).unwrap();
    let store_errors = |lb: &Balancer| {
        lb.metrics_text()
            .lines()
            .find(|l| l.starts_with("dlb_store_errors_total "))
            .map(str::to_string)
    };
    let before = store_errors(&lb);
    let route = lb
        .pick_replica_with(Some(key), &PickOptions::default().cached_only(true))
        .unwrap();
    assert_eq!(
        (route.role(), route.reason()),
        (Role::Primary, Reason::StoreError)
    );
    assert_eq!(store_errors(&lb), before, "the store was not asked");
    let opts = PickOptions::default().budget(std::time::Duration::from_secs(5));
    wait_until("a replica has replayed the key's write", WAIT, || {
        lb.pick_replica_with(Some(key), &opts).unwrap().role() == Role::Replica
    });
}
