//! Pooled connections that know which server they reached, and come back clean.
//!
//! [`PgManager`] is the r2d2 manager of every host's pool. A new connection reads the identity
//! of the server it reached ([`ServerIdentity`]) and records it in the host's
//! [`IdentityLog`]. The check on checkout (r2d2's `test_on_check_out`) costs one round trip,
//! as r2d2_postgres's own does, and also tells whether the previous borrower left a
//! transaction open: such a connection is rolled back before it is handed out, so no caller
//! reads through someone else's old snapshot.

use std::sync::Arc;
use std::time::Instant;

use postgres::SimpleQueryMessage;

use crate::identity::{IDENTITY_COLUMNS, IdentityLog, ServerIdentity};
use crate::tls::{ConnectError, PgTls};

/// A pooled PostgreSQL connection and the server it reached.
pub(crate) struct PgConn {
    pub(crate) client: postgres::Client,
    /// Who answered when it connected (`None`: the identity could not be read).
    pub(crate) identity: Option<Arc<ServerIdentity>>,
    /// Set to close it instead of returning it to the pool.
    pub(crate) discard: bool,
}

impl PgConn {
    /// The identity tag of its server (0: unknown).
    pub(crate) fn identity_tag(&self) -> u64 {
        self.identity.as_ref().map_or(0, |i| i.tag())
    }
}

/// The r2d2 manager of one host's pool.
pub(crate) struct PgManager {
    config: postgres::Config,
    tls: PgTls,
    log: Arc<IdentityLog>,
}

impl PgManager {
    /// A manager connecting with `config` through `tls` (which applies the DSN's `sslmode`).
    pub(crate) fn new(config: postgres::Config, tls: PgTls, log: Arc<IdentityLog>) -> PgManager {
        PgManager { config, tls, log }
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
        .map_err(|e| e.to_string())?;
    ServerIdentity::from_row(&row, 0)
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        let mut client = self.tls.connect(&self.config)?;
        let identity = match read_identity(&mut client) {
            Ok(id) => {
                self.log.record(id.tag(), Instant::now());
                Some(Arc::new(id))
            }
            Err(e) => {
                log::debug!(target: "dlb", "cannot read the identity of a new connection: {e}");
                None
            }
        };
        Ok(PgConn {
            client,
            identity,
            discard: false,
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        Self::check(conn).map_err(|e| ConnectError(e.to_string()))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.discard || conn.client.is_closed()
    }
}

impl PgManager {
    /// The check on checkout: one round trip, and a rollback of a transaction left open.
    fn check(conn: &mut PgConn) -> Result<(), postgres::Error> {
        // In the first statement of a transaction the two are equal: `false` means a
        // transaction was left open. An aborted transaction fails the query (and the
        // connection is discarded).
        let rows = conn
            .client
            .simple_query("SELECT now() = statement_timestamp()")?;
        let open = rows.iter().any(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0) == Some("f"),
            _ => false,
        });
        if open {
            log::debug!(target: "dlb", "a pooled connection came back inside a transaction: rolled back");
            conn.client.batch_execute("ROLLBACK")?;
        }
        Ok(())
    }
}
