//! Bad configuration and bad input get clear errors naming what is wrong.

use dlb::{Balancer, Error, Lsn};

const P: &str = "host=127.0.0.1 port=55432 user=postgres dbname=dlb_test";

fn config_err(json: &str) -> (String, String) {
    match Balancer::from_json(json).unwrap_err() {
        Error::Config { field, message } => (field, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn malformed_json() {
    let (field, msg) = config_err(r#"{"primary": "#);
    assert_eq!(field, "primary", "the path reached when the document ended");
    assert!(msg.contains("EOF"), "{msg}");
    let (field, msg) = config_err("not json");
    assert_eq!(field, "");
    assert!(msg.contains("expected"), "{msg}");
    let (field, msg) = config_err(&format!(r#"{{"primary": "{P}"}} trailing"#));
    assert_eq!(field, "");
    assert!(msg.contains("trailing characters"), "{msg}");
}

#[test]
fn unknown_field() {
    let (_, msg) = config_err(&format!(
        r#"{{"primary": "{P}", "replica_check_interval": 5}}"#
    ));
    assert!(
        msg.contains("unknown field `replica_check_interval`"),
        "{msg}"
    );
    let (field, msg) = config_err(&format!(r#"{{"primary": "{P}", "pool": {{"size": 5}}}}"#));
    assert!(field.starts_with("pool"), "{field}");
    assert!(msg.contains("unknown field `size`"), "{msg}");
}

#[test]
fn bad_dsn() {
    let (field, _) = config_err(r#"{"primary": "host=x port=notaport"}"#);
    assert_eq!(field, "primary");
    let (field, _) = config_err(r#"{"primary": "mysql://x"}"#);
    assert_eq!(field, "primary");
    let (field, _) = config_err(&format!(
        r#"{{"primary": "{P}", "replicas": {{"hosts": ["h:99999"]}}}}"#
    ));
    assert_eq!(field, "replicas.hosts[0]");
}

#[test]
fn zero_pool_size() {
    let (field, msg) = config_err(&format!(
        r#"{{"primary": "{P}", "pool": {{"max_size": 0}}}}"#
    ));
    assert_eq!(field, "pool.max_size");
    assert!(msg.contains("at least 1"), "{msg}");
    let e = Balancer::from_json(&format!(
        r#"{{"primary": "{P}", "pool": {{"max_size": 0}}}}"#
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: pool.max_size: must be at least 1 (got 0)"
    );
}

#[test]
fn wrong_types_name_the_path() {
    let (field, msg) = config_err(&format!(r#"{{"primary": "{P}", "max_lag_bytes": "8MB"}}"#));
    assert_eq!(field, "max_lag_bytes");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn malformed_lsn() {
    for bad in ["", "16", "16/", "G/1", "1/2/3", "123456789/1"] {
        let e = bad.parse::<Lsn>().unwrap_err();
        assert!(matches!(e, Error::InvalidLsn { .. }));
        assert!(
            e.to_string().starts_with(&format!("invalid LSN {bad:?}")),
            "{e}"
        );
    }
}
