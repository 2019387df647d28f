package dlb_test

// Tests against the real replication cluster (scripts/testenv.sh).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

func TestRoundRobin(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	const picks = 2000
	count := map[string]int{}
	for i := 0; i < picks; i++ {
		r, err := b.PickReplica(context.Background(), dlb.NoKey)
		if err != nil {
			t.Fatalf("PickReplica: %v", err)
		}
		if r.Role != dlb.RoleReplica || r.Reason != dlb.ReasonRoundRobin {
			t.Fatalf("pick %d: %v, want replica (round_robin)", i, r)
		}
		count[r.DSN]++
	}
	ports := map[string]bool{}
	for dsn, n := range count {
		port := dsnPort(dsn)
		t.Logf("%d picks: replica on port %s", n, port)
		if port != c.port(1) && port != c.port(2) {
			t.Errorf("a pick outside the configured replicas (port %q)", port)
		}
		ports[port] = true
		if dsn == primary {
			t.Error("a round-robin pick returned the primary's DSN")
		}
		if !strings.Contains(dsn, "password="+secret) {
			t.Error("the DSN handed out lacks the password")
		}
		// Strict alternation while both stay healthy; allow a health change mid-run.
		if n < picks/4 {
			t.Errorf("port %s: %d of %d picks", port, n, picks)
		}
	}
	if len(count) != 2 || len(ports) != 2 {
		t.Errorf("picked %d DSNs, want both replicas", len(count))
	}

	// A key with no recorded LSN: round-robin too, with its own reason.
	r, err := b.PickReplica(context.Background(), "go:no-lsn-for-this-key")
	if err != nil || r.Role != dlb.RoleReplica || r.Reason != dlb.ReasonNoLSNRecorded {
		t.Errorf("PickReplica(key without LSN) = %v, %v", r, err)
	}
}

