//! What a borrower may leave on a pooled connection, and how dlb takes it back.
//!
//! The driver (`postgres` 0.19 over `tokio-postgres` 0.7) tells nothing of a connection's
//! session: it reads the transaction status of `ReadyForQuery` and the `ParameterStatus`
//! messages but exposes neither. So dlb tracks what a borrower *could* have done, through its
//! own API ([`crate::Conn`]):
//!
//! * a statement run through `Conn`'s own query methods (`query`, `query_one`, `query_opt`,
//!   `execute`, `prepare`, `prepare_cached`) is looked at: a plain read ([`is_plain_read`])
//!   leaves the session as it found it;
//! * anything else (another statement, or any use of the `postgres::Client` underneath, which
//!   `Conn` hands out mutably) marks the connection *dirty*.
//!
//! A dirty connection is reset before it is handed out again, in the same simple-protocol
//! round trip as the check that runs then anyway (the primary's, a sticky read's), or in one of
//! its own for a keyless replica read ([`reset_sql`]). Nothing happens when it is given back:
//! no I/O on the dropping thread.

use postgres::error::SqlState;

/// The statements that take a session back to its state at connection time, except dlb's own
/// prepared statements (`PgConn::statements`) and the driver's: `DISCARD ALL` without its
/// `DEALLOCATE ALL` (which would drop them). First the transaction an earlier borrower left
/// open or aborted; then role, settings (back to the connection's own: its startup options and
/// the role's and database's defaults), cursors, listened channels (the primary only: a standby
/// refuses `LISTEN`, so has nothing to `UNLISTEN`), advisory locks, temporary tables and
/// sequence state. SQL-level prepared statements are listed by the check that follows
/// ([`PREPARED_COLUMN`]) and deallocated when there are any.
macro_rules! reset_sql {
    (primary) => {
        concat!(reset_sql!(head), "UNLISTEN *; ", reset_sql!(tail))
    };
    (replica) => {
        concat!(reset_sql!(head), reset_sql!(tail))
    };
    (head) => {
        "ROLLBACK; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; "
    };
    (tail) => {
        "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; "
    };
}
pub(crate) use reset_sql;

/// The last column of a check that follows a reset: the SQL-level prepared statements (`PREPARE`)
/// still there, quoted and comma-separated (`NULL`: none). Those of the protocol (dlb's
/// statement cache, the driver's own, a borrower's `postgres::Statement`) belong to handles
/// on the client, which close them when dropped.
macro_rules! prepared_column {
    () => {
        "(SELECT string_agg('DEALLOCATE ' || quote_ident(name), '; ') \
         FROM pg_prepared_statements WHERE from_sql)"
    };
}
pub(crate) use prepared_column;

/// Whether `sql`, one statement run through the extended protocol, is a plain read: it starts
/// with `SELECT`, `VALUES`, `TABLE`, `WITH` or `SHOW` and names none of the built-in ways a
/// statement changes its session (`set_config`, `setseed`, `setval`, `nextval`, advisory locks,
/// `SELECT ... INTO`, data-modifying `WITH`, temporary replication slots, `dblink`). Errs on
/// the side of "no": a word anywhere in the text counts (in a string, a comment, a quoted
/// name). Outside an explicit transaction (which only a statement that is not a plain read
/// opens) a plain read leaves no transaction behind, even when it fails.
///
/// What it cannot see: a function of your own, a view, a rule or a trigger that changes the
/// session when such a statement reaches it (see `Conn::mark_session_changed`).
pub(crate) fn is_plain_read(sql: &str) -> bool {
    plain_read(sql.as_bytes())
}

/// [`is_plain_read`] for the text of a simple-protocol query, which may hold several
/// statements (PostgreSQL runs them all): a plain read that is one statement, nothing after its
/// first `;` but white space and more `;` (a `;` in a string, a quoted name or a comment counts
/// too). In bytes of any encoding PostgreSQL accepts: only ASCII is looked at. The rule the
/// bindings' own pools use (`lb_is_plain_read`), which hand out the driver's connection and
/// see the text of each statement it runs.
pub(crate) fn is_plain_read_text(sql: &[u8]) -> bool {
    let one_statement = sql.iter().position(|&c| c == b';').is_none_or(|i| {
        sql[i..]
            .iter()
            .all(|&c| c == b';' || c.is_ascii_whitespace())
    });
    one_statement && plain_read(sql)
}

fn plain_read(sql: &[u8]) -> bool {
    let mut words = Words::new(sql);
    let first_ok = words.next().is_some_and(|w| {
        [
            &b"select"[..],
            &b"values"[..],
            &b"table"[..],
            &b"with"[..],
            &b"show"[..],
        ]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
    });
    first_ok && Words::new(sql).all(|w| !changes_session(w))
}

/// Whether a word (any case) names a built-in way to change the session from a plain statement.
fn changes_session(word: &[u8]) -> bool {
    // Lowercased on the stack: this runs on every statement of the read path.
    let mut buf = [0u8; 64];
    let heap;
    let w: &[u8] = if word.len() <= buf.len() {
        for (b, c) in buf.iter_mut().zip(word) {
            *b = c.to_ascii_lowercase();
        }
        &buf[..word.len()]
    } else {
        heap = word.to_ascii_lowercase();
        &heap
    };
    let contains = |needle: &[u8]| w.windows(needle.len()).any(|x| x == needle);
    // set_config, set_limit (pg_trgm); not a table or column such as `settings` or `setup`.
    w.starts_with(b"set_")
        || contains(b"advisory")
        || contains(b"replication_slot")
        || w.starts_with(b"dblink")
        || [
            &b"into"[..],
            b"setseed",
            b"setval",
            b"nextval",
            b"insert",
            b"update",
            b"delete",
            b"merge",
            b"lock",
        ]
        .contains(&w)
}

