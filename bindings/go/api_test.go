package dlb_test

// Tests that need no database: versions, names, configuration and argument errors, Close.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// A balancer whose hosts all refuse connections: every call that needs no database works.
const unreachableConfig = `{"primary": "host=127.0.0.1 port=1 user=u dbname=d password=secretpw",
	"replicas": {"hosts": ["127.0.0.1:2"]}, "probe_timeout_ms": 200,
	"pool": {"connect_timeout_ms": 200, "checkout_timeout_ms": 300}}`

func openUnreachable(t *testing.T) *dlb.Balancer {
	t.Helper()
	b, err := dlb.Open(context.Background(), unreachableConfig)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestVersion(t *testing.T) {
	want := fmt.Sprintf("%d.%d.%d", dlb.HeaderVersionMajor, dlb.HeaderVersionMinor,
		dlb.HeaderVersionPatch)
	if got := dlb.Version(); got != want {
		t.Errorf("Version() = %q, header says %q", got, want)
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{dlb.RolePrimary.String(), "primary"},
		{dlb.RoleReplica.String(), "replica"},
		{dlb.Role(7).String(), "unknown(7)"},
		{dlb.ReasonRoundRobin.String(), "round_robin"},
		{dlb.ReasonCaughtUpCached.String(), "caught_up_cached"},
		{dlb.ReasonCaughtUpLive.String(), "caught_up_live"},
		{dlb.ReasonNoLSNRecorded.String(), "no_lsn_recorded"},
		{dlb.ReasonNotCaughtUp.String(), "not_caught_up"},
		{dlb.ReasonForcedPrimary.String(), "forced_primary"},
		{dlb.ReasonReplicaUnavailable.String(), "replica_unavailable"},
		{dlb.Reason(12345).String(), "unknown(12345)"},
		{dlb.ErrInvalidConfig.String(), "invalid configuration"},
		{dlb.ErrBufferTooSmall.String(), "buffer too small"},
		{dlb.Code(9999).String(), "unknown status (9999)"},
		{dlb.ErrInvalidLSN.Error(), "dlb: " + dlb.ErrInvalidLSN.String()},
		{dlb.LogWarn.String(), "warn"},
		{dlb.LogLevel(9).String(), "LogLevel(9)"},
		{dlb.Route{DSN: "host=h password=" + secret, Role: dlb.RoleReplica,
			Reason: dlb.ReasonCaughtUpLive}.String(), "replica (caught_up_live)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for c := dlb.ErrInvalidArgument; c <= dlb.ErrForked; c++ {
		if s := c.String(); s == "" || strings.HasPrefix(s, "unknown status") {
			t.Errorf("Code(%d).String() = %q", uint32(c), s)
		}
	}
	for r := dlb.ReasonRoundRobin; r <= dlb.ReasonReplicaUnavailable; r++ {
		if s := r.String(); strings.HasPrefix(s, "unknown") {
			t.Errorf("Reason(%d).String() = %q", uint32(r), s)
		}
	}
	retryable := map[dlb.Code]bool{dlb.ErrPrimaryUnavailable: true, dlb.ErrNoCaughtUpReplica: true,
		dlb.ErrStore: true, dlb.ErrReplicaUnavailable: true, dlb.ErrQuery: true}
	for c := dlb.ErrInvalidArgument; c <= dlb.ErrForked; c++ {
		if c.Retryable() != retryable[c] {
			t.Errorf("%v.Retryable() = %v", c, c.Retryable())
		}
	}
}

// A Route never prints its DSN (which holds the password), whatever the verb.
func TestRouteFormattingHidesDSN(t *testing.T) {
	r := dlb.Route{DSN: "host=h port=1 password=" + secret, Role: dlb.RolePrimary,
		Reason: dlb.ReasonWrite}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if s := fmt.Sprintf(verb, r); strings.Contains(s, secret) ||
			strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Errorf("Sprintf(%q, route) = %q shows the password", verb, s)
		}
	}
	if s := fmt.Sprintf("%#v", r); !strings.Contains(s, "Role: primary") {
		t.Errorf("%%#v: %q", s)
	}
}

