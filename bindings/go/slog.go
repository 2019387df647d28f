//go:build go1.21

package dlb

import (
	"log/slog"
	"sort"
)

// LogValue makes log/slog log c redacted, as a group with dlb's JSON keys (see Config).
func (c Config) LogValue() slog.Value { return groupValue(c.redacted().jsonMap()) }

// LogValue makes log/slog log r redacted, as a group with dlb's JSON keys (see RedisConfig).
func (r RedisConfig) LogValue() slog.Value { return groupValue(r.redacted().jsonMap()) }

// LogValue makes log/slog log the route with its DSN as dlb redacts it.
func (r Route) LogValue() slog.Value {
	return slog.GroupValue(slog.String("role", r.Role.String()),
		slog.String("reason", r.Reason.String()), slog.Uint64("host_id", r.HostID),
		slog.String("addr", r.Addr), slog.String("dsn", redactDSN(r.DSN)))
}

// groupValue is m as a group, keys sorted, nested objects as groups.
func groupValue(m map[string]any) slog.Value {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		if sub, ok := m[k].(map[string]any); ok {
			attrs = append(attrs, slog.Attr{Key: k, Value: groupValue(sub)})
		} else {
			attrs = append(attrs, slog.Any(k, m[k]))
		}
	}
	return slog.GroupValue(attrs...)
}
