//! Hosts that stop answering without closing anything, on real servers:
//! * a proxy that stops forwarding ([`Proxy::set_stalled`]): the kernel still acknowledges
//!   every segment, so TCP never gives up and only dlb's own deadlines help;
//! * a true black hole on loopback (an iptables rule drops every packet to a proxy's port):
//!   TCP's `tcp_user_timeout` and keepalives free the connections. Skipped, with a message,
//!   where iptables cannot be used (not root).
//!
//! Every wait is bounded polling on the balancer's status and metrics, with small configured
//! timeouts so that each test takes seconds.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::proxy::Proxy;
use common::*;
use dlb::{Balancer, ConnectivityConfig, Lsn, Role};

/// A balancer over `primary` with the replica behind `proxy` and replica 2, small timeouts and
/// a short backoff between probes of a quarantined replica (probed again often); both replicas
/// healthy.
fn balancer(primary: &str, proxy: &Proxy) -> Balancer {
    let mut retry = ConnectivityConfig::default();
    retry.backoff_initial_ms = 100;
    retry.backoff_max_ms = 200;
    let lb = Balancer::new(
        config_for(primary, &[&proxy.addr, replica_addr(2)])
            .probe_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(500))
            .connectivity(retry)
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    lb
}

/// Parses a status LSN.
fn lsn(s: Option<String>) -> Option<Lsn> {
    s.and_then(|s| s.parse().ok())
}

/// The other replica keeps being checked (its position follows the primary's), and picks keep
/// answering, never with the replica at `dead`.
fn others_keep_serving(lb: &Balancer, dead: &str, key: &str) {
    let checks = lb.status().checks;
    for _ in 0..3 {
        generate_wal(16);
        let written = lb.record_lsn(key).unwrap();
        wait_until("replica 2's replay position is updated", WAIT, || {
            lsn(replica_status(lb, replica_addr(2)).replay_lsn) >= Some(written)
        });
        let route = lb.pick_replica(Some(key)).unwrap();
        assert_ne!(route.addr(), dead, "{route:?}");
        let route = lb.pick_replica(None).unwrap();
        assert_eq!(
            (route.role(), route.addr()),
            (Role::Replica, replica_addr(2))
        );
    }
    wait_until("the monitor keeps checking", WAIT, || {
        lb.status().checks >= checks + 5
    });
    assert!(lb.status().last_check_age_ms.is_some());
}

/// Drops the balancer and waits until none of its threads is left (monitor, probes, reaper).
fn drop_and_wait_for_threads(lb: Balancer) {
    drop(lb);
    wait_until("every dlb monitor and probe thread returns", WAIT, || {
        threads_named("dlb-monitor") + threads_named("dlb-probe") + threads_named("dlb-reaper") == 0
    });
}

/// A replica behind a proxy that stops forwarding: quarantined, probed again on new
/// connections (the stalled one is abandoned at the probe deadline), while the other replica
/// stays in rotation and keeps being checked; dropping the balancer leaves no thread behind.
/// Before probes had deadlines of their own, the probe blocked for as long as the stall lasted
/// (no new connection, a `dlb-probe` thread left after the drop).
#[test]
fn a_replica_behind_a_stalled_proxy_is_quarantined_and_holds_no_thread() {
    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let lb = balancer(&env().primary, &proxy);
    proxy.set_stalled(true);
    wait_until("the stalled replica is quarantined", WAIT, || {
        replica_status(&lb, &proxy.addr).state == "quarantined"
    });
    let r = replica_status(&lb, &proxy.addr);
    assert!(matches!(r.reason, Some("timeout" | "unreachable")), "{r:?}");
    let accepted = proxy.accepted();
    wait_until(
        "the monitor gives up stalled connections and connects anew",
        WAIT,
        || proxy.accepted() >= accepted + 2,
    );
    others_keep_serving(&lb, &proxy.addr, "stalled");
    assert_eq!(replica_status(&lb, &proxy.addr).state, "quarantined");
    drop_and_wait_for_threads(lb);
}

