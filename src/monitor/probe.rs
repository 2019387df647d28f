//! Probe I/O: the monitor's queries, each on its host's dedicated monitoring connection, run in
//! parallel on short-lived threads and collected until one deadline.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Receiver};
use log::warn;

use postgres::SimpleQueryRow;

use super::round::Reading;
use crate::counters::Counters;
use crate::labels::{QuarantineReason, Role};
use crate::lsn::Lsn;
use crate::server::connection::{REPLAY_POSITION_COLUMNS, primary_timeline_column};
use crate::server::host::Host;
use crate::server::identity::{IDENTITY_COLUMNS, ServerIdentity};
use crate::server::io_ref::IoRef;
use crate::server::probe_conn::ProbeConn;
use crate::sync::stripe::StripedHistogram;

/// Said of a host whose previous probe is still running.
const STILL_RUNNING: &str = "previous probe still running";

/// What a probe of the primary saw.
#[derive(Clone, Debug)]
pub(super) struct PrimaryAnswer {
    pub(super) lsn: Lsn,
    pub(super) identity: ServerIdentity,
    pub(super) timeline: Option<u32>,
}

/// What a probe of a replica saw.
#[derive(Clone, Debug)]
pub(super) struct ReplicaAnswer {
    /// What it read, or why it failed.
    pub(super) obs: Result<Reading, (QuarantineReason, String)>,
    /// Who answered (`None` when the probe failed).
    pub(super) identity: Option<ServerIdentity>,
    /// The probe connected anew.
    pub(super) fresh: bool,
}

/// Probes every replica given (`None` entries are skipped) in parallel, one thread each, and
/// waits until `deadline` at most. A probe still running at the deadline is left to finish on
/// its own (its host refuses a second probe until then). `None` for a replica skipped or that
/// did not answer in time (or when the monitor is stopping: see `until`).
pub(super) fn probe_replicas(
    replicas: &[Option<Arc<Host>>],
    deadline: Instant,
    stop: &Receiver<()>,
    counters: &Arc<Counters>,
) -> Vec<Option<ReplicaAnswer>> {
    let (tx, rx) = channel::unbounded::<(usize, ReplicaAnswer)>();
    for (i, host) in replicas.iter().enumerate() {
        if let Some(host) = host {
            let tx = tx.clone();
            let counters = Arc::clone(counters);
            spawn(host, move |h| {
                let latency = &counters.probe_latency[Role::Replica as usize];
                let _ = tx.send((i, probe_replica(h, latency)));
            });
        }
    }
    drop(tx);
    let mut answers = vec![None; replicas.len()];
    while let Some((i, answer)) = until(&rx, deadline, stop) {
        answers[i] = Some(answer);
    }
    answers
}

/// The next message on `rx`: `None` once every sender is gone, at `deadline`, or as soon as
/// the monitor is stopping (`stop` disconnected): a stopping monitor does not wait for probes.
fn until<T>(rx: &Receiver<T>, deadline: Instant, stop: &Receiver<()>) -> Option<T> {
    channel::select! {
        recv(rx) -> m => m.ok(),
        recv(stop) -> _ => None,
        recv(channel::at(deadline)) -> _ => None,
    }
}

/// Probes the primary on its own thread, waiting until `deadline` at most (`None`: no answer
/// in time).
pub(super) fn probe_primary(
    primary: &Arc<Host>,
    deadline: Instant,
    stop: &Receiver<()>,
    counters: &Arc<Counters>,
) -> Option<Result<PrimaryAnswer, String>> {
    let (tx, rx) = channel::bounded(1);
    let counters = Arc::clone(counters);
    spawn(primary, move |h| {
        let answer = timed_probe(&counters.probe_latency[Role::Primary as usize], || {
            h.with_probe_conn(|c, _| primary_query(c))
        })
        .unwrap_or_else(|| Err(STILL_RUNNING.into()));
        let _ = tx.send(answer);
    });
    until(&rx, deadline, stop)
}

/// Runs `job` on a new `dlb-probe-<addr>` thread, which holds the host as an [`IoRef`]: a
/// stopping monitor does not wait for a probe (a connect to a vanished host) to end.
fn spawn(host: &Arc<Host>, job: impl FnOnce(&Host) + Send + 'static) {
    let host = IoRef::new(host.clone());
    let name = format!("dlb-probe-{}", host.addr);
    if let Err(e) = std::thread::Builder::new()
        .name(name)
        .spawn(move || job(&host))
    {
        warn!(target: "dlb", "cannot spawn probe thread: {e}");
    }
}

/// The only row of a probe's answer.
fn only_row(conn: &mut ProbeConn, sql: &str) -> Result<SimpleQueryRow, String> {
    conn.query(sql)?
        .into_iter()
        .next()
        .ok_or_else(|| "the probe query returned no row".to_string())
}

/// Column `i` of `row` parsed as a `T` (`None`: SQL NULL).
fn column<T: FromStr>(row: &SimpleQueryRow, i: usize) -> Result<Option<T>, String> {
    row.try_get(i)
        .map_err(|e| e.to_string())?
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("unexpected value {v:?} in column {i}"))
        })
        .transpose()
}

fn primary_query(c: &mut ProbeConn) -> Result<PrimaryAnswer, String> {
    let sql = format!(
        "SELECT pg_current_wal_insert_lsn()::text, {}, {IDENTITY_COLUMNS}",
        primary_timeline_column!()
    );
    let row = only_row(c, &sql)?;
    let lsn: Lsn = column(&row, 0)?.ok_or("no WAL position")?;
    let timeline: Option<i64> = column(&row, 1)?;
    Ok(PrimaryAnswer {
        lsn,
        timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        identity: ServerIdentity::from_text_row(&row, 2)?,
    })
}

/// Runs a probe (`None`: the previous one is still running) and observes its latency, connect
/// included, in `latency` when it ran.
fn timed_probe<T>(latency: &StripedHistogram, probe: impl FnOnce() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let answer = probe();
    if answer.is_some() {
        latency.observe(start.elapsed());
    }
    answer
}

fn probe_replica(host: &Host, latency: &StripedHistogram) -> ReplicaAnswer {
    let sql = format!(
        "SELECT pg_is_in_recovery(), {REPLAY_POSITION_COLUMNS}, \
         EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8, \
         {IDENTITY_COLUMNS}"
    );
    let res = timed_probe(latency, || {
        host.with_probe_conn(|c, fresh| {
            let row = only_row(c, &sql)?;
            let in_recovery = match row.try_get(0).map_err(|e| e.to_string())? {
                Some("t") => true,
                Some("f") => false,
                other => return Err(format!("unexpected pg_is_in_recovery() {other:?}")),
            };
            let timeline: Option<i64> = column(&row, 2)?;
            let identity = ServerIdentity::from_text_row(&row, 4)?;
            Ok(ReplicaAnswer {
                obs: Ok(Reading {
                    in_recovery,
                    replay_lsn: column(&row, 1)?,
                    replay_age_s: column(&row, 3)?,
                    system_id: Some(identity.system_id),
                    timeline: timeline.and_then(|t| u32::try_from(t).ok()),
                }),
                identity: Some(identity),
                fresh,
            })
        })
    });
    let failed = |reason, message: String| ReplicaAnswer {
        obs: Err((reason, message)),
        identity: None,
        fresh: false,
    };
    match res {
        None => failed(QuarantineReason::Timeout, STILL_RUNNING.into()),
        Some(Err(e)) => failed(QuarantineReason::Unreachable, e),
        Some(Ok(answer)) => answer,
    }
}
