//! Every pooled connection is handed out clean (issue 25): whatever session state a borrower
//! leaves (settings, a transaction open or aborted, temporary tables, advisory locks, `LISTEN`,
//! roles, prepared statements, cursors), the next borrower of the same connection does not see
//! it, and an error of the borrower's own SQL is never a failure of the replica.
//!
//! Every balancer here has one replica and pools of one connection: each borrower of a host
//! gets the very connection the previous one gave back (the tests check the backend pid).

mod common;

use common::*;
use dlb::{Balancer, Conn, Role};

/// Rows of `public.dlb_clean_rows`; `dlb_clean_shadow.dlb_clean_rows` is empty.
const ROWS: i64 = 3;

/// A balancer over the primary and replica 1, one connection per pool.
fn balancer() -> Balancer {
    let lb = Balancer::new(
        config_for(&env().primary, &[replica_addr(1)])
            .pool_max_size(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 1);
    lb
}

/// The tables (a shadowing schema too) and a role, made on the primary once replica 1 has
/// them; `key` recorded after it all, so sticky reads of `key` wait for them.
fn setup(lb: &Balancer, key: &str) {
    primary_client()
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS public.dlb_clean_rows; \
             CREATE TABLE public.dlb_clean_rows (id int); \
             INSERT INTO public.dlb_clean_rows SELECT generate_series(1, {ROWS}); \
             CREATE SCHEMA IF NOT EXISTS dlb_clean_shadow; \
             DROP TABLE IF EXISTS dlb_clean_shadow.dlb_clean_rows; \
             CREATE TABLE dlb_clean_shadow.dlb_clean_rows (id int); \
             DO $$BEGIN CREATE ROLE dlb_clean_role NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END$$; \
             GRANT USAGE ON SCHEMA dlb_clean_shadow TO dlb_clean_role"
        ))
        .unwrap();
    lb.record_lsn(key).unwrap();
    wait_until("replica 1 has the tables", WAIT, || {
        lb.read_conn(Some(key)).unwrap().route().role() == Role::Replica
    });
}

fn count(c: &mut Conn) -> i64 {
    c.query_one("SELECT count(*) FROM dlb_clean_rows", &[])
        .unwrap()
        .get(0)
}

fn backend(c: &mut Conn) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
}

/// The ways a read is had: keyless, sticky, and the primary's `write_conn`.
#[derive(Debug, Clone, Copy)]
enum Way {
    Keyless,
    Sticky,
    Write,
}

const KEY: &str = "clean:key";

fn borrow(lb: &Balancer, way: Way) -> Conn {
    let c = match way {
        Way::Keyless => lb.read_conn(None),
        Way::Sticky => lb.read_conn(Some(KEY)),
        Way::Write => lb.write_conn(),
    }
    .unwrap_or_else(|e| panic!("{way:?}: {e}"));
    let want = match way {
        Way::Write => Role::Primary,
        _ => Role::Replica,
    };
    assert_eq!(c.route().role(), want, "{way:?}: {:?}", c.route());
    c
}

/// The replica was never reported as failed, nor left the rotation.
fn assert_not_reported(lb: &Balancer) {
    let text = lb.metrics_text();
    assert!(
        text.lines().any(|l| l == "dlb_reported_failures_total 0"),
        "{text}"
    );
    let (state, reason) = replica_state(lb, replica_addr(1));
    assert_eq!(state, "healthy", "{reason:?}");
}

#[test]
fn a_search_path_a_borrower_set_is_gone_for_the_next_borrower() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    for (i, way) in [
        Way::Keyless,
        Way::Sticky,
        Way::Write,
        Way::Keyless,
        Way::Sticky,
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = borrow(&lb, way);
        let pid = backend(&mut c);
        assert_eq!(count(&mut c), ROWS, "{way:?}: a clean connection");
        // Through the client itself, and through `Conn`'s own method: both are seen.
        if i % 2 == 0 {
            c.batch_execute("SET search_path = dlb_clean_shadow, public")
                .unwrap();
        } else {
            c.execute("SET search_path = dlb_clean_shadow, public", &[])
                .unwrap();
        }
        assert_eq!(count(&mut c), 0, "the shadowing table, for this borrower");
        drop(c);
        for next in [way, way] {
            let mut c = borrow(&lb, next);
            assert_eq!(backend(&mut c), pid, "{next:?}: the same connection");
            assert_eq!(
                count(&mut c),
                ROWS,
                "{next:?}: the next borrower reads with the connection's own search_path"
            );
        }
    }
    // A function's `set_config` through a plain-looking SELECT is seen too.
    let mut c = borrow(&lb, Way::Keyless);
    c.query_one(
        "SELECT set_config('search_path', 'dlb_clean_shadow', false)",
        &[],
    )
    .unwrap();
    drop(c);
    assert_eq!(count(&mut borrow(&lb, Way::Keyless)), ROWS);
    assert_not_reported(&lb);
}