/// Both replicas behind stalled proxies from the start, each pool keeping one idle connection:
/// the replica pools' background connects hang in the startup exchange (the TCP connect
/// succeeds, nothing answers). The primary's pool has a scheduler of its own, so writes still
/// get new connections. Before, one two-thread scheduler served every pool: the two hung
/// connects held both threads and the primary's pool could open no connection at all.
#[test]
fn stalled_replicas_do_not_starve_the_primary_pool() {
    let _l = lock_cluster();
    let (p1, p2) = (Proxy::start(replica_addr(1)), Proxy::start(replica_addr(2)));
    p1.set_stalled(true);
    p2.set_stalled(true);
    let lb = Balancer::new(
        config_for(&env().primary, &[&p1.addr, &p2.addr])
            .probe_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(500))
            .pool_min_idle(1)
            .checkout_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .unwrap();
    // Each replica pool's first connect is accepted by its proxy, and hangs there.
    wait_until("both replica pools are connecting", WAIT, || {
        p1.accepted() >= 1 && p2.accepted() >= 1
    });
    // More connections than the primary's pool keeps idle: new ones must be opened.
    let conns: Vec<_> = (0..3)
        .map(|i| {
            let mut c = lb
                .write_conn()
                .unwrap_or_else(|e| panic!("write connection {i}: {e}"));
            c.simple_query("SELECT 1").unwrap();
            c
        })
        .collect();
    drop(conns);
    drop(lb);
}

/// An iptables rule that drops every TCP packet to a loopback port; removed when dropped (a
/// failing test's unwinding included).
struct BlackHole {
    port: String,
}

impl BlackHole {
    /// Installs the rule for `port`; `Err` with the reason when iptables cannot be used.
    fn install(port: &str) -> Result<BlackHole, String> {
        common::black_hole::rule("-I", port)?;
        Ok(BlackHole {
            port: port.to_string(),
        })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        if let Err(e) = common::black_hole::rule("-D", &self.port) {
            eprintln!(
                "warning: cannot remove the iptables rule for port {}: {e}",
                self.port
            );
        }
    }
}

/// [`BlackHole::install`], or `None` after saying why the test is skipped.
fn black_hole(port: &str) -> Option<BlackHole> {
    match BlackHole::install(port) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("skipped: iptables cannot be used here ({e}); run the tests as root");
            None
        }
    }
}

/// The port of a `host:port`.
fn port_of(addr: &str) -> String {
    addr.rsplit_once(':').unwrap().1.to_string()
}

/// A replica whose packets are dropped: a pooled connection in use gives up after the DSN's
/// `tcp_user_timeout` (1 s here) instead of the kernel's retransmission timeout (~15 min), the
/// replica is quarantined while the other keeps serving, no dlb thread is left behind, and
/// the replica is back once the packets flow again.
#[test]
fn a_black_holed_replica_frees_dlb_connections_and_threads() {
    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let port = port_of(&proxy.addr);
    let primary = format!(
        "{} tcp_user_timeout=1000 keepalives_idle=1 keepalives_interval=1 keepalives_count=2",
        env().primary
    );
    let lb = balancer(&primary, &proxy);
    // A pooled connection to the replica behind the proxy, checked out.
    let mut conn = loop {
        let c = lb.read_conn(None).unwrap();
        if c.route().addr() == proxy.addr {
            break c;
        }
    };
    conn.simple_query("SELECT 1").unwrap();
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let query = std::thread::spawn(move || {
        let r = conn.simple_query("SELECT 1").map(|_| ());
        let _ = tx.send(r.map_err(|e| e.to_string()));
        conn // returned to the pool on the test's thread, not here
    });
    let r = rx
        .recv_timeout(WAIT)
        .expect("a query on a black-holed connection returns");
    assert!(r.is_err(), "{r:?}");
    drop(query.join().unwrap());
    wait_until("the black-holed replica is quarantined", WAIT, || {
        replica_status(&lb, &proxy.addr).state == "quarantined"
    });
    others_keep_serving(&lb, &proxy.addr, "blackhole");
    drop(hole);
    wait_healthy(&lb, 2);
    drop_and_wait_for_threads(lb);
}

