package dlb_test

import (
	"context"
	"database/sql"
	"testing"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/lib/pq"
)

// cleanConfig is the configuration of the session-reset tests: pools opened by dlbsql with
// lib/pq's driver, one connection per host, so that the next borrower gets the very
// connection the previous one gave back.
func cleanConfig() dlbsql.Config { return dlbsql.Config{Driver: pq.Driver{}, MaxOpenConns: 1} }

func newCleanLB(t *testing.T) (*dlbsql.DBLoadBalancer, *dlb.Balancer) {
	t.Helper()
	b := needCluster(t).open(t, "", nil)
	lb, err := dlbsql.New(context.Background(), b, cleanConfig())
	if err != nil {
		t.Fatalf("dlbsql.New: %v", err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb, b
}

func scanString(t *testing.T, db interface {
	QueryRow(string, ...any) *sql.Row
}, query string) string {
	t.Helper()
	var s string
	if err := db.QueryRow(query).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s
}

// Session state a borrower leaves (SET, set_config, an advisory lock) is not seen by the
// next borrower of the pool, on the primary's and the replicas' pools. Old code: every one
// leaked (the same connection, as it was left).
func TestDlbsqlSessionStateDoesNotLeak(t *testing.T) {
	lb, b := newCleanLB(t)
	waitHealthy(t, b, 2)
	ctx := context.Background()
	db := lb.Primary()
	def := scanString(t, db, "SHOW search_path")
	for _, stmt := range []string{
		"SET search_path = pg_catalog",
		"SELECT set_config('search_path', 'pg_catalog', false)",
		"/* a comment */ set   search_path TO pg_catalog;",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
		if got := scanString(t, db, "SHOW search_path"); got != def {
			t.Errorf("after %q the next borrower's search_path is %q, not %q", stmt, got, def)
		}
	}
	if _, err := db.Exec("SELECT pg_advisory_lock(4243)"); err != nil {
		t.Fatal(err)
	}
	if n := scanString(t, db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"); n != "0" {
		t.Errorf("the next borrower holds %s advisory locks", n)
	}
	// The replicas' pools: dirty both (round-robin), then read both.
	for i := 0; i < 4; i++ {
		r, err := lb.Replica(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Exec("SET search_path = pg_catalog"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		r, err := lb.Replica(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := scanString(t, r, "SHOW search_path"); got != def {
			t.Errorf("replica %s: the next borrower's search_path is %q", lb.Addr(r.DB), got)
		}
	}
}

// A borrower that leaves a transaction open (BEGIN run as a statement on a *sql.Conn) does
// not swallow the next borrower's writes; one that leaves it aborted does not fail the next
// borrower's statements. Old code: the next write landed in the open transaction (never
// committed), and after the aborted one "current transaction is aborted".
func TestDlbsqlTransactionLeftOpenIsNotReused(t *testing.T) {
	lb, b := newCleanLB(t)
	ctx := context.Background()
	db := lb.Primary()
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS dlbsql_clean (id bigserial PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	primaryDSN, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	outside := newDBs(t).get(primaryDSN)
	committed := func(id int64) bool {
		var n int
		if err := outside.QueryRow("SELECT count(*) FROM dlbsql_clean WHERE id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	borrower, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lost int64
	if _, err := borrower.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := borrower.QueryRowContext(ctx, "INSERT INTO dlbsql_clean (v) VALUES ('uncommitted') RETURNING id").Scan(&lost); err != nil {
		t.Fatal(err)
	}
	borrower.Close() // given back inside the transaction
	swallowed := 0
	for i := 0; i < 5; i++ {
		var id int64
		if err := db.QueryRow("INSERT INTO dlbsql_clean (v) VALUES ('later') RETURNING id").Scan(&id); err != nil {
			t.Fatal(err)
		}
		if !committed(id) {
			swallowed++
		}
	}
	if swallowed != 0 {
		t.Errorf("%d of 5 later writes landed in the transaction left open", swallowed)
	}
	if committed(lost) {
		t.Errorf("the transaction left open was committed")
	}

	borrower, err = db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := borrower.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := borrower.ExecContext(ctx, "SELECT 1/0"); err == nil {
		t.Fatal("1/0 did not fail")
	}
	borrower.Close() // given back inside the aborted transaction
	if got := scanString(t, db, "SELECT 'ok'"); got != "ok" {
		t.Fatalf("after an aborted transaction: %q", got)
	}
}

// The common path keeps its connection: reads, writes, SET LOCAL in a transaction, prepared
// statements, a failed statement. Only a statement that may change the session costs a new
// connection.
func TestDlbsqlNeutralStatementsKeepTheConnection(t *testing.T) {
	lb, _ := newCleanLB(t)
	ctx := context.Background()
	db := lb.Primary()
	pid := scanString(t, db, "SELECT pg_backend_pid()::text")
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("SET LOCAL statement_timeout = 5000"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	stmt, err := db.Prepare("SELECT $1::int + 1")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	var n int
	if err := stmt.QueryRow(41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("prepared: %d %v", n, err)
	}
	if _, err := db.Exec("SELECT * FROM no_such_table_here"); err == nil {
		t.Fatal("no error from a missing table")
	}
	for i := 0; i < 10; i++ {
		scanString(t, db, "WITH x AS (SELECT 1) SELECT 'template' FROM x")
	}
	if got := scanString(t, db, "SELECT pg_backend_pid()::text"); got != pid {
		t.Errorf("a new connection (%s, was %s) after statements that change nothing", got, pid)
	}
	if _, err := db.Exec("SET application_name = 'x'"); err != nil {
		t.Fatal(err)
	}
	if got := scanString(t, db, "SELECT pg_backend_pid()::text"); got == pid {
		t.Errorf("the connection was kept after SET")
	}
}
