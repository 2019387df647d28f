//! Bad configuration and bad input get clear errors naming what is wrong.

use dlb::{
    Balancer, Config, DnsConfig, Error, Lsn, LsnStoreConfig, RedisStoreConfig, ReplicasConfig,
};

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

/// Every section at its Rust defaults (`Config::new`, the `Default` impls and the
/// constructors), rendered by `Config::to_json`: `[plain, with every optional section]`. The
/// second has a DNS and a Redis section, so it differs from the first in `lsn_store`.
fn default_trees() -> [serde_json::Value; 2] {
    let plain = Config::new(P);
    let full = Config::builder(P)
        .replica_dns(DnsConfig::new(
            "replica.example",
            DnsConfig::DEFAULT_NAMESERVER,
            DnsConfig::DEFAULT_PORT,
        ))
        .lsn_store(LsnStoreConfig::Redis(RedisStoreConfig::standalone(
            "redis://127.0.0.1:6379",
        )))
        .build()
        .unwrap();
    [plain, full].map(|c| serde_json::from_str(&c.to_json()).unwrap())
}

/// The value at a dotted JSON path of `tree`.
fn lookup<'a>(tree: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(tree, |v, key| v.get(key))
}

/// The value at a dotted JSON path, in the first tree where it is not `null`.
fn default_at<'a>(trees: &'a [serde_json::Value], path: &str) -> Option<&'a serde_json::Value> {
    trees
        .iter()
        .find_map(|tree| lookup(tree, path).filter(|v| !v.is_null()))
}

/// The rows of docs/configuration.md's configuration table: `(JSON path, stated default)`. A row naming
/// several fields (`` `a.b` / `c` `` with `` 1 / 2 ``) gives one pair per field, the later
/// names being siblings of the first.
fn readme_defaults() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("docs/configuration.md has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let fields: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").collect();
        let values: Vec<&str> = cells[1].split(" / ").collect();
        assert_eq!(
            fields.len(),
            values.len(),
            "docs/configuration.md row: {line}"
        );
        let first = fields[0].trim_matches('`');
        let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
        for (i, (field, value)) in fields.iter().zip(values).enumerate() {
            let field = field.trim_matches('`');
            let path = if i == 0 || parent.is_empty() {
                field.to_string()
            } else {
                format!("{parent}.{field}")
            };
            rows.push((path, value.trim().trim_matches('`').to_string()));
        }
    }
    rows
}

/// Every leaf field (a JSON path) of a default tree.
fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn readme_configuration_table_states_the_defaults() {
    let trees = default_trees();
    let rows = readme_defaults();
    assert!(
        rows.len() > 30,
        "docs/configuration.md's configuration table: {rows:?}"
    );
    for (path, stated) in &rows {
        assert!(
            trees.iter().any(|t| lookup(t, path).is_some()),
            "docs/configuration.md names `{path}`, which is not a configuration field"
        );
        let actual = default_at(&trees, path);
        match stated.as_str() {
            // No default: the field must be given (or is one of alternatives).
            "required" | "—" => {}
            // Off unless given.
            "none" => assert!(
                actual.is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)),
                "docs/configuration.md says `{path}` defaults to none; it is {actual:?}"
            ),
            _ => {
                // A JSON value (`"primary"`, `{"memory": {}}`, 1000, false), or a bare string.
                let stated_json = serde_json::from_str(stated)
                    .unwrap_or_else(|_| serde_json::Value::String(stated.clone()));
                assert_eq!(
                    actual,
                    Some(&stated_json),
                    "docs/configuration.md states the default of `{path}` as {stated}"
                );
            }
        }
    }
    let mut fields = Vec::new();
    leaves(&trees[1], "", &mut fields);
    for field in fields {
        assert!(
            rows.iter().any(|(path, _)| *path == field),
            "docs/configuration.md's configuration table has no row for `{field}`"
        );
    }
}

