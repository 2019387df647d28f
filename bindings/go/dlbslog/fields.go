package dlbslog

import dlb "github.com/dlb-project/dlb/bindings/go"

// field is one attribute of an event's record, whichever slog package writes it.
type field struct {
	key  string
	kind byte // 's' string, 'u' uint64, 'f' float64
	s    string
	u    uint64
	f    float64
}

// eventRecord is what Events logs for e: whether at warn level (else info), the message
// and the attributes.
func eventRecord(e dlb.HostEvent) (warn bool, msg string, fields []field) {
	fields = []field{
		{key: "component", kind: 's', s: "dlb"},
		{key: "event", kind: 's', s: e.Event},
		{key: "host", kind: 's', s: e.Addr},
		{key: "host_id", kind: 'u', u: e.HostID},
		{key: "health", kind: 's', s: e.Health},
		{key: "lag_bytes", kind: 'u', u: e.LagBytes},
	}
	if e.LagSeconds != nil {
		fields = append(fields, field{key: "lag_seconds", kind: 'f', f: *e.LagSeconds})
	}
	if e.Reason != "" {
		fields = append(fields, field{key: "reason", kind: 's', s: e.Reason})
	}
	if e.Error != "" {
		fields = append(fields, field{key: "error", kind: 's', s: e.Error})
	}
	if e.Dropped > 0 {
		fields = append(fields, field{key: "dropped", kind: 'u', u: e.Dropped})
	}
	return e.Event == dlb.EventQuarantined, "dlb host " + e.Event, fields
}
