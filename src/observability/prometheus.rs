//! The Prometheus text exposition format, rendered from a [`Metrics`] snapshot with the
//! configured name prefix and constant labels (`metrics.prefix`, `metrics.labels`).

use std::fmt::Write as _;

use super::metrics::{Histogram, Metrics};
use crate::labels::Health;

/// Builds a Prometheus exposition text: every name gets `prefix`, every sample the constant
/// labels.
pub(crate) struct Exposition<'a> {
    out: String,
    prefix: &'a str,
    constant: &'a [(String, String)],
}

impl<'a> Exposition<'a> {
    pub(crate) fn new(prefix: &'a str, constant: &'a [(String, String)]) -> Self {
        Exposition {
            out: String::with_capacity(8192),
            prefix,
            constant,
        }
    }

    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let p = self.prefix;
        let _ = writeln!(self.out, "# HELP {p}{name} {help}");
        let _ = writeln!(self.out, "# TYPE {p}{name} {kind}");
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let _ = write!(self.out, "{}{name}", self.prefix);
        let all = self
            .constant
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(labels.iter().copied());
        for (i, (k, v)) in all.enumerate() {
            self.out.push(if i == 0 { '{' } else { ',' });
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        if !self.constant.is_empty() || !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The series of one histogram (`_bucket` with `le`, `_sum`, `_count`).
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for b in &h.buckets {
            let le = b.le.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, b.count);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric in the Prometheus text exposition format. Per-replica series exist only for
/// the replicas in `m`; a lag that is unknown has no series.
pub(crate) fn render(m: &Metrics, prefix: &str, constant: &[(String, String)]) -> String {
    let mut e = Exposition::new(prefix, constant);
    e.family(
        "picks_total",
        "counter",
        "Routing decisions, by target role and reason.",
    );
    for p in &m.picks {
        e.sample(
            "picks_total",
            &[("role", p.role), ("reason", p.reason)],
            p.count,
        );
    }
    e.family(
        "quarantines_total",
        "counter",
        "Replicas put out of rotation, by reason.",
    );
    for q in &m.quarantines {
        e.sample("quarantines_total", &[("reason", q.reason)], q.count);
    }
    e.family(
        "readmissions_total",
        "counter",
        "Replicas put back into rotation, by the reason they were out.",
    );
    for q in &m.readmissions {
        e.sample("readmissions_total", &[("reason", q.reason)], q.count);
    }
    for (name, help, value) in m.counters.families() {
        e.family(name, "counter", help);
        e.sample(name, &[], value);
    }
    e.family(
        "primary_up",
        "gauge",
        "1 when the primary answered the monitor's last check, else 0.",
    );
    e.sample("primary_up", &[], u8::from(m.primary_up));
    e.family("healthy_replicas", "gauge", "Replicas serving reads.");
    e.sample("healthy_replicas", &[], m.healthy_replicas);
    e.family(
        "last_check_age_seconds",
        "gauge",
        "Seconds since the monitor last published a check (absent before the first).",
    );
    if let Some(age) = m.last_check_age_seconds {
        e.sample("last_check_age_seconds", &[], age);
    }
    e.family(
        "replica_up",
        "gauge",
        "1 when the replica serves reads, else 0.",
    );
    for r in &m.replicas {
        e.sample("replica_up", &[("replica", &r.replica)], u8::from(r.up));
    }
    e.family(
        "replica_state",
        "gauge",
        "Replica state, one series per state set to 1.",
    );
    for r in &m.replicas {
        for st in Health::NAMES {
            e.sample(
                "replica_state",
                &[("replica", &r.replica), ("state", st)],
                u8::from(r.state == st),
            );
        }
    }
    e.family(
        "replica_lag_bytes",
        "gauge",
        "WAL bytes the replica is behind the primary (absent while unknown).",
    );
    for r in &m.replicas {
        if let Some(v) = r.lag_bytes {
            e.sample("replica_lag_bytes", &[("replica", &r.replica)], v);
        }
    }
    e.family(
        "replica_lag_seconds",
        "gauge",
        "Seconds since the replica's last replayed transaction, while behind (absent while unknown).",
    );
    for r in &m.replicas {
        if let Some(v) = r.lag_seconds {
            e.sample("replica_lag_seconds", &[("replica", &r.replica)], v);
        }
    }
    e.family(
        "pool_connections",
        "gauge",
        "Open pooled connections per host, by state.",
    );
    for p in &m.pools {
        for (state, n) in [("idle", p.idle), ("active", p.active)] {
            e.sample(
                "pool_connections",
                &[("host", &p.host), ("role", p.role), ("state", state)],
                n,
            );
        }
    }
    e.family(
        "probe_duration_seconds",
        "histogram",
        "Monitor probe latency, by host role.",
    );
    for (role, h) in &m.probe_seconds {
        e.histogram("probe_duration_seconds", &[("role", role)], h);
    }
    e.family(
        "live_check_duration_seconds",
        "histogram",
        "Live proofs of sticky reads (pick_replica, read_conn): one observation per proof, its checks together.",
    );
    e.histogram("live_check_duration_seconds", &[], &m.live_check_seconds);
    e.family(
        "store_operation_duration_seconds",
        "histogram",
        "LSN store operation latency, by operation (failures included).",
    );
    for (op, h) in &m.store_operation_seconds {
        e.histogram("store_operation_duration_seconds", &[("op", op)], h);
    }
    e.family(
        "sticky_pick_duration_seconds",
        "histogram",
        "Sticky pick latency: store read, cached positions, live checks.",
    );
    e.histogram("sticky_pick_duration_seconds", &[], &m.sticky_pick_seconds);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_labels() {
        let mut e = Exposition::new("dlb_", &[]);
        e.family("x", "gauge", "help");
        e.sample("x", &[("a", "q\"b\\")], 1);
        assert_eq!(
            e.finish(),
            "# HELP dlb_x help\n# TYPE dlb_x gauge\ndlb_x{a=\"q\\\"b\\\\\"} 1\n"
        );
    }

    #[test]
    fn exposition_applies_prefix_and_constant_labels() {
        let constant = [("service".to_string(), "api\"1".to_string())];
        let mut e = Exposition::new("app_db_", &constant);
        e.family("x", "gauge", "help");
        e.sample("x", &[], 1);
        e.sample("x", &[("role", "primary")], 2);
        assert_eq!(
            e.finish(),
            "# HELP app_db_x help\n# TYPE app_db_x gauge\napp_db_x{service=\"api\\\"1\"} 1\n\
             app_db_x{service=\"api\\\"1\",role=\"primary\"} 2\n"
        );
    }
}
