//! libpq connection keys that ask for a protection fail closed: enforced, or refused at
//! configuration with `Error::Config` naming the key, never accepted and ignored.
//!
//! * `require_auth` (dlb's driver cannot enforce it): refused before any connection, so a
//!   hostile server that asks for the password in clear ([`common::fake_pg`]) never gets it;
//!   with `channel_binding=require` (which lets only SCRAM-SHA-256-PLUS through) it holds.
//! * `channel_binding=require`: enforced, over TLS with a SCRAM user of the TLS test cluster
//!   (`scripts/testenv/postgres_tls.sh`); refused with `sslmode=disable`.
//! * `gssencmode=require`, `requirepeer`: refused.

mod common;

use std::time::{Duration, Instant};

use common::fake_pg::FakePg;
use common::*;
use dlb::{Balancer, Error};

/// Whether a balancer on `dsn` is refused: `Err(message)` with the configuration error, or
/// `Ok(passwords)` with what the fake server received once the balancer ran for a while.
fn balancer_on(dsn: &str, fake: &FakePg) -> Result<Vec<String>, String> {
    let cfg = dlb::Config::builder(dsn)
        .replica_check_interval(Duration::from_millis(50))
        .probe_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .pool_min_idle(0);
    // `Config::new` skips validation: this is `Balancer::new`'s own check.
    let lb = match Balancer::new(dlb::Config::new(dsn)) {
        Err(e) => {
            assert!(matches!(e, Error::Config { .. }), "{e:?}");
            let built = cfg.build().unwrap_err().to_string();
            assert_eq!(built, e.to_string(), "validate and Balancer::new differ");
            return Err(e.to_string());
        }
        Ok(lb) => lb,
    };
    let end = Instant::now() + Duration::from_secs(5);
    while fake.startups() < 2 && Instant::now() < end {
        let _ = lb.write_conn();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(lb);
    Ok(fake.passwords())
}

fn fake_dsn(fake: &FakePg, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=app password=SECRETxyz dbname=app {extra}",
        fake.port()
    )
}

/// `require_auth` with anything the driver could be made to violate: a configuration error
/// naming the key, and the hostile server gets no connection, let alone the password (before:
/// accepted, and the server that asked for the password in clear received `SECRETxyz`).
#[test]
fn require_auth_is_refused_before_the_password_can_leak() {
    for extra in [
        "require_auth=scram-sha-256",
        "require_auth=scram-sha-256 channel_binding=prefer",
        "require_auth=md5,scram-sha-256",
        "require_auth=none",
        "require_auth=!password",
    ] {
        let fake = FakePg::start();
        let dsn = fake_dsn(&fake, extra);
        match balancer_on(&dsn, &fake) {
            Err(e) => {
                assert!(
                    e.starts_with("invalid configuration: primary: `require_auth`")
                        && e.contains("cannot enforce")
                        && e.contains("channel_binding=require")
                        && !e.contains("SECRET"),
                    "{extra}: {e}"
                );
                assert_eq!(fake.startups(), 0, "{extra}: connected");
            }
            Ok(passwords) => panic!(
                "{extra}: accepted; the server that asked for a cleartext password got {passwords:?}"
            ),
        }
    }
    // Both syntaxes.
    let fake = FakePg::start();
    let url = format!(
        "postgres://app:SECRETxyz@127.0.0.1:{}/app?require_auth=scram-sha-256",
        fake.port()
    );
    assert!(balancer_on(&url, &fake).is_err());
    assert!(fake.passwords().is_empty());
}

/// With `channel_binding=require` the driver completes only SCRAM-SHA-256-PLUS, so
/// `require_auth=scram-sha-256` holds and is accepted: the hostile server still gets no
/// password. `!gss`/`!sspi` always hold (the driver does neither) and are accepted.
#[test]
fn require_auth_that_holds_is_accepted_and_enforced() {
    let fake = FakePg::start();
    let dsn = fake_dsn(&fake, "require_auth=scram-sha-256 channel_binding=require");
    let passwords = balancer_on(&dsn, &fake).expect("accepted");
    assert!(fake.startups() >= 1, "never connected");
    assert!(passwords.is_empty(), "sent {passwords:?}");
    for extra in [
        "require_auth=!gss,!sspi",
        "require_auth=!password,!md5,!none channel_binding=require",
    ] {
        assert!(
            dlb::Config::builder(fake_dsn(&fake, extra)).build().is_ok(),
            "{extra}"
        );
    }
    // The control: the fake server does get the password from a DSN that allows it.
    let fake = FakePg::start();
    let passwords = balancer_on(&fake_dsn(&fake, ""), &fake).unwrap();
    assert!(passwords.iter().any(|p| p == "SECRETxyz"), "{passwords:?}");
}

/// Keys dlb cannot honour: refused, naming the key, before any connection.
#[test]
fn gssencmode_require_requirepeer_and_binding_without_tls_are_refused() {
    for (extra, key) in [
        ("gssencmode=require", "gssencmode"),
        ("requirepeer=postgres", "requirepeer"),
        ("sslmode=disable channel_binding=require", "channel_binding"),
    ] {
        let fake = FakePg::start();
        match balancer_on(&fake_dsn(&fake, extra), &fake) {
            Err(e) => assert!(
                e.starts_with(&format!("invalid configuration: primary: `{key}`")),
                "{extra}: {e}"
            ),
            Ok(_) => panic!(
                "{extra}: accepted (and connected {} times)",
                fake.startups()
            ),
        }
        assert_eq!(fake.startups(), 0, "{extra}: connected");
    }
    let fake = FakePg::start();
    for extra in ["gssencmode=disable", "gssencmode=prefer"] {
        assert!(
            dlb::Config::builder(fake_dsn(&fake, extra)).build().is_ok(),
            "{extra}"
        );
    }
}

