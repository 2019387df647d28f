//! The whole sticky decision without a server: a router over hand-built snapshots (hosts whose
//! pools never connect, cached positions set by hand), an in-memory store, and stores that
//! fail or report a loss. `Router::plan` does no I/O: a read that needs live checks comes back
//! as `Plan::Live` with its candidates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel;

use super::{Plan, Router, Snapshot};
use crate::config::{Config, NoCaughtUpPolicy};
use crate::counters::Counters;
use crate::dsn::Dsn;
use crate::error::{Error, Result};
use crate::labels::{Reason, Role};
use crate::lsn::{Lsn, Position};
use crate::routing::PickOptions;
use crate::server::host::{Host, StripedHost};
use crate::sticking::{LsnStore, MemoryStore, Recorded};

const SYSTEM: u64 = 0x5eed;
const TIMELINE: u32 = 2;

fn lsn(v: u64) -> Lsn {
    Lsn::from_u64(v)
}

/// A memory store that can be made to fail, or to report a loss.
#[derive(Default)]
struct TestStore {
    inner: MemoryStore,
    failing: AtomicBool,
    lost_at: parking_lot::Mutex<Option<Instant>>,
}

impl LsnStore for TestStore {
    fn record(&self, key: &str, lsn: Lsn, ttl: Duration) -> Result<Lsn> {
        self.inner.record(key, lsn, ttl)
    }
    fn force(&self, key: &str, ttl: Duration) -> Result<()> {
        self.inner.force(key, ttl)
    }
    fn get(&self, key: &str) -> Result<Recorded> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(Error::store("down"));
        }
        self.inner.get(key)
    }
    fn never_blocks(&self) -> bool {
        true
    }
    fn last_loss(&self) -> Option<Instant> {
        *self.lost_at.lock()
    }
    fn kind(&self) -> &'static str {
        "test"
    }
}

struct Fixture {
    router: Router,
    store: Arc<TestStore>,
    replicas: Vec<Arc<StripedHost>>,
}

fn host(cfg: &Config, role: Role, port: u16) -> Arc<Host> {
    // Port 1 on loopback: nothing listens; the pools never connect (min_idle 0, no checkout).
    let dsn = Dsn::parse(&format!("host=127.0.0.1 port={port} user=u"), "primary").unwrap();
    Arc::new(Host::new(role, &dsn, cfg).unwrap())
}

/// A router with `n` replicas, all healthy, the primary known on [`SYSTEM`]/[`TIMELINE`].
fn fixture(n: usize, budget_ms: u64) -> Fixture {
    let mut cfg = Config::new("host=127.0.0.1 port=1 user=u");
    cfg.pool.min_idle = 0;
    cfg.sticky_check_budget_ms = budget_ms;
    let primary = host(&cfg, Role::Primary, 1);
    let store = Arc::new(TestStore::default());
    let (wake, _rx) = channel::bounded(1);
    let router = Router::new(
        &cfg,
        primary,
        n > 0,
        Arc::new(Counters::new()),
        store.clone(),
        wake,
    );
    router.set_primary_system(SYSTEM);
    router.set_primary_timeline(TIMELINE);
    let replicas: Vec<Arc<StripedHost>> = (0..n)
        .map(|i| StripedHost::new(host(&cfg, Role::Replica, 2 + i as u16)))
        .collect();
    let snap = Snapshot {
        eligible: replicas.clone(),
        generation: 1,
        published_at: Some(Instant::now()),
        ..Snapshot::default()
    };
    router.publish(snap, Instant::now(), |_, _| ());
    Fixture {
        router,
        store,
        replicas,
    }
}

impl Fixture {
    /// Sets replica `i`'s cached position, as a probe of server `tag` would.
    fn cached(&self, i: usize, l: u64, timeline: u32) {
        self.replicas[i].host().set_replay_position(
            100 + i as u64,
            Position {
                lsn: lsn(l),
                timeline,
            },
        );
    }

