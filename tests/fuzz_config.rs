//! Property tests ("fuzzing" with proptest) of the configuration: `Config::from_json`, the
//! typed builder, `Lsn` parsing. No input panics or takes long; no secret of the input comes
//! out of an error (or, once `Config`'s `Debug` is redacted, of `Debug`).
//!
//! `PROPTEST_CASES` sets the case count (`make fuzz` runs them long).

mod fuzz_common;

use std::time::{Duration, Instant};

use dlb::{Config, Lsn};
use fuzz_common::{MARK, TRICKY, config, primary_with_secret, secret};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Cases per property under `cargo test`.
const CASES: u32 = 1024;

/// Longest a parse may take (a generous bound: they take microseconds).
const BOUND: Duration = Duration::from_secs(2);

/// A JSON value of any type, often a DSN with the secret (pasted into the wrong field).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        primary_with_secret().prop_map(Value::from),
        secret().prop_map(Value::from),
        prop::sample::select(vec![
            "primary",
            "error",
            "SRV",
            "A",
            "memory",
            "127.0.0.1",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(FIELDS).prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every field name of the configuration, at any level.
const FIELDS: &[&str] = &[
    "primary",
    "replicas",
    "hosts",
    "dns",
    "record",
    "nameserver",
    "port",
    "record_type",
    "tcp",
    "refresh_interval_ms",
    "timeout_ms",
    "drain_timeout_ms",
    "replica_check_interval_ms",
    "max_lag_bytes",
    "max_lag_ms",
    "max_time_lag_ms",
    "max_replay_stall_ms",
    "probe_timeout_ms",
    "pool",
    "max_size",
    "min_idle",
    "connect_timeout_ms",
    "checkout_timeout_ms",
    "max_lifetime_s",
    "sticky_ttl_s",
    "sticky_check_budget_ms",
    "no_caught_up_replica",
    "lsn_store",
    "memory",
    "redis",
    "url",
    "cluster",
    "key_prefix",
    "op_timeout_ms",
    "pool_size",
    "tls_ca_file",
    "connectivity",
    "failure_threshold",
    "backoff_initial_ms",
    "backoff_max_ms",
    "flap_window_ms",
    "flap_threshold",
    "flap_hold_ms",
    "unknown_field",
];

/// A field: absent, a value of its type, or (now and then) any JSON value, often a DSN with
/// the secret.
fn field(valid: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        3 => Just(None),
        4 => valid.prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
    .boxed()
}

/// An object of `fields` (absent ones left out), or any JSON value now and then.
fn object(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
    let (names, values): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    values
        .prop_map(move |vs| {
            let m = names
                .iter()
                .zip(vs)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect();
            Value::Object(m)
        })
        .boxed()
}

fn num(max: u64) -> BoxedStrategy<Value> {
    prop_oneof![
        (0..=max).prop_map(Value::from),
        any::<u64>().prop_map(Value::from)
    ]
    .boxed()
}

fn one_of(values: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(values).prop_map(Value::from).boxed()
}

/// A configuration document of the right shape, the primary with the secret, each field
/// absent, valid or of any type.
fn config_json() -> impl Strategy<Value = Value> {
    let hosts = prop::collection::vec(
        prop_oneof![
            one_of(&[
                "127.0.0.1:2",
                "127.0.0.1:3",
                "[::1]:4",
                "127.0.0.1",
                "127.0.0.1:1"
            ]),
            any_json(),
        ],
        0..3,
    )
    .prop_map(Value::from)
    .boxed();
    let dns = object(vec![
        (
            "record",
            field(one_of(&["_pg._tcp.local", "replicas.local", ""])),
        ),
        (
            "nameserver",
            field(one_of(&["127.0.0.1", "::1", "localhost"])),
        ),
        ("port", field(num(70_000))),
        ("record_type", field(one_of(&["SRV", "A", "srv"]))),
        ("tcp", field(any::<bool>().prop_map(Value::from).boxed())),
        ("refresh_interval_ms", field(num(100_000))),
        ("timeout_ms", field(num(100_000))),
    ]);
    let replicas = object(vec![
        ("hosts", field(hosts)),
        ("dns", field(dns)),
        ("drain_timeout_ms", field(num(100_000))),
    ]);
    let pool = object(vec![
        ("max_size", field(num(20))),
        ("min_idle", field(num(20))),
        ("connect_timeout_ms", field(num(100_000))),
        ("checkout_timeout_ms", field(num(100_000))),
        ("max_lifetime_s", field(num(100_000))),
    ]);
    let redis = object(vec![
        (
            "url",
            field(one_of(&[
                "redis://127.0.0.1:1",
                "rediss://u:pw@127.0.0.1:1/0",
            ])),
        ),
        (
            "cluster",
            field(
                prop::collection::vec(one_of(&["redis://127.0.0.1:1"]), 0..3)
                    .prop_map(Value::from)
                    .boxed(),
            ),
        ),
        ("key_prefix", field(one_of(&["dlb:", ""]))),
        ("op_timeout_ms", field(num(1000))),
        ("pool_size", field(num(10))),
    ]);
    let lsn_store = prop_oneof![
        Just(json!({"memory": {}})),
        redis.prop_map(|r| json!({ "redis": r })),
        any_json(),
    ]
    .boxed();
    let connectivity = object(vec![
        ("failure_threshold", field(num(10))),
        ("backoff_initial_ms", field(num(100_000))),
        ("backoff_max_ms", field(num(100_000))),
        ("flap_window_ms", field(num(100_000))),
        ("flap_threshold", field(num(10))),
        ("flap_hold_ms", field(num(100_000))),
    ]);
    let rest = object(vec![
        ("replicas", field(replicas)),
        ("replica_check_interval_ms", field(num(100_000))),
        ("max_lag_bytes", field(num(u64::MAX))),
        ("max_lag_ms", field(num(100_000))),
        ("max_time_lag_ms", field(num(100_000))),
        ("max_replay_stall_ms", field(num(100_000))),
        ("probe_timeout_ms", field(num(1000))),
        ("pool", field(pool)),
        ("sticky_ttl_s", field(num(100_000))),
        ("sticky_check_budget_ms", field(num(1000))),
        ("no_caught_up_replica", field(one_of(&["primary", "error"]))),
        ("lsn_store", field(lsn_store)),
        ("connectivity", field(connectivity)),
        (
            "unknown_field",
            prop_oneof![9 => Just(None), 1 => any_json().prop_map(Some)].boxed(),
        ),
    ]);
    (primary_with_secret(), rest).prop_map(|(primary, mut doc)| {
        if let Value::Object(m) = &mut doc {
            m.insert("primary".into(), Value::from(primary));
        }
        doc
    })
}

/// Known bugs (see the ignored regressions below): serde's "unknown variant `...`" and
/// "unknown field `...`" quote the value or key between backquotes, which
/// `without_quoted_values` keeps (the key is also the error's path); the nameserver check
/// quotes the value with `{:?}`; and `without_quoted_values` takes an escaped quote (`\"`)
/// inside a quoted value for its end, so the text after it shows (`"…" SECRET"…`): any
/// JSON string of the input holding a `"`.
fn known_echo(_json: &str, _message: &str) -> bool {
    false
}

/// `Config::from_json` within the time bound; its error text never holds the marker.
fn parse(json: &str) -> Result<Option<Config>, TestCaseError> {
    let t = Instant::now();
    let r = Config::from_json(json);
    prop_assert!(t.elapsed() < BOUND, "took {:?}", t.elapsed());
    match r {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            let m = e.to_string();
            prop_assert!(!m.contains(MARK) || known_echo(json, &m), "error: {}", m);
            let debug = format!("{e:?}");
            prop_assert!(
                !debug.contains(MARK) || known_echo(json, &m),
                "error Debug: {}",
                debug
            );
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Structured documents: no panic, no secret in errors; an accepted configuration
    /// round-trips through `to_json` (which renders the primary as configured, password
    /// included: documented).
    #[test]
    fn config_json_documents(doc in config_json()) {
        let text = doc.to_string();
        if let Some(c) = parse(&text)? {
            let again = Config::from_json(&c.to_json());
            prop_assert_eq!(again.ok(), Some(c));
        }
    }

    /// The same documents with a few bytes inserted, removed or cut off.
    #[test]
    fn mutated_config_json(
        doc in config_json(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(TRICKY)), 1..4),
    ) {
        let mut t = doc.to_string();
        for (at, op, piece) in edits {
            let mut i = at.index(t.len() + 1);
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            match op {
                0 => t.insert_str(i, piece),
                1 if i < t.len() => {
                    t.remove(i);
                }
                _ => t.truncate(i),
            }
        }
        parse(&t)?;
    }

    /// Any text at all.
    #[test]
    fn any_text_as_config(s in any::<String>()) {
        parse(&s)?;
    }

    /// The typed builder, with any durations (over 10 years, or past what milliseconds in a
    /// `u64` hold) and sizes: `build` never panics, its errors hold no secret, and a built
    /// configuration holds exactly the durations given, none over 10 years.
    #[test]
    fn builder_durations(
        primary in primary_with_secret(),
        durations in prop::collection::vec((0usize..11, duration()), 0..5),
        sizes in (any::<u32>(), any::<u32>()),
    ) {
        let mut b = Config::builder(primary).pool_max_size(sizes.0).pool_min_idle(sizes.1);
        for (setter, d) in &durations {
            b = set(b, *setter, *d);
        }
        match b.build() {
            // Known bug: builder_durations_past_u64_millis_are_rejected below.
            Ok(_) if durations.iter().any(|(_, d)| d.as_millis() > u128::from(u64::MAX)) => {}
            Ok(c) => {
                for (setter, _) in &durations {
                    let (field, got_ms) = get(&c, *setter);
                    // The last setting of each field is the one kept.
                    let last = durations.iter().rev().find(|(s, _)| get(&c, *s).0 == field).unwrap().1;
                    let want = if *setter >= 9 { u128::from(last.as_secs()) * 1000 } else { last.as_millis() };
                    prop_assert!(want <= dlb::MAX_TTL.as_millis(), "{} accepted {:?}", field, last);
                    prop_assert_eq!(u128::from(got_ms), want, "{}", field);
                }
            }
            Err(e) => prop_assert!(!e.to_string().contains(MARK), "{}", e),
        }
    }

    /// Every LSN prints and parses back, in either case and with leading zeros.
    #[test]
    fn lsn_round_trip(v in any::<u64>()) {
        let lsn = Lsn::from_u64(v);
        let s = lsn.to_string();
        prop_assert!(s.len() <= Lsn::MAX_TEXT_LEN);
        prop_assert_eq!(s.parse::<Lsn>().unwrap(), lsn);
        prop_assert_eq!(s.to_lowercase().parse::<Lsn>().unwrap(), lsn);
        let padded = format!("{:08X}/{:08x}", v >> 32, v & 0xFFFF_FFFF);
        prop_assert_eq!(padded.parse::<Lsn>().unwrap(), lsn);
    }

    /// Any text: never a panic; accepted exactly when it is `X/Y` with 1 to 8 hex digits each;
    /// the error stays short whatever the input's length.
    #[test]
    fn lsn_parse_any_text(s in prop_oneof![
        any::<String>(),
        "[0-9a-fA-FxX+ -]{0,10}/[0-9a-fA-FxX+ -]{0,10}",
        "[0-9A-F]{1,8}/[0-9A-F]{1,8}",
        ".{0,3}[0-9A-F]{0,300}/[0-9A-F]{0,300}",
    ]) {
        let well_formed = s.split_once('/').is_some_and(|(a, b)| {
            [a, b].iter().all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_hexdigit()))
        });
        match s.parse::<Lsn>() {
            Ok(lsn) => {
                prop_assert!(well_formed, "{:?} accepted", s);
                prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
            }
            Err(e) => {
                prop_assert!(!well_formed, "{:?} rejected: {}", s, e);
                prop_assert!(e.to_string().len() < 400, "{}", e);
            }
        }
    }
}

