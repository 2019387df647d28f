// Package dlbsql puts database/sql pools behind a dlb.Balancer: one *sql.DB per host, opened
// with a driver (any: pgx's stdlib, lib/pq...) whose connections are never handed out with
// state a borrower left and whose connectivity errors are reported to dlb (see Config.Driver,
// WrapConnector), or by a caller-supplied Opener, and closed once dlb has drained the host,
// the way GitLab's container registry uses its LoadBalancer:
//
//	lb, err := dlbsql.New(ctx, balancer, dlbsql.Config{Driver: &pq.Driver{}})
//	db := lb.Primary()                         // writes
//	rdb, err := lb.UpToDateReplica(ctx, key)   // reads that must see key's writes (rdb.Route: why)
//	lsn, err := lb.RecordLSN(ctx, key)         // after a write for key commits
//
// Code that takes a LoadBalancer (the interface) can be tested with a mock. It also gives an
// error classifier (IsConnectivityError, ReportError for pools it did not open), an http
// middleware that carries a signed causal token between requests (Middleware) and a health
// handler (HealthHandler). Standard library only.
package dlbsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// Opener opens a pool for a DSN handed out by dlb (password included: never log it).
// sql.Open does not connect; neither should an Opener.
type Opener func(dsn string) (*sql.DB, error)

// Config says how pools are opened and sized. Zero limits keep database/sql's defaults.
type Config struct {
	// Driver, when set, is the driver dlbsql opens every pool with (sql.OpenDB over its
	// connector for dlb's DSN), its connections wrapped (WrapConnector) so that none is handed
	// out with state a borrower left: a session that may carry it (SET, BEGIN without
	// Commit, LISTEN, a temporary table, a broken connection...) is closed, not reused. E.g.
	// &pq.Driver{}, or pgx's stdlib.GetDefaultDriver(). Open is then not used.
	Driver driver.Driver
	// Open opens a pool (required unless Driver is set). Its pools are used as they are: wrap
	// the connector yourself (sql.OpenDB(WrapConnector(c))) for the same reset, and report
	// connectivity errors with ReportError (only Driver's pools report them by themselves).
	Open Opener
	// PickBudget bounds a pick of UpToDateReplica whose ctx has no deadline: dlb's LSN store
	// read and live replay checks end by then, and a read no replica was shown to serve in
	// time goes to the primary. 0 means DefaultPickBudget; a negative value, no budget (the
	// configuration's sticky_check_budget_ms and the store's op_timeout_ms still apply). A
	// ctx with a deadline keeps its own.
	PickBudget time.Duration
	// MaxOpenConns, MaxIdleConns, ConnMaxLifetime and ConnMaxIdleTime are applied to every
	// pool opened (per host).
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
}

// DefaultPickBudget is Config.PickBudget's default: the GitLab container registry's budget
// for finding an up-to-date replica.
const DefaultPickBudget = 100 * time.Millisecond

// The host types TypeOf returns.
const (
	HostTypePrimary = "primary"
	HostTypeReplica = "replica"
	HostTypeUnknown = "unknown"
)

// LoadBalancer is what an application needs of DBLoadBalancer, as an interface to mock in
// its tests (the registry's LoadBalancer).
type LoadBalancer interface {
	// Primary returns the primary's pool, for writes.
	Primary() *sql.DB
	// Replica returns a pool for a read that needs no freshness.
	Replica(ctx context.Context) (DB, error)
	// UpToDateReplica returns a pool for a read that must see key's writes (and ctx's token).
	UpToDateReplica(ctx context.Context, key string) (DB, error)
	// Replicas returns the replicas' pools open now.
	Replicas() []*sql.DB
	// TypeOf returns HostTypePrimary, HostTypeReplica or HostTypeUnknown for a pool.
	TypeOf(db *sql.DB) string
	// RecordLSN records key's LSN after a write and returns it (a causal token).
	RecordLSN(ctx context.Context, key string) (string, error)
}

var _ LoadBalancer = (*DBLoadBalancer)(nil)

// DB is a pool handed out for a read, with the route dlb chose it by: Route.Role,
// Route.Reason (why: caught up, not caught up, no healthy replica...), Route.HostID and
// Route.Addr. Route.DSN holds the password; printing a Route leaves it out.
type DB struct {
	*sql.DB
	Route dlb.Route
}

