package dlbsql

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"strings"
)

// WrapConnector returns a connector whose connections database/sql never hands out with
// state a borrower left behind. Config.Driver uses it; call it yourself in an Opener that
// builds its pool from a connector (sql.OpenDB(dlbsql.WrapConnector(c))).
//
// A connection tracks, with no round trip, what its borrowers ran: it stays pooled after
// statements that cannot change the session (SELECT, INSERT, UPDATE, DELETE, WITH, VALUES,
// TABLE, SHOW, EXPLAIN, MERGE, DDL other than of temporary objects, SET LOCAL, and
// transactions begun with BeginTx and ended with Commit or Rollback). After anything else
// (SET, RESET, BEGIN, LISTEN, PREPARE, DECLARE, DO, CALL, a statement calling set_config,
// setseed or a session-level advisory lock, a temporary table, several statements in one
// string) or an error that is not the server's (a broken connection, a cancelled query), or
// when Commit or Rollback failed, its state is unknown: ResetSession returns
// driver.ErrBadConn and IsValid false, so database/sql closes it and the next borrower gets
// a new session. What it cannot see: a function that changes the session (SET without a
// SET clause on the function or SET LOCAL) called from a SELECT.
//
// The driver's own ResetSession and IsValid, when it has them, are honoured too.
//
// The pools Config.Driver opens also report every connectivity error (IsConnectivityError)
// to dlb, whether from connecting, a statement, reading rows or ending a transaction, so
// the host leaves the rotation at once with no ReportError call in the application.
func WrapConnector(c driver.Connector) driver.Connector { return &connector{inner: c} }

// driverConnector returns d's connector for dsn (DriverContext), or one calling d.Open.
func driverConnector(d driver.Driver, dsn string) (driver.Connector, error) {
	if dc, ok := d.(driver.DriverContext); ok {
		return dc.OpenConnector(dsn)
	}
	return dsnConnector{d: d, dsn: dsn}, nil
}

type dsnConnector struct {
	d   driver.Driver
	dsn string
}

func (c dsnConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.d.Open(c.dsn)
}

func (c dsnConnector) Driver() driver.Driver { return c.d }

type connector struct {
	inner driver.Connector
	// report, when set, is called with every connectivity error (dlb.Balancer.ReportFailure
	// for the pool's host).
	report func(error)
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := c.inner.Connect(ctx)
	if err != nil {
		if c.report != nil && IsConnectivityError(err) {
			c.report(err)
		}
		return nil, err
	}
	return &conn{inner: cn, report: c.report}, nil
}

func (c *connector) Driver() driver.Driver { return c.inner.Driver() }

// Close closes the wrapped connector when it has a Close (sql.DB.Close calls it).
func (c *connector) Close() error {
	if cl, ok := c.inner.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// conn is a driver connection that knows whether its session may carry state. database/sql
// uses a connection from one goroutine at a time: no lock.
type conn struct {
	inner driver.Conn
	// dirty: a statement may have changed the session, or its state is unknown.
	dirty bool
	// inTx: a transaction begun with Begin/BeginTx is not known to have ended.
	inTx bool
	// report is the connector's.
	report func(error)
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
)

// ResetSession is called by database/sql before a pooled connection is reused:
// driver.ErrBadConn (close it) when its session may carry a borrower's state.
func (c *conn) ResetSession(ctx context.Context) error {
	if c.dirty || c.inTx {
		return driver.ErrBadConn
	}
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

// IsValid is called by database/sql before it puts a connection back in the pool: false
// (close it) when its session may carry a borrower's state.
func (c *conn) IsValid() bool {
	if c.dirty || c.inTx {
		return false
	}
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext notes the statement: preparing it is as good as running it (it can only run
// on this connection).
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.note(query)
	var s driver.Stmt
	var err error
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		s, err = p.PrepareContext(ctx, query)
	} else if err = ctx.Err(); err == nil {
		s, err = c.inner.Prepare(query)
	}
	c.noteErr(err)
	if err != nil || c.report == nil {
		return s, err
	}
	return wrapStmt(s, c), nil
}

func (c *conn) Close() error { return c.inner.Close() }

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var tx driver.Tx
	var err error
	if b, ok := c.inner.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		// What database/sql does for a driver without BeginTx.
		if opts.Isolation != 0 || opts.ReadOnly {
			return nil, errors.New("dlbsql: the driver supports no isolation level or read-only transaction")
		}
		if err = ctx.Err(); err == nil {
			tx, err = c.inner.Begin() // the driver has nothing else
		}
	}
	if err != nil {
		c.noteErr(err)
		return nil, err
	}
	c.inTx = true
	return &txn{inner: tx, c: c}, nil
}