/// A duration: small, any number of milliseconds or seconds, or just past `u64::MAX`
/// milliseconds (where a cast of `as_millis()` wraps around to a small number).
fn duration() -> impl Strategy<Value = Duration> {
    let wrap = Duration::from_millis(u64::MAX) + Duration::from_millis(1);
    prop_oneof![
        (0u64..100_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
        (0u64..100_000).prop_map(move |ms| wrap + Duration::from_millis(ms)),
    ]
}

/// Applies builder setter number `i` with `d`.
fn set(b: dlb::ConfigBuilder, i: usize, d: Duration) -> dlb::ConfigBuilder {
    match i {
        0 => b.replica_check_interval(d),
        1 => b.max_lag(d),
        2 => b.max_replay_stall(d),
        3 => b.probe_timeout(d),
        4 => b.connect_timeout(d),
        5 => b.checkout_timeout(d),
        6 => b.sticky_check_budget(d),
        7 => b.drain_timeout(d),
        8 => b.replica_hosts(["127.0.0.1:2"]).drain_timeout(d),
        9 => b.max_lifetime(d),
        _ => b.sticky_ttl(d),
    }
}

/// The field setter number `i` sets, and its value in milliseconds (seconds for the last
/// two, as configured).
fn get(c: &Config, i: usize) -> (&'static str, u64) {
    let drain = c.replicas.as_ref().map_or(0, |r| r.drain_timeout_ms);
    match i {
        0 => ("replica_check_interval_ms", c.replica_check_interval_ms),
        1 => ("max_lag_ms", c.max_lag_ms),
        2 => ("max_replay_stall_ms", c.max_replay_stall_ms),
        3 => ("probe_timeout_ms", c.probe_timeout_ms),
        4 => ("pool.connect_timeout_ms", c.pool.connect_timeout_ms),
        5 => ("pool.checkout_timeout_ms", c.pool.checkout_timeout_ms),
        6 => ("sticky_check_budget_ms", c.sticky_check_budget_ms),
        7 | 8 => ("replicas.drain_timeout_ms", drain),
        9 => (
            "pool.max_lifetime_s",
            c.pool.max_lifetime_s.saturating_mul(1000),
        ),
        _ => ("sticky_ttl_s", c.sticky_ttl_s.saturating_mul(1000)),
    }
}

/// Deep nesting and huge inputs: bounded time, no stack overflow, no secret echoed.
#[test]
fn deep_and_huge_documents() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge_secret = format!(r#"{{"primary": "password={}"}}"#, MARK.repeat(200_000));
    let huge_wrong = format!(r#"{{"primary": 1, "x": "{}"}}"#, MARK.repeat(200_000));
    for doc in [deep, huge_secret, huge_wrong] {
        let t = Instant::now();
        if let Err(e) = Config::from_json(&doc) {
            assert!(!e.to_string().contains(MARK), "{e}");
        }
        assert!(t.elapsed() < BOUND, "{:?}", t.elapsed());
    }
}

/// A configuration's `Debug` (e.g. `{:?}` in a log line) must not show the primary's
/// password.
#[test]
fn config_debug_hides_the_password() {
    let c = Config::from_json(&format!(
        r#"{{"primary": "host=127.0.0.1 port=1 password={MARK}"}}"#
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(MARK), "{debug}");
    let debug = format!("{:?}", Config::builder(format!("postgres://u:{MARK}@h/db")));
    assert!(!debug.contains(MARK), "{debug}");
}

/// A JSON value that is not one of an enumeration's names is quoted back in the error
/// (serde's "unknown variant `...`", which `without_quoted_values` keeps), and so is a
/// nameserver that is not an IP address: a DSN pasted into the wrong field shows its
/// password in the error (and in `lb_balancer_new`'s last error).
#[test]
fn wrong_field_values_are_not_echoed() {
    let dsn = format!("postgres://u:{MARK}@h/db");
    for doc in [
        json!({"primary": "host=a", "no_caught_up_replica": dsn}),
        json!({"primary": "host=a", "lsn_store": dsn}),
        json!({"primary": "host=a", "lsn_store": {dsn.clone(): {}}}),
        json!({"primary": "host=a", "replicas": {"dns": {"record": "x", "record_type": dsn}}}),
        json!({"primary": "host=a", "replicas": {"dns": {"record": "x", "nameserver": dsn}}}),
    ] {
        let e = Config::from_json(&doc.to_string()).unwrap_err().to_string();
        assert!(!e.contains(MARK), "{e}");
    }
}

/// Builder durations are cast with `as_millis() as u64`: a duration just past `u64::MAX`
/// milliseconds wraps around to a small number and is accepted, though every duration is
/// limited to 10 years.
#[test]
fn builder_durations_past_u64_millis_are_rejected() {
    let d = Duration::from_millis(u64::MAX) + Duration::from_millis(11);
    let c = Config::builder("host=127.0.0.1 port=1")
        .replica_check_interval(d)
        .build();
    assert!(
        c.is_err(),
        "accepted as {} ms",
        c.unwrap().replica_check_interval_ms
    );
}

/// A JSON string with a `"` in it, in a field of another type: serde quotes it back with the
/// quote escaped (`"\"SECRET"`); `without_quoted_values` takes the escaped quote for the end
/// of the quoted text and shows what follows.
#[test]
fn wrong_type_values_with_quotes_are_not_echoed() {
    let doc = json!({"primary": "host=a", "pool": format!("\"{MARK}")});
    let e = Config::from_json(&doc.to_string()).unwrap_err().to_string();
    assert!(!e.contains(MARK), "{e}");
}

/// A key that is not a field name is quoted back, and is the error's path: a DSN given as a
/// key (a value whose field name was forgotten, or JSON garbled by hand) shows its password.
#[test]
fn unknown_keys_are_not_echoed() {
    let doc = json!({"primary": "host=a", format!("postgres://u:{MARK}@h/db"): 1});
    let e = Config::from_json(&doc.to_string()).unwrap_err().to_string();
    assert!(!e.contains(MARK), "{e}");
}
