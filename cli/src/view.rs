//! What `dlb check` and `dlb watch` show of a host: one row per host from the library's
//! status report, and the text helpers both use.

use dlb::Status;
use serde_json::json;

/// One host as the commands show it.
pub(crate) struct HostRow {
    /// `primary` or `replica`.
    pub(crate) role: &'static str,
    /// `host:port` as configured.
    pub(crate) addr: String,
    /// `up`/`down`/`unknown` (primary), `healthy`/`quarantined`/`unknown` (replica).
    pub(crate) state: &'static str,
    /// The quarantine reason, or why the primary is down.
    pub(crate) reason: Option<String>,
    /// `ok`, `out` (a replica not serving) or `down` (the primary).
    pub(crate) verdict: &'static str,
    /// Whether the server is in recovery, as far as the probe tells.
    pub(crate) in_recovery: Option<bool>,
    pub(crate) lag_bytes: Option<u64>,
    pub(crate) lag_seconds: Option<f64>,
    /// Who answered: `server_addr`, `system_identifier`, `timeline`.
    pub(crate) server: Option<String>,
    pub(crate) system_identifier: Option<String>,
    pub(crate) timeline: Option<u32>,
    /// The last probe error (no secrets).
    pub(crate) error: Option<String>,
}

/// Every host of `st`, the primary first.
pub(crate) fn rows(st: &Status) -> Vec<HostRow> {
    let p = &st.primary;
    let mut rows = vec![HostRow {
        role: "primary",
        addr: p.addr.clone(),
        state: st.primary_state,
        reason: None,
        verdict: if st.primary_state == "up" {
            "ok"
        } else {
            "down"
        },
        // It answered the WAL insert position query, which fails in recovery.
        in_recovery: (st.primary_state == "up").then_some(false),
        lag_bytes: None,
        lag_seconds: None,
        server: p.server_addr.clone(),
        system_identifier: p.system_identifier.clone(),
        timeline: p.timeline,
        error: st.primary_error.clone(),
    }];
    for r in &st.replicas {
        let answered = r.replay_lsn.is_some();
        rows.push(HostRow {
            role: "replica",
            addr: r.host.addr.clone(),
            state: r.state,
            reason: r.reason.map(str::to_string),
            verdict: if r.state == "healthy" { "ok" } else { "out" },
            in_recovery: match r.reason {
                Some("not_in_recovery") => Some(false),
                _ if answered => Some(true),
                _ => None,
            },
            lag_bytes: (answered && st.primary_lsn.is_some()).then_some(r.lag_bytes),
            lag_seconds: r.lag_seconds,
            server: r.host.server_addr.clone(),
            system_identifier: r.host.system_identifier.clone(),
            timeline: r.host.timeline,
            error: r.last_error.clone(),
        });
    }
    rows
}

impl HostRow {
    /// `host:port`.
    pub(crate) fn addr_text(&self) -> String {
        self.addr.clone()
    }

    /// The state with its reason: `quarantined (lag)`.
    pub(crate) fn state_text(&self) -> String {
        match (&self.reason, self.role) {
            (Some(r), "replica") => format!("{} ({r})", self.state),
            _ => self.state.to_string(),
        }
    }

    /// `1.5 MiB / 3.2 s`, `-` when unknown.
    pub(crate) fn lag_text(&self) -> String {
        match (self.lag_bytes, self.lag_seconds) {
            (None, None) => "-".into(),
            (b, s) => format!(
                "{} / {}",
                b.map_or("?".into(), bytes),
                s.map_or("?".into(), |s| format!("{s:.1} s"))
            ),
        }
    }

    pub(crate) fn recovery_text(&self) -> &'static str {
        match self.in_recovery {
            Some(true) => "in recovery",
            Some(false) => "not in recovery",
            None => "?",
        }
    }

    /// `127.0.0.1:5432 cluster 7441… tl 1`, or `-`.
    pub(crate) fn identity_text(&self) -> String {
        match (&self.server, &self.system_identifier) {
            (None, None) => "-".into(),
            (s, id) => format!(
                "{} cluster {} tl {}",
                s.as_deref().unwrap_or("?"),
                id.as_deref().unwrap_or("?"),
                self.timeline.map_or("?".into(), |t| t.to_string())
            ),
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "role": self.role,
            "addr": self.addr,
            "state": self.state,
            "reason": self.reason,
            "verdict": self.verdict,
            "in_recovery": self.in_recovery,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_seconds,
            "server_addr": self.server,
            "system_identifier": self.system_identifier,
            "timeline": self.timeline,
            "error": self.error,
        })
    }
}

/// `512 B`, `64.0 KiB`, `1.5 MiB`, `2.0 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Rows of cells as a left-aligned table, two spaces between columns.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tables() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(65_536), "64.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        let t = table(&[
            vec!["a".into(), "bb".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
