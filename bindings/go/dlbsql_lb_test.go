package dlb_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/lib/pq"
)

// A replica killed in the middle of a query leaves the rotation at once, with no ReportError
// call in the application: the pool Config.Driver opened saw the connectivity error while
// the rows were read and reported the host. The monitor checks only once a minute here, so
// nothing else can take the replica out within the test's bound.
func TestDlbsqlReportsConnectivityErrors(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", map[string]any{"replica_check_interval_ms": 60000})
	lb, err := dlbsql.New(context.Background(), b, dlbsql.Config{Driver: &pq.Driver{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	waitHealthy(t, b, 2)
	db, err := lb.Replica(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := lb.Addr(db.DB)
	n := 0
	for i, r := range c.replicas {
		if r == addr {
			n = i + 1
		}
	}
	if n == 0 {
		t.Fatalf("Replica gave %q, not a replica", addr)
	}
	t.Cleanup(func() {
		if out, err := testenv("start-replica", strconv.Itoa(n)); err != nil {
			t.Errorf("start-replica %d: %v\n%s", n, err, out)
		}
	})
	done := make(chan error, 1)
	go func() {
		rows, err := db.QueryContext(context.Background(), "SELECT pg_sleep(60), 'dlb-kill-me'")
		if err != nil {
			done <- err
			return
		}
		for rows.Next() {
		}
		done <- rows.Err()
		rows.Close()
	}()
	primaryDSN, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	replica := newDBs(t).get(strings.Replace(primaryDSN, "port="+dsnPort(primaryDSN),
		"port="+c.port(n), 1))
	until(t, "the query runs on the replica", func() bool {
		var running int
		err := replica.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE query LIKE '%dlb-kill-me%' AND pid <> pg_backend_pid()`).Scan(&running)
		return err == nil && running == 1
	})
	if out, err := testenv("stop-replica", strconv.Itoa(n)); err != nil {
		t.Fatalf("stop-replica %d: %v\n%s", n, err, out)
	}
	select {
	case err := <-done:
		if !dlbsql.IsConnectivityError(err) {
			t.Fatalf("the query ended with %v, not a connectivity error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the query did not end with the replica stopped")
	}
	end := time.Now().Add(5 * time.Second)
	for {
		st, err := b.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.Replicas[n-1].State == "quarantined" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("replica %d still %s 5 s after its query failed (nothing reported it)",
				n, st.Replicas[n-1].State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		db, err := lb.Replica(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := lb.Addr(db.DB); got == addr {
			t.Fatalf("a read went to the stopped replica %s", addr)
		}
	}
}

// stallProxy forwards TCP connections to target; while stalled it holds every byte back (a
// server that stops answering), and lets them through once resumed.
type stallProxy struct {
	addr    string
	stalled atomic.Bool
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: l.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for p.stalled.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				dst.Close()
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	t.Cleanup(func() {
		p.stalled.Store(false)
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return p
}

// UpToDateReplica without a deadline is bounded by the default pick budget (100 ms, the
// registry's): an LSN store that stops answering (8 s operation timeout) sends the read to
// the primary in about that time, not after 8 s. A caller's deadline is kept.
func TestDlbsqlPickBudgetDefault(t *testing.T) {
	c := needCluster(t)
	redisURL := os.Getenv("DLB_TEST_REDIS")
	if redisURL == "" {
		t.Skip("DLB_TEST_REDIS not set")
	}
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newStallProxy(t, u.Host)
	u.Host = proxy.addr
	b := c.open(t, "", map[string]any{
		"lsn_store": map[string]any{"redis": map[string]any{
			"url": u.String(), "op_timeout_ms": 8000}},
		"sticky_check_budget_ms": 8000})
	lb, err := dlbsql.New(context.Background(), b, dlbsql.Config{Driver: &pq.Driver{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	waitHealthy(t, b, 2)
	proxy.stalled.Store(true)
	defer proxy.stalled.Store(false)
	start := time.Now()
	db, err := lb.UpToDateReplica(context.Background(), "repo:budget")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 3*time.Second {
		t.Fatalf("UpToDateReplica took %v with no deadline: no pick budget", took)
	}
	if lb.TypeOf(db.DB) != dlbsql.HostTypePrimary || db.Route.Role != dlb.RolePrimary {
		t.Fatalf("UpToDateReplica with the store hanging: %v (%s)", db.Route, lb.TypeOf(db.DB))
	}
	t.Logf("no deadline: %v in %v", db.Route, took)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := lb.UpToDateReplica(ctx, "repo:budget"); err != context.DeadlineExceeded {
		t.Fatalf("the caller's deadline: %v, want its error", err)
	}
}

// The handle UpToDateReplica returns carries its route (role, reason, host), and the pools
// are told apart by TypeOf and listed by Replicas.
func TestDlbsqlRouteWithHandle(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	var lb dlbsql.LoadBalancer = newLB(t, b) // the interface a mock implements
	waitHealthy(t, b, 2)
	db, err := lb.UpToDateReplica(context.Background(), "repo:route-with-handle")
	if err != nil {
		t.Fatal(err)
	}
	if db.Route.Role != dlb.RoleReplica || db.Route.Reason != dlb.ReasonNoLSNRecorded ||
		db.Route.Addr == "" || db.Route.HostID == 0 {
		t.Fatalf("route %v (host %d %q)", db.Route, db.Route.HostID, db.Route.Addr)
	}
	if got := lb.(*dlbsql.DBLoadBalancer).Addr(db.DB); got != db.Route.Addr {
		t.Fatalf("the pool is %s's, the route says %s", got, db.Route.Addr)
	}
	if lb.TypeOf(db.DB) != dlbsql.HostTypeReplica || lb.TypeOf(lb.Primary()) != dlbsql.HostTypePrimary ||
		lb.TypeOf(&sql.DB{}) != dlbsql.HostTypeUnknown {
		t.Fatalf("TypeOf: %s %s %s", lb.TypeOf(db.DB), lb.TypeOf(lb.Primary()),
			lb.TypeOf(&sql.DB{}))
	}
	found := false
	for _, r := range lb.Replicas() {
		found = found || r == db.DB
	}
	if !found {
		t.Fatalf("Replicas() lacks the pool handed out")
	}
	if _, err := lb.RecordLSN(context.Background(), "repo:route-with-handle"); err != nil {
		t.Fatal(err)
	}
	db, err = lb.UpToDateReplica(context.Background(), "repo:route-with-handle")
	if err != nil {
		t.Fatal(err)
	}
	switch db.Route.Reason {
	case dlb.ReasonCaughtUpCached, dlb.ReasonCaughtUpLive, dlb.ReasonNotCaughtUp:
	default:
		t.Fatalf("after a write: %v", db.Route)
	}
}

// A read with both a key and a causal token takes one pick that satisfies both. The key's
// record is as old as the paused replica 2's replay position (replica 2 proves it); the token
// is a later write recorded by another instance (replica 2 does not have it). Every read must
// go to replica 1 (once it replayed the token) or to the primary: never to replica 2. Two picks,
// the token's then the key's, sent some reads to replica 2: the key's pick ignored the token.
// The calls run on one OS thread with a round-robin pick between every other read, so dlb's
// round-robin cursor (one per thread) starts both ways and two picks would meet replica 2.
func TestDlbsqlKeyAndTokenOnePick(t *testing.T) {
	c, b, d, primary, pausedLSN := pausedCluster(t)
	lb := newLB(t, b)
	pausedPort, caughtUpPort := c.port(2), c.port(1)
	ctx := context.Background()
	const key = "repo:key-and-token"
	if err := b.RecordLSNValue(ctx, key, pausedLSN); err != nil {
		t.Fatal(err)
	}
	// The token: a write past replica 2's position, recorded by another instance.
	tag := fmt.Sprintf("key-and-token-%d", time.Now().UnixNano())
	if _, err := d.get(primary).Exec(`INSERT INTO dlb_go_tests (tag) VALUES ($1)`, tag); err != nil {
		t.Fatal(err)
	}
	token, err := c.open(t, "", nil).RecordLSN(ctx, "repo:elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if parseLSN(t, token) <= parseLSN(t, pausedLSN) {
		t.Fatalf("token %s not past replica 2's position %s", token, pausedLSN)
	}
	// Replica 1 has replayed the token (the token alone picks it), and replica 2 is in the
	// rotation with the key's position (the key alone may pick it): else this proves nothing.
	for deadline := time.Now().Add(waitDeadline); ; time.Sleep(10 * time.Millisecond) {
		r, err := b.PickReplicaMinLSN(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		if r.Role == dlb.RoleReplica {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica 1 never replayed the token: %v", r)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	keyAlone := map[string]bool{}
	for i := 0; i < 8; i++ {
		r, err := b.PickReplica(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		keyAlone[dsnPort(r.DSN)] = true
	}
	if !keyAlone[pausedPort] {
		t.Fatalf("the key alone never picked replica 2 (%v): the test proves nothing", keyAlone)
	}

	tokenCtx := dlbsql.WithToken(ctx, token)
	onReplica := 0
	const reads = 40
	for i := 0; i < reads; i++ {
		if i%2 == 1 {
			if _, err := lb.Replica(ctx); err != nil {
				t.Fatal(err)
			}
		}
		db, err := lb.UpToDateReplica(tokenCtx, key)
		if err != nil {
			t.Fatal(err)
		}
		switch r := db.Route; {
		case r.Role == dlb.RoleReplica && dsnPort(r.DSN) == caughtUpPort:
			onReplica++
		case r.Role == dlb.RolePrimary && r.Reason == dlb.ReasonNotCaughtUp:
		default:
			t.Fatalf("read %d: %v on port %s; replica 2 has not replayed the token", i, r,
				dsnPort(r.DSN))
		}
		if !visible(t, d, db.Route.DSN, tag) {
			t.Fatalf("read %d: the token's row is not visible on %v", i, db.Route)
		}
	}
	t.Logf("%d/%d reads on replica 1, the rest on the primary", onReplica, reads)
	if onReplica == 0 {
		t.Fatal("no read on replica 1, which replayed the token")
	}
}
