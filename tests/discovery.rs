//! DNS service discovery, draining and connectivity quarantine, against a real DNS server
//! (dnsmasq), the real replication cluster and a real delaying TCP proxy.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::hostile_dns::{self, HostileDns};
use common::proxy::Proxy;
use common::*;
use dlb::{
    Balancer, ConnectivityConfig, DnsConfig, DnsRecordType, HostEvent, HostEventKind, Reason, Role,
};

/// Captures dlb's log lines so tests can check what was logged.
struct Capture;
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "dlb" && m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            LINES
                .lock()
                .unwrap()
                .push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn logged(needle: &str) -> bool {
    LINES.lock().unwrap().iter().any(|l| l.contains(needle))
}

fn port(n: usize) -> &'static str {
    replica_addr(n).rsplit_once(':').unwrap().1
}

fn primary_port() -> String {
    env()
        .primary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .to_string()
}

/// SRV records for `replica.pg.test` pointing at the given ports of `pg.test` (127.0.0.1).
fn srv(ports: &[&str]) -> Vec<String> {
    let mut r = vec!["host-record=pg.test,127.0.0.1".to_string()];
    for p in ports {
        r.push(format!("srv-host=replica.pg.test,pg.test,{p}"));
    }
    r
}

fn fast_connectivity() -> ConnectivityConfig {
    let mut c = ConnectivityConfig::default();
    c.backoff_initial_ms = 200;
    c.backoff_max_ms = 1000;
    c
}

fn dns_balancer(dns: &Dnsmasq, record_type: DnsRecordType) -> Balancer {
    let mut d = DnsConfig::new(
        if record_type == DnsRecordType::A {
            "a.pg.test"
        } else {
            "replica.pg.test"
        },
        "127.0.0.1",
        dns.port,
    );
    d.record_type = record_type;
    d.refresh_interval_ms = 200;
    Balancer::new(
        dlb::Config::builder(env().primary.clone())
            .replica_dns(d)
            .replica_check_interval(Duration::from_millis(100))
            .probe_timeout(Duration::from_millis(1000))
            .drain_timeout(Duration::from_secs(5))
            .connectivity(fast_connectivity())
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn picks(lb: &Balancer, n: usize) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let r = lb.pick_replica(None).unwrap();
        *by.entry(format!("{} {}", r.role().as_str(), r.addr()))
            .or_default() += 1;
    }
    by
}

fn replica_addrs(lb: &Balancer) -> Vec<String> {
    lb.status()
        .replicas
        .iter()
        .map(|r| r.host.addr.clone())
        .collect()
}

#[test]
fn srv_records_are_discovered_added_and_drained() {
    let _l = lock_cluster();
    capture_logs();
    let mut dns = Dnsmasq::start(&srv(&[port(1)]));
    let lb = dns_balancer(&dns, DnsRecordType::Srv);
    wait_healthy(&lb, 1);
    assert_eq!(replica_addrs(&lb), vec![replica_addr(1).to_string()]);
    assert_eq!(
        picks(&lb, 10),
        HashMap::from([(format!("replica {}", replica_addr(1)), 10)])
    );

    // A record added is picked up.
    dns.set_records(&srv(&[port(1), port(2)]));
    wait_healthy(&lb, 2);
    assert_eq!(picks(&lb, 100).len(), 2);
    assert!(logged(&format!(
        "replica {} joined the list",
        replica_addr(2)
    )));

    // A record removed is drained: no new picks, then its pool is closed and its series go.
    let held = lb.read_conn(None).unwrap(); // one connection in flight on some replica
    let held_addr = held.route().addr().to_string();
    dns.set_records(&srv(&[port(2)]));
    wait_until("replica 1 leaves the list", WAIT, || {
        replica_addrs(&lb) == vec![replica_addr(2).to_string()]
    });
    assert_eq!(
        picks(&lb, 50),
        HashMap::from([(format!("replica {}", replica_addr(2)), 50)])
    );
    if held_addr == replica_addr(1) {
        assert_eq!(
            lb.status().draining,
            vec![replica_addr(1).to_string()],
            "in-flight connection keeps it draining"
        );
    }
    drop(held);
    wait_until("replica 1 is drained", WAIT, || {
        lb.status().draining.is_empty()
    });
    assert!(logged(&format!(
        "replica {} left the list: draining",
        replica_addr(1)
    )));
    assert!(logged(&format!("replica {} drained", replica_addr(1))));
    let m = lb.metrics_text();
    assert!(
        !m.contains(&format!("replica=\"{}\"", replica_addr(1))),
        "removed series remain: {m}"
    );
    assert!(m.contains("dlb_replicas_added_total 1"), "{m}");
    assert!(m.contains("dlb_replicas_removed_total 1"), "{m}");
    assert!(m.contains("dlb_replicas_drained_total 1"), "{m}");
}

