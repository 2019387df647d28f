package dlbsql

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
)

// The wrappers below see the errors a pool's statements and rows return after the
// statement itself started (a replica that dies mid-query fails the read of its rows, not
// the QueryContext), and hand the connectivity ones to the connection's reporter. database/sql
// looks for optional interfaces on rows and statements: each one is implemented with the
// driver's method when it has one and database/sql's own fallback otherwise.

// wrapRows wraps a driver's rows so that an error reading them is reported.
func (c *conn) wrapRows(r driver.Rows, err error) (driver.Rows, error) {
	if err != nil || r == nil || c.report == nil {
		return r, err
	}
	return &rows{inner: r, c: c}, nil
}

type rows struct {
	inner driver.Rows
	c     *conn
}

var (
	_ driver.RowsNextResultSet              = (*rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*rows)(nil)
	_ driver.RowsColumnTypeLength           = (*rows)(nil)
	_ driver.RowsColumnTypeNullable         = (*rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*rows)(nil)
)

func (r *rows) Columns() []string { return r.inner.Columns() }
func (r *rows) Close() error      { return r.inner.Close() }

func (r *rows) Next(dest []driver.Value) error {
	err := r.inner.Next(dest)
	if err != nil && err != io.EOF {
		r.c.noteErr(err)
	}
	return err
}

func (r *rows) HasNextResultSet() bool {
	n, ok := r.inner.(driver.RowsNextResultSet)
	return ok && n.HasNextResultSet()
}

func (r *rows) NextResultSet() error {
	n, ok := r.inner.(driver.RowsNextResultSet)
	if !ok {
		return io.EOF
	}
	err := n.NextResultSet()
	if err != nil && err != io.EOF {
		r.c.noteErr(err)
	}
	return err
}

func (r *rows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.inner.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeOf(new(any)).Elem() // database/sql's default
}

func (r *rows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.inner.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *rows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.inner.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *rows) ColumnTypeNullable(i int) (bool, bool) {
	if t, ok := r.inner.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *rows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if t, ok := r.inner.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

// wrapStmt wraps a prepared statement so that its errors are reported. A statement with a
// ColumnConverter keeps it (database/sql converts arguments with it).
func wrapStmt(s driver.Stmt, c *conn) driver.Stmt {
	w := &stmt{inner: s, c: c}
	if _, ok := s.(driver.ColumnConverter); ok {
		return &convStmt{w}
	}
	return w
}

type stmt struct {
	inner driver.Stmt
	c     *conn
}

var (
	_ driver.StmtExecContext   = (*stmt)(nil)
	_ driver.StmtQueryContext  = (*stmt)(nil)
	_ driver.NamedValueChecker = (*stmt)(nil)
)

func (s *stmt) Close() error  { return s.inner.Close() }
func (s *stmt) NumInput() int { return s.inner.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	r, err := s.inner.Exec(args) // what database/sql calls without ExecContext
	s.c.noteErr(err)
	return r, err
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	r, err := s.inner.Query(args)
	s.c.noteErr(err)
	return s.c.wrapRows(r, err)
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	var r driver.Result
	var err error
	if e, ok := s.inner.(driver.StmtExecContext); ok {
		r, err = e.ExecContext(ctx, args)
	} else if values, verr := plainValues(ctx, args); verr != nil {
		err = verr
	} else {
		r, err = s.inner.Exec(values) // the driver has nothing else
	}
	s.c.noteErr(err)
	return r, err
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	var r driver.Rows
	var err error
	if q, ok := s.inner.(driver.StmtQueryContext); ok {
		r, err = q.QueryContext(ctx, args)
	} else if values, verr := plainValues(ctx, args); verr != nil {
		err = verr
	} else {
		r, err = s.inner.Query(values) // the driver has nothing else
	}
	s.c.noteErr(err)
	return s.c.wrapRows(r, err)
}

// CheckNamedValue defers to the statement's checker, then the connection's (database/sql's
// order), else database/sql's default conversion.
func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := s.inner.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return s.c.CheckNamedValue(nv)
}

// convStmt is a stmt whose driver statement has a ColumnConverter.
type convStmt struct{ *stmt }

func (s *convStmt) ColumnConverter(idx int) driver.ValueConverter {
	return s.inner.(driver.ColumnConverter).ColumnConverter(idx)
}

// plainValues is database/sql's conversion for a driver without the Context methods:
// positional arguments only, and ctx checked first.
func plainValues(ctx context.Context, named []driver.NamedValue) ([]driver.Value, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	values := make([]driver.Value, len(named))
	for i, nv := range named {
		if nv.Name != "" {
			return nil, errors.New("dlbsql: the driver does not support named arguments")
		}
		values[i] = nv.Value
	}
	return values, nil
}
