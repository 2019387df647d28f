//! TLS to PostgreSQL against real servers: the TLS-only cluster of the test environment
//! (`scripts/testenv/postgres_tls.sh`) and the main cluster, which has ssl=off. Each sslmode
//! has libpq's outcome; verification failures name their cause; client certificates;
//! read-your-writes over TLS; the handed-out DSN works with libpq (`psql`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use dlb::{Balancer, Error, Role};

fn tls() -> &'static TlsEnv {
    env()
        .tls
        .as_ref()
        .expect("DLB_TEST_TLS_PRIMARY not set: run scripts/testenv.sh up and eval its env")
}

/// A key=value DSN: `base` with `host`/`port` replaced by `addr` (when given) and `extra` added.
fn dsn(base: &str, addr: Option<&str>, extra: &str) -> String {
    let mut parts: Vec<String> = base
        .split_whitespace()
        .filter(|kv| addr.is_none() || !(kv.starts_with("host=") || kv.starts_with("port=")))
        .map(String::from)
        .collect();
    if let Some(a) = addr {
        let (h, p) = a.rsplit_once(':').unwrap();
        parts.insert(0, format!("port={p}"));
        parts.insert(0, format!("host={h}"));
    }
    format!("{} {extra}", parts.join(" "))
}

/// A balancer on `primary` (no replicas unless given) that gives up on a checkout quickly.
fn balancer(primary: String, replicas: &[String]) -> Balancer {
    let cfg = dlb::Config::builder(primary)
        .replica_hosts(replicas.to_vec())
        .replica_check_interval(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(2000))
        .checkout_timeout(Duration::from_millis(1500))
        .pool_min_idle(0)
        .build()
        .unwrap();
    Balancer::new(cfg).unwrap()
}

/// A balancer on the TLS cluster's primary with `sslmode` and the test CA, and `replicas`.
fn verified(sslmode: &str, replicas: &[String]) -> Balancer {
    let t = tls();
    let extra = format!("sslmode={sslmode} sslrootcert={}", t.ca);
    balancer(dsn(&t.primary, None, &extra), replicas)
}

/// Connects through dlb's pool to the primary: `Ok(encrypted)` or the error's text.
fn outcome(primary: String) -> Result<bool, String> {
    let lb = balancer(primary, &[]);
    match lb.write_conn() {
        Ok(mut c) => Ok(c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0)),
        Err(e) => {
            assert!(matches!(e, Error::PrimaryUnavailable { .. }), "{e:?}");
            Err(e.to_string())
        }
    }
}

