package dlbprom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dlb "dlb/bindings/go"
	"dlb/bindings/go/dlbprom"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	text, _ := json.Marshal(map[string]any{"primary": primary + " password=secretpw",
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
