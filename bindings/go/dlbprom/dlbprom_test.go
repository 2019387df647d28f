package dlbprom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbprom"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/lib/pq"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// open opens a balancer on the test cluster (scripts/testenv.sh env), or skips.
func open(t *testing.T) (*dlb.Balancer, []string) {
	primary, replicas := os.Getenv("DLB_TEST_PRIMARY"), os.Getenv("DLB_TEST_REPLICAS")
	if primary == "" {
		if os.Getenv("DLB_GO_REQUIRE_CLUSTER") == "1" {
			t.Fatal("DLB_TEST_PRIMARY is not set")
		}
		t.Skip("no test cluster")
	}
	hosts := strings.Split(replicas, ",")
	text, _ := json.Marshal(map[string]any{"primary": primary + " password=secretpw sslmode=disable",
		"replicas": map[string]any{"hosts": hosts}, "replica_check_interval_ms": 100})
	b, err := dlb.Open(context.Background(), string(text))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	end := time.Now().Add(30 * time.Second)
	for {
		st, err := b.Status()
		if err == nil && st.HealthyReplicas == len(hosts) {
			return b, hosts
		}
		if time.Now().After(end) {
			t.Fatalf("replicas not healthy: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCollector(t *testing.T) {
	b, hosts := open(t)
	c := dlbprom.New(b, dlbprom.Options{Namespace: "registry_db",
		ConstLabels: prometheus.Labels{"cluster": "main"}})

	var want strings.Builder
	want.WriteString("# HELP registry_db_replica_up 1 when the replica serves reads, else 0.\n" +
		"# TYPE registry_db_replica_up gauge\n")
	for _, h := range hosts {
		fmt.Fprintf(&want, "registry_db_replica_up{cluster=\"main\",replica=%q} 1\n", h)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want.String()),
		"registry_db_replica_up"); err != nil {
		t.Fatal(err)
	}
	// Every series has the namespace and the constant label; none leaks the password; a
	// pedantic registry accepts the whole set.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c); n < 10 {
		t.Fatalf("only %d series", n)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "registry_db_") {
			t.Errorf("family %s lacks the namespace", f.GetName())
		}
		for _, m := range f.GetMetric() {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == "cluster" && l.GetValue() == "main")
				if strings.Contains(l.GetValue(), "secretpw") {
					t.Errorf("%s leaks the password", f.GetName())
				}
			}
			if !found {
				t.Errorf("a %s series lacks the constant label", f.GetName())
			}
		}
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	b.Close()
	if err := testutil.CollectAndCompare(c, strings.NewReader("")); err == nil {
		t.Fatal("a closed balancer's collector reports no error")
	}
}

// dlb's four latency histograms come through as histograms, renamed and labelled, with the
// same buckets, sum and count as dlb's own text.
func TestCollectorHistograms(t *testing.T) {
	b, _ := open(t)
	ctx := context.Background()
	if _, err := b.RecordLSN(ctx, "histogram-key"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PickReplica(ctx, "histogram-key"); err != nil { // a sticky pick
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(dlbprom.New(b, dlbprom.Options{Namespace: "registry_db",
		ConstLabels: prometheus.Labels{"cluster": "main"}}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range families {
		got[f.GetName()] = f
	}
	text, err := b.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"probe_duration_seconds", "live_check_duration_seconds",
		"store_operation_duration_seconds", "sticky_pick_duration_seconds"} {
		f := got["registry_db_"+name]
		if f == nil {
			t.Errorf("no registry_db_%s family", name)
			continue
		}
		if f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) == 0 {
			t.Errorf("registry_db_%s: type %v, %d series", name, f.GetType(), len(f.GetMetric()))
			continue
		}
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if len(h.GetBucket()) < 2 {
				t.Errorf("registry_db_%s: %d buckets", name, len(h.GetBucket()))
			}
			prev := uint64(0)
			for _, bk := range h.GetBucket() {
				if bk.GetCumulativeCount() < prev || bk.GetCumulativeCount() > h.GetSampleCount() {
					t.Errorf("registry_db_%s: bucket le=%v count %d (previous %d, total %d)",
						name, bk.GetUpperBound(), bk.GetCumulativeCount(), prev, h.GetSampleCount())
				}
				prev = bk.GetCumulativeCount()
			}
		}
		if !strings.Contains(text, "dlb_"+name+"_bucket{") {
			t.Errorf("dlb's own text has no dlb_%s_bucket series", name)
		}
	}
	// Samples arrived: the probes at Open and since, and the sticky pick above.
	for name, labels := range map[string]map[string]string{
		"probe_duration_seconds":       {"role": "replica"},
		"sticky_pick_duration_seconds": {},
	} {
		f := got["registry_db_"+name]
		if f == nil {
			continue
		}
		n := uint64(0)
		for _, m := range f.GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if match {
				n += m.GetHistogram().GetSampleCount()
			}
		}
		if n == 0 {
			t.Errorf("registry_db_%s%v counts no sample", name, labels)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// The pool collector exports one series per pool dlbsql holds (host, host_id, role), with
// the namespace and the constant labels; a replica's series come with its pool, and none is
// left once the load balancer is closed.
func TestPoolCollector(t *testing.T) {
	b, hosts := open(t)
	ctx := context.Background()
	lb, err := dlbsql.New(ctx, b, dlbsql.Config{Driver: &pq.Driver{}, MaxOpenConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	c := dlbprom.NewPoolCollector(lb, dlbprom.Options{Namespace: "registry_db",
		ConstLabels: prometheus.Labels{"cluster": "main"}})
	if n := testutil.CollectAndCount(c, "registry_db_sql_open_connections"); n != 1 {
		t.Fatalf("%d open_connections series before any read; want the primary's", n)
	}
	seen := map[string]bool{}
	for i := 0; i < 20 && len(seen) < len(hosts); i++ {
		db, err := lb.Replica(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err != nil {
			t.Fatal(err)
		}
		seen[db.Route.Addr] = true
	}
	primary := lb.Addr(lb.Primary())
	var want strings.Builder
	want.WriteString("# HELP registry_db_sql_open_connections The number of established connections both in use and idle.\n" +
		"# TYPE registry_db_sql_open_connections gauge\n")
	var ids = map[string]string{}
	for _, p := range lb.PoolStats() {
		ids[p.Addr] = fmt.Sprint(p.HostID)
	}
	fmt.Fprintf(&want, "registry_db_sql_open_connections{cluster=\"main\",host=%q,host_id=%q,role=\"primary\"} 0\n",
		primary, ids[primary])
	for _, h := range hosts {
		fmt.Fprintf(&want, "registry_db_sql_open_connections{cluster=\"main\",host=%q,host_id=%q,role=\"replica\"} 1\n",
			h, ids[h])
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want.String()),
		"registry_db_sql_open_connections"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, dlbprom.New(b, dlbprom.Options{Namespace: "registry_db",
		ConstLabels: prometheus.Labels{"cluster": "main"}}))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	lb.Close()
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d series after Close", n)
	}
}