/// The balancer is dropped while its monitor is connecting to a black-holed replica (every
/// packet to it dropped from the start, so each probe is a connect that can only time out,
/// here after 10 s): the drop returns within the promised bound, one `probe_timeout_ms`, and
/// leaves the connect to end on its own thread. Before, the drop waited for the probe thread
/// to let go of the host: the whole 2 s the monitor gives old snapshots, or the connect's end.
#[test]
fn dropping_the_balancer_does_not_wait_for_a_connect_to_a_black_holed_replica() {
    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let port = port_of(&proxy.addr);
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let probe_timeout = Duration::from_secs(1);
    let lb = Balancer::new(
        config_for(&env().primary, &[&proxy.addr, replica_addr(2)])
            .probe_timeout(probe_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_until("the black-holed replica is quarantined", WAIT, || {
        replica_status(&lb, &proxy.addr).state == "quarantined"
    });
    assert_eq!(
        replica_status(&lb, replica_addr(2)).state,
        "healthy",
        "the other replica is not delayed by the dead one's probes"
    );
    // Its probe is connecting (a SYN that is never answered) for about 9 s more.
    assert!(threads_named("dlb-probe") >= 1);
    let start = std::time::Instant::now();
    drop(lb);
    let took = start.elapsed();
    assert!(
        took < probe_timeout,
        "dropping the balancer took {took:?}, more than one probe_timeout_ms ({probe_timeout:?})"
    );
    drop(hole);
    wait_until("the abandoned probe thread ends", WAIT, || {
        threads_named("dlb-probe") + threads_named("dlb-monitor") + threads_named("dlb-reaper") == 0
    });
}

/// The primary black-holed under a running balancer (its pooled connections and monitoring
/// connection established, every packet to it dropped from then on), with default timeouts:
/// `record_lsn` and writes fail with a clear primary error within the documented bound
/// (`pool.checkout_timeout_ms`) instead of waiting for TCP to give up; keyless reads keep
/// going to the replicas; keyed reads, which cannot be proven fresh while the primary's
/// timeline is unknown, fail the same bounded way rather than reading a replica; once the
/// packets flow again, records and keyed replica reads come back.
#[test]
fn a_black_holed_primary_fails_records_within_the_checkout_timeout() {
    let _l = lock_cluster();
    let proxy = Proxy::start(&primary_addr());
    let port = port_of(&proxy.addr);
    let lb = Balancer::new(
        config_for(
            &dsn_at(&env().primary, &proxy.addr),
            &[replica_addr(1), replica_addr(2)],
        )
        .build()
        .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    let key = "blackhole/primary";
    lb.record_lsn(key).unwrap();
    drop(lb.write_conn().unwrap()); // an idle pooled connection to the primary
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let bound = Duration::from_millis(dlb::PoolConfig::DEFAULT_CHECKOUT_TIMEOUT_MS);
    for i in 0..3 {
        let start = std::time::Instant::now();
        let r = lb.record_lsn(key);
        let took = start.elapsed();
        match &r {
            Err(dlb::Error::PrimaryUnavailable { message, .. }) => assert!(
                message.to_lowercase().contains("timed out"),
                "the cause is named: {message}"
            ),
            other => panic!("record {i}: expected the primary unavailable, got {other:?}"),
        }
        // Before, the first record waited for the kernel to give up on the pooled
        // connection (10 s of tcp_user_timeout here; about 15 minutes without one).
        assert!(took < 2 * bound, "record_lsn took {took:?}");
    }
    for _ in 0..5 {
        let route = lb.pick_replica(None).unwrap();
        assert_eq!(route.role(), Role::Replica, "{route:?}");
        let mut c = lb.read_conn(None).unwrap();
        c.simple_query("SELECT 1").unwrap();
    }
    drop(hole);
    wait_until("records work again", WAIT, || lb.record_lsn(key).is_ok());
    wait_until("keyed reads go to a replica again", WAIT, || {
        lb.pick_replica(Some(key)).unwrap().role() == Role::Replica
    });
    drop_and_wait_for_threads(lb);
}

/// `host:port` of the test primary, from its DSN.
fn primary_addr() -> String {
    let value = |k: &str| {
        env()
            .primary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in the primary's DSN"))
            .to_string()
    };
    format!("{}:{}", value("host="), value("port="))
}

/// The Redis LSN store black-holed under a running balancer, default timeouts (pick budget
/// `sticky_check_budget_ms` 100 ms, `op_timeout_ms` 500 ms): each keyed pick gives up on the
/// store by its budget and goes to the primary (`store_error`, never a replica it cannot
/// prove fresh); keyless reads are untouched; `record_lsn` fails by the op timeout with the
/// LSN it read; the monitor keeps checking and both replicas stay in; once the packets flow
/// again, sticking works as before.
#[test]
fn a_black_holed_redis_costs_keyed_picks_their_budget_only() {
    let _l = lock_cluster();
    let redis = env().redis.trim_start_matches("redis://").to_string();
    let proxy = Proxy::start(&redis);
    let port = port_of(&proxy.addr);
    let mut store = dlb::RedisStoreConfig::standalone(format!("redis://{}", proxy.addr));
    store.key_prefix = format!("dlb:test:blackhole:{}:", std::process::id());
    let op_timeout = Duration::from_millis(store.op_timeout_ms);
    let lb = Balancer::new(
        config()
            .lsn_store(dlb::LsnStoreConfig::Redis(store))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    let key = "blackhole/redis";
    lb.record_lsn(key).unwrap();
    wait_until("the key's reads go to a replica", WAIT, || {
        lb.pick_replica(Some(key)).unwrap().role() == Role::Replica
    });
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let checks = lb.status().checks;
    for _ in 0..10 {
        let start = std::time::Instant::now();
        let route = lb.pick_replica(Some(key)).unwrap();
        let took = start.elapsed();
        assert_eq!(
            (route.role(), route.reason()),
            (Role::Primary, dlb::Reason::StoreError)
        );
        assert!(
            took < op_timeout,
            "a keyed pick took {took:?}: more than its budget allows"
        );
        assert_eq!(lb.pick_replica(None).unwrap().role(), Role::Replica);
    }
    let mut c = lb.read_conn(Some(key)).unwrap();
    assert_eq!(c.route().role(), Role::Primary);
    c.simple_query("SELECT 1").unwrap();
    drop(c);
    let start = std::time::Instant::now();
    let e = lb.record_lsn(key).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, dlb::Error::Store { .. }), "{e:?}");
    assert!(
        e.lsn().is_some(),
        "the failed record carries its LSN: {e:?}"
    );
    assert!(took < 2 * op_timeout, "record_lsn took {took:?}");
    wait_until("the monitor keeps checking", WAIT, || {
        lb.status().checks >= checks + 3
    });
    for r in [replica_addr(1), replica_addr(2)] {
        assert_eq!(replica_status(&lb, r).state, "healthy", "{r}");
    }
    drop(hole);
    wait_until("records work again", WAIT, || lb.record_lsn(key).is_ok());
    wait_until("the key's reads go to a replica again", WAIT, || {
        lb.pick_replica(Some(key)).unwrap().role() == Role::Replica
    });
    drop_and_wait_for_threads(lb);
}

/// `dlb_dns_errors_total`: DNS refreshes that failed or came back empty.
fn dns_errors(lb: &Balancer) -> u64 {
    lb.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("dlb_dns_errors_total "))
        .and_then(|v| v.parse().ok())
        .expect("dlb_dns_errors_total is exported")
}

/// A balancer discovering both replicas by SRV through `dns` (lookups time out after 300 ms,
/// refreshed every 200 ms, checks every 100 ms), made on a thread: panics if `Balancer::new`
/// has not returned within [`WAIT`].
fn dns_balancer(dns: &common::dnsmasq::Dnsmasq) -> Balancer {
    let mut d = dlb::DnsConfig::new("replica.pg.test", "127.0.0.1", dns.port);
    d.timeout_ms = 300;
    d.refresh_interval_ms = 200;
    let config = dlb::Config::builder(env().primary.clone())
        .replica_dns(d)
        .replica_check_interval(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Balancer::new(config));
    });
    rx.recv_timeout(WAIT)
        .expect("Balancer::new returns while the DNS server is silent")
        .unwrap()
}

