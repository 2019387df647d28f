//go:build !go1.21

// The tests of the x/exp/slog variant (Go before 1.21).

package dlbslog_test

import (
	"bytes"
	"strings"
	"testing"

	dlb "github.com/dlb-project/dlb/bindings/go"

	"golang.org/x/exp/slog"
)

// A dlb.Config, its Redis store and a Route given to slog's handlers (x/exp/slog: its JSON
// handler calls MarshalJSON, its text handler fmt's %+v) are logged without their passwords
// and with their hosts. (log/slog's, through LogValue, are tested in the dlb package under
// Go 1.21.)
func TestConfigLoggedRedacted(t *testing.T) {
	cfg := dlb.Config{
		Primary:  "host=db1.example user=app password='SECRETxyz PARTtwo' dbname=app",
		Replicas: []string{"db2.example:5432"},
		Redis: &dlb.RedisConfig{URL: "redis://app:SECRETxyz@redis.example:6379/0",
			Cluster: []string{"redis://:SECRETxyz@PARTtwo@redis.example:7000"}},
	}
	route := dlb.Route{DSN: "postgres://app:SECRETxyz@db1.example:5433/app",
		Role: dlb.RoleReplica, Addr: "db1.example:5433"}
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b) },
	} {
		var buf bytes.Buffer
		slog.New(newHandler(&buf)).Info("opening", "config", cfg, "ptr", &cfg,
			"redis", cfg.Redis, "route", route)
		out := buf.String()
		for _, s := range []string{"SECRETxyz", "PARTtwo"} {
			if strings.Contains(out, s) {
				t.Errorf("the %s handler logs %q: %s", name, s, out)
			}
		}
		for _, h := range []string{"db1.example", "db2.example", "redis.example"} {
			if !strings.Contains(out, h) {
				t.Errorf("the %s handler does not log %q: %s", name, h, out)
			}
		}
	}
}