fn tls() -> &'static TlsEnv {
    let t = env()
        .tls
        .as_ref()
        .expect("DLB_TEST_TLS_PRIMARY not set: run scripts/testenv.sh up and eval its env");
    assert!(
        !t.scram_user.is_empty(),
        "DLB_TEST_TLS_SCRAM_USER not set: run scripts/testenv.sh up and eval its env again"
    );
    t
}

/// The TLS cluster's primary as the SCRAM user, with `extra`.
fn scram_dsn(extra: &str) -> String {
    let t = tls();
    let base: Vec<&str> = t
        .primary
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user="))
        .collect();
    format!(
        "{} user={} password={} {extra}",
        base.join(" "),
        t.scram_user,
        t.scram_password
    )
}

/// `(current_user, ssl)` through a pooled primary connection, or the error.
fn connect(dsn: &str, replicas: &[String]) -> Result<(String, bool), String> {
    let cfg = dlb::Config::builder(dsn)
        .replica_hosts(replicas.to_vec())
        .replica_check_interval(Duration::from_millis(100))
        .probe_timeout(Duration::from_millis(2000))
        .checkout_timeout(Duration::from_millis(2000))
        .pool_min_idle(0)
        .build()
        .map_err(|e| e.to_string())?;
    let lb = Balancer::new(cfg).map_err(|e| e.to_string())?;
    if !replicas.is_empty() {
        // The monitor's probe connections bind too.
        wait_healthy(&lb, replicas.len());
    }
    let mut c = lb.write_conn().map_err(|e| e.to_string())?;
    let row = c
        .query_one(
            "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    Ok((row.get(0), row.get(1)))
}

/// `channel_binding=require` over TLS with a SCRAM user connects: the driver only goes on with
/// SCRAM-SHA-256-PLUS under `require`, and the server checks the binding (a wrong
/// `tls-server-end-point` hash fails with "SCRAM channel binding check failed"), so this is
/// SCRAM-SHA-256-PLUS, accepted by the server. Before: no binding was offered and `require`
/// failed ("server did not use channel binding"). Without TLS it cannot connect.
#[test]
fn channel_binding_require_over_tls_with_scram() {
    let t = tls();
    let want = Ok((t.scram_user.clone(), true));
    for extra in [
        "sslmode=require channel_binding=require".to_string(),
        format!(
            "sslmode=verify-full sslrootcert={} channel_binding=require",
            t.ca
        ),
        "sslmode=prefer channel_binding=require".to_string(),
        // libpq's default, prefer: binding used when offered; and disabled.
        "sslmode=require".to_string(),
        "sslmode=require channel_binding=disable".to_string(),
    ] {
        assert_eq!(connect(&scram_dsn(&extra), &[]), want, "{extra}");
    }
    // A replica, through the monitor's probe connections and the pools.
    let extra = format!(
        "sslmode=verify-full sslrootcert={} channel_binding=require",
        t.ca
    );
    assert_eq!(
        connect(&scram_dsn(&extra), &t.replicas[..1]),
        want,
        "{extra}"
    );
    // A wrong password still fails (the binding is no way around authentication).
    let wrong = scram_dsn("sslmode=require channel_binding=require")
        .replace(&t.scram_password, "not-the-password");
    let e = connect(&wrong, &[]).unwrap_err();
    assert!(e.contains("password authentication failed"), "{e}");
    // No TLS, no binding: the main cluster (ssl=off, trust) is refused by the driver.
    let e = connect(&format!("{} channel_binding=require", env().primary), &[]).unwrap_err();
    assert!(e.contains("channel binding"), "{e}");
}

/// A hostile server's text (an error message of 1 MB with terminal escapes and forged log
/// lines) reaches errors and the status bounded (512 bytes, marked as cut) with its control
/// characters escaped (issue 24).
#[test]
fn a_hostile_servers_text_is_bounded_and_escaped() {
    let evil = format!(
        "bad\n2026-01-01 WARN forged line\x1b[2J\x1b[31m{}",
        "x".repeat(1 << 20)
    );
    let (primary, replica) = (FakePg::failing_with(&evil), FakePg::failing_with(&evil));
    let dsn = format!("host=127.0.0.1 port={} user=u dbname=d", primary.port());
    let addr = format!("127.0.0.1:{}", replica.port());
    let lb = Balancer::new(config_for(&dsn, &[&addr]).build().unwrap()).unwrap();
    let clean = |what: &str, text: &str| {
        assert!(text.len() < 1024, "{what}: {} bytes", text.len());
        assert!(!text.chars().any(char::is_control), "{what}: {text:?}");
        assert!(text.contains("bad"), "{what}: {text}");
    };
    let st = lb.status();
    clean(
        "primary_error",
        st.primary_error.as_deref().expect("primary error"),
    );
    clean(
        "last_error",
        st.replicas[0].last_error.as_deref().expect("replica error"),
    );
    let json = st.to_json();
    assert!(json.len() < 8192, "status JSON: {} bytes", json.len());
    match lb.write_conn() {
        Err(e) => clean("write_conn", &e.to_string()),
        Ok(_) => panic!("the hostile server gave a connection"),
    }
}