/// The words of a statement: runs of letters, digits, `_` and `$`, after leading white space,
/// comments and parentheses (so that the first word is the statement's keyword).
struct Words<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Words<'a> {
    fn new(s: &'a [u8]) -> Words<'a> {
        let mut w = Words { s, i: 0 };
        w.skip_prefix();
        w
    }

    /// Skips white space, `--` and (nested) `/* */` comments and `(` at the start.
    fn skip_prefix(&mut self) {
        let s = self.s;
        loop {
            match s.get(self.i..) {
                Some([c, ..]) if c.is_ascii_whitespace() || *c == b'(' => self.i += 1,
                Some([b'-', b'-', ..]) => {
                    while self.i < s.len() && s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                Some([b'/', b'*', ..]) => {
                    let mut depth = 0usize;
                    while self.i < s.len() {
                        if s[self.i..].starts_with(b"/*") {
                            depth += 1;
                            self.i += 2;
                        } else if s[self.i..].starts_with(b"*/") {
                            depth -= 1;
                            self.i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            self.i += 1;
                        }
                    }
                }
                _ => return,
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        while self.i < self.s.len() && !word(self.s[self.i]) {
            self.i += 1;
        }
        let start = self.i;
        while self.i < self.s.len() && word(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }
}

/// Whether an error on a pooled connection means its host failed (the connection broke, the
/// server is shutting down or out of resources) rather than the statement: any error without a
/// server error code, and the codes of classes 08 (connection exception), 53 (insufficient
/// resources), 58 (system error) and XX (internal error), and `57P01`..`57P04` (shutdown, crash
/// shutdown, cannot connect now, database dropped). Everything else, an aborted transaction
/// (class 25) or a statement's own error, is the statement's.
pub(crate) fn is_host_failure(e: &postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return true;
    };
    let code = db.code();
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "58" | "XX")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::DATABASE_DROPPED,
        ]
        .contains(code)
}

/// The notice callback of pooled connections: as the driver's default (the `log` crate, at
/// info), without the warning a reset's `ROLLBACK` gets when no transaction was open.
pub(crate) fn log_notice(notice: postgres::error::DbError) {
    if notice.code() != &SqlState::NO_ACTIVE_SQL_TRANSACTION {
        log::info!(target: "postgres", "{}: {}", notice.severity(), notice.message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reads_are_told_from_statements_that_change_the_session() {
        for sql in [
            "SELECT v FROM dlb_bench_read WHERE id = $1",
            "  select 1",
            "-- a comment\n/* and /* a nested */ one */ (SELECT 1) UNION (SELECT 2)",
            "VALUES (1)",
            "TABLE t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SHOW search_path",
            "SELECT pg_current_wal_insert_lsn()::text, now() = statement_timestamp()",
            "SELECT count(*) FROM t LIMIT 10",
            "SELECT value FROM settings WHERE setup_id = 1",
        ] {
            assert!(is_plain_read(sql), "{sql}");
            assert!(is_plain_read_text(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "",
            "SET search_path = nowhere",
            "set role r",
            "BEGIN",
            "START TRANSACTION",
            "CREATE TEMP TABLE t (id int)",
            "LISTEN c",
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT set_config('search_path', 'nowhere', false)",
            "SELECT pg_catalog.SET_CONFIG('x', 'y', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_lock_shared(1)",
            "SELECT setseed(0.5)",
            "SELECT SETVAL('s', 1)",
            "SELECT set_limit(0.5)",
            "SELECT nextval('s')",
            "SELECT * INTO TEMP t FROM u",
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
            "SELECT * FROM t FOR UPDATE",
            "SELECT pg_create_physical_replication_slot('s', true, true)",
            "SELECT dblink_connect('c', 'dbname=x')",
            "INSERT INTO t VALUES (1)",
            "CALL p()",
            "DO $$BEGIN PERFORM 1; END$$",
            "EXPLAIN ANALYZE SELECT 1",
            "/* unterminated",
        ] {
            assert!(!is_plain_read(sql), "{sql}");
            assert!(!is_plain_read_text(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn a_simple_query_text_is_a_plain_read_when_it_is_one_plain_read() {
        for sql in [
            &b"SELECT 1;"[..],
            b"SELECT 1 ; ;\n",
            b"SELECT 'caf\xe9'", // Latin-1: any bytes outside ASCII are part of words
        ] {
            assert!(is_plain_read_text(sql), "{}", sql.escape_ascii());
        }
        for sql in [
            "SELECT 1; CREATE TEMP TABLE t (id int)",
            "SELECT 1; LISTEN c",
            "SHOW search_path; DISCARD ALL",
            "SELECT ';'",
            "SELECT 1; -- a comment",
            "SET search_path = nowhere; SELECT 1",
        ] {
            assert!(!is_plain_read_text(sql.as_bytes()), "{sql}");
        }
    }
}