    fn record(&self, key: &str, l: u64) {
        let stored = self.router.store_key(key);
        self.store
            .record(&stored, lsn(l), Duration::from_secs(60))
            .unwrap();
    }

    fn plan(&self, key: &str) -> Result<Plan> {
        self.router.plan(Some(key), &PickOptions::default(), None)
    }

    /// The route a plan decided, as (role, reason, replica index).
    fn decided(&self, key: &str) -> (Role, Reason, Option<usize>) {
        match self.plan(key).unwrap() {
            Plan::Route(r) => {
                let i = self
                    .replicas
                    .iter()
                    .position(|h| h.host().id == r.host_id());
                (r.role(), r.reason(), i)
            }
            Plan::Live { .. } => panic!("{key}: live checks, not a route"),
        }
    }
}

#[test]
fn a_cached_position_on_the_primary_timeline_proves_a_key() {
    let f = fixture(2, 100);
    f.record("k", 500);
    f.cached(0, 400, TIMELINE);
    f.cached(1, 600, TIMELINE);
    assert_eq!(
        f.decided("k"),
        (Role::Replica, Reason::CaughtUpCached, Some(1))
    );
}

#[test]
fn a_standby_ahead_on_another_timeline_proves_nothing() {
    let f = fixture(2, 0);
    f.record("k", 500);
    // Far ahead, but on the old timeline (left behind by a failover), or a newer one.
    f.cached(0, 1 << 40, TIMELINE - 1);
    f.cached(1, 1 << 40, TIMELINE + 1);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::NotCaughtUp, None));
}

#[test]
fn no_cached_proof_asks_for_live_checks_round_robin_first() {
    let f = fixture(2, 100);
    f.record("k", 500);
    f.cached(0, 100, TIMELINE);
    match f.plan("k").unwrap() {
        Plan::Live { req, candidates } => {
            assert_eq!((req.lsn, req.timeline), (lsn(500), TIMELINE));
            assert_eq!(candidates.len(), 2);
        }
        Plan::Route(r) => panic!("expected live checks, got {r}"),
    }
    // Without a budget (or cached only): the policy decides at once.
    let f = fixture(2, 0);
    f.record("k", 500);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::NotCaughtUp, None));
}

#[test]
fn an_unknown_primary_timeline_sends_recorded_keys_to_the_primary() {
    let f = fixture(2, 0);
    f.record("k", 500);
    f.cached(0, 600, TIMELINE);
    // A failed primary probe: a failover may be under way.
    f.router.set_primary_timeline(0);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::NotCaughtUp, None));
    // An old primary answering late never lowers the timeline.
    f.router.set_primary_timeline(TIMELINE);
    f.router.set_primary_timeline(TIMELINE - 1);
    assert_eq!(f.router.primary_timeline(), TIMELINE);
    assert_eq!(f.decided("k").1, Reason::CaughtUpCached);
    // A new timeline (a record on the promoted primary): the old positions prove nothing
    // (without a live-check budget: the primary at once).
    f.router.set_primary_timeline(TIMELINE + 1);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::NotCaughtUp, None));
}

#[test]
fn nothing_recorded_goes_round_robin_unless_the_store_lost_entries() {
    let f = fixture(2, 100);
    assert_eq!(f.decided("new").1, Reason::NoLsnRecorded);
    *f.store.lost_at.lock() = Some(Instant::now());
    assert_eq!(f.decided("new"), (Role::Primary, Reason::NotCaughtUp, None));
    // A key that still has its entry is decided by it.
    f.record("k", 500);
    f.cached(0, 600, TIMELINE);
    f.cached(1, 600, TIMELINE);
    assert_eq!(f.decided("k").1, Reason::CaughtUpCached);
    // Long ago (more than sticky_ttl_s): forgotten.
    *f.store.lost_at.lock() = Instant::now().checked_sub(Duration::from_secs(7200));
    assert_eq!(f.decided("new").1, Reason::NoLsnRecorded);
}