/// The DNS server of discovery black-holed (UDP and TCP to its port dropped: every lookup
/// times out rather than being refused). Started that way, a balancer still starts (its first
/// lookup bounded by `timeout_ms`), routes to the primary, and finds the replicas once the
/// server answers. Black-holed under a running balancer, the last good list is kept: both
/// replicas keep serving, every refresh fails within its deadline and is counted, and the
/// monitor keeps checking the hosts meanwhile.
#[test]
fn a_black_holed_dns_server_keeps_the_last_list_and_holds_no_round() {
    let _l = lock_cluster();
    let records: Vec<String> = std::iter::once("host-record=pg.test,127.0.0.1".to_string())
        .chain((1..=2).map(|n| {
            format!(
                "srv-host=replica.pg.test,pg.test,{}",
                port_of(replica_addr(n))
            )
        }))
        .collect();
    let dns = common::dnsmasq::Dnsmasq::start(&records);
    let port = dns.port.to_string();

    // Dark from the start.
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let lb = dns_balancer(&dns);
    assert!(lb.status().replicas.is_empty());
    assert_eq!(lb.pick_replica(None).unwrap().role(), Role::Primary);
    wait_until("failed lookups are counted", WAIT, || dns_errors(&lb) >= 2);
    drop(hole);
    wait_healthy(&lb, 2);

    // Dark under a running balancer.
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let (errors, checks) = (dns_errors(&lb), lb.status().checks);
    wait_until("several lookups time out", WAIT, || {
        dns_errors(&lb) >= errors + 3
    });
    assert!(
        lb.status().checks >= checks + 3,
        "the monitor kept checking while lookups timed out"
    );
    assert_eq!(lb.status().healthy_replicas, 2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let route = lb.pick_replica(None).unwrap();
        assert_eq!(route.role(), Role::Replica, "{route:?}");
        seen.insert(route.addr().to_string());
    }
    assert_eq!(seen.len(), 2, "both replicas keep serving: {seen:?}");
    drop(hole);
    drop_and_wait_for_threads(lb);
}