#[derive(Debug)]
enum Want {
    Tls,
    Plain,
    Fails(&'static str),
}

fn check(what: &str, got: Result<bool, String>, want: Want) {
    match (&want, &got) {
        (Want::Tls, Ok(true)) | (Want::Plain, Ok(false)) => {}
        (Want::Fails(cause), Err(e)) if e.contains(cause) => {}
        _ => panic!("{what}: want {want:?}, got {got:?}"),
    }
    eprintln!("{what}: {got:?}");
}

/// libpq's outcome table, through dlb's own pooled connections.
#[test]
fn each_sslmode_has_libpqs_outcome() {
    let t = tls();
    let ca = format!("sslrootcert={}", t.ca);
    let wrong = format!("sslrootcert={}", t.wrong_ca);
    let plain = &env().primary;
    let hba = "no pg_hba.conf entry";
    for (mode, extra, on_tls, on_plain) in [
        ("disable", "", Want::Fails(hba), Want::Plain),
        ("allow", "", Want::Tls, Want::Plain),
        ("prefer", "", Want::Tls, Want::Plain),
        (
            "require",
            "",
            Want::Tls,
            Want::Fails("server does not support SSL, but sslmode=require"),
        ),
        (
            "verify-ca",
            ca.as_str(),
            Want::Tls,
            Want::Fails("server does not support SSL, but sslmode=verify-ca"),
        ),
        (
            "verify-full",
            ca.as_str(),
            Want::Tls,
            Want::Fails("server does not support SSL, but sslmode=verify-full"),
        ),
        // Wrong roots: verification fails (require with sslrootcert verifies as verify-ca).
        (
            "verify-ca",
            wrong.as_str(),
            Want::Fails("certificate verify failed: unknown issuer"),
            Want::Fails("server does not support SSL"),
        ),
        (
            "require",
            wrong.as_str(),
            Want::Fails("certificate verify failed: unknown issuer"),
            Want::Fails("server does not support SSL"),
        ),
        // prefer falls back to plain when TLS fails, as libpq: the TLS-only server refuses it.
        (
            "prefer",
            wrong.as_str(),
            Want::Fails("certificate verify failed: unknown issuer"),
            Want::Plain,
        ),
    ] {
        let extra = format!("sslmode={mode} {extra}");
        check(
            &format!("TLS-only server, {extra}"),
            outcome(dsn(&t.primary, None, &extra)),
            on_tls,
        );
        check(
            &format!("non-TLS server, {extra}"),
            outcome(dsn(plain, None, &extra)),
            on_plain,
        );
    }
    // No sslmode at all: libpq's default, prefer.
    check("TLS-only, default", outcome(t.primary.clone()), Want::Tls);
    check("non-TLS, default", outcome(plain.clone()), Want::Plain);
}

/// verify-full checks the name (or IP) against the certificate; verify-ca does not.
#[test]
fn verify_full_checks_the_host_name() {
    let t = tls();
    let (good, other) = (&t.replicas[0], &t.replicas[1]);
    let full = format!("sslmode=verify-full sslrootcert={}", t.ca);
    let ca = format!("sslmode=verify-ca sslrootcert={}", t.ca);
    // Replica 1's certificate names 127.0.0.1 and localhost.
    check(
        "verify-full, IP",
        outcome(dsn(&t.primary, Some(good), &full)),
        Want::Tls,
    );
    let port = good.rsplit_once(':').unwrap().1;
    check(
        "verify-full, localhost",
        outcome(dsn(&t.primary, Some(&format!("localhost:{port}")), &full)),
        Want::Tls,
    );
    // Replica 2's names another host.
    check(
        "verify-full, other name",
        outcome(dsn(&t.primary, Some(other), &full)),
        Want::Fails("server certificate does not match host name \"127.0.0.1\""),
    );
    check(
        "verify-ca, other name",
        outcome(dsn(&t.primary, Some(other), &ca)),
        Want::Tls,
    );
    // sslsni=0 changes nothing for an IP (no SNI is sent for addresses anyway).
    check(
        "verify-full, sslsni=0",
        outcome(dsn(&t.primary, Some(good), &format!("{full} sslsni=0"))),
        Want::Tls,
    );
}

#[test]
fn client_certificates() {
    let t = tls();
    let base = dsn(&t.primary, None, "").replace("user=postgres", &format!("user={}", t.cert_user));
    let verify = format!("sslmode=verify-full sslrootcert={}", t.ca);
    check(
        "cert user without a certificate",
        outcome(format!("{base} {verify}")),
        Want::Fails("connection requires a valid client certificate"),
    );
    let with_cert = format!(
        "{base} {verify} sslcert={} sslkey={}",
        t.client_cert, t.client_key
    );
    check(
        "cert user with its certificate",
        outcome(with_cert.clone()),
        Want::Tls,
    );
    let lb = balancer(with_cert, &[]);
    let user: String = lb
        .write_conn()
        .unwrap()
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(user, t.cert_user);
    // A key file that cannot be read: a configuration error at construction, naming the key.
    let bad = format!(
        "{base} {verify} sslcert={} sslkey=/nonexistent/key.pem",
        t.client_cert
    );
    let e = Balancer::new(dlb::Config::new(bad)).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, Error::Config { .. }) && text.contains("`sslkey`") && text.contains("primary"),
        "{text}"
    );
}