func TestOpenInvalidConfig(t *testing.T) {
	for _, c := range []struct {
		name, json, want string
		code             dlb.Code
	}{
		{"malformed", `{`, "invalid configuration", dlb.ErrInvalidConfig},
		{"no primary", `{}`, "primary", dlb.ErrInvalidConfig},
		{"bad type", `{"primary": "host=x", "pool": {"max_size": "ten"}}`, "pool.max_size",
			dlb.ErrInvalidConfig},
		{"range", `{"primary": "host=x", "pool": {"max_size": 0}}`,
			"pool.max_size: must be at least 1 (got 0)", dlb.ErrInvalidConfig},
		{"duplicate host", `{"primary": "host=x", "replicas": {"hosts": ["a:1", "a:1"]}}`,
			"replicas.hosts[1]", dlb.ErrInvalidConfig},
		{"unknown field", `{"primary": "host=x", "bogus_field": 1}`, "bogus_field",
			dlb.ErrInvalidConfig},
		{"password", `{"primary": "host=x password=` + secret + `", "replica_check_interval_ms": 1}`,
			"replica_check_interval_ms", dlb.ErrInvalidConfig},
		{"invalid UTF-8", "{\"primary\": \"\xff\"}", "not valid UTF-8", dlb.ErrInvalidArgument},
		{"NUL byte", "{\"primary\": \"host=x\x00\"}", "NUL", dlb.ErrInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := dlb.Open(context.Background(), c.json)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if b != nil {
				t.Errorf("Open returned a balancer with its error")
			}
			if !errors.Is(err, c.code) {
				t.Errorf("errors.Is(%v, %v) = false", err, c.code)
			}
			var e *dlb.Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not a *dlb.Error", err)
			}
			if e.Op != "Open" || e.Code != c.code || !strings.Contains(e.Message, c.want) {
				t.Errorf("got %+v, want Op Open, code %v, message containing %q", *e, c.code, c.want)
			}
			if !strings.HasPrefix(err.Error(), "dlb: Open: ") || strings.Contains(err.Error(), secret) {
				t.Errorf("Error() = %q", err.Error())
			}
			if dlb.IsRetryable(err) {
				t.Errorf("IsRetryable(%v)", err)
			}
		})
	}
}