#[test]
fn an_aborted_transaction_left_behind_fails_no_read_and_reports_no_replica() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    for way in [Way::Sticky, Way::Keyless, Way::Write] {
        for _ in 0..3 {
            let mut c = borrow(&lb, way);
            let pid = backend(&mut c);
            c.batch_execute("BEGIN").unwrap();
            let e = c.batch_execute("SELECT 1/0").unwrap_err();
            assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("22012"),
                "{e}"
            );
            // Given back inside the aborted transaction.
            drop(c);
            let mut c = borrow(&lb, way);
            assert_eq!(backend(&mut c), pid, "{way:?}: the same connection");
            assert_eq!(count(&mut c), ROWS, "{way:?}");
        }
    }
    assert_not_reported(&lb);
}

#[test]
fn temp_tables_locks_listens_roles_and_prepared_statements_are_gone_dlbs_cache_stays() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    const CACHED: &str = "SELECT $1::int * 2 AS clean_cached_probe";
    // What the next borrower must find: nothing of the previous one's, dlb's cache intact.
    let state = |c: &mut Conn| -> String {
        c.query_one(
            "SELECT format('user=%s/%s temp=%s locks=%s listens=%s prepared=%s cursors=%s \
                     timeout=%s cached=%s', \
                     session_user, current_user, \
                     to_regclass('pg_temp.dlb_clean_temp') IS NOT NULL, \
                     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                        AND pid = pg_backend_pid()), \
                     (SELECT count(*) FROM pg_listening_channels()), \
                     (SELECT count(*) FROM pg_prepared_statements WHERE from_sql), \
                     (SELECT count(*) FROM pg_cursors), \
                     current_setting('statement_timeout'), \
                     (SELECT count(*) FROM pg_prepared_statements \
                        WHERE statement = 'SELECT $1::int * 2 AS clean_cached_probe'))",
            &[],
        )
        .unwrap()
        .get(0)
    };
    for way in [Way::Write, Way::Keyless, Way::Sticky] {
        let mut c = borrow(&lb, way);
        let pid = backend(&mut c);
        let st = c.prepare_cached(CACHED).unwrap();
        assert_eq!(c.query_one(&st, &[&21]).unwrap().get::<_, i32>(0), 42);
        let clean = state(&mut c);
        assert!(clean.contains("cached=1"), "{clean}");
        // A standby refuses temporary tables and LISTEN: those on the primary only.
        let on_primary = matches!(way, Way::Write);
        if on_primary {
            c.batch_execute("CREATE TEMP TABLE dlb_clean_temp (id int); LISTEN dlb_clean")
                .unwrap();
        }
        c.query_one("SELECT pg_advisory_lock(4242)", &[]).unwrap();
        c.batch_execute(
            "PREPARE dlb_clean_leftover AS SELECT 1; \
             BEGIN; DECLARE dlb_clean_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT; \
             SET statement_timeout = '12345ms'; \
             SET SESSION AUTHORIZATION dlb_clean_role; SET ROLE NONE",
        )
        .unwrap();
        let dirty = state(&mut c);
        assert_ne!(dirty, clean, "{way:?}: the borrower changed its session");
        drop(c);

        let mut c = borrow(&lb, way);
        assert_eq!(backend(&mut c), pid, "{way:?}: the same connection");
        assert_eq!(state(&mut c), clean, "{way:?}: dirty was {dirty}");
        // dlb's statement survived, under the same name: no prepare this time.
        let st = c.prepare_cached(CACHED).unwrap();
        assert_eq!(c.query_one(&st, &[&4]).unwrap().get::<_, i32>(0), 8);
        // The same name can be prepared again, and the advisory lock is free for others.
        c.batch_execute("PREPARE dlb_clean_leftover AS SELECT 2; DEALLOCATE dlb_clean_leftover")
            .unwrap();
        let mut other = if on_primary {
            primary_client()
        } else {
            replica_client(1)
        };
        let free: bool = other
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .unwrap()
            .get(0);
        assert!(free, "{way:?}: the advisory lock was released");
    }
    // SET ROLE alone, on a replica.
    let mut c = borrow(&lb, Way::Keyless);
    let clean = state(&mut c);
    c.batch_execute("SET ROLE dlb_clean_role").unwrap();
    drop(c);
    assert_eq!(state(&mut borrow(&lb, Way::Keyless)), clean);
    assert_not_reported(&lb);
}

#[test]
fn a_repeatable_read_transaction_left_open_is_not_the_next_borrowers_snapshot() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    let mut added = 0;
    for way in [Way::Keyless, Way::Sticky, Way::Keyless] {
        let mut c = borrow(&lb, way);
        let pid = backend(&mut c);
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .unwrap();
        assert_eq!(count(&mut c), ROWS + added);
        // Given back inside the transaction, its snapshot taken.
        drop(c);
        primary_client()
            .execute("INSERT INTO public.dlb_clean_rows VALUES (0)", &[])
            .unwrap();
        added += 1;
        // Once the replica has the row, by a connection of its own.
        let mut r = replica_client(1);
        wait_until("replica 1 has the new row", WAIT, || {
            r.query_one("SELECT count(*) FROM public.dlb_clean_rows", &[])
                .unwrap()
                .get::<_, i64>(0)
                == ROWS + added
        });
        let mut c = borrow(&lb, way);
        assert_eq!(backend(&mut c), pid, "{way:?}: the same connection");
        assert_eq!(count(&mut c), ROWS + added, "{way:?}: sees the new row");
    }
    assert_not_reported(&lb);
}

