//! Pooled connections that know which server they reached, and come back clean.
//!
//! [`PgManager`] is the r2d2 manager of every host's pool. A new connection reads the identity
//! of the server it reached ([`ServerIdentity`]) and records it in the host's
//! [`IdentityLog`].
//!
//! The check ([`ping`]: one simple-protocol round trip) tells whether the connection works;
//! on a connection a borrower may have changed (`PgConn::dirty`, see [`super::session`]) it
//! first takes the session back to its state at connection time (transaction, settings, role,
//! temporary tables, advisory locks, listened channels, cursors, SQL-level prepared
//! statements), in the same round trip. It does not run on every checkout (r2d2's
//! `test_on_check_out` is off): [`crate::server::host::Host::checkout`] runs it on the
//! primary's connections, on dirty ones, on connections idle or unchecked for longer than
//! `pool.check_idle_after_ms`, and a sticky `read_conn` runs it together with the replay
//! position it needs ([`ping_replay`]), on the very connection that serves the read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::SimpleQueryMessage;

use crate::lsn::{Lsn, Position};
use crate::server::identity::{IDENTITY_COLUMNS, IdentityLog, ServerIdentity};
use crate::server::session::{is_plain_read, prepared_column, reset_sql};
use crate::server::tls::{ConnectError, PgTls};

/// A pooled PostgreSQL connection and the server it reached.
pub(crate) struct PgConn {
    pub(crate) client: postgres::Client,
    /// Who answered when it connected (`None`: the identity could not be read).
    pub(crate) identity: Option<Arc<ServerIdentity>>,
    /// `identity`'s tag, computed once (0: unknown).
    tag: u64,
    /// Set to close it instead of returning it to the pool.
    pub(crate) discard: bool,
    /// When it was last handed out or given back.
    pub(crate) last_used: Instant,
    /// When it was made or last passed the check.
    pub(crate) checked_at: Instant,
    /// Statements prepared through `Conn::prepare_cached`, by SQL text.
    pub(crate) statements: HashMap<String, postgres::Statement>,
    /// A borrower may have changed its session (see [`super::session`]): reset before it is
    /// handed out again.
    pub(crate) dirty: bool,
    /// A connection to the primary (a standby has no channels to `UNLISTEN`: it refuses `LISTEN`).
    primary: bool,
}

/// Statements a pooled connection keeps prepared for `Conn::prepare_cached` at most; one more
/// empties its cache first (and the server closes the old ones
/// on the next exchange).
pub const STATEMENT_CACHE_SIZE: usize = 256;

impl PgConn {
    /// Whether the check must run before it is handed out: it has been idle, or unchecked,
    /// for longer than `every` (a zero `every`: always).
    pub(crate) fn needs_check(&self, every: Duration, now: Instant) -> bool {
        every.is_zero()
            || now.saturating_duration_since(self.last_used) > every
            || now.saturating_duration_since(self.checked_at) > every
    }

    /// `sql` prepared on this connection: from its cache, or prepared now (one round trip) and
    /// kept (see [`STATEMENT_CACHE_SIZE`]).
    pub(crate) fn prepare_cached(
        &mut self,
        sql: &str,
    ) -> Result<postgres::Statement, postgres::Error> {
        // Preparing changes nothing, but the borrower means to run it.
        if !is_plain_read(sql) {
            self.dirty = true;
        }
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        if self.statements.len() >= STATEMENT_CACHE_SIZE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// The identity tag of its server (0: unknown).
    pub(crate) fn identity_tag(&self) -> u64 {
        self.tag
    }
}

/// The r2d2 manager of one host's pool.
pub(crate) struct PgManager {
    config: postgres::Config,
    tls: PgTls,
    log: Arc<IdentityLog>,
    primary: bool,
}

impl PgManager {
    /// A manager connecting with `config` through `tls` (which applies the DSN's `sslmode`),
    /// to the primary or to a replica.
    pub(crate) fn new(
        config: postgres::Config,
        tls: PgTls,
        log: Arc<IdentityLog>,
        primary: bool,
    ) -> PgManager {
        PgManager {
            config,
            tls,
            log,
            primary,
        }
    }
}

impl std::fmt::Debug for PgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgManager").finish_non_exhaustive()
    }
}

/// Reads the identity of the server `client` is connected to (one round trip).
pub(crate) fn read_identity(client: &mut postgres::Client) -> Result<ServerIdentity, String> {
    let row = client
        .query_one(&format!("SELECT {IDENTITY_COLUMNS}"), &[])
        .map_err(|e| crate::error::with_causes(&e))?;
    ServerIdentity::from_row(&row, 0)
}

impl r2d2::ManageConnection for PgManager {
    /// Boxed: r2d2 moves a connection in and out of its idle list on every checkout and
    /// return, and a box is one word.
    type Connection = Box<PgConn>;
    type Error = ConnectError;

    fn connect(&self) -> Result<Box<PgConn>, ConnectError> {
        let mut client = self.tls.connect(&self.config)?;
        let identity = match read_identity(&mut client) {
            Ok(id) => {
                self.log.record(id.tag(), Instant::now());
                Some(Arc::new(id))
            }
            Err(e) => {
                log::debug!(target: "dlb", "cannot read the identity of a new connection: {}", crate::redact::bounded(&e.to_string()));
                None
            }
        };
        let now = Instant::now();
        Ok(Box::new(PgConn {
            client,
            tag: identity.as_ref().map_or(0, |i| i.tag()),
            identity,
            discard: false,
            last_used: now,
            checked_at: now,
            statements: HashMap::new(),
            dirty: false,
            primary: self.primary,
        }))
    }