func TestArgumentErrors(t *testing.T) {
	b := openUnreachable(t)
	check := func(t *testing.T, err error, op string, code dlb.Code, want string) {
		t.Helper()
		var e *dlb.Error
		switch {
		case err == nil:
			t.Errorf("%s succeeded, want %v", op, code)
		case !errors.Is(err, code) || !errors.As(err, &e):
			t.Errorf("%s: %v (%T), want %v", op, err, err, code)
		case e.Op != op || !strings.Contains(e.Message, want):
			t.Errorf("%s: got %+v, want a message containing %q", op, *e, want)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s: %q shows the password", op, err)
		}
	}
	longKey := strings.Repeat("k", dlb.MaxKeyLength+1)

	err := b.RecordLSNValue(context.Background(), "k", "16-B374D848")
	check(t, err, "RecordLSNValue", dlb.ErrInvalidLSN, `invalid LSN "16-B374D848"`)
	check(t, b.RecordLSNValue(context.Background(), "k", ""), "RecordLSNValue", dlb.ErrInvalidLSN, "invalid LSN")
	check(t, b.RecordLSNValue(context.Background(), "k", "123456789/0"), "RecordLSNValue", dlb.ErrInvalidLSN, "")
	check(t, b.RecordLSNValue(context.Background(), "", "0/1"), "RecordLSNValue", dlb.ErrInvalidKey, "empty")
	check(t, b.RecordLSNValue(context.Background(), "k\x00", "0/1"), "RecordLSNValue", dlb.ErrInvalidArgument, "`key` contains a NUL")
	check(t, b.RecordLSNValue(context.Background(), "k", "0/1\x00"), "RecordLSNValue", dlb.ErrInvalidArgument, "`lsn` contains a NUL")
	check(t, b.RecordLSNValue(context.Background(), "\xff", "0/1"), "RecordLSNValue", dlb.ErrInvalidArgument, "not valid UTF-8")
	_, err = b.PickReplicaMinLSN(context.Background(), "G/0")
	check(t, err, "PickReplicaMinLSN", dlb.ErrInvalidLSN, `invalid LSN "G/0"`)
	_, err = b.PickReplica(context.Background(), longKey)
	check(t, err, "PickReplica", dlb.ErrInvalidKey, "")
	_, err = b.PickReplica(context.Background(), "user:\xc3\x28")
	check(t, err, "PickReplica", dlb.ErrInvalidArgument, "`key` is not valid UTF-8 (at byte 5)")
	_, err = b.PickReplica(context.Background(), "a\x00b")
	check(t, err, "PickReplica", dlb.ErrInvalidArgument, "NUL")
	_, err = b.RecordLSN(context.Background(), "")
	check(t, err, "RecordLSN", dlb.ErrInvalidKey, "empty")
	_, err = b.RecordLSN(context.Background(), longKey)
	check(t, err, "RecordLSN", dlb.ErrInvalidKey, "")
	check(t, b.ForcePrimary(context.Background(), "k", 0), "ForcePrimary", dlb.ErrInvalidArgument, "ttl")
	check(t, b.ForcePrimary(context.Background(), "k", -time.Second), "ForcePrimary", dlb.ErrInvalidArgument, "ttl")
	check(t, b.ForcePrimary(context.Background(), "", time.Second), "ForcePrimary", dlb.ErrInvalidKey, "")
	check(t, b.ReportFailure("host=nowhere port=9 password="+secret), "ReportFailure",
		dlb.ErrUnknownHost, "neither the DSN nor the host:port")
	check(t, b.ReportFailure("nowhere:9"), "ReportFailure", dlb.ErrUnknownHost, "")

	// The primary refuses connections: a retryable error.
	_, err = b.RecordLSN(context.Background(), "k")
	check(t, err, "RecordLSN", dlb.ErrPrimaryUnavailable, "")
	if !dlb.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
	if dlb.IsRetryable(errors.New("other")) || dlb.IsRetryable(nil) {
		t.Error("IsRetryable of a non-dlb error")
	}

	// Not errors: the primary with its reason, and the host's own DSN is known.
	r, err := b.PickReplica(context.Background(), dlb.NoKey)
	if err != nil || r.Role != dlb.RolePrimary || r.Reason != dlb.ReasonNoHealthyReplica {
		t.Errorf("PickReplica without a healthy replica: %v, %v", r, err)
	}
	if err := b.ReportFailure("127.0.0.1:2"); err != nil {
		t.Errorf("ReportFailure(replica): %v", err)
	}
	if err := b.ForcePrimary(context.Background(), "k", time.Microsecond); err != nil {
		t.Errorf("ForcePrimary(1µs): %v", err)
	}
}

