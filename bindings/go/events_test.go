package dlb_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// The start-up check queues an "added" event per replica, with the host ids routes carry;
// NextEvent honours its context, and Close ends a wait.
func TestHostEventsAndRouteIDs(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitDeadline)
	defer cancel()
	ids := map[uint64]string{}
	for len(ids) < 2 {
		e, err := b.NextEvent(ctx)
		if err != nil {
			t.Fatalf("NextEvent: %v", err)
		}
		if e.Event == dlb.EventAdded {
			ids[e.HostID] = e.Addr
		}
	}
	waitHealthy(t, b, 2)
	for i := 0; i < 10; i++ {
		r, err := b.PickReplica(ctx, dlb.NoKey)
		if err != nil {
			t.Fatal(err)
		}
		if addr, ok := ids[r.HostID]; !ok || addr != r.Addr {
			t.Fatalf("route %v: host %d at %s; events named %v", r, r.HostID, r.Addr, ids)
		}
	}
	p, err := b.PrimaryRoute()
	if err != nil || p.Role != dlb.RolePrimary || p.HostID == 0 || ids[p.HostID] != "" {
		t.Fatalf("PrimaryRoute: %+v %v", p, err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := b.NextEvent(short); err != short.Err() {
		t.Fatalf("NextEvent without events: %v, want %v", err, short.Err())
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.NextEvent(context.Background())
		done <- err
	}()
	b.Close()
	if err := <-done; !errors.Is(err, dlb.ErrClosed) {
		t.Fatalf("NextEvent after Close: %v", err)
	}
}

func TestRecordedLSN(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	ctx := context.Background()
	if lsn, err := b.RecordedLSN(ctx, "never:written"); err != nil || lsn != "" {
		t.Fatalf("RecordedLSN of a new key: %q %v", lsn, err)
	}
	lsn, err := b.RecordLSN(ctx, "rec:1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.RecordedLSN(ctx, "rec:1"); err != nil || got != lsn {
		t.Fatalf("RecordedLSN = %q, %v; recorded %q", got, err, lsn)
	}
	if _, err := b.RecordedLSN(ctx, ""); !errors.Is(err, dlb.ErrInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
}

func TestPickOptions(t *testing.T) {
	c := needCluster(t)
	b := c.open(t, "", nil)
	waitHealthy(t, b, 2)
	ctx := context.Background()
	_, err := b.PickReplicaMinLSNWith(ctx, "FFFFFFFF/0", dlb.PickOptions{NoCaughtUp: dlb.NoCaughtUpError})
	if !errors.Is(err, dlb.ErrNoCaughtUpReplica) {
		t.Fatalf("policy error for this call: %v", err)
	}
	r, err := b.PickReplicaMinLSNWith(ctx, "FFFFFFFF/0", dlb.PickOptions{CachedOnly: true})
	if err != nil || r.Role != dlb.RolePrimary || r.Reason != dlb.ReasonNotCaughtUp {
		t.Fatalf("cached only: %v %v", r, err)
	}
}

func TestConfigJSON(t *testing.T) {
	cfg := dlb.Config{Primary: "host=db1", Replicas: []string{"db2:5432"},
		ProbeTimeout: 1500 * time.Microsecond, StickyTTL: 90 * time.Second,
		Redis: &dlb.RedisConfig{URL: "redis://r", OpTimeout: 50 * time.Millisecond}}
	text, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(text, &got); err != nil {
		t.Fatal(err)
	}
	if got["probe_timeout_ms"] != 2.0 || got["sticky_ttl_s"] != 90.0 ||
		got["lsn_store"].(map[string]any)["redis"].(map[string]any)["op_timeout_ms"] != 50.0 {
		t.Fatalf("marshalled: %s", text)
	}
	if _, ok := got["max_lag_ms"]; ok {
		t.Fatalf("a zero field is sent: %s", text)
	}
	for _, bad := range []dlb.Config{{}, {Primary: "x", MaxLag: -time.Second},
		{Primary: "x", NoCaughtUpReplica: "maybe"},
		{Primary: "x", Replicas: []string{"a"}, ReplicaDNS: &dlb.DNSConfig{Record: "r"}}} {
		err := bad.Validate()
		if !errors.Is(err, dlb.ErrInvalidConfig) {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
}