/// The C ABI, called as a C program would (`dlb::ffi`), with a replica black-holed under
/// traffic (keyless and keyed picks, records, from two threads): once the replica is
/// quarantined no pick returns it, keyed picks return within their budget, and
/// `lb_balancer_free` called while the monitor connects to the dead host returns within one
/// `probe_timeout_ms` (old code: 2 s).
#[test]
fn c_abi_picks_leave_a_black_holed_replica_and_free_returns_promptly() {
    use dlb::ffi::*;
    use std::ffi::{CStr, CString, c_char};

    /// `lb_pick_replica`'s DSN, turned into its `host:port` with `lb_dsn_address`.
    fn pick(lb: *const lb_balancer, key: Option<&CStr>) -> (u32, String) {
        let mut dsn = [0 as c_char; 1024];
        let mut addr = [0 as c_char; 300];
        let (mut n, mut route) = (0usize, lb_route { role: 0, reason: 0 });
        // SAFETY: a live balancer, NUL-terminated key, buffers of the given sizes.
        unsafe {
            let k = key.map_or(std::ptr::null(), CStr::as_ptr);
            assert_eq!(
                lb_pick_replica(lb, k, dsn.as_mut_ptr(), dsn.len(), &mut n, &mut route),
                LB_OK
            );
            assert_eq!(
                lb_dsn_address(dsn.as_ptr(), addr.as_mut_ptr(), addr.len(), &mut n),
                LB_OK
            );
            (
                route.role,
                CStr::from_ptr(addr.as_ptr()).to_string_lossy().into_owned(),
            )
        }
    }

    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let port = port_of(&proxy.addr);
    let config = serde_json::json!({
        "primary": env().primary,
        "replicas": {"hosts": [proxy.addr, replica_addr(2)]},
        "probe_timeout_ms": 1000,
        "pool": {"connect_timeout_ms": 10000},
        "connectivity": {"backoff_initial_ms": 100, "backoff_max_ms": 200},
    });
    let config = CString::new(config.to_string()).unwrap();
    let mut lb: *mut lb_balancer = std::ptr::null_mut();
    // SAFETY: a NUL-terminated configuration and a place for the handle.
    assert_eq!(unsafe { lb_balancer_new(config.as_ptr(), &mut lb) }, LB_OK);
    struct Handle(*mut lb_balancer);
    // SAFETY: the C ABI's balancer may be used from any thread.
    unsafe impl Send for Handle {}
    unsafe impl Sync for Handle {}
    let handle = std::sync::Arc::new(Handle(lb));
    let lb = lb as *const lb_balancer;
    wait_until("both replicas serve", WAIT, || {
        (0..20)
            .map(|_| pick(lb, None).1)
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 2
    });
    let Some(hole) = black_hole(&port) else {
        // SAFETY: the handle from lb_balancer_new, freed once.
        unsafe { lb_balancer_free(handle.0) };
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let key = CString::new("blackhole/c").unwrap();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (handle, stop, key) = (handle.clone(), stop.clone(), key.clone());
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let lb = handle.0 as *const lb_balancer;
                    if i == 1 {
                        let mut buf = [0 as c_char; 64];
                        let mut n = 0usize;
                        // SAFETY: as above.
                        let st = unsafe {
                            lb_record_lsn(lb, key.as_ptr(), buf.as_mut_ptr(), buf.len(), &mut n)
                        };
                        assert_eq!(st, LB_OK);
                        let start = std::time::Instant::now();
                        pick(lb, Some(&key));
                        slowest = slowest.max(start.elapsed());
                    } else {
                        pick(lb, None);
                    }
                }
                slowest
            })
        })
        .collect();
    wait_until("the black-holed replica is quarantined", WAIT, || {
        replica_status_c(lb, &proxy.addr) == "quarantined"
    });
    for _ in 0..200 {
        let (role, addr) = pick(lb, None);
        assert_eq!((role, addr.as_str()), (LB_ROLE_REPLICA, replica_addr(2)));
        assert_ne!(pick(lb, Some(&key)).1, proxy.addr);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let slowest = w.join().unwrap();
        // The default budget (sticky_check_budget_ms, 100 ms) plus scheduling, far below the
        // dead replica's 10 s connect timeout or its 1 s probe timeout.
        assert!(
            slowest < Duration::from_millis(1000),
            "a keyed pick took {slowest:?}"
        );
    }
    let start = std::time::Instant::now();
    // SAFETY: the handle from lb_balancer_new, freed once, no call running on it.
    unsafe { lb_balancer_free(std::sync::Arc::into_inner(handle).unwrap().0) };
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "lb_balancer_free took {took:?}"
    );
    drop(hole);
    wait_until("the abandoned probe thread ends", WAIT, || {
        threads_named("dlb-probe") + threads_named("dlb-monitor") == 0
    });
}

