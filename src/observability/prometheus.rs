//! The Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::Status;
use crate::counters::Counters;
use crate::labels::{Health, QuarantineReason, Reason};

/// Builds a Prometheus exposition text.
pub(crate) struct Exposition(String);

impl Exposition {
    pub(crate) fn new() -> Self {
        Exposition(String::with_capacity(4096))
    }

    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP dlb_{name} {help}");
        let _ = writeln!(self.0, "# TYPE dlb_{name} {kind}");
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let _ = write!(self.0, "dlb_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    pub(crate) fn finish(self) -> String {
        self.0
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric in the Prometheus text exposition format (names prefixed `dlb_`), from the
/// counters and a status report. Per-replica series exist only for the replicas in `status`.
pub(crate) fn render(m: &Counters, status: &Status) -> String {
    let mut e = Exposition::new();
    e.family(
        "picks_total",
        "counter",
        "Routing decisions, by target role and reason.",
    );
    for r in Reason::ALL {
        e.sample(
            "picks_total",
            &[("role", r.role().as_str()), ("reason", r.as_str())],
            m.picks.get(r as usize),
        );
    }
    e.family(
        "quarantines_total",
        "counter",
        "Replicas put out of rotation, by reason.",
    );
    for q in QuarantineReason::ALL {
        e.sample(
            "quarantines_total",
            &[("reason", q.as_str())],
            m.quarantines[q as usize].load(Relaxed),
        );
    }
    e.family(
        "readmissions_total",
        "counter",
        "Replicas put back into rotation, by the reason they were out.",
    );
    for q in QuarantineReason::ALL {
        e.sample(
            "readmissions_total",
            &[("reason", q.as_str())],
            m.readmissions[q as usize].load(Relaxed),
        );
    }
    let counters = [
        ("checks_total", "Monitor checks run.", &m.checks),
        (
            "primary_check_errors_total",
            "Monitor checks whose primary probe failed.",
            &m.primary_check_errors,
        ),
        (
            "replica_check_errors_total",
            "Replica probes that failed.",
            &m.replica_check_errors,
        ),
        (
            "live_lsn_checks_total",
            "Live replay-LSN queries made by sticky picks.",
            &m.live_lsn_checks,
        ),
        (
            "lsn_recorded_total",
            "LSNs recorded for sticking keys.",
            &m.lsn_recorded,
        ),
        (
            "store_errors_total",
            "LSN store operations that failed.",
            &m.store_errors,
        ),
        (
            "reported_failures_total",
            "Network failures reported by callers.",
            &m.reported_failures,
        ),
        (
            "dns_refreshes_total",
            "DNS discovery refreshes attempted.",
            &m.dns_refreshes,
        ),
        (
            "dns_errors_total",
            "DNS refreshes that failed or came back empty (the last good list stays).",
            &m.dns_errors,
        ),
        (
            "replicas_added_total",
            "Replicas that joined the list after start-up.",
            &m.replicas_added,
        ),
        (
            "replicas_removed_total",
            "Replicas that left the list (then drained).",
            &m.replicas_removed,
        ),
        (
            "replicas_drained_total",
            "Removed replicas whose pools were closed.",
            &m.replicas_drained,
        ),
        (
            "monitor_panics_total",
            "Monitor checks that panicked (a bug; the monitor goes on with the next check).",
            &m.monitor_panics,
        ),
    ];
    for (name, help, c) in counters {
        e.family(name, "counter", help);
        e.sample(name, &[], c.load(Relaxed));
    }
    e.family(
        "replica_up",
        "gauge",
        "1 when the replica serves reads, else 0.",
    );
    for r in &status.replicas {
        e.sample(
            "replica_up",
            &[("replica", &r.host.addr)],
            u8::from(r.state == "healthy"),
        );
    }
    e.family(
        "replica_state",
        "gauge",
        "Replica state, one series per state set to 1.",
    );
    for r in &status.replicas {
        for st in Health::NAMES {
            e.sample(
                "replica_state",
                &[("replica", &r.host.addr), ("state", st)],
                u8::from(r.state == st),
            );
        }
    }
    e.family(
        "replica_lag_bytes",
        "gauge",
        "WAL bytes the replica is behind the primary.",
    );
    for r in &status.replicas {
        e.sample(
            "replica_lag_bytes",
            &[("replica", &r.host.addr)],
            r.lag_bytes,
        );
    }
    e.family(
        "replica_lag_seconds",
        "gauge",
        "Seconds since the replica's last replayed transaction, while behind.",
    );
    for r in &status.replicas {
        let v = r.lag_seconds.map_or("+Inf".to_string(), |v| format!("{v}"));
        e.sample("replica_lag_seconds", &[("replica", &r.host.addr)], v);
    }
    e.family(
        "pool_connections",
        "gauge",
        "Open pooled connections per host, by state.",
    );
    let hosts = std::iter::once((&status.primary, "primary"))
        .chain(status.replicas.iter().map(|r| (&r.host, "replica")));
    for (h, role) in hosts {
        let active = h.pool_connections.saturating_sub(h.pool_idle);
        e.sample(
            "pool_connections",
            &[("host", &h.addr), ("role", role), ("state", "idle")],
            h.pool_idle,
        );
        e.sample(
            "pool_connections",
            &[("host", &h.addr), ("role", role), ("state", "active")],
            active,
        );
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_labels() {
        let mut e = Exposition::new();
        e.family("x", "gauge", "help");
        e.sample("x", &[("a", "q\"b\\")], 1);
        assert_eq!(
            e.finish(),
            "# HELP dlb_x help\n# TYPE dlb_x gauge\ndlb_x{a=\"q\\\"b\\\\\"} 1\n"
        );
    }
}