#[test]
fn only_a_borrower_that_may_have_changed_the_session_costs_a_reset() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    let mut c = borrow(&lb, Way::Keyless);
    let pid = backend(&mut c);
    drop(c);
    // The last statement the connection's backend ran, seen from another connection.
    let mut observer = replica_client(1);
    let mut last = || -> String {
        observer
            .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .unwrap()
            .get(0)
    };
    for round in 0..3 {
        // Plain reads through `Conn`'s own methods: the next keyless checkout sends nothing.
        let mut c = borrow(&lb, Way::Keyless);
        let st = c
            .prepare_cached("SELECT count(*) FROM dlb_clean_rows")
            .unwrap();
        assert_eq!(c.query_one(&st, &[]).unwrap().get::<_, i64>(0), ROWS);
        assert_eq!(count(&mut c), ROWS);
        drop(c);
        let c = borrow(&lb, Way::Keyless);
        let seen = last();
        assert_eq!(seen, "SELECT count(*) FROM dlb_clean_rows", "round {round}");
        drop(c);
        // Anything else: the next checkout resets it first.
        let mut c = borrow(&lb, Way::Keyless);
        if round == 0 {
            c.batch_execute("SELECT 1").unwrap();
        } else if round == 1 {
            c.mark_session_changed();
        } else {
            c.query_one("SELECT pg_advisory_lock(1)", &[]).unwrap();
        }
        drop(c);
        let mut c = borrow(&lb, Way::Keyless);
        let seen = last();
        assert!(seen.contains("RESET ALL"), "round {round}: {seen}");
        assert_eq!(backend(&mut c), pid);
    }
    assert_not_reported(&lb);
}

/// A sticky read whose replica the cache proves, on a clean connection to the very server that
/// reported the cached position, costs no round trip of its own (issue 22): the backend's last
/// statement is still the previous borrower's, not dlb's replay check. A connection a borrower
/// may have changed is checked (and reset) in that round trip as before.
#[test]
fn a_sticky_read_the_cache_proves_sends_nothing_before_the_callers_query() {
    let _l = lock_cluster();
    let lb = balancer();
    setup(&lb, KEY);
    wait_until("the monitor's cached position proves the key", WAIT, || {
        lb.pick_replica(Some(KEY)).unwrap().reason() == dlb::Reason::CaughtUpCached
    });
    let last_statement = |pid: i32| -> String {
        let mut admin =
            postgres::Client::connect(&dsn_at(&env().primary, replica_addr(1)), postgres::NoTls)
                .unwrap();
        admin
            .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .unwrap()
            .get(0)
    };
    let mut c = lb.read_conn(Some(KEY)).unwrap();
    let pid = backend(&mut c);
    drop(c);
    let c = lb.read_conn(Some(KEY)).unwrap();
    assert_eq!(c.route().reason(), dlb::Reason::CaughtUpCached);
    assert_eq!(last_statement(pid), "SELECT pg_backend_pid()");
    drop(c);
    // A borrower that may have changed the session: the next sticky read checks first.
    let mut c = lb.read_conn(Some(KEY)).unwrap();
    c.batch_execute("SELECT 1").unwrap();
    drop(c);
    let c = lb.read_conn(Some(KEY)).unwrap();
    assert_ne!(last_statement(pid), "SELECT 1");
    drop(c);
}

/// `pool.read_statement_timeout_ms`: a read on a replica's pooled connection that runs longer
/// is cancelled by the replica (SQLSTATE 57014), the replica is not reported, the connection
/// serves the next read, and a borrower's own `SET statement_timeout` is gone for the next
/// borrower (the start-up value comes back with the reset); writes are not affected.
#[test]
fn a_read_statement_timeout_cancels_long_reads_and_survives_resets() {
    let _l = lock_cluster();
    let lb = Balancer::new(
        config_for(&env().primary, &[replica_addr(1)])
            .pool_max_size(1)
            .read_statement_timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 1);
    let setting =
        |c: &mut Conn| -> String { c.query_one("SHOW statement_timeout", &[]).unwrap().get(0) };
    let mut c = borrow(&lb, Way::Keyless);
    let pid = backend(&mut c);
    assert_eq!(setting(&mut c), "300ms");
    let e = c.query("SELECT pg_sleep(30)", &[]).unwrap_err();
    assert_eq!(
        e.code(),
        Some(&postgres::error::SqlState::QUERY_CANCELED),
        "{e}"
    );
    c.execute("SET statement_timeout = 0", &[]).unwrap();
    drop(c);
    let mut c = borrow(&lb, Way::Keyless);
    assert_eq!(
        backend(&mut c),
        pid,
        "the same connection serves the next read"
    );
    assert_eq!(setting(&mut c), "300ms", "the borrower's SET is gone");
    drop(c);
    let mut w = borrow(&lb, Way::Write);
    assert_eq!(setting(&mut w), "0", "writes keep the server's own");
    drop(w);
    assert_not_reported(&lb);
}
