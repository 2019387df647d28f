package dlb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"

	_ "github.com/lib/pq"
)

// The test cluster (scripts/testenv.sh): set by `eval "$(bash scripts/testenv.sh env)"`.
// Without it the tests that need the cluster are skipped, unless DLB_GO_REQUIRE_CLUSTER=1
// (bindings/go/test.sh sets it), which makes that an error.
type testCluster struct {
	primary  string   // libpq key=value DSN, without a password
	replicas []string // host:port
	script   string   // scripts/testenv.sh
}

var cluster *testCluster

const (
	// Appended to the primary's DSN: it must show in the DSNs handed out and nowhere else.
	// (lib/pq defaults to sslmode=require; the test cluster and dlb use no TLS.)
	secret       = "secretpw"
	dsnSuffix    = " password=" + secret + " sslmode=disable"
	waitDeadline = 30 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	primary := os.Getenv("DLB_TEST_PRIMARY")
	if primary == "" {
		if os.Getenv("DLB_GO_REQUIRE_CLUSTER") == "1" {
			fmt.Fprintln(os.Stderr, "DLB_TEST_PRIMARY is not set (DLB_GO_REQUIRE_CLUSTER=1); run:\n"+
				"  bash scripts/testenv.sh up && eval \"$(bash scripts/testenv.sh env)\"")
			return 1
		}
		return m.Run()
	}
	cluster = &testCluster{primary: primary, script: os.Getenv("DLB_TESTENV_SCRIPT")}
	for _, h := range strings.Split(os.Getenv("DLB_TEST_REPLICAS"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			cluster.replicas = append(cluster.replicas, h)
		}
	}
	if cluster.script == "" {
		cluster.script = "../../scripts/testenv.sh"
	}
	if len(cluster.replicas) != 2 {
		fmt.Fprintf(os.Stderr, "DLB_TEST_REPLICAS must list two replicas (got %q)\n",
			os.Getenv("DLB_TEST_REPLICAS"))
		return 1
	}

	// Other suites (Rust, C, other bindings) pause and stop replicas: serialize on the
	// shared lock, unless the caller already holds it.
	if os.Getenv("DLB_TESTS_LOCK_HELD") != "1" {
		lockFile := os.Getenv("DLB_TESTS_LOCK")
		if lockFile == "" {
			lockFile = "/tmp/dlb-tests.lock"
		}
		f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster lock:", err)
			return 1
		}
		defer f.Close()
		fmt.Fprintln(os.Stderr, "waiting for the cluster lock", lockFile)
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if err != syscall.EINTR {
				break
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster lock:", err)
			return 1
		}
	}
	if err := restoreCluster(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot restore the test cluster:", err)
		return 1
	}
	code := m.Run()
	if err := restoreCluster(); err != nil {
		fmt.Fprintln(os.Stderr, "warning: cannot restore the test cluster:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// restoreCluster leaves every replica running and replaying WAL.
func restoreCluster() error {
	for _, n := range []string{"1", "2"} {
		if out, err := testenv("start-replica", n); err != nil {
			return fmt.Errorf("start-replica %s: %v\n%s", n, err, out)
		}
		if out, err := testenv("resume-replica", n); err != nil {
			return fmt.Errorf("resume-replica %s: %v\n%s", n, err, out)
		}
	}
	return nil
}

func testenv(args ...string) (string, error) {
	out, err := exec.Command("bash", append([]string{cluster.script}, args...)...).CombinedOutput()
	return string(out), err
}

// needCluster skips t when the test cluster is not configured.
func needCluster(tb testing.TB) *testCluster {
	tb.Helper()
	if cluster == nil {
		tb.Skip("DLB_TEST_PRIMARY is not set; run: bash scripts/testenv.sh up && " +
			"eval \"$(bash scripts/testenv.sh env)\"")
	}
	return cluster
}

// config returns the JSON configuration of the test cluster: the primary's DSN with
// dsnSuffix and extraDSN appended, both replicas, fast checks, and the extra fields.
func (c *testCluster) config(tb testing.TB, extraDSN string, extra map[string]any) string {
	tb.Helper()
	cfg := map[string]any{
		"primary":                   c.primary + dsnSuffix + extraDSN,
		"replicas":                  map[string]any{"hosts": c.replicas},
		"replica_check_interval_ms": 100,
		"probe_timeout_ms":          2000,
	}
	for k, v := range extra {
		cfg[k] = v
	}
	text, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return string(text)
}

// open opens a balancer on the test cluster, closed when the test ends.
func (c *testCluster) open(tb testing.TB, extraDSN string, extra map[string]any) *dlb.Balancer {
	tb.Helper()
	b, err := dlb.Open(context.Background(), c.config(tb, extraDSN, extra))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// port returns replica i's (1-based) port.
func (c *testCluster) port(i int) string {
	h := c.replicas[i-1]
	return h[strings.LastIndexByte(h, ':')+1:]
}

var portRe = regexp.MustCompile(`(?:^|\s)port=(\d+)(?:\s|$)`)

// dsnPort returns the port=N of a key=value DSN.
func dsnPort(dsn string) string {
	if m := portRe.FindStringSubmatch(dsn); m != nil {
		return m[1]
	}
	return ""
}

// pauseReplica2 pauses WAL replay on replica 2 until the test ends and waits until it is
// paused. It returns replica 2's DSN (primary with replica 2's port) and the position it
// replayed.
func (c *testCluster) pauseReplica2(t *testing.T, d *dbs, primary string) (dsn, replayed string) {
	t.Helper()
	t.Cleanup(func() {
		if out, err := testenv("resume-replica", "2"); err != nil {
			t.Errorf("resume-replica 2: %v\n%s", err, out)
		}
	})
	if out, err := testenv("pause-replica", "2"); err != nil {
		t.Fatalf("pause-replica 2: %v\n%s", err, out)
	}
	dsn = strings.Replace(primary, "port="+dsnPort(primary), "port="+c.port(2), 1)
	until(t, "replica 2's replay is paused", func() bool {
		var state string
		if err := d.get(dsn).QueryRow(`SELECT pg_get_wal_replay_pause_state()`).Scan(&state); err != nil {
			t.Fatal(err)
		}
		return state == "paused"
	})
	if err := d.get(dsn).QueryRow(`SELECT pg_last_wal_replay_lsn()::text`).Scan(&replayed); err != nil {
		t.Fatal(err)
	}
	return dsn, replayed
}

// waitHealthy waits (bounded) until the balancer sees n healthy replicas.
func waitHealthy(tb testing.TB, b *dlb.Balancer, n int) {
	tb.Helper()
	deadline := time.Now().Add(waitDeadline)
	for {
		st, err := b.Status()
		if err != nil {
			tb.Fatalf("Status: %v", err)
		}
		if st.HealthyReplicas >= n {
			return
		}
		if time.Now().After(deadline) {
			text, _ := b.StatusJSON()
			tb.Fatalf("%d healthy replicas after %v, want %d; status: %s",
				st.HealthyReplicas, waitDeadline, n, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dbs caches one *sql.DB per DSN for the test.
type dbs struct {
	tb testing.TB
	mu sync.Mutex
	m  map[string]*sql.DB
}

func newDBs(tb testing.TB) *dbs {
	d := &dbs{tb: tb, m: map[string]*sql.DB{}}
	tb.Cleanup(func() {
		for _, db := range d.m {
			db.Close()
		}
	})
	return d
}

func (d *dbs) get(dsn string) *sql.DB {
	d.mu.Lock()
	defer d.mu.Unlock()
	if db, ok := d.m[dsn]; ok {
		return db
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		d.tb.Fatalf("sql.Open(port %s): %v", dsnPort(dsn), err)
	}
	db.SetMaxOpenConns(4)
	d.m[dsn] = db
	return db
}

// parseLSN parses "X/Y".
func parseLSN(tb testing.TB, s string) uint64 {
	tb.Helper()
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		tb.Fatalf("not an LSN: %q", s)
	}
	return h<<32 | l
}
