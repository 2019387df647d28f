//! Live checkers: the replay position of a replica, asked on behalf of a sticky pick that hands
//! out a DSN (`pick_replica(Some(key))`, `pick_replica_min_lsn`) when no cached position
//! qualifies.
//!
//! Each replica has at most one checker: dlb-owned connections (up to [`IDLE`] kept idle
//! between questions) and a `dlb-lsn-checker` thread, started on the first question (no thread
//! spawned per question). A question costs one simple-protocol round trip (`pg_last_wal_replay_lsn()`) on
//! that connection, with the probe deadline; the answer raises the host's cached position, so
//! the next picks are served from the cache.
//!
//! The round-robin candidate of a pick is checked on the **caller's thread** when the
//! connection is idle ([`Checker::check_here`]: no thread wake-up, no channel; the lock is held
//! only to take the connection out and put it back, never across the round trip); the thread
//! serves the other candidates (asked in parallel), and connects when there is no connection.
//! The thread holds a `Weak` reference to its host and exits when the host is dropped (its
//! channel closes); while it answers, it holds a counted strong one ([`IoRef`]).

use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;

use crate::lsn::Position;
use crate::server::connection::{position_from, replay_position_columns};
use crate::server::identity::{IDENTITY_COLUMNS, ServerIdentity};
use crate::server::io_ref::{IoRef, Lendable};
use crate::server::probe_conn::ProbeConn;

/// A question: where to send the answer, and under which index.
type Question = (usize, Sender<(usize, Option<Position>)>);

/// The checker's idle connections, each with the identity tag of the server it reached.
type Slot = Arc<Mutex<Vec<(ProbeConn, u64)>>>;

/// Idle connections a checker keeps at most (one is enough for one question at a time; more
/// serve callers checking at the same moment without connecting anew each time).
const IDLE: usize = 4;

/// Questions waiting for one checker at most; a caller finding it full does not wait.
const QUEUE: usize = 64;

/// What a checker needs of the replica it checks (a [`crate::server::host::Host`]): the
/// checker knows nothing else of it, so a host can own its checker without a circle.
pub(crate) trait Checked: Lendable + Send + Sync + 'static {
    /// `host:port`, for messages.
    fn addr(&self) -> &str;
    /// A new connection as the monitor makes them: every query bounded by the probe deadline.
    fn connect(&self) -> Result<ProbeConn, String>;
    /// A new connection reached the server tagged `tag` (for the identity log).
    fn reached(&self, tag: u64);
    /// A position read on a connection to the server tagged `tag`; whether it counted (see
    /// `Host::observe_replay`).
    fn observe(&self, tag: u64, pos: Position) -> bool;
}

/// The handle of a replica's checker: its connection and its thread.
pub(crate) struct Checker {
    questions: Sender<Question>,
    conn: Slot,
}

impl Checker {
    /// Starts the checker of `host`, which connects as the monitor does
    /// ([`Checked::connect`]: every query bounded by `probe_timeout_ms`), lazily, on
    /// the first question.
    ///
    /// # Errors
    /// When the OS cannot start a thread.
    pub(crate) fn spawn(host: Weak<dyn Checked>) -> std::io::Result<Checker> {
        let (questions, rx) = channel::bounded(QUEUE);
        let conn: Slot = Arc::default();
        let slot = conn.clone();
        std::thread::Builder::new()
            .name("dlb-lsn-checker".into())
            .spawn(move || run(&host, &rx, &slot))?;
        Ok(Checker { questions, conn })
    }

    /// Sends a question to the checker's thread; never blocks. Returns whether it was queued.
    pub(crate) fn ask(&self, index: usize, reply: Sender<(usize, Option<Position>)>) -> bool {
        self.questions.try_send((index, reply)).is_ok()
    }

    /// Asks on the caller's thread, on an idle connection of the checker, if there is one:
    /// `Some(answer)` (the position, or `None` when the check failed), or `None` without any
    /// I/O when none is idle (then ask the thread). Blocks for one round
    /// trip at most, until `deadline` or the probe deadline, whichever comes first.
    ///
    /// On a thread that runs an async runtime (a tokio worker) it does nothing: driving the
    /// connection's own runtime there would panic. The checker's thread answers instead.
    pub(crate) fn check_here(
        &self,
        host: &dyn Checked,
        deadline: Instant,
    ) -> Option<Option<Position>> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        let mut conn = self.conn.try_lock()?.pop()?;
        let lsn = read_position(host, &mut conn, Some(deadline));
        if lsn.is_some() {
            put_back(&self.conn, conn);
        }
        Some(lsn)
    }
}

fn run(host: &Weak<dyn Checked>, rx: &Receiver<Question>, slot: &Slot) {
    while let Ok((index, reply)) = rx.recv() {
        let Some(host) = host.upgrade() else {
            return;
        };
        // Counted: a stopping monitor does not wait for a check (a connect) to end.
        let host = IoRef::new(host);
        let lsn = ask(&*host, slot);
        drop(host);
        let _ = reply.send((index, lsn));
    }
}

/// One question on the checker's thread: on the idle connection, or on a new one (when there
/// is none, or a caller is using it).
fn ask(host: &dyn Checked, slot: &Slot) -> Option<Position> {
    let taken = slot.lock().pop();
    let mut conn = match taken {
        Some((c, tag)) if !c.is_closed() => (c, tag),
        _ => {
            let mut c = host.connect().ok()?;
            let rows = c.query(&format!("SELECT {IDENTITY_COLUMNS}")).ok()?;
            let tag = ServerIdentity::from_text_row(rows.first()?, 0).ok()?.tag();
            // As the pools' new connections do: one that reached another server than the
            // probed one makes the monitor reconnect its probe at its next check (an app that
            // only hands out DSNs has no pooled connections to notice a re-pointed address).
            host.reached(tag);
            (c, tag)
        }
    };
    let lsn = read_position(host, &mut conn, None);
    if lsn.is_some() {
        put_back(slot, conn);
    }
    lsn
}

/// Keeps `conn` for the next question, unless [`IDLE`] are kept already (then it is closed,
/// outside the lock).
fn put_back(slot: &Slot, conn: (ProbeConn, u64)) {
    let mut s = slot.lock();
    if s.len() < IDLE {
        s.push(conn);
    } else {
        drop(s);
        drop(conn);
    }
}

/// The replay position, read on `conn` by `deadline` (and the probe deadline) at the latest.
/// Counts only when the connection reached the server the host's cache describes. `None`: the
/// connection is not to be used again (it failed, missed its deadline, or reached another
/// server than the one the monitor probes: a restart or a re-pointed address).
fn read_position(
    host: &dyn Checked,
    (c, tag): &mut (ProbeConn, u64),
    deadline: Option<Instant>,
) -> Option<Position> {
    let pos = match c.query_by(concat!("SELECT ", replay_position_columns!()), deadline) {
        Ok(rows) => rows
            .first()
            .and_then(|r| position_from(|i| r.try_get(i).ok().flatten(), 0)),
        Err(e) => {
            log::debug!(target: "dlb", "live check of {} failed: {}", host.addr(), crate::redact::bounded(&e.to_string()));
            return None;
        }
    };
    pos.filter(|&pos| host.observe(*tag, pos))
}
