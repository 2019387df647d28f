package dlb_test

// Benchmarks against the test cluster (skipped without it):
//
//	go test -tags dlb_dev -run '^$' -bench PickReplica -benchtime 2000000x
//	go test -tags dlb_dev -run '^$' -bench UpToDateReplica -benchtime 3000x
//
// BenchmarkPickReplica makes one cgo call per pick through the binding;
// BenchmarkPickReplicaC makes the same picks in a C loop inside a single cgo call, so the
// ratio of the two is the binding's overhead (cgo transition, locking, buffer, string copy).

import (
	"context"
	"database/sql"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/lib/pq"
)

func benchBalancer(b *testing.B) *dlb.Balancer {
	c := needCluster(b)
	bal := c.open(b, "", nil)
	waitHealthy(b, bal, 2)
	return bal
}

func BenchmarkPickReplica(b *testing.B) {
	bal := benchBalancer(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bal.PickReplica(context.Background(), dlb.NoKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickReplicaC(b *testing.B) {
	bal := benchBalancer(b)
	b.ReportAllocs()
	b.ResetTimer()
	if err := dlb.BenchPickC(bal, b.N); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkPickReplicaParallel(b *testing.B) {
	bal := benchBalancer(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bal.PickReplica(context.Background(), dlb.NoKey); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A sticky pick whose key's LSN the cached replay positions already cover.
func BenchmarkPickReplicaSticky(b *testing.B) {
	bal := benchBalancer(b)
	lsn, err := bal.RecordLSN(context.Background(), "go:bench")
	if err != nil {
		b.Fatal(err)
	}
	// Wait (bounded) until the cached positions show a replica caught up.
	deadline := time.Now().Add(waitDeadline)
	for {
		r, err := bal.PickReplica(context.Background(), "go:bench")
		if err != nil {
			b.Fatal(err)
		}
		if r.Reason == dlb.ReasonCaughtUpCached {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no replica caught up with %s: %v", lsn, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bal.PickReplica(context.Background(), "go:bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// A read-your-writes read of one row through dlbsql (a pick, then the host's pooled
// *sql.DB) against the same read opening a connection directly on the picked DSN each time
// (what a caller without per-host pools does). Both sides run in the same process and run.
func BenchmarkUpToDateReplica(b *testing.B) {
	bal := benchBalancer(b)
	ctx := context.Background()
	const key = "go:bench:utd"
	if _, err := bal.RecordLSN(ctx, key); err != nil {
		b.Fatal(err)
	}
	read := func(db *sql.DB) {
		var one int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
	// dlbsql with the caller's pools (Open), and with its own (Driver: connections wrapped to
	// track session state, see dlbsql.WrapConnector).
	for _, c := range []struct {
		name string
		cfg  dlbsql.Config
	}{
		{"dlbsql", dlbsql.Config{Open: openPQ, MaxIdleConns: 4}},
		{"dlbsql-driver", dlbsql.Config{Driver: pq.Driver{}, MaxIdleConns: 4}},
	} {
		b.Run(c.name, func(b *testing.B) {
			lb, err := dlbsql.New(ctx, bal, c.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer lb.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				db, err := lb.UpToDateReplica(ctx, key)
				if err != nil {
					b.Fatal(err)
				}
				read(db.DB)
			}
		})
	}
	b.Run("direct", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			r, err := bal.PickReplica(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			db, err := sql.Open("postgres", r.DSN)
			if err != nil {
				b.Fatal(err)
			}
			read(db)
			db.Close()
		}
	})
}
