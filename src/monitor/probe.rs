//! Probe I/O: the monitor's queries, each on its host's dedicated monitoring connection, run in
//! parallel on short-lived threads and collected until one deadline.

use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel;
use log::warn;

use crate::health::Observation;
use crate::host::Host;
use crate::labels::QuarantineReason;
use crate::lsn::Lsn;

const PRIMARY_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text";
const REPLICA_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
     EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

/// Said of a host whose previous probe is still running.
const STILL_RUNNING: &str = "previous probe still running";

/// What one round of probes saw. `replicas[i]` is `None` for a replica that was not probed
/// (waiting out a backoff) or did not answer before the deadline.
pub(super) struct Answers {
    pub(super) primary: Option<Result<Lsn, String>>,
    pub(super) replicas: Vec<Option<Observation>>,
}

/// Probes the primary and every replica given (`None` entries are skipped) in parallel, one
/// thread each, and waits until `deadline` at most. A probe still running at the deadline is
/// left to finish on its own (its host refuses a second probe until then).
pub(super) fn probe_all(
    primary: &Arc<Host>,
    replicas: &[Option<Arc<Host>>],
    deadline: Instant,
) -> Answers {
    enum Answer {
        Primary(Result<Lsn, String>),
        Replica(usize, Observation),
    }
    let (tx, rx) = channel::unbounded::<Answer>();
    let spawn = |host: Arc<Host>, job: Box<dyn FnOnce(&Host) -> Answer + Send>| {
        let tx = tx.clone();
        let name = format!("dlb-probe-{}", host.addr);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _ = tx.send(job(&host));
        });
        if let Err(e) = spawned {
            warn!(target: "dlb", "cannot spawn probe thread: {e}");
        }
    };
    spawn(
        primary.clone(),
        Box::new(|h| {
            Answer::Primary(probe_primary(h).unwrap_or_else(|| Err(STILL_RUNNING.into())))
        }),
    );
    for (i, host) in replicas.iter().enumerate() {
        if let Some(host) = host {
            spawn(
                host.clone(),
                Box::new(move |h| Answer::Replica(i, probe_replica(h))),
            );
        }
    }
    drop(tx);
    let mut answers = Answers {
        primary: None,
        replicas: vec![None; replicas.len()],
    };
    while let Ok(answer) = rx.recv_deadline(deadline) {
        match answer {
            Answer::Primary(r) => answers.primary = Some(r),
            Answer::Replica(i, o) => answers.replicas[i] = Some(o),
        }
    }
    answers
}

fn probe_primary(host: &Host) -> Option<Result<Lsn, String>> {
    host.with_probe_conn(|c| {
        c.query_one(PRIMARY_SQL, &[])
            .map(|row| row.get::<_, String>(0))
    })
    .map(|r| r.and_then(|s| s.parse::<Lsn>().map_err(|e| e.to_string())))
}

fn probe_replica(host: &Host) -> Observation {
    let res = host.with_probe_conn(|c| {
        c.query_one(REPLICA_SQL, &[]).map(|row| {
            (
                row.get::<_, bool>(0),
                row.get::<_, Option<String>>(1),
                row.get::<_, Option<f64>>(2),
            )
        })
    });
    match res {
        None => Observation::Failed(QuarantineReason::Timeout, STILL_RUNNING.into()),
        Some(Err(e)) => Observation::Failed(QuarantineReason::Unreachable, e),
        Some(Ok((in_recovery, lsn, age))) => match lsn.map(|s| s.parse::<Lsn>()).transpose() {
            Ok(replay_lsn) => Observation::Answered {
                in_recovery,
                replay_lsn,
                replay_age_s: age,
            },
            Err(e) => Observation::Failed(QuarantineReason::Unreachable, e.to_string()),
        },
    }
}
