//! The status report's verdict, identity and time, and the metrics (typed snapshot and
//! Prometheus text: prefix, constant labels, histograms, `promtool check metrics`), against
//! the real replication cluster.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use dlb::{Balancer, Lsn, MetricsConfig};

/// `promtool check metrics` on `text`: `None` when promtool is not installed
/// (scripts/bootstrap.sh installs it), else its complaints (empty: clean).
fn promtool_complaints(text: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        said
    })
}

#[test]
fn status_gives_the_verdict_identity_and_time_of_the_last_check() {
    let _l = lock_cluster();
    let lb = Balancer::new(lag_config().build().unwrap()).unwrap();
    wait_healthy(&lb, 2);
    let st = lb.status();
    assert_eq!(st.version, dlb::STATUS_VERSION);
    assert_eq!(
        (st.status, st.primary_state),
        ("ok", "up"),
        "{}",
        st.to_json()
    );
    assert_eq!(st.primary_error, None);
    assert_eq!(st.check_interval_ms, 100);
    let at = st.last_check_at.clone().expect("time of the last check");
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    let primary_id = st
        .primary
        .system_identifier
        .clone()
        .expect("primary identity");
    assert!(st.primary.server_addr.is_some() && st.primary.timeline.is_some());
    for r in &st.replicas {
        assert_eq!(
            r.host.system_identifier.as_ref(),
            Some(&primary_id),
            "one cluster"
        );
        assert!(r.host.server_addr.is_some(), "{}", st.to_json());
    }
    let json: serde_json::Value = serde_json::from_str(&st.to_json()).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["version"], dlb::STATUS_VERSION);
    assert_eq!(json["primary_state"], "up");

    pause_replay(2);
    wait_until("the paused replica is quarantined for lag", WAIT, || {
        generate_wal(128);
        replica_state(&lb, replica_addr(2)) == ("quarantined".into(), Some("lag".into()))
    });
    assert_eq!(lb.status().status, "degraded", "{}", lb.status().to_json());
    resume_replay(2);
    wait_healthy(&lb, 2);
    assert_eq!(lb.status().status, "ok");
}

#[test]
fn status_is_down_when_the_primary_does_not_answer() {
    // A closed port: no server to stop, nothing of the shared cluster disturbed.
    let primary = dsn_at(&env().primary, "127.0.0.1:1");
    let lb = Balancer::new(
        config_for(&primary, &[])
            .probe_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .unwrap();
    let st = lb.status();
    assert_eq!(
        (st.status, st.primary_state),
        ("down", "down"),
        "{}",
        st.to_json()
    );
    let why = st.primary_error.clone().expect("why the primary is down");
    assert!(!why.contains("password") && !why.is_empty(), "{why}");
    let m = lb.metrics();
    assert!(!m.primary_up);
    assert!(lb.metrics_text().contains("\ndlb_primary_up 0\n"));
}

#[test]
fn metrics_take_the_prefix_and_labels_move_their_histograms_and_pass_promtool() {
    let _l = lock_cluster();
    let mut metrics = MetricsConfig::default();
    metrics.prefix = "app_db_".into();
    metrics.labels = BTreeMap::from([
        ("service".to_string(), "api \"eu\"".to_string()),
        ("balancer".to_string(), "main".to_string()),
    ]);
    // Replica 1 and a closed port: the second's lag is unknown, so it has no lag series.
    let lb = Balancer::new(
        config_for(&env().primary, &[replica_addr(1), "127.0.0.1:1"])
            .metrics(metrics)
            .build()
            .unwrap(),
    )
    .unwrap();
    wait_healthy(&lb, 1);
    let before = lb.metrics();
    lb.record_lsn("user:1").unwrap();
    lb.pick_replica(Some("user:1")).unwrap();
    // Far ahead of any replica: cached positions do not show it, so live checks run.
    let ahead = Lsn::from_u64(u64::MAX / 2);
    assert!(lb.pick_replica_min_lsn(ahead).is_ok());
    lb.force_primary("user:2", Duration::from_secs(5)).unwrap();
    let checks = lb.status().checks;
    wait_until("two more checks", WAIT, || lb.status().checks >= checks + 2);
    let m = lb.metrics();

    assert_eq!(m.version, dlb::METRICS_VERSION);
    assert!(m.primary_up);
    assert_eq!(m.healthy_replicas, 1);
    assert!(m.last_check_age_seconds.is_some());
    assert!(m.sticky_pick_seconds.count >= before.sticky_pick_seconds.count + 2);
    assert!(m.live_check_seconds.count > before.live_check_seconds.count);
    for op in ["get", "record", "force"] {
        assert!(
            m.store_operation_seconds[op].count > before.store_operation_seconds[op].count,
            "{op}"
        );
    }
    for role in ["primary", "replica"] {
        let h = &m.probe_seconds[role];
        assert!(h.count > before.probe_seconds[role].count, "{role}");
        assert_eq!(
            h.buckets.last().unwrap().count,
            h.count,
            "{role}: all under 10 s"
        );
        assert!(h.sum_seconds > 0.0);
    }
    let unknown = m
        .replicas
        .iter()
        .find(|r| r.replica == "127.0.0.1:1")
        .unwrap();
    assert_eq!(
        (unknown.up, unknown.lag_bytes, unknown.lag_seconds),
        (false, None, None)
    );

    let text = lb.metrics_text();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or(line.strip_prefix("# TYPE "))
        {
            assert!(rest.starts_with("app_db_"), "{line}");
        } else {
            assert!(line.starts_with("app_db_"), "{line}");
            assert!(
                line.contains("{balancer=\"main\",service=\"api \\\"eu\\\"\""),
                "{line}"
            );
        }
    }
    assert!(
        !text.contains("Inf\n") && !text.contains(" +Inf"),
        "no +Inf value:\n{text}"
    );
    assert!(!text.contains(
        "replica_lag_bytes{balancer=\"main\",service=\"api \\\"eu\\\"\",replica=\"127.0.0.1:1\"}"
    ));
    assert!(text.contains("app_db_primary_up{"), "{text}");
    assert!(
        text.contains("app_db_sticky_pick_duration_seconds_bucket{"),
        "{text}"
    );
    match promtool_complaints(&text) {
        None => eprintln!("promtool not installed (scripts/bootstrap.sh installs it): not run"),
        Some(c) => assert!(c.is_empty(), "promtool check metrics:\n{c}\n{text}"),
    }
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["replicas"][1]["lag_seconds"], serde_json::Value::Null);
    assert!(
        json["store_operation_seconds"]["get"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
}
