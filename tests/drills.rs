//! Freshness drills on real servers: what is behind a replica entry is not what the entry
//! claims. A standby of another cluster, an address that alternates between two servers, an
//! address re-pointed at a lagging server, a standby left behind by a failover.
//!
//! Every drill asserts the quarantine (or the identity change) in `lb.status()` and in the
//! metrics, and then zero stale or wrong reads over a write → `record_lsn(key)` → read loop,
//! both through the DSN `pick_replica(Some(key))` hands out (a new connection each time, as a
//! caller with its own pool would open) and through `read_conn(Some(key))`, while a replica
//! lags (`pg_wal_replay_pause()`). Cluster 2 is the test environment's second, independent
//! cluster (`scripts/testenv.sh`).

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;
use dlb::{Balancer, Lsn, Role, Route};

/// Write → record → read rounds per drill.
const ROUNDS: i64 = 40;

/// `dlb_quarantines_total{reason="..."}`.
fn quarantines(lb: &Balancer, reason: &str) -> u64 {
    let prefix = format!("dlb_quarantines_total{{reason=\"{reason}\"}} ");
    let m = lb.metrics_text();
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in the metrics:\n{m}"))
        .parse()
        .unwrap()
}

/// Waits until the replica at `addr` is quarantined for `reason` (panics with the status after
/// [`WAIT`]), then checks the metrics too.
fn wait_quarantined(lb: &Balancer, addr: &str, reason: &str) {
    let end = Instant::now() + WAIT;
    while replica_status(lb, addr).reason != Some(reason) {
        assert!(
            Instant::now() < end,
            "timed out after {WAIT:?} waiting until {addr} is quarantined {reason}: {}",
            lb.status().to_json()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(replica_status(lb, addr).state, "quarantined");
    assert!(quarantines(lb, reason) >= 1, "{}", lb.metrics_text());
}

/// The port of a `host:port`.
fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

fn lsn_of(c: &mut postgres::Client, sql: &str) -> Lsn {
    let text: String = c.query_one(sql, &[]).unwrap().get(0);
    text.parse().unwrap()
}

fn insert_lsn(c: &mut postgres::Client) -> Lsn {
    lsn_of(c, "SELECT pg_current_wal_insert_lsn()::text")
}

/// Pushes the WAL position of the primary `c` past `past` (WAL segment switches: cheap on
/// cluster 2, where new segments are not zero-filled).
fn advance_wal_past(c: &mut postgres::Client, past: Lsn) {
    c.batch_execute("CREATE TABLE IF NOT EXISTS dlb_wal_filler (pad text)")
        .unwrap();
    let segments = past.bytes_since(insert_lsn(c)) / (16 << 20) + 8;
    for _ in 0..segments {
        if insert_lsn(c) > past {
            return;
        }
        c.batch_execute("INSERT INTO dlb_wal_filler VALUES ('x'); SELECT pg_switch_wal()")
            .unwrap();
    }
    assert!(insert_lsn(c) > past, "could not push the WAL past {past}");
}

/// What one read saw: the row, no row (stale), or an error (a server without the table:
/// wrong).
fn read_row(c: &mut postgres::Client, table: &str, id: i64) -> Result<bool, String> {
    c.query_opt(&format!("SELECT key FROM {table} WHERE id = $1"), &[&id])
        .map(|r| r.is_some())
        .map_err(|e| e.to_string())
}

/// A new connection to the DSN `route` hands out.
fn connect(route: &Route) -> Result<postgres::Client, String> {
    postgres::Client::connect(route.dsn(), postgres::NoTls).map_err(|e| e.to_string())
}

/// The server a connection reached: `inet_server_port()`.
fn server_port(c: &mut postgres::Client) -> String {
    let p: i32 = c
        .query_one("SELECT inet_server_port()", &[])
        .unwrap()
        .get(0);
    p.to_string()
}

/// Stale or wrong reads of a drill, with where they went.
#[derive(Default, Debug)]
struct Tally {
    bad: Vec<String>,
    replica_reads: usize,
    primary_reads: usize,
}

impl Tally {
    fn note(&mut self, via: &str, route: &Route, id: i64, seen: Result<bool, String>) {
        match route.role() {
            Role::Replica => self.replica_reads += 1,
            Role::Primary => self.primary_reads += 1,
        }
        match seen {
            Ok(true) => {}
            Ok(false) => self.bad.push(format!(
                "{via}: row {id} not visible on {} ({:?})",
                route.addr(),
                route.reason()
            )),
            Err(e) => self.bad.push(format!(
                "{via}: row {id} on {} ({:?}): {e}",
                route.addr(),
                route.reason()
            )),
        }
    }

    fn assert_clean(&self, drill: &str) {
        eprintln!(
            "{drill}: {} replica reads, {} primary reads, {} stale or wrong",
            self.replica_reads,
            self.primary_reads,
            self.bad.len()
        );
        assert!(
            self.bad.is_empty(),
            "{drill}: {} stale or wrong reads:\n{}",
            self.bad.len(),
            self.bad.join("\n")
        );
    }
}

/// `ROUNDS` times: writes row `id` through the balancer, records the key's LSN, then reads the
/// row through the DSN `pick_replica(Some(key))` hands out (a new connection) and through
/// `read_conn(Some(key))`; `on_conn` may check each connection `read_conn` hands out further
/// (it gets the recorded LSN; an error is counted as a wrong read).
fn write_record_read(
    lb: &Balancer,
    table: &str,
    first_id: i64,
    mut on_conn: impl FnMut(&mut dlb::Conn, Lsn) -> Result<(), String>,
) -> Tally {
    let mut t = Tally::default();
    for id in first_id..first_id + ROUNDS {
        let key = format!("drill/{}", id % 5);
        insert_row(lb, table, id, &key);
        let lsn = lb.record_lsn(&key).unwrap();

        let route = lb.pick_replica(Some(&key)).unwrap();
        let seen = connect(&route).and_then(|mut c| read_row(&mut c, table, id));
        t.note("dsn", &route, id, seen);

        let mut conn = lb.read_conn(Some(&key)).unwrap();
        let seen = read_row(&mut conn, table, id);
        let route = conn.route().clone();
        t.note("read_conn", &route, id, seen);
        if let Err(e) = on_conn(&mut conn, lsn) {
            t.bad
                .push(format!("read_conn: row {id} on {}: {e}", route.addr()));
        }
    }
    t
}

/// A: a standby of another cluster in the replica list, with more WAL than ours: quarantined
/// `wrong_cluster` whatever its LSNs say, never picked; the test table exists only in the main
/// cluster, so a read there fails (counted as wrong).
#[test]
fn a_standby_of_another_cluster_is_never_read() {
    let _l = lock_cluster();
    let foreign = cluster2_replica_addr(1);
    let lb = Balancer::new(
        config_for(&env().primary, &[replica_addr(1), replica_addr(2), foreign])
            .build()
            .unwrap(),
    )
    .unwrap();
    setup_table(&lb, "dlb_drill_foreign");
    // Cluster 2 far ahead of the main cluster: by LSN alone its standby has replayed every
    // position the main primary will hand out in this test.
    let main_lsn = insert_lsn(&mut primary_client());
    let mut c2 = cluster2_primary_client();
    advance_wal_past(&mut c2, Lsn::from_u64(main_lsn.as_u64() + (64 << 20)));
    let c2_lsn = insert_lsn(&mut c2);
    let mut standby = cluster2_replica_client(1);
    wait_until(
        "cluster 2's standby replays its primary's WAL",
        WAIT,
        || lsn_of(&mut standby, "SELECT pg_last_wal_replay_lsn()::text") >= c2_lsn,
    );

    wait_quarantined(&lb, foreign, "wrong_cluster");
    let st = lb.status();
    let r = replica_status(&lb, foreign);
    assert_ne!(
        r.host.system_identifier, st.primary.system_identifier,
        "{r:?}"
    );
    assert!(r.host.system_identifier.is_some(), "{r:?}");
    pause_replay(2);

    let t = write_record_read(&lb, "dlb_drill_foreign", 0, |conn, _| {
        if conn.route().addr() == foreign {
            Err("handed out a connection to the foreign standby".into())
        } else {
            Ok(())
        }
    });
    t.assert_clean("foreign standby");
    // Keyless reads never go there either.
    let system = st.primary.system_identifier.unwrap();
    for _ in 0..30 {
        assert_ne!(lb.pick_replica(None).unwrap().addr(), foreign);
        let mut conn = lb.read_conn(None).unwrap();
        let id: String = conn
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(id, system, "a keyless read reached another cluster");
    }
    assert_eq!(replica_status(&lb, foreign).reason, Some("wrong_cluster"));
}

/// B: one entry in front of two servers, a new connection to each in turn (a read Service, an
/// HAProxy port), one of them lagging: quarantined `multiple_servers`, no read goes there (the
/// entry is the only replica: every read that would have used it is one that could go stale).
#[test]
fn an_entry_reaching_two_servers_is_never_read() {
    let _l = lock_cluster();
    let proxy = Proxy::alternating(&[replica_addr(1), replica_addr(2)]);
    let lb = Balancer::new(config_for(&env().primary, &[&proxy.addr]).build().unwrap()).unwrap();
    setup_table(&lb, "dlb_drill_alternating");
    pause_replay(2);
    wait_quarantined(&lb, &proxy.addr, "multiple_servers");

    let t = write_record_read(&lb, "dlb_drill_alternating", 0, |conn, _| {
        if conn.route().addr() == proxy.addr {
            Err("handed out a connection through the alternating entry".into())
        } else {
            Ok(())
        }
    });
    t.assert_clean("alternating entry");
    let r = replica_status(&lb, &proxy.addr);
    assert_eq!(r.reason, Some("multiple_servers"), "{r:?}");
    assert!(proxy.accepted() >= 2);
}

/// C: an entry re-pointed from replica 1 to replica 2 (paused) while replica 1 keeps running
/// (a DNS name or a Service moved; pooled connections opened before keep reaching replica 1):
/// within 10 checks the status shows replica 2 behind the entry, its frozen position and then
/// `stalled`; no read is served stale, and `read_conn` hands out a connection only to a server
/// that has replayed the key's LSN.
#[test]
fn a_re_pointed_entry_is_seen_within_ten_checks() {
    let _l = lock_cluster();
    let proxy = Proxy::start(replica_addr(1));
    let lb = Balancer::new(
        config_for(&env().primary, &[&proxy.addr, replica_addr(1)])
            .max_replay_stall(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    setup_table(&lb, "dlb_drill_repointed");
    wait_healthy(&lb, 2);
    // Connections through the entry while it leads to replica 1, some left in its pool.
    let t = write_record_read(&lb, "dlb_drill_repointed", 0, |_, _| Ok(()));
    t.assert_clean("re-pointed entry, before");
    let r1_port = port(replica_addr(1));
    let r2_port = port(replica_addr(2));
    let seen_port = |lb: &Balancer| {
        replica_status(lb, &proxy.addr)
            .host
            .server_addr
            .map(|a| port(&a).to_string())
    };
    assert_eq!(seen_port(&lb).as_deref(), Some(r1_port));

    pause_replay(2);
    let checks_before = lb.status().checks;
    proxy.switch_to(replica_addr(2));
    wait_until("the status shows replica 2 behind the entry", WAIT, || {
        seen_port(&lb).as_deref() == Some(r2_port)
    });
    let checks = lb.status().checks - checks_before;
    assert!(checks <= 10, "noticed after {checks} checks");
    let mut r2 = replica_client(2);
    let r2_lsn = lsn_of(&mut r2, "SELECT pg_last_wal_replay_lsn()::text");
    // A trickle of writes that replica 2 does not replay: it is behind, and stalled.
    let mut id = 10 * ROUNDS;
    wait_until("the re-pointed entry is stalled", WAIT, || {
        id += 1;
        insert_row(&lb, "dlb_drill_repointed", id, "trickle");
        replica_status(&lb, &proxy.addr).reason == Some("stalled")
    });
    wait_quarantined(&lb, &proxy.addr, "stalled");
    let r = replica_status(&lb, &proxy.addr);
    assert_eq!(r.replay_lsn, Some(r2_lsn.to_string()), "{r:?}");
    assert_eq!(seen_port(&lb).as_deref(), Some(r2_port));

    let mut served = 0;
    let t = write_record_read(&lb, "dlb_drill_repointed", ROUNDS, |conn, lsn| {
        if conn.route().role() != Role::Replica {
            return Ok(());
        }
        served += 1;
        // Only a server proven caught up: the one the status shows behind the route's entry
        // (then it was picked for its replay position), or a connection that has replayed
        // the LSN itself.
        let at = server_port(conn);
        let probed = replica_status(&lb, conn.route().addr()).host.server_addr;
        let replayed = lsn_of(conn, "SELECT pg_last_wal_replay_lsn()::text");
        if !(probed.is_some_and(|a| port(&a) == at) || replayed >= lsn) || at == r2_port {
            return Err(format!(
                "a connection to port {at} (replayed {replayed}, needs {lsn}; replica 2 is port {r2_port})"
            ));
        }
        Ok(())
    });
    t.assert_clean("re-pointed entry, after");
    eprintln!("{served} sticky read_conn calls served by a replica");
}

/// Resets cluster 2 when dropped: the failover drill leaves it failed over, also when it fails.
struct ResetCluster2;

impl Drop for ResetCluster2 {
    fn drop(&mut self) {
        if !reset_cluster2() {
            eprintln!("warning: testenv.sh reset-cluster2 failed");
        }
    }
}

/// D: a failover on cluster 2: standby A promoted, standby B still following the old primary,
/// which keeps taking writes, so B replays past the switch point on the old timeline (and past
/// A's position). With primary = A and replicas = [B], B is quarantined `diverged`; no read
/// sees a row that does not exist on A, and every recorded write is read back.
#[test]
fn a_standby_left_on_the_old_timeline_is_never_read() {
    let _l = lock_cluster();
    let _reset = ResetCluster2;
    let (a_addr, b_addr) = (cluster2_replica_addr(1), cluster2_replica_addr(2));
    let a_dsn = dsn_at(cluster2_primary(), a_addr);
    let mut old = cluster2_primary_client();
    old.batch_execute(
        "DROP TABLE IF EXISTS dlb_drill_failover; \
         CREATE TABLE dlb_drill_failover (id bigint PRIMARY KEY, key text)",
    )
    .unwrap();
    let switch_point = insert_lsn(&mut old);
    for n in 1..=2 {
        let mut c = cluster2_replica_client(n);
        wait_until("the table reaches cluster 2's standbys", WAIT, || {
            lsn_of(&mut c, "SELECT pg_last_wal_replay_lsn()::text") >= switch_point
        });
    }
    let mut a = cluster2_replica_client(1);
    let promoted: bool = a.query_one("SELECT pg_promote()", &[]).unwrap().get(0);
    assert!(promoted);
    // The old primary goes on: rows A never gets, and WAL well past A's position, all
    // replayed by B on the old timeline.
    old.execute(
        "INSERT INTO dlb_drill_failover SELECT g, 'old-primary' FROM generate_series(1000000, 1000099) g",
        &[],
    )
    .unwrap();
    let a_lsn = insert_lsn(&mut a);
    advance_wal_past(&mut old, Lsn::from_u64(a_lsn.as_u64() + (64 << 20)));
    let old_lsn = insert_lsn(&mut old);
    let mut b = cluster2_replica_client(2);
    wait_until("B replays the old primary's WAL", WAIT, || {
        lsn_of(&mut b, "SELECT pg_last_wal_replay_lsn()::text") >= old_lsn
    });

    let lb = Balancer::new(config_for(&a_dsn, &[b_addr]).build().unwrap()).unwrap();
    wait_quarantined(&lb, b_addr, "diverged");
    let st = lb.status();
    let r = replica_status(&lb, b_addr);
    assert_eq!(r.host.system_identifier, st.primary.system_identifier);
    assert!(
        r.host.timeline.is_some() && r.host.timeline < st.primary.timeline,
        "{r:?} vs {st:?}"
    );

    let old_rows = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM dlb_drill_failover WHERE key = 'old-primary'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let t = write_record_read(&lb, "dlb_drill_failover", 0, |conn, _| {
        match old_rows(conn) {
            0 => Ok(()),
            n => Err(format!("sees {n} rows that do not exist on A")),
        }
    });
    t.assert_clean("failover");
    for _ in 0..30 {
        let route = lb.pick_replica(None).unwrap();
        assert_ne!(route.addr(), b_addr);
        assert_eq!(old_rows(&mut connect(&route).unwrap()), 0);
        assert_eq!(old_rows(&mut lb.read_conn(None).unwrap()), 0);
    }
    assert_eq!(replica_status(&lb, b_addr).reason, Some("diverged"));
}

/// The `host:port` of a key=value DSN.
fn addr_of(dsn: &str) -> String {
    let get = |k: &str| {
        dsn.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")[..]))
            .unwrap_or_default()
            .to_string()
    };
    format!("{}:{}", get("host"), get("port"))
}

/// E: a failover while the balancer runs, as a fleet meets it. The balancer serves through an
/// address of cluster 2's primary (a proxy: the DNS name or VIP a fleet uses) with standbys A
/// and B. A is promoted (timeline 2) while the old primary goes on writing: 100 rows A never
/// gets, and WAL far past A's position, all replayed by B on timeline 1. Then the address is
/// re-pointed to A and the old primary's sessions are cut. B's cached position is far ahead of
/// every position A writes. Every write → `record_lsn` → read right after the switch, through
/// the handed-out DSN (`pick_replica(key)`), the causal token (`pick_replica_min_lsn`) and
/// `read_conn(key)`, sees its row and none of the lost rows.
#[test]
fn a_failover_under_a_running_balancer_reads_nothing_stale() {
    let _l = lock_cluster();
    let _reset = ResetCluster2;
    let table = "dlb_drill_live_failover";
    let (a_addr, b_addr) = (cluster2_replica_addr(1), cluster2_replica_addr(2));
    let mut old = cluster2_primary_client();
    old.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, key text)"
    ))
    .unwrap();
    let proxy = Proxy::start(&addr_of(cluster2_primary()));
    let primary = dsn_at(cluster2_primary(), &proxy.addr);
    let lb = Balancer::new(config_for(&primary, &[a_addr, b_addr]).build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    write_record_read(&lb, table, 0, |_, _| Ok(())).assert_clean("live failover, before");

    let mut a = cluster2_replica_client(1);
    let promoted: bool = a.query_one("SELECT pg_promote()", &[]).unwrap().get(0);
    assert!(promoted);
    old.execute(
        &format!(
            "INSERT INTO {table} SELECT g, 'old-primary' FROM generate_series(1000000, 1000099) g"
        ),
        &[],
    )
    .unwrap();
    let a_lsn = insert_lsn(&mut a);
    advance_wal_past(&mut old, Lsn::from_u64(a_lsn.as_u64() + (32 << 20)));
    let old_lsn = insert_lsn(&mut old);
    // The state a fleet is in at the moment of the switch: the balancer has seen B replay the
    // old primary's WAL, far past anything A has written.
    wait_until(
        "the balancer sees B past the old primary's WAL",
        WAIT,
        || {
            replica_status(&lb, b_addr)
                .replay_lsn
                .and_then(|l| l.parse::<Lsn>().ok())
                .is_some_and(|l| l >= old_lsn)
                && replica_status(&lb, b_addr).state == "healthy"
        },
    );

    // A second instance whose monitor looks only once an hour: it has seen B far ahead on
    // the old timeline, and will not see the failover by itself (another process of the
    // fleet, between two checks). Tokens carry the timeline; a bare LSN cannot.
    let stale_view = Balancer::new(
        config_for(&primary, &[a_addr, b_addr])
            .replica_check_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    // Its start wakes its monitor once more (the first timeline it learns): let that round
    // pass, so that it looks next in an hour.
    wait_until("the other instance's second check", WAIT, || {
        stale_view.status().checks >= 2
    });
    assert_eq!(replica_status(&stale_view, b_addr).state, "healthy");

    proxy.switch_to(a_addr);
    old.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        &[],
    )
    .unwrap();

    let lost_rows = |c: &mut postgres::Client| -> Result<(), String> {
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE key = 'old-primary'"),
                &[],
            )
            .map_err(|e| e.to_string())?
            .get(0);
        match n {
            0 => Ok(()),
            n => Err(format!("sees {n} rows lost in the failover")),
        }
    };
    let mut t = Tally::default();
    for id in 1000..1000 + ROUNDS {
        let key = format!("failover/{}", id % 5);
        // The first writes after the switch may meet pooled connections the old primary cut.
        let mut tries = 0;
        let lsn = loop {
            let done = lb
                .write_conn()
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    c.execute(
                        &format!("INSERT INTO {table} VALUES ($1, $2)"),
                        &[&id, &key],
                    )
                    .map_err(|e| e.to_string())
                })
                .and_then(|_| lb.record_lsn(&key).map_err(|e| e.to_string()));
            match done {
                Ok(lsn) => break lsn,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("write {id} after the switch: {e}; again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("write {id} after the switch: {e}"),
            }
        };
        let route = lb.pick_replica(Some(&key)).unwrap();
        let seen = connect(&route).and_then(|mut c| {
            lost_rows(&mut c)?;
            read_row(&mut c, table, id)
        });
        t.note("dsn", &route, id, seen);
        let route = lb.pick_replica_min_lsn(lsn).unwrap();
        let seen = connect(&route).and_then(|mut c| {
            lost_rows(&mut c)?;
            read_row(&mut c, table, id)
        });
        t.note("token", &route, id, seen);
        // The token, carried to the instance that has not seen the failover.
        let token = lb.record_token(&key).unwrap();
        assert_eq!(token.lsn.max(lsn), token.lsn);
        let route = stale_view.pick_replica_token(&token).unwrap();
        let seen = connect(&route).and_then(|mut c| {
            lost_rows(&mut c)?;
            read_row(&mut c, table, id)
        });
        t.note("token, other instance", &route, id, seen);
        let mut conn = lb.read_conn(Some(&key)).unwrap();
        let route = conn.route().clone();
        let seen = lost_rows(&mut conn).and_then(|()| read_row(&mut conn, table, id));
        t.note("read_conn", &route, id, seen);
    }
    t.assert_clean("live failover, after the switch");
    wait_quarantined(&lb, b_addr, "diverged");
}

