//! Live checkers: the replay position of a replica, asked on behalf of a sticky pick that hands
//! out a DSN (`pick_replica(Some(key))`, `pick_replica_min_lsn`) when no cached position
//! qualifies.
//!
//! Each replica has at most one checker: a dlb-owned `dlb-lsn-checker` thread with its own
//! connection, started on the first question and kept (no thread spawned per question). A
//! question costs one simple-protocol round trip (`pg_last_wal_replay_lsn()`) on that
//! connection; the answer raises the host's cached position, so the next picks are served from
//! the cache. The thread holds a `Weak` reference to its host and exits when the host is
//! dropped (its channel closes).

use std::sync::{Arc, Weak};

use crossbeam::channel::{self, Receiver, Sender};

use crate::host::Host;
use crate::identity::{IDENTITY_COLUMNS, ServerIdentity};
use crate::lsn::Lsn;
use crate::monitor::conn::ProbeConn;

/// A question: where to send the answer, and under which index.
type Question = (usize, Sender<(usize, Option<Lsn>)>);

/// Questions waiting for one checker at most; a caller finding it full does not wait.
const QUEUE: usize = 64;

/// The handle of a replica's checker thread.
pub(crate) struct Checker {
    questions: Sender<Question>,
}

impl Checker {
    /// Starts the checker of `host`, which connects as the monitor does
    /// ([`Host::connect_monitoring`]: every query bounded by `probe_timeout_ms`), lazily, on
    /// the first question.
    ///
    /// # Errors
    /// When the OS cannot start a thread.
    pub(crate) fn spawn(host: Weak<Host>) -> std::io::Result<Checker> {
        let (questions, rx) = channel::bounded(QUEUE);
        std::thread::Builder::new()
            .name("dlb-lsn-checker".into())
            .spawn(move || run(&host, &rx))?;
        Ok(Checker { questions })
    }

    /// Sends a question; never blocks. Returns whether it was queued.
    pub(crate) fn ask(&self, index: usize, reply: Sender<(usize, Option<Lsn>)>) -> bool {
        self.questions.try_send((index, reply)).is_ok()
    }
}

fn run(host: &Weak<Host>, rx: &Receiver<Question>) {
    // The connection and the identity tag of the server it reached.
    let mut conn: Option<(ProbeConn, u64)> = None;
    while let Ok((index, reply)) = rx.recv() {
        let Some(host) = host.upgrade() else {
            return;
        };
        let lsn = ask(&host, &mut conn);
        drop(host);
        let _ = reply.send((index, lsn));
    }
}

/// One question on the checker's connection, connecting first if needed. Counts only when the
/// connection reached the server the host's cache describes.
fn ask(host: &Arc<Host>, conn: &mut Option<(ProbeConn, u64)>) -> Option<Lsn> {
    if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        *conn = None;
        let mut c = host.connect_monitoring().ok()?;
        let rows = c.query(&format!("SELECT {IDENTITY_COLUMNS}")).ok()?;
        let tag = ServerIdentity::from_text_row(rows.first()?, 0).ok()?.tag();
        *conn = Some((c, tag));
    }
    let (c, tag) = conn.as_mut()?;
    let lsn = match c.query("SELECT pg_last_wal_replay_lsn()::text") {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.try_get(0).ok().flatten())
            .and_then(|s| s.parse::<Lsn>().ok()),
        Err(e) => {
            // A failure or the query deadline: the connection is closed, the next question
            // connects anew.
            log::debug!(target: "dlb", "live check of {} failed: {e}", host.addr);
            *conn = None;
            return None;
        }
    };
    let tag = *tag;
    let lsn = lsn?;
    if host.observe_replay_lsn(tag, lsn) {
        Some(lsn)
    } else {
        // Another server than the one the monitor probes (a restart or a re-pointed address):
        // the next question connects anew.
        *conn = None;
        None
    }
}