/// `dlb_dns_errors_total`: DNS refreshes that failed or came back empty.
fn dns_errors(lb: &Balancer) -> u64 {
    let m = lb.metrics_text();
    m.lines()
        .find_map(|l| l.strip_prefix("dlb_dns_errors_total "))
        .unwrap()
        .parse()
        .unwrap()
}

/// `Balancer::new` with discovery of `record` through the hostile `server` (a 200 ms
/// timeout) and a primary that refuses connections (no cluster needed), run on a thread:
/// panics if it has not returned within 50 times that timeout.
fn balancer_against(server: &HostileDns, record: &str, tcp: bool) -> Balancer {
    let mut d = DnsConfig::new(record, "127.0.0.1", server.port);
    d.tcp = tcp;
    d.timeout_ms = 200;
    d.refresh_interval_ms = 200;
    let config = dlb::Config::builder("host=127.0.0.1 port=1 user=app dbname=app")
        .replica_dns(d)
        .replica_check_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Balancer::new(config));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("Balancer::new did not return within 10 s (DNS timeout_ms 200)")
        .unwrap()
}

/// The hostile `server` cannot hold `Balancer::new` (it returns) nor the monitor thread
/// (lookups keep failing within their deadline, so DNS errors keep being counted).
fn assert_cannot_hold_start_up_or_the_monitor(server: &HostileDns, tcp: bool) {
    let lb = balancer_against(server, "replica.pg.test", tcp);
    assert!(dns_errors(&lb) >= 1, "the first lookup failed");
    wait_until("more DNS lookups fail", WAIT, || dns_errors(&lb) >= 3);
    assert!(lb.status().replicas.is_empty());
}

#[test]
fn a_dns_server_flooding_wrong_ids_cannot_hold_start_up_or_the_monitor() {
    let flood = HostileDns::udp_wrong_ids(Duration::from_millis(5));
    assert_cannot_hold_start_up_or_the_monitor(&flood, false);
}

#[test]
fn a_dns_answer_sent_one_byte_at_a_time_cannot_hold_start_up_or_the_monitor() {
    let drip = HostileDns::tcp(hostile_dns::a_answer, Some(Duration::from_millis(10)));
    assert_cannot_hold_start_up_or_the_monitor(&drip, true);
}

/// A 64 KiB answer whose names expand through chained compression pointers (~16 MB without
/// bounds) is rejected with an error, not taken as an empty answer.
#[test]
fn a_dns_answer_of_compression_pointers_is_rejected() {
    capture_logs();
    let bomb = HostileDns::tcp(|q| hostile_dns::pointer_bomb(q, 62, 63), None);
    let _lb = balancer_against(&bomb, "bomb.pg.test", true);
    assert!(logged(
        "DNS: cannot resolve bomb.pg.test: DNS name longer than 255 bytes"
    ));
    assert!(!logged("empty answer for bomb.pg.test"));
}

#[test]
fn dns_outage_keeps_the_last_good_list() {
    let _l = lock_cluster();
    let mut dns = Dnsmasq::start(&srv(&[port(1), port(2)]));
    let lb = dns_balancer(&dns, DnsRecordType::Srv);
    wait_healthy(&lb, 2);
    dns.stop();
    wait_until("several failed DNS refreshes", WAIT, || {
        dns_errors(&lb) >= 3
    });
    assert_eq!(lb.status().healthy_replicas, 2);
    assert_eq!(picks(&lb, 100).len(), 2, "both replicas keep serving");
    // An empty answer is treated the same way.
    dns.set_records(&["host-record=pg.test,127.0.0.1".to_string()]);
    let before = dns_errors(&lb);
    wait_until("an empty answer is counted", WAIT, || {
        dns_errors(&lb) > before
    });
    assert_eq!(lb.status().healthy_replicas, 2);
}

#[test]
fn a_record_pointing_at_the_primary_is_never_used_as_a_replica() {
    let _l = lock_cluster();
    let primary = format!("127.0.0.1:{}", primary_port());
    let dns = Dnsmasq::start(&srv(&[port(1), &primary_port()]));
    let lb = dns_balancer(&dns, DnsRecordType::Srv);
    wait_healthy(&lb, 1);
    wait_until(
        "the primary is quarantined as not in recovery",
        WAIT,
        || replica_state(&lb, &primary) == ("quarantined".into(), Some("not_in_recovery".into())),
    );
    for _ in 0..200 {
        let r = lb.pick_replica(None).unwrap();
        assert_eq!((r.role(), r.addr()), (Role::Replica, replica_addr(1)));
    }

    // A records use the primary's port: here they lead to the primary itself.
    let dns = Dnsmasq::start(&["host-record=a.pg.test,127.0.0.1".to_string()]);
    let lb = dns_balancer(&dns, DnsRecordType::A);
    wait_until("the A-record host is checked", WAIT, || {
        lb.status()
            .replicas
            .first()
            .is_some_and(|r| r.state != "unknown")
    });
    assert_eq!(
        replica_state(&lb, &primary),
        ("quarantined".into(), Some("not_in_recovery".into()))
    );
    let r = lb.pick_replica(None).unwrap();
    assert_eq!(
        (r.role(), r.reason()),
        (Role::Primary, Reason::NoHealthyReplica)
    );
}

