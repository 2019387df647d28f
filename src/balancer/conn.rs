//! [`Conn`]: a pooled connection as a caller holds it, with the route that chose it, the
//! session tracking that decides whether it is reset before its next borrower, and what
//! happens when it is dropped.

use super::*;

/// A pooled connection together with the route that chose it. Dereferences to
/// [`postgres::Client`]; returned to its pool on drop.
///
/// **Handed out clean.** Whatever session state a borrower leaves (a transaction open or
/// aborted, settings such as `search_path`, `SET ROLE` or `SET SESSION AUTHORIZATION`,
/// temporary tables, advisory locks, `LISTEN`, cursors, `PREPARE`d statements, sequence
/// state), the next borrower does not see it: dlb resets the connection before handing it out
/// again, in the round trip of the check that runs then anyway (every checkout on the
/// primary, a sticky read's), or in one of its own (a keyless read on a replica). It does so
/// only when the borrower may have changed something: a plain read through `Conn`'s own
/// [`Conn::query`], [`Conn::query_one`], [`Conn::query_opt`], [`Conn::execute`],
/// [`Conn::prepare`] and [`Conn::prepare_cached`] (a statement starting with `SELECT`,
/// `VALUES`, `TABLE`, `WITH` or `SHOW` that names none of the built-in functions that change
/// a session, such as `set_config` or `pg_advisory_lock`) leaves the connection clean; any
/// other statement, and any use of the [`postgres::Client`] itself (`transaction`,
/// `batch_execute`, `simple_query`, ...), marks it for reset. A function of your own that
/// changes the session, reached by a plain `SELECT`, is not seen: call
/// [`Conn::mark_session_changed`]. Dlb's statement cache ([`Conn::prepare_cached`]) survives
/// the reset. Nothing is sent when the connection is given back (no I/O in `drop`); a
/// connection whose reset fails is discarded.
///
/// A connection that broke while the caller used it (a replica restarted, its backend
/// terminated) is discarded on drop and, on a replica, reported as
/// [`Balancer::report_failure`] does: the replica leaves the rotation until a probe succeeds.
/// An error of the caller's own SQL never counts as a failure of the host. Dropped while its
/// thread panics, it is discarded.
pub struct Conn {
    pub(super) route: Route,
    /// Dropped by `Conn`'s drop, except in a forked child (see there).
    pub(super) client: ManuallyDrop<PooledClient>,
    /// [`crate::sync::fork::generation`] where it was made.
    pub(super) forks: u64,
    pub(super) router: Weak<Router>,
}

impl Drop for Conn {
    /// Gives the connection back to its pool, or closes it when it broke (and reports its
    /// replica). In a forked child it is leaked instead: its socket is the parent's too (closing
    /// it would end the parent's session), and the pool's lock may have been held at the fork.
    fn drop(&mut self) {
        if crate::sync::fork::generation() != self.forks {
            return;
        }
        let c = &mut *self.client;
        if std::thread::panicking() {
            c.discard = true;
        }
        c.last_used = Instant::now();
        if c.client.is_closed() {
            c.discard = true;
            if self.route.role() == Role::Replica
                && let Some(router) = self.router.upgrade()
            {
                router.report_failure(self.route.addr());
            }
        }
        // SAFETY: dropped once, here; the field is not used again.
        unsafe { ManuallyDrop::drop(&mut self.client) };
    }
}

impl Conn {
    /// Where this connection goes and why.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// `sql` as a prepared statement of this pooled connection: prepared on the first call
    /// (one round trip) and kept with the connection, so later calls, by this borrower or the
    /// next ones of the same connection, cost no round trip, and a query with it costs one
    /// round trip where `query(sql_text, ..)` costs two (prepare, then execute). Opt-in: the
    /// other methods prepare as `postgres::Client` does. Each connection keeps up to
    /// [`STATEMENT_CACHE_SIZE`](crate::STATEMENT_CACHE_SIZE) statements (one more empties
    /// its cache first).
    ///
    /// After `DISCARD ALL` or `DEALLOCATE` on this connection, or a schema change that alters
    /// a statement's result columns, call [`Conn::clear_statement_cache`]: the server no
    /// longer knows the kept statements, or refuses them ("cached plan must not change result
    /// type").
    ///
    /// # Errors
    /// The server's error preparing `sql`. Blocks for one round trip on the first call.
    pub fn prepare_cached(
        &mut self,
        sql: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        self.client.prepare_cached(sql)
    }