// txn ends a transaction; the connection is clean again only when Commit or Rollback
// succeeded.
type txn struct {
	inner driver.Tx
	c     *conn
}

func (t *txn) Commit() error   { return t.end(t.inner.Commit()) }
func (t *txn) Rollback() error { return t.end(t.inner.Rollback()) }

func (t *txn) end(err error) error {
	if err == nil {
		t.c.inTx = false
	} else {
		t.c.dirty = true
		t.c.reportErr(err)
	}
	return err
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.inner.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip // database/sql prepares it (PrepareContext notes it)
	}
	c.note(query)
	r, err := e.ExecContext(ctx, query, args)
	c.noteErr(err)
	return r, err
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.inner.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.note(query)
	rows, err := q.QueryContext(ctx, query, args)
	c.noteErr(err)
	return c.wrapRows(rows, err)
}

func (c *conn) Ping(ctx context.Context) error {
	if p, ok := c.inner.(driver.Pinger); ok {
		err := p.Ping(ctx)
		c.noteErr(err)
		return err
	}
	return nil
}

// CheckNamedValue defers to the driver's checker; without one, database/sql's default
// conversion (driver.ErrSkip says so).
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// note marks the connection dirty when query may change the session.
func (c *conn) note(query string) {
	if !c.dirty && !sessionNeutral(query, c.inTx) {
		c.dirty = true
	}
}

// noteErr marks the connection dirty after an error that is not the server's answer to a
// statement (those leave the session as it was: a failed statement changes nothing, and a
// transaction it aborted ends with Rollback), and reports a connectivity error.
func (c *conn) noteErr(err error) {
	if err == nil || errors.Is(err, driver.ErrSkip) {
		return
	}
	c.reportErr(err)
	var state interface{ SQLState() string }
	if errors.As(err, &state) && len(state.SQLState()) == 5 && !connectivityState(state.SQLState()) {
		return
	}
	c.dirty = true
}

// reportErr reports err to dlb when it is a connectivity error (and a reporter is set).
func (c *conn) reportErr(err error) {
	if c.report != nil && IsConnectivityError(err) {
		c.report(err)
	}
}

// sessionNeutral says whether a statement (or a statement string) cannot change the
// session's state beyond its transaction: see WrapConnector. Conservative: a false "no"
// costs a new connection, never a leak of what it recognises.
func sessionNeutral(query string, inTx bool) bool {
	q := strings.ToLower(strings.TrimRight(skipBlank(query), " \t\r\n;"))
	if strings.Contains(q, ";") {
		return false // several statements (or a ';' in a literal: a new connection, no harm)
	}
	first, rest := word(q)
	switch first {
	case "select", "insert", "update", "delete", "with", "values", "table", "show", "explain", "merge":
		// A SELECT may call what changes the session, or SELECT INTO a temporary table.
		for _, f := range []string{"set_config", "setseed", "advisory_lock", "dblink_connect"} {
			if strings.Contains(q, f) {
				return false
			}
		}
		return !hasWord(q, "temp", "temporary")
	case "create", "alter", "drop", "truncate", "comment", "grant", "revoke", "copy", "vacuum",
		"analyze", "analyse", "refresh", "reindex", "cluster":
		return !hasWord(q, "temp", "temporary")
	case "lock":
		return true // a table lock ends with its transaction
	case "set":
		second, _ := word(skipBlank(rest))
		return second == "local" || second == "transaction" || second == "constraints"
	case "savepoint", "release":
		return inTx
	case "rollback":
		second, _ := word(skipBlank(rest))
		return inTx && second == "to"
	}
	return false
}

// skipBlank skips leading white space and SQL comments.
func skipBlank(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n\f")
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/") // nested comments: the rest is then not neutral
			if i < 0 {
				return ""
			}
			q = q[i+2:]
		default:
			return q
		}
	}
}

// word splits q's leading identifier (ASCII letters, digits, '_') from the rest.
func word(q string) (string, string) {
	i := 0
	for i < len(q) && isIdent(q[i]) {
		i++
	}
	return q[:i], q[i:]
}

func isIdent(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// hasWord says whether q holds one of words as a whole identifier.
func hasWord(q string, words ...string) bool {
	for _, w := range words {
		for from := 0; ; {
			i := strings.Index(q[from:], w)
			if i < 0 {
				break
			}
			i += from
			end := i + len(w)
			if (i == 0 || !isIdent(q[i-1])) && (end == len(q) || !isIdent(q[end])) {
				return true
			}
			from = i + 1
		}
	}
	return false
}
