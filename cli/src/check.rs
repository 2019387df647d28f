//! `dlb check`: one check of every host with the library's engine (a balancer runs its first
//! check while it is built), the LSN store's reachability, and a verdict.

use std::time::{Duration, Instant};

use dlb::{Balancer, Config};
use serde_json::json;

use crate::EXIT_UNUSABLE;
use crate::verdict::{Verdict, store_reachable, verdict};
use crate::view::{self, HostRow};

/// How long a check waits for a host that is not yet `ok` to settle: a probe that timed out
/// on a new connection is retried after the connectivity backoff. At most 15 s.
fn settle_time(c: &Config) -> Duration {
    let interval = Duration::from_millis(c.replica_check_interval_ms);
    (Duration::from_millis(c.connectivity.backoff_initial_ms + c.probe_timeout_ms) + interval * 3)
        .min(Duration::from_secs(15))
}

/// Runs the check and prints it (text, or JSON with `json`); returns the exit status.
///
/// The balancer's construction runs a first check of every host; while the verdict is not
/// `ok`, later checks are awaited for up to [`settle_time`] (a slow first connection is
/// not a fault).
pub(crate) fn run(config: Config, json: bool) -> u8 {
    let settle = Instant::now() + settle_time(&config);
    let lb = match Balancer::new(config) {
        Ok(lb) => lb,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({ "verdict": "unusable", "error": e.to_string() })
                );
            }
            eprintln!("dlb: {e}");
            return EXIT_UNUSABLE;
        }
    };
    let mut st = lb.status();
    while st.status != "ok" && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(50));
        st = lb.status();
    }
    let rows = view::rows(&st);
    let store = store_reachable(&lb);
    let Verdict {
        word: verdict,
        code,
        why,
    } = verdict(&st, &rows, &store);
    if json {
        let out = json!({
            "verdict": verdict,
            "exit_code": code,
            "why": why,
            "hosts": rows.iter().map(HostRow::to_json).collect::<Vec<_>>(),
            "store": {
                "kind": st.lsn_store,
                "reachable": store.is_ok(),
                "error": store.as_ref().err(),
            },
            "status": serde_json::from_str::<serde_json::Value>(&st.to_json())
                .unwrap_or_default(),
        });
        println!("{out}");
    } else {
        print!("{}", render(&rows, st.lsn_store, &store, verdict, &why));
    }
    code
}

fn render(
    rows: &[HostRow],
    store_kind: &str,
    store: &Result<(), String>,
    verdict: &str,
    why: &[String],
) -> String {
    let mut cells = vec![
        [
            "ROLE",
            "ADDRESS",
            "STATE",
            "RECOVERY",
            "LAG (BYTES / TIME)",
            "SERVER",
            "VERDICT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        cells.push(vec![
            r.role.into(),
            r.addr.clone(),
            r.state_text(),
            r.recovery_text().into(),
            r.lag_text(),
            r.identity_text(),
            r.verdict.into(),
        ]);
    }
    let mut out = view::table(&cells);
    for r in rows.iter().filter(|r| r.verdict != "ok") {
        if let Some(e) = &r.error {
            out.push_str(&format!("  {} {}: {e}\n", r.role, r.addr));
        }
    }
    match store {
        Ok(()) => out.push_str(&format!("store: {store_kind}, reachable\n")),
        Err(e) => out.push_str(&format!("store: {store_kind}, UNREACHABLE: {e}\n")),
    }
    out.push_str(&format!("verdict: {verdict}"));
    if !why.is_empty() {
        out.push_str(&format!(" ({})", why.join("; ")));
    }
    out.push('\n');
    out
}