/// A replica whose certificate fails verify-full is quarantined `unreachable`, with the TLS
/// cause in `last_error`; the other one serves.
#[test]
fn status_shows_the_tls_cause_of_a_failing_replica() {
    let t = tls();
    let lb = verified("verify-full", &t.replicas);
    wait_healthy(&lb, 1);
    wait_until("replica 2 quarantined", WAIT, || {
        replica_state(&lb, &t.replicas[1]).0 == "quarantined"
    });
    let st = lb.status();
    let r = st
        .replicas
        .iter()
        .find(|r| r.host.addr == t.replicas[1])
        .unwrap();
    assert_eq!(r.reason, Some("unreachable"), "{r:?}");
    let err = r.last_error.as_deref().unwrap_or_default();
    assert!(
        err.contains("server certificate does not match host name")
            && err.contains("sslmode=verify-full"),
        "{err}"
    );
    // Each replica's DSN keeps every TLS key as configured.
    assert!(r.host.dsn.contains("sslmode=verify-full") && r.host.dsn.contains("sslrootcert="));
    for _ in 0..20 {
        let route = lb.pick_replica(None).unwrap();
        assert_eq!(route.addr(), t.replicas[0]);
    }
}

/// A plain connection to a TLS node over its Unix socket (0: primary, 1 and 2: replicas).
fn housekeeping(node: usize) -> postgres::Client {
    let t = tls();
    let port = match node {
        0 => t
            .primary
            .split("port=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap(),
        n => t.replicas[n - 1].rsplit_once(':').unwrap().1,
    };
    let d = format!(
        "host={} port={port} user=postgres dbname=dlb_test",
        t.sockets[node]
    );
    postgres::Client::connect(&d, postgres::NoTls).unwrap()
}

/// Resumes replay on the TLS replicas when dropped (also when a test fails).
struct ResumeTls;

impl Drop for ResumeTls {
    fn drop(&mut self) {
        for n in 1..=2 {
            let _ = housekeeping(n).simple_query("SELECT pg_wal_replay_resume()");
        }
    }
}

/// record_lsn, sticky read_conn and zero stale reads with a paused replica, every connection
/// over verified TLS.
#[test]
fn read_your_writes_over_tls() {
    let _l = lock_cluster();
    let _resume = ResumeTls;
    let t = tls();
    let lb = verified("verify-ca", &t.replicas);
    wait_healthy(&lb, 2);
    lb.write_conn()
        .unwrap()
        .batch_execute(
            "DROP TABLE IF EXISTS dlb_tls_ryw; CREATE TABLE dlb_tls_ryw (id bigint PRIMARY KEY)",
        )
        .unwrap();
    for n in 1..=2 {
        let mut c = housekeeping(n);
        wait_until("the table reaches the replicas", WAIT, || {
            c.query_one("SELECT to_regclass('dlb_tls_ryw') IS NOT NULL", &[])
                .unwrap()
                .get(0)
        });
    }
    housekeeping(2)
        .simple_query("SELECT pg_wal_replay_pause()")
        .unwrap();
    let (mut stale, mut on_replica, mut on_primary) = (0, 0, 0);
    for id in 0..200i64 {
        let key = format!("tls/{}", id % 5);
        {
            let mut w = lb.write_conn().unwrap();
            w.execute("INSERT INTO dlb_tls_ryw VALUES ($1)", &[&id])
                .unwrap();
        }
        lb.record_lsn(&key).unwrap();
        let mut c = lb.read_conn(Some(&key)).unwrap();
        let row = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM dlb_tls_ryw WHERE id = $1), \
                 (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
                &[&id],
            )
            .unwrap();
        let (seen, ssl): (bool, bool) = (row.get(0), row.get(1));
        assert!(ssl, "read {id} not over TLS");
        if !seen {
            stale += 1;
        }
        match c.route().role() {
            Role::Primary => on_primary += 1,
            Role::Replica => {
                on_replica += 1;
                assert_ne!(
                    c.route().addr(),
                    t.replicas[1],
                    "the paused replica served {id}"
                );
            }
        }
    }
    eprintln!("replica {on_replica}, primary {on_primary}, stale {stale}");
    assert_eq!(stale, 0);
    assert!(on_replica > 0, "no read went to the caught-up replica");
}

