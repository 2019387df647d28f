//! Chaos soak: read-your-writes under random faults, against the real test environment
//! (`scripts/testenv.sh`). Zero stale reads is the pass condition.
//!
//! Three balancers run side by side, each with its own workers:
//! * `memory`: the embedded store, replicas listed directly;
//! * `redis`: the standalone Redis store, replica 2 behind a TCP proxy (which delays or stalls);
//! * `cluster`: the Redis Cluster store, replicas found through DNS SRV (a real dnsmasq).
//!
//! Every worker loops: INSERT a row on the primary (`write_conn`), `record_lsn(key)` (the
//! returned LSN is the causal token), then reads the row back through `read_conn(Some(key))`,
//! through the DSN `pick_replica(Some(key))` hands out, and through the DSN of
//! `pick_replica_min_lsn(token)`. A row not found is a **stale read**. A failed write or
//! record skips the reads (an `Error::Store` that carries the LSN still reads through
//! `pick_replica_min_lsn` with it, as the README tells callers to); errors are counted by class.
//!
//! Meanwhile a fault injector applies one fault at a time at random (seeded) intervals: replay
//! pause, immediate kill and fast stop of a replica (then restart), SIGSTOP/SIGCONT of a
//! replica's postmaster and backends, `pg_terminate_backend` of dlb's connections, write bursts
//! past the lag thresholds, a slow proxy, a proxy that stops forwarding (sockets open), a
//! Redis outage, DNS record churn and a primary restart. After the chaos phase it measures how
//! long each balancer takes to have every replica healthy again, stops the workers and prints
//! the report.
//!
//! Run it under the cluster lock (`make soak DURATION=3600`, or as `scripts/test.sh` does):
//!
//! ```sh
//! eval "$(bash scripts/testenv.sh env)"
//! flock -o /tmp/dlb-tests.lock cargo run -p dlb-soak -- --seconds 60 [--seed N] [--workers N]
//! ```
//!
//! SIGINT or SIGTERM ends the chaos early; the soak then restores the environment and reports.
//!
//! Exit status: 0 when every read was fresh, the balancers recovered and the environment was
//! restored; 1 on a stale read, a hang or no recovery; 2 when the environment cannot be
//! restored (replicas running and replaying, Redis up); 3 on a panic of the soak itself.
//!
//! A test tool of its own (workspace member `dlb-soak`), not an example of the API: a
//! long-running program with its own arguments and report, built and linted by the test
//! command, run by `scripts/soak.sh`.

#[path = "../../common/mod.rs"]
mod common;

mod args;
mod chaos;
mod run;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::dnsmasq::Dnsmasq;
use common::proxy::Proxy;
use common::{env, replica_addr, replica_dsn, run_testenv};
use dlb::{Balancer, Config, DnsConfig, Error, LsnStoreConfig, RedisStoreConfig, Route};

/// The `application_name` of dlb's connections (the target of the backend cuts).
const APP: &str = "dlb-soak";
/// A worker that has not finished a step for this long is reported as hung.
const HANG: Duration = Duration::from_secs(30);
/// How long the balancers get to have every replica healthy after the last fault.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);
const TABLE: &str = "dlb_soak";
const FILLER: &str = "dlb_soak_filler";
/// Set by SIGINT/SIGTERM: the chaos ends early, and the soak still restores and reports.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub(crate) use crate::args::*;
pub(crate) use crate::chaos::*;
pub(crate) use crate::run::*;
pub(crate) use crate::workers::*;

/// Marks every descriptor inherited above stderr close-on-exec, so that nothing this soak
/// starts inherits one: under `flock /tmp/dlb-tests.lock soak` (without `-o`), a primary or a
/// Redis restarted through testenv.sh would otherwise hold the cluster lock for as long as it
/// runs, and every other suite on the machine would wait for it.
fn close_inherited_fds_on_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on our own descriptors (one may be the directory's, gone).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn main() {
    close_inherited_fds_on_exec();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(64);
        }
    };
    let guard = RestoreGuard;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&args)));
    drop(guard);
    let restored = restore_env();
    if let Err(e) = &restored {
        eprintln!("soak: the environment could not be restored: {e}");
    }
    let code = match outcome {
        Err(_) => {
            eprintln!("soak: panicked (seed {})", args.seed);
            3
        }
        Ok(Err(e)) => {
            eprintln!("soak: {e} (seed {})", args.seed);
            1
        }
        Ok(Ok(_)) if restored.is_err() => 2,
        Ok(Ok(true)) => {
            println!(
                "\nsoak: PASS (seed {}): no stale read, no hang, full rotation restored",
                args.seed
            );
            0
        }
        Ok(Ok(false)) => {
            println!(
                "\nsoak: FAIL (seed {}): see the stale reads, hangs or recovery above",
                args.seed
            );
            1
        }
    };
    std::process::exit(code);
}