/// The test proxies themselves: a switched proxy sends new connections to the new upstream
/// and leaves open ones alone, an alternating one takes turns, and dropping either stops every
/// thread it started.
#[test]
fn proxies_switch_alternate_and_stop_their_threads() {
    let _l = lock_cluster(); // no other drill's proxy threads meanwhile
    let proxy_threads = || threads_named("test-proxy");
    let before = proxy_threads();
    let via = |p: &Proxy| {
        postgres::Client::connect(&dsn_at(&env().primary, &p.addr), postgres::NoTls).unwrap()
    };
    let (r1, r2) = (port(replica_addr(1)), port(replica_addr(2)));
    {
        let switched = Proxy::start(replica_addr(1));
        let mut old = via(&switched);
        assert_eq!(server_port(&mut old), r1);
        switched.switch_to(replica_addr(2));
        assert_eq!(server_port(&mut via(&switched)), r2);
        assert_eq!(
            server_port(&mut old),
            r1,
            "an open connection keeps its server"
        );

        let alternating = Proxy::alternating(&[replica_addr(1), replica_addr(2)]);
        let mut open: Vec<_> = (0..4).map(|_| via(&alternating)).collect();
        let ports: Vec<String> = open.iter_mut().map(server_port).collect();
        assert_eq!(ports, [r1, r2, r1, r2]);
        assert_eq!(alternating.accepted(), 4);
        // Two accept loops, two pipes for each of the five open connections.
        assert!(proxy_threads() >= before + 2 + 2 * 5);
        // Dropped with connections still open: their pipes end too.
    }
    assert_eq!(proxy_threads(), before);
}