// DBLoadBalancer hands out one *sql.DB per host. Safe for concurrent use.
type DBLoadBalancer struct {
	b       *dlb.Balancer
	cfg     Config
	primary *sql.DB
	// primaryID and primaryAddr name the primary's host.
	primaryID   uint64
	primaryAddr string
	primaryDSN  string

	mu    sync.Mutex
	pools map[uint64]*sql.DB // replicas by host id
	addrs map[*sql.DB]string // every pool's host:port, for ReportError
	gone  map[uint64]bool    // drained hosts: never reopened
	shut  bool               // Close was called
	// opened and closed count pools, for tests and metrics.
	opened, closed int

	unwatch func()

	tokenCounters
}

// New opens the primary's pool and starts following b's host events (WatchEvents): a replica's pool is
// opened the first time dlb routes a read to it (sql.Open connects lazily anyway) and
// closed once dlb says it is drained. b stays the caller's (Close does not close it).
//
// Errors: ctx.Err(), dlb.ErrClosed, and what Config.Open returns.
func New(ctx context.Context, b *dlb.Balancer, cfg Config) (*DBLoadBalancer, error) {
	if cfg.Open == nil && cfg.Driver == nil {
		return nil, errors.New("dlbsql: Config.Open and Config.Driver are nil")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := b.PrimaryRoute()
	if err != nil {
		return nil, err
	}
	lb := &DBLoadBalancer{b: b, cfg: cfg, primaryID: r.HostID, primaryAddr: r.Addr,
		primaryDSN: r.DSN,
		pools:      map[uint64]*sql.DB{}, addrs: map[*sql.DB]string{}, gone: map[uint64]bool{}}
	if lb.primary, err = lb.open(r.DSN, r.Addr); err != nil {
		return nil, err
	}
	lb.addrs[lb.primary] = r.Addr
	lb.unwatch = b.WatchEvents(lb.event)
	return lb, nil
}

// open opens the pool of the host at addr.
func (lb *DBLoadBalancer) open(dsn, addr string) (*sql.DB, error) {
	if dsn == "" {
		// Drivers take an empty DSN for their defaults (another server): never open one.
		return nil, errors.New("dlbsql: dlb handed out an empty DSN")
	}
	var db *sql.DB
	if lb.cfg.Driver != nil {
		c, err := driverConnector(lb.cfg.Driver, dsn)
		if err != nil {
			return nil, err
		}
		db = sql.OpenDB(&connector{inner: c, report: func(error) { _ = lb.b.ReportFailure(addr) }})
	} else {
		var err error
		if db, err = lb.cfg.Open(dsn); err != nil {
			return nil, err
		}
	}
	c := lb.cfg
	if c.MaxOpenConns != 0 {
		db.SetMaxOpenConns(c.MaxOpenConns)
	}
	if c.MaxIdleConns != 0 {
		db.SetMaxIdleConns(c.MaxIdleConns)
	}
	if c.ConnMaxLifetime != 0 {
		db.SetConnMaxLifetime(c.ConnMaxLifetime)
	}
	if c.ConnMaxIdleTime != 0 {
		db.SetConnMaxIdleTime(c.ConnMaxIdleTime)
	}
	lb.opened++
	return db, nil
}

// event closes the pool of a drained host.
func (lb *DBLoadBalancer) event(e dlb.HostEvent) {
	if e.Event != dlb.EventDrained {
		return
	}
	lb.mu.Lock()
	db := lb.pools[e.HostID]
	delete(lb.pools, e.HostID)
	lb.gone[e.HostID] = true
	if db != nil {
		delete(lb.addrs, db)
		lb.closed++
	}
	lb.mu.Unlock()
	if db != nil {
		db.Close() // waits for the queries in flight
	}
}

// Primary returns the primary's pool, for writes.
func (lb *DBLoadBalancer) Primary() *sql.DB { return lb.primary }

// Replica returns a pool for a read that needs no freshness: a healthy replica in
// round-robin order, or the primary when none is healthy. Never blocks on I/O.
//
// Errors: ctx.Err(), dlb.ErrClosed, what Config.Open returns.
func (lb *DBLoadBalancer) Replica(ctx context.Context) (DB, error) {
	r, err := lb.b.PickReplica(ctx, dlb.NoKey)
	if err != nil {
		return DB{}, err
	}
	return lb.pool(r)
}

// UpToDateReplica returns a pool for a read that must see the writes recorded for key
// (RecordLSN) and, when ctx carries a causal token (Middleware, WithToken), the writes up to
// it: a replica that has replayed them, else the primary; the DB's Route says which and why.
//
// ctx's deadline bounds dlb's store read and live checks, and ctx.Err() is returned as is
// when ctx is done. Without a deadline, Config.PickBudget (default 100 ms) bounds them: when
// it runs out first the read goes to the primary (Route.Reason says why: dlb.ReasonStoreError
// when dlb gave up the store's read, dlb.ReasonNotCaughtUp otherwise), not an error.
//
// Errors: ctx.Err(), dlb.ErrInvalidKey, dlb.ErrInvalidLSN (a token given with WithToken that
// is no LSN), dlb.ErrNoCaughtUpReplica (under the "error" policy), dlb.ErrClosed, what
// Config.Open returns.
func (lb *DBLoadBalancer) UpToDateReplica(ctx context.Context, key string) (DB, error) {
	token := TokenFrom(ctx)
	if key == "" && token == "" {
		return lb.Replica(ctx) // round-robin: never blocks, no budget needed
	}
	pickCtx := ctx
	if _, ok := ctx.Deadline(); !ok && lb.cfg.PickBudget >= 0 {
		budget := lb.cfg.PickBudget
		if budget == 0 {
			budget = DefaultPickBudget
		}
		var cancel context.CancelFunc
		pickCtx, cancel = context.WithTimeout(ctx, budget)
		defer cancel()
	}
	// One pick for both: a replica that has replayed the newer of the key's record and the
	// token (two picks could each be met by a different replica).
	r, err := lb.b.PickReplicaKeyMinLSN(pickCtx, key, token, dlb.PickOptions{})
	if err != nil {
		if pickCtx != ctx && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// The budget ran out, not the caller's time: no replica was shown caught up.
			return DB{DB: lb.primary, Route: lb.primaryRoute(dlb.ReasonNotCaughtUp)}, nil
		}
		return DB{}, err
	}
	return lb.pool(r)
}