#[test]
fn a_stopped_replica_is_dropped_after_the_first_reported_failure_and_readmitted_after_backoff() {
    let _l = lock_cluster();
    let lb = Balancer::new(config().connectivity(fast_connectivity()).build().unwrap()).unwrap();
    wait_healthy(&lb, 2);

    // Deterministic part: a reported replica leaves the rotation at once, and comes back only
    // after a probe that started later succeeds (here it is alive, so it does).
    assert!(lb.report_failure(replica_addr(1)));
    for _ in 0..200 {
        assert_eq!(lb.pick_replica(None).unwrap().addr(), replica_addr(2));
    }
    wait_healthy(&lb, 2);
    assert_eq!(picks(&lb, 100).len(), 2);

    // The application reads with its own driver on the DSNs dlb hands out.
    let mut clients: HashMap<String, postgres::Client> = HashMap::new();
    for _ in 0..4 {
        let r = lb.pick_replica(None).unwrap();
        clients.insert(
            r.dsn().to_string(),
            postgres::Client::connect(r.dsn(), postgres::NoTls).unwrap(),
        );
    }
    stop_replica(1);
    let victim = lb
        .status()
        .replicas
        .iter()
        .find(|r| r.host.addr == replica_addr(1))
        .unwrap()
        .host
        .addr
        .clone();
    let mut reported = false;
    for _ in 0..20 {
        let r = lb.pick_replica(None).unwrap();
        if reported {
            assert_ne!(r.addr(), victim, "picked after its failure was reported");
            continue;
        }
        let c = clients.get_mut(r.dsn()).unwrap();
        if let Err(e) = c.query_one("SELECT 1", &[]) {
            assert_eq!(r.addr(), victim, "unexpected failure: {e}");
            assert!(lb.report_failure(r.dsn()));
            reported = true;
        }
    }
    // The monitor may have quarantined it before the application picked it: also correct.
    assert!(
        reported || replica_state(&lb, &victim).0 == "quarantined",
        "the stopped replica is still picked"
    );
    for _ in 0..200 {
        assert_eq!(lb.pick_replica(None).unwrap().addr(), replica_addr(2));
    }
    wait_until("the monitor quarantines it", WAIT, || {
        replica_state(&lb, &victim).0 == "quarantined"
    });
    start_replica(1);
    wait_until("re-admitted after backoff", WAIT, || {
        replica_state(&lb, &victim).0 == "healthy"
    });
    assert_eq!(picks(&lb, 100).len(), 2);
}