#[test]
fn a_cluster_change_sends_keys_with_nothing_recorded_to_the_primary() {
    let f = fixture(2, 100);
    f.router.set_primary_system(SYSTEM + 1);
    f.router.set_primary_timeline(1);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::NotCaughtUp, None));
}

#[test]
fn store_errors_and_forces_go_to_the_primary() {
    let f = fixture(2, 100);
    f.record("k", 500);
    f.cached(0, 600, TIMELINE);
    let stored = f.router.store_key("forced");
    f.store.force(&stored, Duration::from_secs(60)).unwrap();
    assert_eq!(
        f.decided("forced"),
        (Role::Primary, Reason::ForcedPrimary, None)
    );
    f.store.failing.store(true, Ordering::Relaxed);
    assert_eq!(f.decided("k"), (Role::Primary, Reason::StoreError, None));
}

#[test]
fn the_error_policy_and_no_replicas() {
    let f = fixture(2, 0);
    f.record("k", 500);
    let opts = PickOptions {
        no_caught_up: Some(NoCaughtUpPolicy::Error),
        ..PickOptions::default()
    };
    assert!(matches!(
        f.router.plan(Some("k"), &opts, None),
        Err(Error::NoCaughtUpReplica { .. })
    ));
    let f = fixture(0, 100);
    f.record("k", 500);
    assert_eq!(
        f.decided("k"),
        (Role::Primary, Reason::NoReplicasConfigured, None)
    );
}

#[test]
fn live_checks_of_a_pick_run_in_the_proof_loop_counted_and_timed_once() {
    // Nothing listens on the replicas' ports: each live checker answers nothing (its connect is
    // refused at once), no replica proves the key, the policy decides.
    let f = fixture(2, 5_000);
    f.record("k", 500);
    let route = f.router.pick(Some("k"), &PickOptions::default()).unwrap();
    assert_eq!(
        (route.role(), route.reason()),
        (Role::Primary, Reason::NotCaughtUp)
    );
    let counters = &f.router.counters;
    assert_eq!(
        counters.values().live_lsn_checks,
        2,
        "the round-robin candidate, then the other"
    );
    let (_, proofs, _) = counters.live_check_latency.read();
    assert_eq!(proofs, 1, "one observation for the whole proof");
}

#[test]
fn a_key_and_a_token_take_one_pick_that_proves_both() {
    use crate::lsn::CausalToken;
    let f = fixture(2, 0);
    // The key's record is old (both replicas have it); the token is newer (replica 0 only).
    f.record("k", 400);
    f.cached(0, 600, TIMELINE);
    f.cached(1, 450, TIMELINE);
    let token = |l| CausalToken {
        lsn: lsn(l),
        timeline: TIMELINE,
        system_id: SYSTEM,
    };
    let opts = PickOptions::default();
    let index = |r: &super::Route| f.replicas.iter().position(|h| h.host().id == r.host_id());
    for _ in 0..4 {
        // Whatever the round-robin cursor says: the key alone takes either replica.
        let r = f.router.pick_key_token("k", &token(500), &opts).unwrap();
        assert_eq!(
            (r.role(), r.reason(), index(&r)),
            (Role::Replica, Reason::CaughtUpCached, Some(0))
        );
    }
    // The key newer than the token: the key's record decides.
    f.record("k", 700);
    let r = f.router.pick_key_token("k", &token(500), &opts).unwrap();
    assert_eq!((r.role(), r.reason()), (Role::Primary, Reason::NotCaughtUp));
    // A forced key stays on the primary; a token of another cluster proves nothing.
    f.store
        .force(&f.router.store_key("k"), Duration::from_secs(60))
        .unwrap();
    let r = f.router.pick_key_token("k", &token(500), &opts).unwrap();
    assert_eq!(r.reason(), Reason::ForcedPrimary);
    let other = CausalToken {
        system_id: SYSTEM + 1,
        ..token(1)
    };
    let r = f.router.pick_key_token("fresh", &other, &opts).unwrap();
    assert_eq!((r.role(), r.reason()), (Role::Primary, Reason::NotCaughtUp));
}