// primaryRoute is the primary's route with reason.
func (lb *DBLoadBalancer) primaryRoute(reason dlb.Reason) dlb.Route {
	return dlb.Route{DSN: lb.primaryDSN, Role: dlb.RolePrimary, Reason: reason,
		HostID: lb.primaryID, Addr: lb.primaryAddr}
}

// pool returns the pool of a route's host, opening it on first use.
func (lb *DBLoadBalancer) pool(r dlb.Route) (DB, error) {
	if r.Role == dlb.RolePrimary {
		return DB{DB: lb.primary, Route: r}, nil
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if db := lb.pools[r.HostID]; db != nil {
		return DB{DB: db, Route: r}, nil
	}
	if lb.gone[r.HostID] {
		// Drained since the pick.
		return DB{DB: lb.primary, Route: lb.primaryRoute(dlb.ReasonNoHealthyReplica)}, nil
	}
	db, err := lb.open(r.DSN, r.Addr)
	if err != nil {
		return DB{}, err
	}
	lb.pools[r.HostID] = db
	lb.addrs[db] = r.Addr
	return DB{DB: db, Route: r}, nil
}

// Replicas returns the pools of the replicas dlb has routed reads to and not drained, in no
// particular order (a replica's pool is opened the first time a read goes to it).
func (lb *DBLoadBalancer) Replicas() []*sql.DB {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	dbs := make([]*sql.DB, 0, len(lb.pools))
	for _, db := range lb.pools {
		dbs = append(dbs, db)
	}
	return dbs
}

// TypeOf returns HostTypePrimary for the primary's pool, HostTypeReplica for a replica's
// (open now) and HostTypeUnknown for any other *sql.DB.
func (lb *DBLoadBalancer) TypeOf(db *sql.DB) string {
	if db != nil && db == lb.primary {
		return HostTypePrimary
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if _, ok := lb.addrs[db]; ok && db != nil {
		return HostTypeReplica
	}
	return HostTypeUnknown
}

// RecordLSN records the primary's current WAL position for key (call it after a write for
// key commits) and returns it: a causal token. On a *dlb.StoreError the write's LSN is still
// returned with the error (carry it as a token).
//
// Errors: those of dlb.Balancer.RecordLSN.
func (lb *DBLoadBalancer) RecordLSN(ctx context.Context, key string) (string, error) {
	lsn, err := lb.b.RecordLSN(ctx, key)
	var se *dlb.StoreError
	if errors.As(err, &se) {
		return se.LSN, err
	}
	return lsn, err
}

// Pools returns how many replica pools are open now, and how many pools (the primary's
// included) were opened and closed so far.
func (lb *DBLoadBalancer) Pools() (open, opened, closed int) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return len(lb.pools), lb.opened, lb.closed
}

// PoolStats is one pool's database/sql statistics and its host.
type PoolStats struct {
	// Role is HostTypePrimary or HostTypeReplica.
	Role string
	// HostID and Addr are the host's, as in dlb.Route.
	HostID uint64
	Addr   string
	Stats  sql.DBStats
}

// PoolStats returns the statistics of every pool open now: the primary's, then the
// replicas' (a replica's pool opens when a read first goes to it and closes once dlb drains
// the host, so its entry comes and goes with the host's events). dlbprom.NewPoolCollector
// exports them. Nil after Close.
func (lb *DBLoadBalancer) PoolStats() []PoolStats {
	lb.mu.Lock()
	if lb.shut {
		lb.mu.Unlock()
		return nil
	}
	stats := make([]PoolStats, 0, 1+len(lb.pools))
	stats = append(stats, PoolStats{Role: HostTypePrimary, HostID: lb.primaryID,
		Addr: lb.primaryAddr})
	dbs := []*sql.DB{lb.primary}
	for id, db := range lb.pools {
		stats = append(stats, PoolStats{Role: HostTypeReplica, HostID: id, Addr: lb.addrs[db]})
		dbs = append(dbs, db)
	}
	lb.mu.Unlock()
	for i, db := range dbs {
		stats[i].Stats = db.Stats() // outside the lock: it takes the pool's own
	}
	return stats
}

// Close stops following host events and closes every pool (waiting for queries in
// flight). The balancer stays open.
func (lb *DBLoadBalancer) Close() error {
	lb.unwatch()
	lb.mu.Lock()
	lb.shut = true
	pools := lb.pools
	lb.pools = map[uint64]*sql.DB{}
	lb.mu.Unlock()
	var first error
	for _, db := range pools {
		if err := db.Close(); err != nil && first == nil {
			first = err
		}
	}
	if err := lb.primary.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// ReportError tells dlb about err, an error a query on db returned, when it is a
// connectivity error (IsConnectivityError): the host leaves the rotation until a probe
// succeeds, and dlb re-checks at once. Returns whether it was reported. Pools opened with
// Config.Driver report their connectivity errors by themselves (connecting, a statement, a
// row, a commit): ReportError is for pools from Config.Open.
func (lb *DBLoadBalancer) ReportError(db *sql.DB, err error) bool {
	if !IsConnectivityError(err) {
		return false
	}
	lb.mu.Lock()
	addr, ok := lb.addrs[db]
	lb.mu.Unlock()
	return ok && lb.b.ReportFailure(addr) == nil
}

// IsConnectivityError says whether err means the host, not the query, failed: a network
// error, driver.ErrBadConn, an unexpected EOF, or a server error whose SQLSTATE (read from
// any driver's error with a SQLState() string method, as lib/pq's and pgx's have) is of
// class 08 (connection exception), 53 (insufficient resources), 57P01-57P03 (shutdown,
// cannot connect now), 58 (system error) or XX (internal error).
func IsConnectivityError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var state interface{ SQLState() string }
	if errors.As(err, &state) {
		return connectivityState(state.SQLState())
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

func connectivityState(s string) bool {
	switch {
	case len(s) != 5:
		return false
	case strings.HasPrefix(s, "08"), strings.HasPrefix(s, "53"), strings.HasPrefix(s, "58"),
		strings.HasPrefix(s, "XX"):
		return true
	case s == "57P01", s == "57P02", s == "57P03":
		return true
	}
	return false
}

// HealthHandler serves dlb's status report as JSON: 200 while the balancer is open, 503
// once it is closed. It contains no password.
func HealthHandler(b *dlb.Balancer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		text, err := b.StatusJSON()
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"balancer closed"}`)
			return
		}
		_, _ = io.WriteString(w, text)
	})
}

// Balancer returns the balancer the pools follow.
func (lb *DBLoadBalancer) Balancer() *dlb.Balancer { return lb.b }

// Addr returns the "host:port" of the host db is a pool of ("" for a pool this
// DBLoadBalancer does not hold).
func (lb *DBLoadBalancer) Addr(db *sql.DB) string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.addrs[db]
}
