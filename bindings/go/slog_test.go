//go:build go1.21

package dlb_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// log/slog's handlers log a Config, a RedisConfig and a Route redacted (LogValue).
func TestSlogRedacts(t *testing.T) {
	for _, d := range secretDSNs {
		cfg := secretConfig(d)
		r := dlb.Route{DSN: d.dsn, Role: dlb.RoleReplica, Addr: "db1.example:5433"}
		for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
			"JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
			"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("opening", "config", cfg, "ptr", &cfg, "redis", cfg.Redis,
				"route", r)
			out := buf.String()
			if s := showsSecret(out); s != "" {
				t.Errorf("%s: slog's %s handler shows %q: %s", d.name, name, s, out)
			}
			for _, host := range []string{d.host, "db2.example", "redis.example"} {
				if !strings.Contains(out, host) {
					t.Errorf("%s: slog's %s handler does not show %q: %s", d.name, name, host,
						out)
				}
			}
		}
	}
}