/// The state of the replica at `addr` in `lb_status_json`.
fn replica_status_c(lb: *const dlb::ffi::lb_balancer, addr: &str) -> String {
    let mut buf = vec![0 as std::ffi::c_char; 1 << 16];
    let mut n = 0usize;
    // SAFETY: a live balancer and a buffer of the given size.
    let st = unsafe { dlb::ffi::lb_status_json(lb, buf.as_mut_ptr(), buf.len(), &mut n) };
    assert_eq!(st, dlb::ffi::LB_OK);
    // SAFETY: lb_status_json wrote a NUL-terminated text.
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"]["addr"] == addr || r["addr"] == addr)
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A replica black-holed from the start (its pool's background connects each wait for the
/// 10 s connect timeout) beside a healthy one, each pool keeping two idle connections: the
/// healthy replica's pool still opens connections and serves `read_conn`, and is never
/// reported. Before, every replica pool shared one two-thread scheduler: the dead pool's two
/// connects held both threads, the healthy pool could connect to nothing within the 3 s
/// checkout, and the healthy replica was reported and its reads sent to the primary.
#[test]
fn a_black_holed_replica_does_not_keep_another_replica_from_connecting() {
    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let port = port_of(&proxy.addr);
    let Some(hole) = black_hole(&port) else {
        return;
    };
    let lb = Balancer::new(
        config_for(&env().primary, &[&proxy.addr, replica_addr(2)])
            .pool_min_idle(2)
            .connect_timeout(Duration::from_secs(10))
            .checkout_timeout(Duration::from_secs(3))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_until("the healthy replica serves", WAIT, || {
        replica_status(&lb, replica_addr(2)).state == "healthy"
    });
    for _ in 0..3 {
        let mut c = lb.read_conn(None).unwrap();
        assert_eq!(
            (c.route().role(), c.route().addr()),
            (Role::Replica, replica_addr(2)),
            "{:?}",
            c.route()
        );
        c.simple_query("SELECT 1").unwrap();
    }
    assert!(
        lb.metrics_text()
            .lines()
            .any(|l| l == "dlb_reported_failures_total 0"),
        "the healthy replica was never reported"
    );
    drop(hole);
    drop(lb);
}
