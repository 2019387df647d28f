package dlb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"
)

func openPQ(dsn string) (*sql.DB, error) { return sql.Open("postgres", dsn) }

func newLB(t *testing.T, b *dlb.Balancer) *dlbsql.DBLoadBalancer {
	t.Helper()
	lb, err := dlbsql.New(context.Background(), b, dlbsql.Config{Open: openPQ, MaxOpenConns: 4})
	if err != nil {
		t.Fatalf("dlbsql.New: %v", err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb
}

// The middleware records the write's LSN and hands it to the client, which carries it to an
// instance whose LSN store never saw the key: that instance reads from a replica that has
// replayed the write (never the paused one), so the row is there.
func TestDlbsqlMiddlewareReadYourWrites(t *testing.T) {
	c := needCluster(t)
	writer := newLB(t, c.open(t, "", nil))
	reader := newLB(t, c.open(t, "", nil)) // another instance: its memory store is empty
	table := "dlbsql_tags"
	if _, err := writer.Primary().Exec("CREATE TABLE IF NOT EXISTS " + table +
		" (repo text, tag text)"); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, writer.Balancer(), 2)
	waitHealthy(t, reader.Balancer(), 2)
	t.Cleanup(func() {
		if out, err := testenv("resume-replica", "2"); err != nil {
			t.Errorf("resume-replica 2: %v\n%s", err, out)
		}
	})
	if out, err := testenv("pause-replica", "2"); err != nil {
		t.Fatalf("pause-replica 2: %v\n%s", err, out)
	}
	primaryDSN, err := writer.Balancer().PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	paused := newDBs(t).get(strings.Replace(primaryDSN, "port="+dsnPort(primaryDSN),
		"port="+c.port(2), 1))
	until(t, "replica 2's replay is paused", func() bool {
		var state string
		if err := paused.QueryRow(`SELECT pg_get_wal_replay_pause_state()`).Scan(&state); err != nil {
			t.Fatal(err)
		}
		return state == "paused"
	})
	key := func(r *http.Request) string { return "repo:" + r.URL.Query().Get("repo") }
	repo := fmt.Sprintf("r%d", time.Now().UnixNano())
	write := writer.Middleware(dlbsql.MiddlewareConfig{Key: key, Secret: tokenSecret})(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			_, err := writer.Primary().ExecContext(r.Context(),
				"INSERT INTO "+table+" VALUES ($1, $2)", r.URL.Query().Get("repo"), "v1")
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.WriteHeader(http.StatusCreated)
		}))
	var usedAddr string
	read := reader.Middleware(dlbsql.MiddlewareConfig{Key: key, Secret: tokenSecret})(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			db, err := reader.UpToDateReplica(r.Context(), "")
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			usedAddr = reader.Addr(db.DB)
			var n int
			err = db.QueryRowContext(r.Context(), "SELECT count(*) FROM "+table+" WHERE repo = $1",
				r.URL.Query().Get("repo")).Scan(&n)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
		}))

	rec := httptest.NewRecorder()
	write.ServeHTTP(rec, httptest.NewRequest("POST", "/tags?repo="+repo, nil))
	token := rec.Header().Get(dlbsql.DefaultTokenHeader)
	if rec.Code != http.StatusCreated || token == "" {
		t.Fatalf("write: status %d, token %q, body %s", rec.Code, token, rec.Body)
	}
	var onPaused int
	if err := paused.QueryRow("SELECT count(*) FROM "+table+" WHERE repo = $1", repo).Scan(&onPaused); err != nil || onPaused != 0 {
		t.Fatalf("the paused replica has the row (%d, %v): the test proves nothing", onPaused, err)
	}
	for i := 0; i < 20; i++ {
		req := httptest.NewRequest("GET", "/tags?repo="+repo, nil)
		req.Header.Set(dlbsql.DefaultTokenHeader, token)
		rec := httptest.NewRecorder()
		read.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.String() != "1" {
			t.Fatalf("read %d via %s: status %d, body %q (a stale read)", i, usedAddr, rec.Code,
				rec.Body)
		}
		if usedAddr == c.replicas[1] {
			t.Fatalf("read %d went to the paused replica %s", i, usedAddr)
		}
	}
	// Without the token, that instance knows nothing of the write: round-robin reaches the
	// paused replica (this is what the token prevents).
	sawPaused := false
	for i := 0; i < 20 && !sawPaused; i++ {
		db, err := reader.UpToDateReplica(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		sawPaused = reader.Addr(db.DB) == c.replicas[1]
	}
	if !sawPaused {
		t.Fatalf("without a token no read reached the paused replica %s", c.replicas[1])
	}
}