/// The handed-out DSN (with its TLS keys) works with libpq: psql connects over TLS.
#[test]
fn handed_out_dsn_connects_with_psql() {
    let t = tls();
    let lb = verified("verify-full", &t.replicas[..1]);
    wait_healthy(&lb, 1);
    let psql = format!(
        "{}/psql",
        std::env::var("DLB_PG_BIN").unwrap_or_else(|_| "/usr/bin".into())
    );
    for route in [lb.primary(), lb.pick_replica(None).unwrap()] {
        assert!(
            route.dsn().contains("sslmode=verify-full"),
            "{}",
            route.dsn()
        );
        let out = Command::new(&psql)
            .args(["-X", "-tA", route.dsn(), "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .env_remove("PGSSLMODE")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {}: {}",
            route.addr(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }
}

/// A CRL of the test CA in `dir`: `dates` are its lastUpdate and nextUpdate
/// (`YYYYMMDDHHMMSSZ`), else from now for 30 days.
fn test_crl(dir: &std::path::Path, name: &str, dates: Option<(&str, &str)>) -> String {
    // The test CA's key is beside its certificate, in the TLS Redis's directory.
    let ca_dir = std::path::Path::new(&env().redis_tls_ca).parent().unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    let cnf = dir.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {}\ncrlnumber = {}\ndefault_md = sha256\n\
             default_crl_days = 30\n",
            dir.join("index.txt").display(),
            dir.join("crlnumber").display()
        ),
    )
    .unwrap();
    let out = dir.join(name);
    let mut cmd = Command::new("openssl");
    cmd.args(["ca", "-gencrl", "-batch", "-config"])
        .arg(&cnf)
        .arg("-keyfile")
        .arg(ca_dir.join("ca.key"))
        .arg("-cert")
        .arg(ca_dir.join("ca.pem"))
        .arg("-out")
        .arg(&out);
    if let Some((last, next)) = dates {
        cmd.args(["-crl_lastupdate", last, "-crl_nextupdate", next]);
    }
    let o = cmd.output().expect("run openssl");
    assert!(
        o.status.success(),
        "openssl ca -gencrl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.display().to_string()
}

/// `sslcrl` is checked as libpq checks it: a current CRL of the issuer passes, one past its
/// nextUpdate fails (before: accepted). Without verification there is nothing to check it
/// against: refused rather than ignored.
#[test]
fn sslcrl_expired_fails_and_unverified_is_refused() {
    let t = tls();
    let dir = std::env::temp_dir().join(format!("dlb-tls-crl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let current = test_crl(&dir, "current.pem", None);
    let expired = test_crl(
        &dir,
        "expired.pem",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let verify = format!("sslmode=verify-full sslrootcert={}", t.ca);
    check(
        "current CRL",
        outcome(dsn(&t.primary, None, &format!("{verify} sslcrl={current}"))),
        Want::Tls,
    );
    check(
        "expired CRL",
        outcome(dsn(&t.primary, None, &format!("{verify} sslcrl={expired}"))),
        Want::Fails("certificate verify failed: CRL has expired"),
    );
    let unverified = dsn(
        &t.primary,
        None,
        &format!("sslmode=require sslcrl={current}"),
    );
    let e = Balancer::new(dlb::Config::new(unverified))
        .map_or_else(|e| e.to_string(), |_| "accepted".into());
    assert!(e.contains("`sslcrl`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
