package dlb

import (
	"encoding/json"
)

// StatusReport is what Status returns: a point-in-time health report of every host, the
// decoded form of StatusJSON (it mirrors the Rust crate's Status). It contains no password.
// Fields the library adds in later versions are ignored.
type StatusReport struct {
	// Version is the version of the report's shape (2 since dlb 0.3: the fields below up to
	// PrimaryError, LastCheckAt and CheckIntervalMs were added); 0 from older libraries.
	Version uint32 `json:"version"`
	// Status is the overall verdict: "ok" (the primary answered the last check, every
	// replica serves reads, the monitor is on time), "degraded" (a replica is out or not yet
	// checked, or the last check is several intervals old; reads are still served) or
	// "down" (the primary did not answer the last check).
	Status string `json:"status"`
	// PrimaryState is the primary's state at the last check: "unknown", "up" or "down".
	PrimaryState string `json:"primary_state"`
	// PrimaryError says why the primary's last check failed (no secrets), or "".
	PrimaryError string `json:"primary_error"`
	// Primary is the primary host.
	Primary HostStatus `json:"primary"`
	// Replicas lists every configured replica.
	Replicas []ReplicaStatus `json:"replicas"`
	// PrimaryLSN is the primary's WAL insert position at the last successful check ("X/Y"),
	// or "" when unknown.
	PrimaryLSN string `json:"primary_lsn"`
	// Checks is the number of checks the monitor has run so far.
	Checks uint64 `json:"checks"`
	// LastCheckAgeMs is how many milliseconds ago the monitor last published a check; nil
	// before the first. Several check intervals means the monitor is stuck or failing.
	LastCheckAgeMs *uint64 `json:"last_check_age_ms"`
	// LastCheckAt is when the monitor last published a check, in UTC (RFC 3339 with
	// milliseconds); "" before the first.
	LastCheckAt string `json:"last_check_at"`
	// CheckIntervalMs is the configured check interval, to judge LastCheckAgeMs by.
	CheckIntervalMs uint64 `json:"check_interval_ms"`
	// HealthyReplicas is the number of replicas currently serving reads.
	HealthyReplicas int `json:"healthy_replicas"`
	// LSNStore is the kind of LSN store ("memory", ...).
	LSNStore string `json:"lsn_store"`
	// LSNStoreWarning is a standing concern about the LSN store (a Redis maxmemory-policy
	// other than noeviction, which can evict recorded LSNs); nil when there is none.
	LSNStoreWarning *string `json:"lsn_store_warning"`
	// LSNStoreLossAgeMs is the time since dlb last noticed the LSN store lost entries (a
	// Redis restart without persistence, a flush, an eviction); nil if never.
	LSNStoreLossAgeMs *uint64 `json:"lsn_store_loss_age_ms"`
	// Draining lists replicas ("host:port") that left the list and are being drained.
	Draining []string `json:"draining"`
}

// HostStatus is a host and its connection pool.
type HostStatus struct {
	// Addr is "host:port".
	Addr string `json:"addr"`
	// DSN is the host's DSN with its password hidden.
	DSN string `json:"dsn"`
	// PoolConnections is the number of open pooled connections.
	PoolConnections uint32 `json:"pool_connections"`
	// PoolIdle is how many of them are idle.
	PoolIdle uint32 `json:"pool_idle"`
	// ServerAddr is the server that answered the last probe, as it sees itself
	// ("addr:port"); "" until a probe answers. Differs from Addr behind a proxy.
	ServerAddr string `json:"server_addr"`
	// SystemIdentifier is that server's system_identifier (decimal text), the same for a
	// primary and its standbys; "" when unknown.
	SystemIdentifier string `json:"system_identifier"`
	// Timeline is that server's timeline; nil when unknown.
	Timeline *uint32 `json:"timeline"`
}

// ReplicaStatus is a replica's health as last seen by the monitor.
type ReplicaStatus struct {
	HostStatus
	// State is "unknown", "healthy" or "quarantined".
	State string `json:"state"`
	// Reason says why the replica is quarantined ("lag", "unreachable", "timeout",
	// "not_in_recovery", "flapping", "wrong_cluster", "diverged", "stalled",
	// "multiple_servers"); "" when it is not.
	Reason string `json:"reason"`
	// ReplayLSN is the cached replay position ("X/Y"), or "" when unknown.
	ReplayLSN string `json:"replay_lsn"`
	// LagBytes is how many bytes of WAL the replica is behind the primary.
	LagBytes uint64 `json:"lag_bytes"`
	// LagSeconds is how many seconds the replica is behind (0 when not behind in bytes);
	// nil when unknown.
	LagSeconds *float64 `json:"lag_seconds"`
	// LastError is the last probe error (host names and driver messages only, no
	// secrets), or "".
	LastError string `json:"last_error"`
}

// Status returns the health report: the primary and every replica (address, redacted DSN,
// state, quarantine reason, replay LSN, lag, last probe error, pool sizes), the primary's
// LSN, the number of checks and of healthy replicas, the LSN store's kind and the replicas
// being drained. StatusJSON returns the same report as JSON text. Never blocks on I/O.
//
// Errors: ErrClosed; a *json.SyntaxError or similar if the library's JSON does not decode
// (a bug).
func (b *Balancer) Status() (*StatusReport, error) {
	text, err := b.statusJSON("Status")
	if err != nil {
		return nil, err
	}
	var r StatusReport
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		return nil, err
	}
	return &r, nil
}