#[test]
fn a_slow_replica_is_quarantined_then_readmitted_when_fast_again() {
    let _l = lock_cluster();
    capture_logs();
    let proxy = Proxy::start(replica_addr(1));
    let lb = Balancer::new(
        dlb::Config::builder(env().primary.clone())
            .replica_hosts([proxy.addr.clone(), replica_addr(2).to_string()])
            .replica_check_interval(Duration::from_millis(100))
            .probe_timeout(Duration::from_millis(300))
            .connectivity(fast_connectivity())
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 2);
    proxy.set_delay(Duration::from_millis(1500));
    wait_until("the slow replica is quarantined", WAIT, || {
        replica_state(&lb, &proxy.addr) == ("quarantined".into(), Some("timeout".into()))
    });
    assert_eq!(
        picks(&lb, 50),
        HashMap::from([(format!("replica {}", replica_addr(2)), 50)])
    );
    proxy.set_delay(Duration::ZERO);
    wait_until("re-admitted when fast again", WAIT, || {
        replica_state(&lb, &proxy.addr).0 == "healthy"
    });
    let m = lb.metrics_text();
    assert!(
        m.contains("dlb_quarantines_total{reason=\"timeout\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("dlb_readmissions_total{reason=\"timeout\"} 1"),
        "{m}"
    );
    assert!(logged(&format!(
        "replica {} quarantined: timeout",
        proxy.addr
    )));
    assert!(logged(&format!(
        "replica {} re-admitted after timeout",
        proxy.addr
    )));
    let st = lb.status().to_json();
    assert!(st.contains("\"state\":\"healthy\""), "{st}");
}

#[test]
fn a_flapping_replica_is_held_out_longer() {
    let _l = lock_cluster();
    let mut conn = fast_connectivity();
    conn.flap_threshold = 2;
    conn.flap_hold_ms = 1500;
    let lb = Balancer::new(config().connectivity(conn).build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let addr = replica_addr(1);
    stop_replica(1);
    wait_until("first quarantine", WAIT, || {
        replica_state(&lb, addr).0 == "quarantined"
    });
    start_replica(1);
    wait_until("back", WAIT, || replica_state(&lb, addr).0 == "healthy");
    stop_replica(1);
    wait_until("second quarantine: flapping", WAIT, || {
        replica_state(&lb, addr) == ("quarantined".into(), Some("flapping".into()))
    });
    start_replica(1);
    wait_until("re-admitted after the hold", WAIT, || {
        replica_state(&lb, addr).0 == "healthy"
    });
    assert!(
        lb.metrics_text()
            .contains("dlb_quarantines_total{reason=\"flapping\"} 1")
    );
}

/// A replica removed from DNS is closed on a dlb thread: never inside a pick that happens to
/// free the last old snapshot holding it (on a tokio worker, closing a `postgres::Client`
/// there panics: "Cannot start a runtime from within a runtime").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_from_dns_is_never_closed_inside_a_pick() {
    let (lock, mut dns, lb) = tokio::task::block_in_place(|| {
        let lock = lock_cluster();
        let dns = Dnsmasq::start(&srv(&[port(1), port(2)]));
        let lb = std::sync::Arc::new(dns_balancer(&dns, DnsRecordType::Srv));
        wait_healthy(&lb, 2);
        // Open pooled connections on both replicas.
        for _ in 0..4 {
            let mut c = lb.read_conn(None).unwrap();
            c.query_one("SELECT 1", &[]).unwrap();
        }
        (lock, dns, lb)
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pickers: Vec<_> = (0..2)
        .map(|_| {
            let (lb, stop) = (lb.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = lb.pick_replica(None).unwrap();
                    n += 1;
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                n
            })
        })
        .collect();
    tokio::task::block_in_place(|| {
        dns.set_records(&srv(&[port(2)]));
        wait_until("replica 1 is removed and drained", WAIT, || {
            let st = lb.status();
            st.replicas.len() == 1 && st.draining.is_empty()
        });
        let checks = lb.status().checks;
        wait_until("a few more checks", WAIT, || {
            lb.status().checks > checks + 5
        });
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pickers {
        assert!(p.await.expect("no pick panicked") > 0);
    }
    assert!(
        lb.metrics_text().contains("dlb_replicas_drained_total 1"),
        "{}",
        lb.metrics_text()
    );
    tokio::task::block_in_place(move || {
        drop(lb);
        drop(dns);
        drop(lock);
    });
}

/// The next event of `kind` for `addr` from the balancer's queue (others are skipped);
/// panics after [`WAIT`].
fn next_event(lb: &Balancer, kind: HostEventKind, addr: &str) -> HostEvent {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no {kind:?} event for {addr} within {WAIT:?}"
        );
        if let Some(e) = lb.next_event(left.min(Duration::from_millis(200)))
            && e.event == kind
            && e.addr == addr
        {
            return e;
        }
    }
}

#[test]
fn host_events_follow_the_list_and_the_health_of_replicas() {
    let _l = lock_cluster();
    let mut dns = Dnsmasq::start(&srv(&[port(1)]));
    let lb = dns_balancer(&dns, DnsRecordType::Srv);
    let one = next_event(&lb, HostEventKind::Added, replica_addr(1));
    assert_eq!(one.role, "replica");
    wait_healthy(&lb, 1);
    let route = lb.pick_replica(None).unwrap();
    assert_eq!(
        route.host_id(),
        one.host_id,
        "the event and the route name one host"
    );
    assert_ne!(lb.primary().host_id(), one.host_id);

    // Added and removed with the DNS records; drained once nothing uses it.
    dns.set_records(&srv(&[port(1), port(2)]));
    let two = next_event(&lb, HostEventKind::Added, replica_addr(2));
    assert_ne!(two.host_id, one.host_id);
    dns.set_records(&srv(&[port(2)]));
    let removed = next_event(&lb, HostEventKind::Removed, replica_addr(1));
    assert_eq!(removed.host_id, one.host_id);
    drop(route);
    let drained = next_event(&lb, HostEventKind::Drained, replica_addr(1));
    assert_eq!(drained.host_id, one.host_id);

    // Quarantined when it stops answering, re-admitted when it is back.
    wait_healthy(&lb, 1);
    stop_replica(2);
    let q = next_event(&lb, HostEventKind::Quarantined, replica_addr(2));
    start_replica(2);
    assert_eq!(q.host_id, two.host_id);
    assert!(
        matches!(q.reason, Some("unreachable" | "timeout")),
        "{}",
        q.to_json()
    );
    let back = next_event(&lb, HostEventKind::Readmitted, replica_addr(2));
    assert_eq!(back.health, "healthy");
    assert!(!back.to_json().contains("password"));
}