var tokenSecret = []byte("the test cluster's token secret")

// A causal token the middleware did not sign is ignored, never an error: an unsigned
// FFFFFFFF/FFFFFFFF (which would send every read to the primary), garbage, a forged MAC, a
// token signed with another cluster's secret. The reads go on as reads without a token
// (round-robin over the replicas), and the rejections are counted and reported.
func TestDlbsqlMiddlewareIgnoresBadTokens(t *testing.T) {
	c := needCluster(t)
	lb := newLB(t, c.open(t, "", nil))
	waitHealthy(t, lb.Balancer(), 2)
	primary := lb.Addr(lb.Primary())
	var reported []error
	var usedAddr string
	read := lb.Middleware(dlbsql.MiddlewareConfig{Key: func(*http.Request) string { return "" },
		Secret:        tokenSecret,
		RejectedToken: func(_ *http.Request, err error) { reported = append(reported, err) },
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db, err := lb.UpToDateReplica(r.Context(), "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		usedAddr = lb.Addr(db.DB)
		if err := db.QueryRowContext(r.Context(), "SELECT 1").Scan(new(int)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	tokens := []string{
		"FFFFFFFF/FFFFFFFF",
		"not a token",
		"FFFFFFFF/FFFFFFFF--" + strings.Repeat("0", 64),
		dlbsql.SignToken([]byte("another cluster's secret"), "FFFFFFFF/FFFFFFFF"),
	}
	for _, token := range tokens {
		replicaReads := 0
		for i := 0; i < 10; i++ {
			req := httptest.NewRequest("GET", "/tags", nil)
			req.Header.Set(dlbsql.DefaultTokenHeader, token)
			rec := httptest.NewRecorder()
			read.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("token %q: status %d, %s", token, rec.Code, rec.Body)
			}
			if usedAddr != primary {
				replicaReads++
			}
		}
		if replicaReads == 0 {
			t.Errorf("token %q: every read went to the primary", token)
		}
	}
	if got := lb.RejectedTokens(); got.Malformed != 20 || got.Forged != 20 {
		t.Errorf("RejectedTokens = %+v, want 20 malformed and 20 forged", got)
	}
	if len(reported) != 40 || !errors.Is(reported[0], dlbsql.ErrMalformedToken) ||
		!errors.Is(reported[39], dlbsql.ErrForgedToken) {
		t.Errorf("%d rejections reported (%v ... )", len(reported), reported[:1])
	}
}

// A replica's pool is opened when dlb first routes to it and closed once it leaves the DNS
// records and is drained.
func TestDlbsqlPoolsFollowHostEvents(t *testing.T) {
	c := needCluster(t)
	dns := startDNS(t, c.port(1), c.port(2))
	b := c.open(t, "", map[string]any{"replicas": map[string]any{"dns": map[string]any{
		"record": "replica.pg.test", "nameserver": "127.0.0.1", "port": dns.port,
		"record_type": "SRV", "refresh_interval_ms": 200}, "drain_timeout_ms": 5000}})
	lb := newLB(t, b)
	waitHealthy(t, b, 2)
	until(t, "both replica pools are open", func() bool {
		if _, err := lb.Replica(context.Background()); err != nil {
			t.Fatal(err)
		}
		open, _, _ := lb.Pools()
		return open == 2
	})
	if n := len(lb.PoolStats()); n != 3 {
		t.Fatalf("PoolStats has %d pools, want the primary's and two replicas'", n)
	}
	dns.set(c.port(2))
	until(t, "replica 1's pool is closed", func() bool {
		open, _, closed := lb.Pools()
		return open == 1 && closed == 1
	})
	for _, p := range lb.PoolStats() {
		if p.Addr == c.replicas[0] {
			t.Fatalf("PoolStats still lists the drained replica %s", p.Addr)
		}
	}
	for i := 0; i < 10; i++ {
		db, err := lb.Replica(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if addr := lb.Addr(db.DB); addr != c.replicas[1] {
			t.Fatalf("a read went to %s after replica 1 left", addr)
		}
	}
	if _, opened, _ := lb.Pools(); opened != 3 {
		t.Fatalf("%d pools opened; expected 3 (the primary and two replicas)", opened)
	}
}

// A context's deadline bounds a pick: an expired one is returned as is; a stopped Redis
// sends a sticky read to the primary within the deadline; a paused replica cannot hold a pick
// past it.
func TestContextDeadlines(t *testing.T) {
	c := needCluster(t)
	redisURL := os.Getenv("DLB_TEST_REDIS")
	if redisURL == "" {
		t.Skip("DLB_TEST_REDIS not set")
	}
	b := c.open(t, "", map[string]any{
		"lsn_store":              map[string]any{"redis": map[string]any{"url": redisURL, "op_timeout_ms": 30000}},
		"sticky_check_budget_ms": 30000})
	waitHealthy(t, b, 2)

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := b.PickReplica(expired, "k"); err != expired.Err() {
		t.Fatalf("expired context: %v, want %v", err, expired.Err())
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := b.RecordLSN(cancelled, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}

	// A paused replica and a huge causal token: no replica qualifies; the 30 s live-check
	// budget is cut to the context's.
	t.Cleanup(func() { _, _ = testenv("resume-replica", "2") })
	if out, err := testenv("pause-replica", "2"); err != nil {
		t.Fatalf("pause-replica 2: %v\n%s", err, out)
	}
	ctx, cancel3 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel3()
	start := time.Now()
	r, err := b.PickReplicaMinLSN(ctx, "FFFFFFFF/0")
	if !(err == nil && r.Role == dlb.RolePrimary) && err != ctx.Err() {
		t.Fatalf("PickReplicaMinLSN: %v %v", r, err)
	}
	// Far below the configured budgets (a hang detector, not a speed measurement).
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the pick took %v", d)
	}

	// Redis stopped: the sticky read goes to the primary (store error) or ends with ctx.
	t.Cleanup(func() { _, _ = testenv("start-redis") })
	if out, err := testenv("stop-redis"); err != nil {
		t.Fatalf("stop-redis: %v\n%s", err, out)
	}
	ctx4, cancel4 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel4()
	r, err = b.PickReplica(ctx4, "k")
	if !(err == nil && r.Role == dlb.RolePrimary && r.Reason == dlb.ReasonStoreError) &&
		err != ctx4.Err() {
		t.Fatalf("PickReplica with Redis stopped: %v %v", r, err)
	}
}

func TestIsConnectivityError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("syntax error"), false},
		{context.DeadlineExceeded, false},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{fmt.Errorf("query: %w", sqlState("08006")), true},
		{sqlState("57P01"), true},
		{sqlState("57014"), false}, // query_canceled
		{sqlState("53300"), true},
		{sqlState("XX000"), true},
		{sqlState("42P01"), false},
	} {
		if got := dlbsql.IsConnectivityError(c.err); got != c.want {
			t.Errorf("IsConnectivityError(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

type sqlState string

func (s sqlState) Error() string    { return "SQLSTATE " + string(s) }
func (s sqlState) SQLState() string { return string(s) }

func TestHealthHandler(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	rec := httptest.NewRecorder()
	dlbsql.HealthHandler(b).ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"replicas"`) ||
		strings.Contains(rec.Body.String(), secret) {
		t.Fatalf("health: %d %s", rec.Code, rec.Body)
	}
	b.Close()
	rec = httptest.NewRecorder()
	dlbsql.HealthHandler(b).ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("health after Close: %d", rec.Code)
	}
}

// until polls cond (bounded by waitDeadline).
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(waitDeadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dnsServer is dnsmasq on a loopback port serving SRV records for replica.pg.test.
type dnsServer struct {
	t    *testing.T
	dir  string
	port int
	cmd  *exec.Cmd
}

func startDNS(t *testing.T, ports ...string) *dnsServer {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed (scripts/bootstrap.sh installs it)")
	}
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	d := &dnsServer{t: t, dir: t.TempDir(), port: port}
	t.Cleanup(d.stop)
	d.set(ports...)
	return d
}

// set restarts dnsmasq serving SRV records for the given ports of 127.0.0.1.
func (d *dnsServer) set(ports ...string) {
	d.t.Helper()
	d.stop()
	conf := "no-resolv\nno-hosts\nno-poll\nlocal-ttl=1\nauth-ttl=1\nhost-record=pg.test,127.0.0.1\n"
	for _, p := range ports {
		conf += "srv-host=replica.pg.test,pg.test," + p + "\n"
	}
	path := filepath.Join(d.dir, "dnsmasq.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = exec.Command("/usr/sbin/dnsmasq", "--keep-in-foreground", "--bind-interfaces",
		"--listen-address=127.0.0.1", "--port="+strconv.Itoa(d.port), "--conf-file="+path,
		"--user=root", "--pid-file="+filepath.Join(d.dir, "pid"))
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	// Ready once it answers (a TCP connect to its port: dnsmasq also serves TCP).
	until(d.t, "dnsmasq listens", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (d *dnsServer) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.cmd = nil
	}
}
