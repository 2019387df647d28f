//! The cost of TLS on dlb's connections, against plain TCP in the same run: `read_conn` plus
//! `SELECT 1` on pooled connections (the steady state: the handshake is paid once per pooled
//! connection), and a new balancer's first connection (where the handshake is paid).
//!
//! Plain: the main cluster's primary (ssl=off), `sslmode=disable`. TLS: the TLS-only
//! cluster's primary (same PostgreSQL binaries, on loopback), `sslmode=verify-full` with the
//! test CA. No replicas: every read goes to the primary. Rounds alternate plain and TLS; the
//! table gives medians. Markdown on stdout (a section of BENCHMARKS.md).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dlb::{Balancer, Config};

const READ_SECS: f64 = 2.0;
const CONNECTS: usize = 20;
const ROUNDS: usize = 3;

fn balancer(dsn: &str, pool: u32) -> Balancer {
    let cfg = Config::builder(dsn.to_string())
        .pool_max_size(pool)
        .build()
        .expect("bench config");
    Balancer::new(cfg).expect("balancer")
}

/// `read_conn` + `SELECT 1` per second with `threads` threads for `secs`.
fn reads_per_sec(lb: &Balancer, threads: usize, secs: f64) -> f64 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < end {
                        let mut c = lb.read_conn(None).expect("read_conn");
                        c.simple_query("SELECT 1").expect("query");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Median time of a new balancer's first connection (pool and monitor setup included, the
/// same on both sides).
fn first_connection(dsn: &str, n: usize) -> Duration {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let lb = balancer(dsn, 1);
        drop(lb.write_conn().expect("write_conn"));
        v.push(t.elapsed().as_secs_f64());
        drop(lb);
    }
    Duration::from_secs_f64(median(&v))
}

fn main() {
    let quick = quick();
    let (secs, connects) = if quick {
        (0.3, 3)
    } else {
        (READ_SECS, CONNECTS)
    };
    let env = env();
    let tls = env
        .tls
        .as_ref()
        .expect("DLB_TEST_TLS_PRIMARY not set (scripts/testenv.sh env)");
    let plain_dsn = format!("{} sslmode=disable", env.primary);
    let tls_dsn = format!("{} sslmode=verify-full sslrootcert={}", tls.primary, tls.ca);
    let _lock = lock_cluster();
    eprintln!(
        "tls bench: {ROUNDS} rounds; loadavg at start: {}",
        loadavg()
    );

    let threads = [1usize, 2];
    let mut rates: Vec<[Vec<f64>; 2]> = threads.iter().map(|_| [vec![], vec![]]).collect();
    let mut connect: [Vec<f64>; 2] = [vec![], vec![]];
    for round in 0..ROUNDS {
        for (side, dsn) in [&plain_dsn, &tls_dsn].into_iter().enumerate() {
            let lb = balancer(dsn, 4);
            reads_per_sec(&lb, 2, 0.2); // warm the pool
            for (i, &t) in threads.iter().enumerate() {
                rates[i][side].push(reads_per_sec(&lb, t, secs));
            }
            connect[side].push(first_connection(dsn, connects).as_secs_f64());
        }
        eprintln!("tls bench: round {} done", round + 1);
    }

    println!();
    println!(
        "`read_conn(None)` + `SELECT 1` on pooled connections to the primary (pool of 4; each \
         checkout also runs dlb's one-round-trip check), and a new balancer's first connection. \
         Plain: the main primary, `sslmode=disable`; TLS: the TLS-only primary, \
         `sslmode=verify-full` (rustls, ring). Medians of {ROUNDS} alternating rounds of \
         {secs} s each."
    );
    println!();
    println!("| what | plain | TLS | TLS / plain |");
    println!("|---|---:|---:|---:|");
    for (i, t) in threads.iter().enumerate() {
        let (p, s) = (median(&rates[i][0]), median(&rates[i][1]));
        println!(
            "| reads/s, {t} thread{} | {} | {} | {:.2} |",
            if *t == 1 { "" } else { "s" },
            fmt_rate(p),
            fmt_rate(s),
            s / p
        );
    }
    let (p, s) = (median(&connect[0]), median(&connect[1]));
    println!(
        "| first connection ({connects} per round) | {} | {} | {:.2} |",
        fmt_dur(Duration::from_secs_f64(p)),
        fmt_dur(Duration::from_secs_f64(s)),
        s / p
    );
}
