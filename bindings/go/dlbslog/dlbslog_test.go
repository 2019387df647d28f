//go:build !go1.21

// The tests of the x/exp/slog variant (Go before 1.21).

package dlbslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbslog"

	"golang.org/x/exp/slog"
)

// lockedBuffer collects JSON log lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func config(t *testing.T) string {
	primary, replicas := os.Getenv("DLB_TEST_PRIMARY"), os.Getenv("DLB_TEST_REPLICAS")
	if primary == "" {
		if os.Getenv("DLB_GO_REQUIRE_CLUSTER") == "1" {
			t.Fatal("DLB_TEST_PRIMARY is not set")
		}
		t.Skip("no test cluster")
	}
	text, _ := json.Marshal(map[string]any{"primary": primary + " password=secretpw",
		"replicas": map[string]any{"hosts": strings.Split(replicas, ",")}})
	return string(text)
}

func TestEventsAndRecordsAreStructured(t *testing.T) {
	cfg := config(t)
	var buf lockedBuffer
	logger := slog.New(slog.HandlerOptions{Level: slog.DebugLevel}.NewJSONHandler(&buf))
	if err := dlbslog.Forward(logger, dlb.LogInfo); err != nil {
		t.Fatal(err)
	}
	defer dlb.SetLogHandler(dlb.LogOff, nil)
	b, err := dlb.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stop := dlbslog.Events(b, logger)
	defer stop()

	hosts := strings.Split(os.Getenv("DLB_TEST_REPLICAS"), ",")
	end := time.Now().Add(30 * time.Second)
	for {
		added, started := map[string]bool{}, false
		for _, l := range buf.lines() {
			if strings.Contains(l["msg"].(string), "secretpw") {
				t.Fatalf("a password in the log: %v", l)
			}
			if l["event"] == "added" && l["host_id"].(float64) > 0 && l["level"] == "INFO" {
				added[l["host"].(string)] = true
			}
			started = started || (l["component"] == "dlb" &&
				strings.Contains(l["msg"].(string), "balancer started"))
		}
		if len(added) == len(hosts) && started {
			for _, h := range hosts {
				if !added[h] {
					t.Fatalf("no added event for %s: %v", h, added)
				}
			}
			return
		}
		if time.Now().After(end) {
			t.Fatalf("log lines: %v", buf.lines())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
