package dlb_test

// The DSNs the balancer hands out keep the TLS keys of the configuration: lib/pq connects
// with them, over TLS, verifying as the DSN says (the TLS-only cluster of scripts/testenv.sh).

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"strings"
	"testing"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

func TestTLSHandedOutDSNs(t *testing.T) {
	primary, ca := os.Getenv("DLB_TEST_TLS_PRIMARY"), os.Getenv("DLB_TEST_TLS_CA")
	replicas := strings.Split(os.Getenv("DLB_TEST_TLS_REPLICAS"), ",")
	if primary == "" || ca == "" || len(replicas) < 1 {
		t.Skip("DLB_TEST_TLS_PRIMARY is not set; run: eval \"$(bash scripts/testenv.sh env)\"")
	}
	cfg, err := json.Marshal(map[string]any{
		"primary":                   primary + " sslmode=verify-full sslrootcert=" + ca,
		"replicas":                  map[string]any{"hosts": replicas[:1]},
		"replica_check_interval_ms": 100,
		"probe_timeout_ms":          2000,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := dlb.Open(context.Background(), string(cfg))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	waitHealthy(t, b, 1)
	r, err := b.PickReplica(context.Background(), dlb.NoKey)
	if err != nil || r.Role != dlb.RoleReplica {
		t.Fatalf("PickReplica: %v %v", r, err)
	}
	p, err := b.PrimaryDSN()
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range []string{p, r.DSN} {
		if !strings.Contains(dsn, "sslmode=verify-full") || !strings.Contains(dsn, "sslrootcert=") {
			t.Fatalf("port %s: the TLS keys are missing from the DSN handed out", dsnPort(dsn))
		}
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatalf("sql.Open(port %s): %v", dsnPort(dsn), err)
		}
		var ssl bool
		err = db.QueryRow("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
		db.Close()
		if err != nil || !ssl {
			t.Fatalf("port %s: ssl=%v, err=%v", dsnPort(dsn), ssl, err)
		}
	}
}
