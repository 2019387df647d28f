//! Sticky picks with the Redis LSN store (standalone and a three-master Redis Cluster) against
//! the embedded in-process store, all measured in the same run on the same test cluster.
//!
//! For each store: a key whose LSN (`0/1`) every replica has replayed is recorded, then
//! `pick_replica(Some(key))` runs on one thread; every pick is timed on its own (`Instant`,
//! about 20 ns of overhead, included in every column alike). Rounds interleave the stores so
//! drift in machine load hits all of them. Reports picks/s (median over rounds), p50 and p99
//! latency over every pick of every round, and each store's ratio to the embedded store. Also
//! the latency of `record_lsn_value` (one Lua `EVALSHA` per call on Redis).
//!
//! With Redis every sticky pick is one `GET` round trip (the replica choice itself still comes
//! from the monitor's cache); picks without a key never touch Redis.
//!
//! Needs the test environment (`scripts/testenv.sh`: PostgreSQL, Redis and the Redis Cluster;
//! started when `DLB_TEST_PRIMARY` is unset). Holds the integration tests' cluster lock.
//!
//! Run: `cargo bench --bench redis_store`. `DLB_BENCH_QUICK=1` (and a run by `cargo test`) divides iteration counts by 10.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use dlb::{Balancer, Config, Lsn, LsnStoreConfig, Reason, RedisStoreConfig, Role};

/// Sticky picks per store and round.
const PICKS: usize = 20_000;
/// `record_lsn_value` calls per store and round.
const RECORDS: usize = 5_000;
const ROUNDS: usize = 5;
const KEY: &str = "bench:redis:steady";

struct Side {
    name: &'static str,
    lb: Balancer,
    rates: Vec<f64>,
    pick_ns: Vec<u64>,
    record_ns: Vec<u64>,
}

fn main() {
    let quick = quick();
    let div = if quick { 10 } else { 1 };
    let (picks, records) = (PICKS / div, RECORDS / div);

    let env = env();
    assert!(
        !env.redis.is_empty() && env.redis_cluster.len() == 3,
        "the bench needs DLB_TEST_REDIS and DLB_TEST_REDIS_CLUSTER (scripts/testenv.sh env)"
    );
    let _lock = lock_cluster();
    resume_replays();

    let prefix = format!("dlb:bench:{}:", std::process::id());
    let mut standalone = RedisStoreConfig::standalone(env.redis.clone());
    standalone.key_prefix = prefix.clone();
    let mut cluster = RedisStoreConfig::cluster(env.redis_cluster.clone());
    cluster.key_prefix = prefix;
    let stores = [
        ("embedded (memory)", LsnStoreConfig::default()),
        ("redis standalone", LsnStoreConfig::Redis(standalone)),
        ("redis cluster (3 masters)", LsnStoreConfig::Redis(cluster)),
    ];
    let mut sides: Vec<Side> = stores
        .into_iter()
        .map(|(name, store)| {
            let config = tolerant_probes(
                Config::builder(env.primary.clone()).replica_hosts(env.replicas.clone()),
            )
            .lsn_store(store)
            .build()
            .expect("bench config");
            let lb = Balancer::new(config).expect("balancer");
            wait_healthy(&lb, env.replicas.len());
            lb.record_lsn_value(KEY, Lsn::from_u64(1)).expect("record");
            // Warm-up: pooled Redis connections, the script cache, the pick path.
            for _ in 0..picks / 10 {
                black_box(lb.pick_replica(Some(KEY)).expect("pick"));
            }
            Side {
                name,
                lb,
                rates: vec![],
                pick_ns: Vec::with_capacity(picks * ROUNDS),
                record_ns: Vec::with_capacity(records * ROUNDS),
            }
        })
        .collect();

    eprintln!(
        "redis_store bench: {ROUNDS} rounds x {picks} sticky picks and {records} records per \
         store; loadavg at start: {}",
        loadavg()
    );
    for round in 0..ROUNDS {
        // Rotate the order each round.
        for i in 0..sides.len() {
            let side = &mut sides[(i + round) % 3];
            let before = picks_total(&side.lb, Reason::CaughtUpCached);
            let start = Instant::now();
            for _ in 0..picks {
                let t = Instant::now();
                let route = side.lb.pick_replica(black_box(Some(KEY))).expect("pick");
                side.pick_ns.push(t.elapsed().as_nanos() as u64);
                assert_eq!(route.role(), Role::Replica, "{}: {route}", side.name);
                black_box(route);
            }
            side.rates
                .push(picks as f64 / start.elapsed().as_secs_f64());
            assert_eq!(
                picks_total(&side.lb, Reason::CaughtUpCached) - before,
                picks as u64,
                "{}: every pick must come from the cache",
                side.name
            );
            for n in 0..records {
                let t = Instant::now();
                side.lb
                    .record_lsn_value(black_box("bench:redis:record"), Lsn::from_u64(n as u64))
                    .expect("record");
                side.record_ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        eprintln!(
            "round {round}: {}",
            sides
                .iter()
                .map(|s| format!("{} {} picks/s", s.name, fmt_rate(*s.rates.last().unwrap())))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let base = median(&sides[0].rates);
    println!("\n## Sticky picks by LSN store (cargo bench --bench redis_store)\n");
    println!(
        "| store | sticky picks/s (median of {ROUNDS}) | vs embedded | pick p50 | pick p99 | \
         record p50 | record p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in &mut sides {
        let rate = median(&s.rates);
        println!(
            "| {} | {} | {:.3}x | {} | {} | {} | {} |",
            s.name,
            fmt_rate(rate),
            rate / base,
            fmt_dur(percentile(&mut s.pick_ns, 50.0)),
            fmt_dur(percentile(&mut s.pick_ns, 99.0)),
            fmt_dur(percentile(&mut s.record_ns, 50.0)),
            fmt_dur(percentile(&mut s.record_ns, 99.0)),
        );
    }
    println!("\nloadavg at end: {}", loadavg());
}

/// The `p`th percentile (nearest rank) of `v`.
fn percentile(v: &mut [u64], p: f64) -> Duration {
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Duration::from_nanos(v[rank.clamp(1, v.len()) - 1])
}