    /// Forgets the statements [`Conn::prepare_cached`] kept on this connection; the server
    /// closes those no longer held anywhere on the connection's next exchange. Never blocks.
    pub fn clear_statement_cache(&mut self) {
        self.client.statements.clear();
    }

    /// Tells dlb that this borrower may have changed the session in a way it cannot see (a
    /// function of your own, called from a `SELECT`, that runs `SET` or takes an advisory
    /// lock): the connection is reset before it is handed out again. Using the
    /// [`postgres::Client`] itself (through `Deref`) does the same. Never blocks.
    pub fn mark_session_changed(&mut self) {
        self.client.dirty = true;
    }

    /// [`postgres::Client::execute`]; marks the connection for reset unless `query` is a plain
    /// read (see [`Conn`]).
    ///
    /// # Errors
    /// The server's or the connection's, as `postgres::Client::execute`.
    pub fn execute<T>(
        &mut self,
        query: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error>
    where
        T: ?Sized + SqlStatement,
    {
        self.track(query).execute(query, params)
    }

    /// [`postgres::Client::query`]; marks the connection for reset unless `query` is a plain
    /// read (see [`Conn`]).
    ///
    /// # Errors
    /// The server's or the connection's, as `postgres::Client::query`.
    pub fn query<T>(
        &mut self,
        query: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<postgres::Row>, postgres::Error>
    where
        T: ?Sized + SqlStatement,
    {
        self.track(query).query(query, params)
    }

    /// [`postgres::Client::query_one`]; marks the connection for reset unless `query` is a
    /// plain read (see [`Conn`]).
    ///
    /// # Errors
    /// The server's or the connection's, and not exactly one row, as
    /// `postgres::Client::query_one`.
    pub fn query_one<T>(
        &mut self,
        query: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<postgres::Row, postgres::Error>
    where
        T: ?Sized + SqlStatement,
    {
        self.track(query).query_one(query, params)
    }

    /// [`postgres::Client::query_opt`]; marks the connection for reset unless `query` is a
    /// plain read (see [`Conn`]).
    ///
    /// # Errors
    /// The server's or the connection's, and more than one row, as
    /// `postgres::Client::query_opt`.
    pub fn query_opt<T>(
        &mut self,
        query: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<postgres::Row>, postgres::Error>
    where
        T: ?Sized + SqlStatement,
    {
        self.track(query).query_opt(query, params)
    }

    /// [`postgres::Client::prepare`]; marks the connection for reset unless `query` is a plain
    /// read (see [`Conn`]): the statement is prepared to be run.
    ///
    /// # Errors
    /// The server's or the connection's, as `postgres::Client::prepare`.
    pub fn prepare(
        &mut self,
        query: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        self.track(query).prepare(query)
    }

    /// The client, the connection marked for reset unless `query` is a plain read.
    #[inline]
    fn track<T: ?Sized + SqlStatement>(&mut self, query: &T) -> &mut postgres::Client {
        if !query.is_plain_read() {
            self.client.dirty = true;
        }
        &mut self.client.client
    }
}

/// What [`Conn`]'s query methods take, as [`postgres::Client`]'s: SQL text (`str`, `String`)
/// or a [`postgres::Statement`]. Sealed.
///
/// A statement counts as a plain read (it leaves the connection clean): it was prepared by
/// `Conn::prepare` or `Conn::prepare_cached`, which looked at its text (and marked the
/// connection for reset when it was not one), or on the [`postgres::Client`] itself, which
/// marked it already.
pub trait SqlStatement: postgres::ToStatement + sealed::Sealed {
    /// Whether it is a plain read (see [`Conn`]).
    #[doc(hidden)]
    fn is_plain_read(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for postgres::Statement {}
}

impl SqlStatement for str {
    #[inline]
    fn is_plain_read(&self) -> bool {
        is_plain_read(self)
    }
}

impl SqlStatement for String {
    #[inline]
    fn is_plain_read(&self) -> bool {
        is_plain_read(self)
    }
}

impl SqlStatement for postgres::Statement {
    #[inline]
    fn is_plain_read(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("route", &self.route).finish()
    }
}

impl Deref for Conn {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client.client
    }
}

impl DerefMut for Conn {
    /// The client, the connection marked for reset before its next borrower (see [`Conn`]).
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.client.dirty = true;
        &mut self.client.client
    }
}