func TestNoReplicasConfigured(t *testing.T) {
	b, err := dlb.Open(context.Background(), `{"primary": "host=127.0.0.1 port=1 user=u password=`+secret+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	primary, err := b.PrimaryDSN()
	if err != nil || !strings.Contains(primary, "password="+secret) {
		t.Fatalf("PrimaryDSN: %v (password shown: %v)", err, strings.Contains(primary, secret))
	}
	for _, key := range []string{dlb.NoKey, "user:1"} {
		r, err := b.PickReplica(context.Background(), key)
		if err != nil || r.DSN != primary || r.Role != dlb.RolePrimary ||
			r.Reason != dlb.ReasonNoReplicasConfigured {
			t.Errorf("PickReplica(%q) = %v, %v", key, r, err)
		}
	}
}

func TestClose(t *testing.T) {
	b, err := dlb.Open(context.Background(), unreachableConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var nilBalancer *dlb.Balancer
	for _, bb := range []*dlb.Balancer{b, nilBalancer} {
		calls := map[string]error{}
		_, calls["RecordLSN"] = bb.RecordLSN(context.Background(), "k")
		calls["RecordLSNValue"] = bb.RecordLSNValue(context.Background(), "k", "0/1")
		calls["ForcePrimary"] = bb.ForcePrimary(context.Background(), "k", time.Second)
		_, calls["PickReplica"] = bb.PickReplica(context.Background(), dlb.NoKey)
		_, calls["PickReplica(key)"] = bb.PickReplica(context.Background(), "k")
		_, calls["PickReplicaMinLSN"] = bb.PickReplicaMinLSN(context.Background(), "0/1")
		_, calls["PrimaryDSN"] = bb.PrimaryDSN()
		calls["ReportFailure"] = bb.ReportFailure("127.0.0.1:2")
		_, calls["Metrics"] = bb.Metrics()
		_, calls["Status"] = bb.Status()
		_, calls["StatusJSON"] = bb.StatusJSON()
		for name, err := range calls {
			if !errors.Is(err, dlb.ErrClosed) {
				t.Errorf("%s after Close (nil: %v): %v, want ErrClosed", name, bb == nil, err)
			}
		}
	}
	if err := nilBalancer.Close(); err != nil {
		t.Errorf("Close of nil: %v", err)
	}
}

// Close while other goroutines use the balancer: every call succeeds or returns ErrClosed
// (run with -race).
func TestCloseWhileInUse(t *testing.T) {
	b, err := dlb.Open(context.Background(), unreachableConfig)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, 16)
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			signalled := false
			defer func() {
				if !signalled {
					started <- struct{}{}
				}
			}()
			for n := 0; ; n++ {
				var err error
				switch (i + n) % 4 {
				case 0:
					_, err = b.PickReplica(context.Background(), dlb.NoKey)
				case 1:
					_, err = b.PickReplica(context.Background(), fmt.Sprintf("user:%d", n))
				case 2:
					_, err = b.Status()
				case 3:
					err = b.RecordLSNValue(context.Background(), "user:1", "0/1")
				}
				if n == 10 {
					started <- struct{}{}
					signalled = true
				}
				if errors.Is(err, dlb.ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	for i := 0; i < 16; i++ {
		<-started
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call during Close: %v", err)
	}
}

// Balancers dropped without Close are freed by their finalizer (this must not crash or
// race; the monitor threads go away).
func TestFinalizer(t *testing.T) {
	for i := 0; i < 4; i++ {
		b, err := dlb.Open(context.Background(), unreachableConfig)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.PickReplica(context.Background(), dlb.NoKey); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
}

func TestLogHandler(t *testing.T) {
	if err := dlb.SetLogHandler(dlb.LogLevel(9), func(dlb.LogLevel, string) {}); !errors.Is(err, dlb.ErrInvalidArgument) {
		t.Errorf("SetLogHandler(9): %v, want ErrInvalidArgument", err)
	}
	var mu sync.Mutex
	var records []string
	got := make(chan struct{}, 1)
	err := dlb.SetLogHandler(dlb.LogDebug, func(level dlb.LogLevel, msg string) {
		mu.Lock()
		records = append(records, level.String()+": "+msg)
		mu.Unlock()
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("SetLogHandler: %v", err)
	}
	defer func() {
		if err := dlb.SetLogHandler(dlb.LogOff, nil); err != nil {
			t.Errorf("SetLogHandler(off): %v", err)
		}
	}()
	// The monitor's checks of unreachable hosts log (from dlb's own thread).
	b := openUnreachable(t)
	select {
	case <-got:
	case <-time.After(waitDeadline):
		t.Fatal("no log record")
	}
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, r := range records {
		if strings.Contains(r, secret) {
			t.Errorf("log record shows the password: %q", r)
		}
	}
	t.Logf("%d records, first: %s", len(records), records[0])
}