#[test]
fn minimal_json_gives_the_rust_defaults() {
    let parse = |json: &str| Config::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(parse(&format!(r#"{{"primary": "{P}"}}"#)), Config::new(P));
    let c = parse(&format!(r#"{{"primary": "{P}", "replicas": {{}}}}"#));
    assert_eq!(c.replicas, Some(ReplicasConfig::default()));
    let c = parse(&format!(
        r#"{{"primary": "{P}", "replicas": {{"dns": {{"record": "r"}}}}}}"#
    ));
    assert_eq!(
        c.replicas.unwrap().dns,
        Some(DnsConfig::new(
            "r",
            DnsConfig::DEFAULT_NAMESERVER,
            DnsConfig::DEFAULT_PORT
        ))
    );
    let url = "redis://127.0.0.1:6379";
    let c = parse(&format!(
        r#"{{"primary": "{P}", "lsn_store": {{"redis": {{"url": "{url}"}}}}}}"#
    ));
    assert_eq!(
        c.lsn_store,
        LsnStoreConfig::Redis(RedisStoreConfig::standalone(url))
    );
    let c = parse(&format!(
        r#"{{"primary": "{P}", "pool": {{}}, "connectivity": {{}}}}"#
    ));
    assert_eq!(c, Config::new(P));
}

#[test]
fn metrics_prefix_and_labels_are_checked() {
    let err = |metrics: &str| config_err(&format!(r#"{{"primary": "{P}", "metrics": {metrics}}}"#));
    let (field, msg) = err(r#"{"prefix": "9dlb_"}"#);
    assert_eq!(field, "metrics.prefix");
    assert!(msg.contains("byte 0"), "{msg}");
    let (field, _) = err(r#"{"prefix": "my-app_"}"#);
    assert_eq!(field, "metrics.prefix");
    let (field, msg) = err(&format!(r#"{{"prefix": "{}"}}"#, "a".repeat(101)));
    assert_eq!(field, "metrics.prefix");
    assert!(msg.contains("100 bytes"), "{msg}");
    let (field, msg) = err(r#"{"labels": {"role": "x"}}"#);
    assert_eq!(field, "metrics.labels.role");
    assert!(msg.contains("dlb's own series"), "{msg}");
    let (field, msg) = err(r#"{"labels": {"__name__": "x"}}"#);
    assert_eq!(field, "metrics.labels.__name__");
    assert!(msg.contains("reserved"), "{msg}");
    let (field, msg) = err(r#"{"labels": {"1x": "x"}}"#);
    assert_eq!(field, "metrics.labels.1x");
    assert!(msg.contains("label name"), "{msg}");
    let (field, msg) = err(&format!(
        r#"{{"labels": {{"svc": "{}"}}}}"#,
        "v".repeat(1025)
    ));
    assert_eq!(field, "metrics.labels.svc");
    assert!(msg.contains("1024 bytes"), "{msg}");
    let many: Vec<String> = (0..33).map(|i| format!(r#""l{i}": "v""#)).collect();
    let (field, msg) = err(&format!(r#"{{"labels": {{{}}}}}"#, many.join(",")));
    assert_eq!(field, "metrics.labels");
    assert!(msg.contains("32 labels"), "{msg}");
    let (field, _) = err(r#"{"labels": {"svc": 1}}"#);
    assert!(field.starts_with("metrics.labels"), "{field}");
    let ok = Config::from_json(&format!(
        r#"{{"primary": "{P}", "metrics": {{"prefix": "", "labels": {{"svc": "api \"1\"", "a:b_": "x"}}}}}}"#
    ));
    assert!(
        matches!(ok, Err(Error::Config { ref field, .. }) if field == "metrics.labels.…"),
        "an odd name is not echoed: {ok:?}"
    );
    Config::from_json(&format!(
        r#"{{"primary": "{P}", "metrics": {{"prefix": "app:db_", "labels": {{"svc": "api \"1\""}}}}}}"#
    ))
    .unwrap();
}