    fn is_valid(&self, conn: &mut Box<PgConn>) -> Result<(), ConnectError> {
        ping(conn).map_err(|e| ConnectError(crate::redact::bounded(&crate::error::with_causes(&e))))
    }

    fn has_broken(&self, conn: &mut Box<PgConn>) -> bool {
        conn.discard || conn.client.is_closed()
    }
}

/// In the first statement of a transaction the two are equal: `f` means the previous borrower
/// left a transaction open. An aborted transaction fails the query (and the connection is
/// discarded). Only a connection no borrower could have changed is checked with it alone: on a
/// dirty one the reset comes first.
const OPEN_TXN_SQL: &str = "SELECT now() = statement_timestamp()";

/// The check of a dirty connection: the reset, then [`OPEN_TXN_SQL`]'s column and the
/// SQL-level prepared statements left (one round trip).
const RESET_PRIMARY_SQL: &str = concat!(
    reset_sql!(primary),
    "SELECT now() = statement_timestamp(), ",
    prepared_column!()
);
const RESET_REPLICA_SQL: &str = concat!(
    reset_sql!(replica),
    "SELECT now() = statement_timestamp(), ",
    prepared_column!()
);

/// The check: one round trip, and a rollback of a transaction left open; on a dirty connection
/// the reset first, in the same round trip.
pub(crate) fn ping(conn: &mut PgConn) -> Result<(), postgres::Error> {
    let sql = match (conn.dirty, conn.primary) {
        (false, _) => OPEN_TXN_SQL,
        (true, true) => RESET_PRIMARY_SQL,
        (true, false) => RESET_REPLICA_SQL,
    };
    ping_with(conn, sql).map(|_| ())
}
/// The columns that read a standby's replay position ([`Position`]): its replay LSN and the
/// timeline it receives (or, with no WAL receiver running, the timeline of its last restart
/// point), both as text. Shared by the monitor's probes and both live checks.
pub(crate) const REPLAY_POSITION_COLUMNS: &str = replay_position_columns!();

/// [`REPLAY_POSITION_COLUMNS`] as a literal, for `concat!`.
macro_rules! replay_position_columns {
    () => {
        "pg_last_wal_replay_lsn()::text, \
         COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), \
                  (SELECT timeline_id FROM pg_control_checkpoint()))::text"
    };
}
pub(crate) use replay_position_columns;

/// The column that reads a primary's timeline (an `int8`): the one its current WAL insert
/// position is written on (the first 8 hex digits of the WAL file name). Shared by the monitor's
/// primary probe and `record_lsn`, which reads it with the LSN in the same round trip.
macro_rules! primary_timeline_column {
    () => {
        "('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int8"
    };
}
pub(crate) use primary_timeline_column;

/// Reads the two [`REPLAY_POSITION_COLUMNS`] from `get(at)` and `get(at + 1)` (`None`: not a
/// standby, or unreadable; an unreadable timeline is 0, unknown).
pub(crate) fn position_from<'a>(
    get: impl Fn(usize) -> Option<&'a str>,
    at: usize,
) -> Option<Position> {
    let lsn = get(at)?.parse::<Lsn>().ok()?;
    let timeline = get(at + 1).and_then(|t| t.parse::<u32>().ok()).unwrap_or(0);
    Some(Position { lsn, timeline })
}

/// The check, in the same round trip as reading the replay position of the server (`None`:
/// not a standby, or unreadable).
pub(crate) fn ping_replay(conn: &mut PgConn) -> Result<Option<Position>, postgres::Error> {
    const CHECK: &str = concat!(
        "SELECT now() = statement_timestamp(), ",
        replay_position_columns!()
    );
    const RESET_PRIMARY: &str = concat!(
        reset_sql!(primary),
        "SELECT now() = statement_timestamp(), ",
        replay_position_columns!(),
        ", ",
        prepared_column!()
    );
    const RESET_REPLICA: &str = concat!(
        reset_sql!(replica),
        "SELECT now() = statement_timestamp(), ",
        replay_position_columns!(),
        ", ",
        prepared_column!()
    );
    let sql = match (conn.dirty, conn.primary) {
        (false, _) => CHECK,
        (true, true) => RESET_PRIMARY,
        (true, false) => RESET_REPLICA,
    };
    let row = ping_with(conn, sql)?;
    Ok(row.and_then(|r| position_from(|i| r.get(i), 1)))
}

/// Runs `sql` (simple protocol; its last row's first column is [`OPEN_TXN_SQL`]'s and, after a
/// reset, its last column [`prepared_column!`]'s), rolls back a transaction left open,
/// deallocates the SQL-level prepared statements a reset found, and marks the connection
/// checked and clean. Returns that row.
fn ping_with(
    conn: &mut PgConn,
    sql: &str,
) -> Result<Option<postgres::SimpleQueryRow>, postgres::Error> {
    let row = conn
        .client
        .simple_query(sql)?
        .into_iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        });
    if row.as_ref().is_some_and(|r| r.get(0) == Some("f")) {
        log::debug!(target: "dlb", "a pooled connection came back inside a transaction: rolled back");
        conn.client.batch_execute("ROLLBACK")?;
    }
    if conn.dirty {
        if let Some(deallocate) = row.as_ref().and_then(|r| r.get(r.len() - 1)) {
            conn.client.batch_execute(deallocate)?;
        }
        conn.dirty = false;
    }
    conn.checked_at = Instant::now();
    Ok(row)
}
