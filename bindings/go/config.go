package dlb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is dlb's configuration, typed: durations are time.Duration (sent to dlb in whole
// milliseconds or seconds, rounded up), and a zero field means dlb's default (see the
// configuration table in dlb's README.md). MarshalJSON gives the JSON Open takes; Validate
// checks what can be checked here (dlb checks the rest, naming the field).
type Config struct {
	// Primary is the primary's DSN (key=value or URL). Required.
	Primary string
	// Replicas lists the replicas' "host:port" (or host). Exclusive with ReplicaDNS.
	Replicas []string
	// ReplicaDNS discovers the replicas through DNS.
	ReplicaDNS *DNSConfig
	// DrainTimeout: how long a replica that left the list may keep connections checked out.
	DrainTimeout time.Duration

	ReplicaCheckInterval time.Duration
	ProbeTimeout         time.Duration
	MaxLagBytes          uint64
	MaxLag               time.Duration
	MaxReplayStall       time.Duration
	// StickyTTL is how long a recorded LSN is kept (whole seconds).
	StickyTTL         time.Duration
	StickyCheckBudget time.Duration
	// NoCaughtUpReplica is "primary" (default) or "error".
	NoCaughtUpReplica string
	// Redis, when set, keeps recorded LSNs in Redis (shared by a fleet).
	Redis *RedisConfig
	Pool  PoolConfig
}

// DNSConfig discovers replicas through DNS (SRV or A records).
type DNSConfig struct {
	Record          string
	Nameserver      string
	Port            uint16
	RecordType      string // "SRV" (default) or "A"
	RefreshInterval time.Duration
	Timeout         time.Duration
}

// RedisConfig is the Redis LSN store.
type RedisConfig struct {
	URL       string
	Cluster   []string
	KeyPrefix string
	OpTimeout time.Duration
	PoolSize  uint32
	TLSCAFile string
}

// PoolConfig sizes dlb's own connection pools (its probes and RecordLSN's queries).
type PoolConfig struct {
	MaxSize         uint32
	MinIdle         uint32
	ConnectTimeout  time.Duration
	CheckoutTimeout time.Duration
	MaxLifetime     time.Duration
}

// ms and s round a duration up to whole milliseconds or seconds (0 stays 0: the default).
func ms(d time.Duration) uint64 { return uint64((d + time.Millisecond - 1) / time.Millisecond) }
func secs(d time.Duration) uint64 {
	return uint64((d + time.Second - 1) / time.Second)
}

// Validate checks the fields' shape: a primary, no negative duration, replicas given one way,
// a known policy.
func (c Config) Validate() error {
	var bad []string
	if strings.TrimSpace(c.Primary) == "" {
		bad = append(bad, "Primary is empty")
	}
	if len(c.Replicas) > 0 && c.ReplicaDNS != nil {
		bad = append(bad, "Replicas and ReplicaDNS are both set")
	}
	for name, d := range map[string]time.Duration{
		"DrainTimeout": c.DrainTimeout, "ReplicaCheckInterval": c.ReplicaCheckInterval,
		"ProbeTimeout": c.ProbeTimeout, "MaxLag": c.MaxLag, "MaxReplayStall": c.MaxReplayStall,
		"StickyTTL": c.StickyTTL, "StickyCheckBudget": c.StickyCheckBudget,
		"Pool.ConnectTimeout": c.Pool.ConnectTimeout, "Pool.CheckoutTimeout": c.Pool.CheckoutTimeout,
		"Pool.MaxLifetime": c.Pool.MaxLifetime,
	} {
		if d < 0 {
			bad = append(bad, fmt.Sprintf("%s is negative (%v)", name, d))
		}
	}
	switch c.NoCaughtUpReplica {
	case "", "primary", "error":
	default:
		bad = append(bad, fmt.Sprintf("NoCaughtUpReplica is %q; expected \"primary\" or \"error\"",
			c.NoCaughtUpReplica))
	}
	if len(bad) > 0 {
		return &Error{Op: "Config.Validate", Code: ErrInvalidConfig, Message: strings.Join(bad, "; ")}
	}
	return nil
}

// MarshalJSON encodes the configuration as dlb's JSON (zero fields left out).
func (c Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{"primary": c.Primary}
	put := func(m map[string]any, k string, v uint64) {
		if v != 0 {
			m[k] = v
		}
	}
	if len(c.Replicas) > 0 || c.ReplicaDNS != nil || c.DrainTimeout != 0 {
		r := map[string]any{}
		if len(c.Replicas) > 0 {
			r["hosts"] = c.Replicas
		}
		if d := c.ReplicaDNS; d != nil {
			dns := map[string]any{"record": d.Record}
			if d.Nameserver != "" {
				dns["nameserver"] = d.Nameserver
			}
			put(dns, "port", uint64(d.Port))
			if d.RecordType != "" {
				dns["record_type"] = d.RecordType
			}
			put(dns, "refresh_interval_ms", ms(d.RefreshInterval))
			put(dns, "timeout_ms", ms(d.Timeout))
			r["dns"] = dns
		}
		put(r, "drain_timeout_ms", ms(c.DrainTimeout))
		m["replicas"] = r
	}
	put(m, "replica_check_interval_ms", ms(c.ReplicaCheckInterval))
	put(m, "probe_timeout_ms", ms(c.ProbeTimeout))
	put(m, "max_lag_bytes", c.MaxLagBytes)
	put(m, "max_lag_ms", ms(c.MaxLag))
	put(m, "max_replay_stall_ms", ms(c.MaxReplayStall))
	put(m, "sticky_ttl_s", secs(c.StickyTTL))
	put(m, "sticky_check_budget_ms", ms(c.StickyCheckBudget))
	if c.NoCaughtUpReplica != "" {
		m["no_caught_up_replica"] = c.NoCaughtUpReplica
	}
	if r := c.Redis; r != nil {
		redis := map[string]any{}
		if r.URL != "" {
			redis["url"] = r.URL
		}
		if len(r.Cluster) > 0 {
			redis["cluster"] = r.Cluster
		}
		if r.KeyPrefix != "" {
			redis["key_prefix"] = r.KeyPrefix
		}
		put(redis, "op_timeout_ms", ms(r.OpTimeout))
		put(redis, "pool_size", uint64(r.PoolSize))
		if r.TLSCAFile != "" {
			redis["tls_ca_file"] = r.TLSCAFile
		}
		m["lsn_store"] = map[string]any{"redis": redis}
	}
	pool := map[string]any{}
	put(pool, "max_size", uint64(c.Pool.MaxSize))
	put(pool, "min_idle", uint64(c.Pool.MinIdle))
	put(pool, "connect_timeout_ms", ms(c.Pool.ConnectTimeout))
	put(pool, "checkout_timeout_ms", ms(c.Pool.CheckoutTimeout))
	put(pool, "max_lifetime_s", secs(c.Pool.MaxLifetime))
	if len(pool) > 0 {
		m["pool"] = pool
	}
	return json.Marshal(m)
}

// OpenConfig validates cfg and opens a balancer with it (see Open).
//
// Errors: ErrInvalidConfig, and those of Open.
func OpenConfig(ctx context.Context, cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	text, err := json.Marshal(cfg)
	if err != nil {
		return nil, errors.New("dlb: OpenConfig: " + err.Error())
	}
	return Open(ctx, string(text))
}
