//! The one rule deciding how a configuration's hosts stand: `dlb check`'s verdict and exit
//! status, and `dlb watch`'s header, so the two never disagree.

use dlb::{Balancer, Status};

use crate::view::HostRow;
use crate::{EXIT_DEGRADED, EXIT_OK, EXIT_UNUSABLE};

/// Whether the LSN store answers: `Err` with its error (no secrets) when it does not.
pub(crate) fn store_reachable(lb: &Balancer) -> Result<(), String> {
    // A read of a key nobody records: one round trip to Redis (nothing for the memory store).
    lb.recorded_lsn("dlb-check:reachability")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// How the hosts stand, with the reasons.
pub(crate) struct Verdict {
    /// `ok`, `degraded` or `unusable`.
    pub(crate) word: &'static str,
    /// `dlb check`'s exit status for it.
    pub(crate) code: u8,
    /// Why it is not `ok` (empty when it is).
    pub(crate) why: Vec<String>,
}

/// The overall verdict: the library's `status` (`ok`, `degraded`, `down`), made `degraded`
/// by an unreachable LSN store (reads and writes are served, read-your-writes is not kept
/// across processes).
pub(crate) fn verdict(st: &Status, rows: &[HostRow], store: &Result<(), String>) -> Verdict {
    let mut why: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict != "ok")
        .map(|r| match (&r.reason, &r.error) {
            (_, Some(e)) if r.role == "primary" => format!("primary {} is down: {e}", r.addr),
            (Some(reason), _) => format!("replica {} is out: {reason}", r.addr),
            _ => format!("{} {} is {}", r.role, r.addr, r.state),
        })
        .collect();
    if let Err(e) = store {
        why.push(format!("the LSN store is unreachable: {e}"));
    }
    let (word, code) = match st.status {
        "down" => ("unusable", EXIT_UNUSABLE),
        "ok" if store.is_ok() => ("ok", EXIT_OK),
        _ => ("degraded", EXIT_DEGRADED),
    };
    if word == "degraded" && why.is_empty() {
        why.push("the monitor's last check is late".into());
    }
    Verdict { word, code, why }
}