// createTable creates the tests' table on the primary.
func createTable(t *testing.T, d *dbs, primary string) {
	t.Helper()
	if _, err := d.get(primary).Exec(`CREATE TABLE IF NOT EXISTS dlb_go_tests
		(id bigserial PRIMARY KEY, tag text NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatalf("create table: %v", err)
	}
}

// pausedCluster opens a balancer on the cluster with both replicas healthy, creates the
// tests' table and pauses replica 2's replay (pauseReplica2): the cluster, the balancer, a
// pool cache, the primary's DSN and the position replica 2 replayed.
func pausedCluster(t *testing.T) (c *testCluster, b *dlb.Balancer, d *dbs, primary, pausedLSN string) {
	t.Helper()
	c = needCluster(t)
	b = c.open(t, "", nil)
	waitHealthy(t, b, 2)
	d = newDBs(t)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	createTable(t, d, primary)
	_, pausedLSN = c.pauseReplica2(t, d, primary)
	return c, b, d, primary, pausedLSN
}

// visible reports whether the row tagged tag can be read on dsn.
func visible(t *testing.T, d *dbs, dsn, tag string) bool {
	t.Helper()
	var n int
	if err := d.get(dsn).QueryRow(`SELECT count(*) FROM dlb_go_tests WHERE tag = $1`, tag).Scan(&n); err != nil {
		t.Fatalf("read on port %s: %v", dsnPort(dsn), err)
	}
	return n == 1
}

// Write on the primary, RecordLSN, PickReplica: the row is always visible where the pick
// points.
func TestReadYourWrites(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	d := newDBs(t)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	createTable(t, d, primary)
	reasons := map[string]int{}
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("go:ryw:%d", i%7)
		tag := fmt.Sprintf("ryw-%d-%d", time.Now().UnixNano(), i)
		if _, err := d.get(primary).Exec(`INSERT INTO dlb_go_tests (tag) VALUES ($1)`, tag); err != nil {
			t.Fatalf("insert: %v", err)
		}
		lsn, err := b.RecordLSN(context.Background(), key)
		if err != nil {
			t.Fatalf("RecordLSN: %v", err)
		}
		parseLSN(t, lsn)
		r, err := b.PickReplica(context.Background(), key)
		if err != nil {
			t.Fatalf("PickReplica: %v", err)
		}
		switch {
		case r.Role == dlb.RoleReplica &&
			(r.Reason == dlb.ReasonCaughtUpCached || r.Reason == dlb.ReasonCaughtUpLive):
		case r.Role == dlb.RolePrimary && r.Reason == dlb.ReasonNotCaughtUp:
		default:
			t.Fatalf("sticky pick: unexpected route %v", r)
		}
		reasons[r.String()]++
		if !visible(t, d, r.DSN, tag) {
			t.Fatalf("row %s not visible on %v (port %s) after RecordLSN %s", tag, r, dsnPort(r.DSN), lsn)
		}
	}
	t.Logf("routes: %v", reasons)
}

// With replica 2's WAL replay paused after a write, sticky picks for the write's key never
// return replica 2 (which stays healthy and in the round-robin rotation).
func TestStickyPausedReplica(t *testing.T) {
	c, b, d, primary, pausedLSN := pausedCluster(t)
	pausedPort, caughtUpPort := c.port(2), c.port(1)

	// A write past what replica 2 has replayed.
	tag := fmt.Sprintf("paused-%d", time.Now().UnixNano())
	if _, err := d.get(primary).Exec(`INSERT INTO dlb_go_tests (tag) VALUES ($1)`, tag); err != nil {
		t.Fatal(err)
	}
	lsn, err := b.RecordLSN(context.Background(), "go:user:42")
	if err != nil {
		t.Fatal(err)
	}
	if parseLSN(t, lsn) <= parseLSN(t, pausedLSN) {
		t.Fatalf("recorded %s, not past replica 2's replay position %s", lsn, pausedLSN)
	}
	t.Logf("recorded %s; paused replica replayed %s", lsn, pausedLSN)

	// Replica 2 is still healthy and in the rotation: otherwise this test proves nothing.
	sawPaused := false
	for i := 0; i < 20; i++ {
		r, err := b.PickReplica(context.Background(), dlb.NoKey)
		if err != nil {
			t.Fatal(err)
		}
		sawPaused = sawPaused || dsnPort(r.DSN) == pausedPort
	}
	if !sawPaused {
		t.Fatal("the paused replica left the rotation; the test proves nothing")
	}

	// pick returns true when it went to the caught-up replica.
	pick := func(what string, pick func() (dlb.Route, error)) bool {
		r, err := pick()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		switch port := dsnPort(r.DSN); {
		case port == pausedPort:
			st, _ := b.StatusJSON()
			t.Fatalf("%s: %v on the paused replica; status: %s", what, r, st)
		case r.Role == dlb.RoleReplica:
			if port != caughtUpPort ||
				(r.Reason != dlb.ReasonCaughtUpCached && r.Reason != dlb.ReasonCaughtUpLive) {
				t.Fatalf("%s: %v on port %s", what, r, port)
			}
			if !visible(t, d, r.DSN, tag) {
				t.Fatalf("%s: row not visible on %v", what, r)
			}
			return true
		case r.Role != dlb.RolePrimary || r.Reason != dlb.ReasonNotCaughtUp:
			t.Fatalf("%s: unexpected route %v", what, r)
		}
		return false
	}
	check := func(what string, p func() (dlb.Route, error)) {
		deadline := time.Now().Add(waitDeadline)
		for !pick(what, p) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the streaming replica never caught up", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		onReplica := 0
		const picks = 300
		for i := 0; i < picks; i++ {
			if pick(what, p) {
				onReplica++
			}
		}
		t.Logf("%s: %d/%d picks on the caught-up replica, the rest on the primary", what, onReplica, picks)
		if onReplica == 0 {
			t.Errorf("%s: no pick on the caught-up replica", what)
		}
	}
	check("PickReplica(key)", func() (dlb.Route, error) { return b.PickReplica(context.Background(), "go:user:42") })
	// The causal token, recorded for another key or used directly.
	if err := b.RecordLSNValue(context.Background(), "go:user:43", lsn); err != nil {
		t.Fatal(err)
	}
	check("PickReplica(key with RecordLSNValue)", func() (dlb.Route, error) { return b.PickReplica(context.Background(), "go:user:43") })
	check("PickReplicaMinLSN", func() (dlb.Route, error) { return b.PickReplicaMinLSN(context.Background(), lsn) })
}

func TestNoCaughtUpReplica(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	// No replica has replayed an LSN from the far future: the primary...
	r, err := b.PickReplicaMinLSN(context.Background(), "FFFFFFFF/0")
	if err != nil || r.Role != dlb.RolePrimary || r.Reason != dlb.ReasonNotCaughtUp {
		t.Errorf("PickReplicaMinLSN(future) = %v, %v", r, err)
	}
	// ...or, under the "error" policy, a retryable error.
	strict := c.open(t, "", map[string]any{"no_caught_up_replica": "error", "sticky_check_budget_ms": 0})
	waitHealthy(t, strict, 2)
	_, err = strict.PickReplicaMinLSN(context.Background(), "FFFFFFFF/0")
	var e *dlb.Error
	if !errors.Is(err, dlb.ErrNoCaughtUpReplica) || !errors.As(err, &e) ||
		e.Op != "PickReplicaMinLSN" || !strings.Contains(e.Message, "FFFFFFFF/0") {
		t.Errorf("strict PickReplicaMinLSN(future): %v", err)
	}
	if !dlb.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
	if err := strict.RecordLSNValue(context.Background(), "go:future", "FFFFFFFF/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := strict.PickReplica(context.Background(), "go:future"); !errors.Is(err, dlb.ErrNoCaughtUpReplica) {
		t.Errorf("strict PickReplica(key ahead of every replica): %v", err)
	}
}

func TestForcePrimary(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ForcePrimary(context.Background(), "go:forced", time.Minute); err != nil {
		t.Fatal(err)
	}
	r, err := b.PickReplica(context.Background(), "go:forced")
	if err != nil || r.Role != dlb.RolePrimary || r.Reason != dlb.ReasonForcedPrimary || r.DSN != primary {
		t.Errorf("PickReplica(forced key) = %v, %v", r, err)
	}
}

func TestReportFailure(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	r, err := b.PickReplica(context.Background(), dlb.NoKey)
	if err != nil {
		t.Fatal(err)
	}
	// By the DSN exactly as handed out, and by host:port.
	if err := b.ReportFailure(r.DSN); err != nil {
		t.Errorf("ReportFailure(DSN): %v", err)
	}
	if err := b.ReportFailure(c.replicas[0]); err != nil {
		t.Errorf("ReportFailure(host:port): %v", err)
	}
	err = b.ReportFailure("host=127.0.0.1 port=1 user=postgres password=" + secret)
	if !errors.Is(err, dlb.ErrUnknownHost) || strings.Contains(err.Error(), secret) {
		t.Errorf("ReportFailure(unknown): %v", err)
	}
	// The hosts are healthy: the monitor's next probes re-admit them.
	waitHealthy(t, b, 2)
}

func TestConcurrentPicks(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := b.RecordLSN(context.Background(), "go:concurrent")
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, picks = 32, 300
	var mu sync.Mutex
	count := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			local := map[string]int{}
			for i := 0; i < picks; i++ {
				var r dlb.Route
				var err error
				switch (g + i) % 5 {
				case 0, 1:
					r, err = b.PickReplica(context.Background(), dlb.NoKey)
				case 2:
					r, err = b.PickReplica(context.Background(), "go:concurrent")
				case 3:
					r, err = b.PickReplicaMinLSN(context.Background(), lsn)
				case 4:
					if err = b.RecordLSNValue(context.Background(), fmt.Sprintf("go:concurrent:%d", g), lsn); err == nil {
						_, err = b.Status()
					}
					if err == nil {
						_, err = b.Metrics()
					}
				}
				if err != nil {
					errs <- err
					return
				}
				if r.DSN != "" {
					local[dsnPort(r.DSN)]++
				}
			}
			mu.Lock()
			for k, v := range local {
				count[k] += v
			}
			mu.Unlock()
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for port := range count {
		if port != c.port(1) && port != c.port(2) && port != dsnPort(primary) {
			t.Errorf("a pick on an unknown port %s", port)
		}
	}
	if count[c.port(1)] == 0 || count[c.port(2)] == 0 {
		t.Errorf("picks per port: %v; want both replicas", count)
	}
	t.Logf("picks per port: %v", count)
}

// Outputs longer than the binding's first buffer (256 bytes) and inputs at the key length
// limit.
func TestBufferGrowth(t *testing.T) {
	c := needCluster(t)
	app := "go_" + strings.Repeat("x", 600)
	b := c.open(t, " application_name="+app, nil)
	waitHealthy(t, b, 2)
	primary, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(primary, app) || !strings.Contains(primary, "password="+secret) {
		t.Errorf("PrimaryDSN (%d bytes) lacks the application name or the password", len(primary))
	}
	ports := map[string]bool{}
	for i := 0; i < 10; i++ {
		r, err := b.PickReplica(context.Background(), dlb.NoKey)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.DSN, app) {
			t.Fatalf("PickReplica DSN (%d bytes) lacks the application name", len(r.DSN))
		}
		ports[dsnPort(r.DSN)] = true
	}
	if len(ports) != 2 {
		t.Errorf("picked ports %v, want both replicas", ports)
	}
	st, err := b.StatusJSON()
	if err != nil || !strings.Contains(st, app) || len(st) < 3*len(app) {
		t.Errorf("StatusJSON (%d bytes): %v", len(st), err)
	}
	m, err := b.Metrics()
	if err != nil || !strings.Contains(m, "dlb_picks_total") || len(m) < 1024 {
		t.Errorf("Metrics (%d bytes): %v", len(m), err)
	}

	longKey := strings.Repeat("k", dlb.MaxKeyLength)
	lsn, err := b.RecordLSN(context.Background(), longKey)
	if err != nil {
		t.Fatalf("RecordLSN(%d-byte key): %v", len(longKey), err)
	}
	parseLSN(t, lsn)
	if err := b.RecordLSNValue(context.Background(), longKey, lsn); err != nil {
		t.Fatalf("RecordLSNValue(%d-byte key): %v", len(longKey), err)
	}
	deadline := time.Now().Add(waitDeadline)
	for {
		r, err := b.PickReplica(context.Background(), longKey)
		if err != nil {
			t.Fatalf("PickReplica(%d-byte key): %v", len(longKey), err)
		}
		if !strings.Contains(r.DSN, app) {
			t.Fatalf("PickReplica(long key) DSN (%d bytes) lacks the application name", len(r.DSN))
		}
		if r.Role == dlb.RoleReplica {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PickReplica(long key) never reached a replica: %v", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The password is in the DSNs handed out and nowhere else.
func TestSecrets(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	primary, err := b.PrimaryDSN()
	if err != nil || !strings.Contains(primary, "password="+secret) {
		t.Errorf("PrimaryDSN lacks the password (%v)", err)
	}
	r, err := b.PickReplica(context.Background(), dlb.NoKey)
	if err != nil || !strings.Contains(r.DSN, "password="+secret) {
		t.Errorf("PickReplica DSN lacks the password (%v)", err)
	}
	if s := fmt.Sprintf("%v %+v %#v", r, r, r); strings.Contains(s, secret) {
		t.Errorf("a formatted Route shows the password: %s", s)
	}
	st, err := b.StatusJSON()
	if err != nil || strings.Contains(st, secret) || !strings.Contains(st, "password=********") {
		t.Errorf("StatusJSON: %v; %s", err, st)
	}
	m, err := b.Metrics()
	if err != nil || strings.Contains(m, secret) {
		t.Errorf("Metrics: %v; shows the password: %v", err, strings.Contains(m, secret))
	}
	if err := b.ReportFailure(strings.Replace(primary, "port=", "port=1", 1)); err == nil ||
		strings.Contains(err.Error(), secret) {
		t.Errorf("ReportFailure(unknown DSN with password): %v", err)
	}
	_, err = dlb.Open(context.Background(), c.config(t, "", map[string]any{"max_lag_bytes": -1}))
	if !errors.Is(err, dlb.ErrInvalidConfig) || strings.Contains(err.Error(), secret) ||
		!strings.Contains(err.Error(), "max_lag_bytes") {
		t.Errorf("Open(bad max_lag_bytes): %v", err)
	}
}

func TestStatus(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.HealthyReplicas != 2 || len(st.Replicas) != 2 || st.LSNStore != "memory" || st.Checks == 0 {
		t.Errorf("status: %+v", st)
	}
	if st.Version < 2 || st.Status != "ok" || st.PrimaryState != "up" || st.PrimaryError != "" ||
		st.LastCheckAt == "" || st.CheckIntervalMs == 0 || st.Primary.SystemIdentifier == "" {
		t.Errorf("status verdict: %+v", st)
	}
	parseLSN(t, st.PrimaryLSN)
	if dsnPort(st.Primary.DSN) != dsnPort(c.primary) || strings.Contains(st.Primary.DSN, secret) {
		t.Errorf("primary: %+v", st.Primary)
	}
	for i, r := range st.Replicas {
		if r.Addr != c.replicas[i] || r.State != "healthy" || r.Reason != "" ||
			dsnPort(r.DSN) != c.port(i+1) || r.LagSeconds == nil {
			t.Errorf("replica %d: %+v", i+1, r)
		}
		parseLSN(t, r.ReplayLSN)
	}
	if st.Draining == nil || len(st.Draining) != 0 {
		t.Errorf("draining: %#v, want []", st.Draining)
	}
	// StatusReport mirrors the JSON: it has a field for every member.
	text, err := b.StatusJSON()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(new(dlb.StatusReport)); err != nil {
		t.Errorf("StatusJSON has a member StatusReport lacks: %v", err)
	}
}

// A store that fails after the LSN was read (a Redis at a dead port): RecordLSN returns a
// *StoreError that matches ErrStore and carries the LSN, which works as a causal token.
func TestRecordLSNStoreErrorCarriesTheLSN(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", map[string]any{
		"lsn_store": map[string]any{
			"redis": map[string]any{"url": "redis://127.0.0.1:1", "op_timeout_ms": 200},
		},
	})
	waitHealthy(t, b, 2)
	lsn, err := b.RecordLSN(context.Background(), "go:store-down")
	if lsn != "" || !errors.Is(err, dlb.ErrStore) || !dlb.IsRetryable(err) {
		t.Fatalf("RecordLSN with Redis down = %q, %v", lsn, err)
	}
	var se *dlb.StoreError
	if !errors.As(err, &se) {
		t.Fatalf("not a *StoreError: %#v", err)
	}
	var e *dlb.Error
	if !errors.As(err, &e) || e.Code != dlb.ErrStore || e.Op != "RecordLSN" {
		t.Errorf("errors.As(*Error) = %#v", e)
	}
	if parseLSN(t, se.LSN) == 0 || !strings.Contains(err.Error(), se.LSN) {
		t.Errorf("LSN %q in %v", se.LSN, err)
	}
	r, err := b.PickReplicaMinLSN(context.Background(), se.LSN)
	if err != nil || r.Reason == dlb.ReasonForcedPrimary {
		t.Errorf("PickReplicaMinLSN(%s) = %v, %v", se.LSN, r, err)
	}
	// Other errors carry none.
	if _, err := b.RecordLSN(context.Background(), ""); errors.As(err, &se) {
		t.Errorf("RecordLSN(\"\") = %#v", err)
	}
}
