package dlb_test

// Benchmarks against the test cluster (skipped without it):
//
//	go test -run '^$' -bench . -benchtime 2000000x
//
// BenchmarkPickReplica makes one cgo call per pick through the binding;
// BenchmarkPickReplicaC makes the same picks in a C loop inside a single cgo call, so the
// ratio of the two is the binding's overhead (cgo transition, locking, buffer, string copy).

import (
	"testing"
	"time"

	dlb "dlb/bindings/go"
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
		if _, err := bal.PickReplica(dlb.NoKey); err != nil {
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
			if _, err := bal.PickReplica(dlb.NoKey); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A sticky pick whose key's LSN the cached replay positions already cover.
func BenchmarkPickReplicaSticky(b *testing.B) {
	bal := benchBalancer(b)
	lsn, err := bal.RecordLSN("go:bench")
	if err != nil {
		b.Fatal(err)
	}
	// Wait (bounded) until the cached positions show a replica caught up.
	deadline := time.Now().Add(waitDeadline)
	for {
		r, err := bal.PickReplica("go:bench")
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
		if _, err := bal.PickReplica("go:bench"); err != nil {
			b.Fatal(err)
		}
	}
}
