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
// configuration table in dlb's docs/configuration.md). OpenConfig opens a balancer with it; Validate
// checks what can be checked here (dlb checks the rest, naming the field).
//
// Primary and the Redis URLs hold passwords. A Config prints and marshals without them, so
// it is safe to log: fmt (every verb: String, GoString, Format), encoding/json (MarshalJSON:
// dlb's JSON with the secrets replaced, not the JSON Open takes) and log/slog (LogValue, Go
// 1.21 and later) show the primary DSN as dlb redacts it (host, port, user and database
// shown, the password and any value not known to be safe replaced by "********") and the
// Redis URLs without their credentials. The fields themselves still hold the secrets: code
// that reads them, or walks them by reflection (gob, some pretty-printers), sees them.
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
	// MaxTimeLag quarantines a replica this far behind in time whatever its byte lag (a
	// delayed standby); zero: off.
	MaxTimeLag     time.Duration
	MaxReplayStall time.Duration
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
//
// URL and Cluster may hold credentials ("redis://user:password@host", or "?pass=" in a
// redis+unix:// URL): like Config, a RedisConfig prints and marshals without them.
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
		"ProbeTimeout": c.ProbeTimeout, "MaxLag": c.MaxLag, "MaxTimeLag": c.MaxTimeLag, "MaxReplayStall": c.MaxReplayStall,
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

// MarshalJSON encodes the configuration as dlb's JSON (zero fields left out) with its secrets
// replaced: the primary DSN as dlb redacts it, the Redis URLs without their credentials. It
// is for logs: Open would not connect with it (OpenConfig sends the complete configuration).
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted().jsonMap()) }

// configJSON is the JSON Open takes: the complete configuration, secrets included. Private,
// so that nothing but OpenConfig (and the package's tests) gets it.
func (c Config) configJSON() ([]byte, error) { return json.Marshal(c.jsonMap()) }

// redacted returns a copy of c with the primary DSN and the Redis URLs redacted (c is not
// changed: slices are copied, not written).
func (c Config) redacted() Config {
	c.Primary = redactDSN(c.Primary)
	if c.Redis != nil {
		r := c.Redis.redacted()
		c.Redis = &r
	}
	return c
}

// String returns the fields with their names, the secrets redacted (see Config).
func (c Config) String() string { return fmt.Sprintf("%+v", plainConfig(c.redacted())) }

// GoString is used by %#v: Go syntax, the secrets redacted (see Config).
func (c Config) GoString() string {
	return "dlb.Config" + strings.TrimPrefix(fmt.Sprintf("%#v", plainConfig(c.redacted())),
		"dlb.plainConfig")
}

// Format makes every fmt verb print c redacted: %v, %+v and %s print String, %#v GoString.
func (c Config) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "dlb.Config", c.String, c.GoString)
}

// plainConfig is Config without its methods: what fmt shows of a redacted copy.
type plainConfig Config

// jsonMap is the configuration as dlb's JSON object, zero fields left out, c's values as
// they are.
func (c Config) jsonMap() map[string]any {
	m := map[string]any{"primary": c.Primary}
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
			putNonZero(dns, "port", uint64(d.Port))
			if d.RecordType != "" {
				dns["record_type"] = d.RecordType
			}
			putNonZero(dns, "refresh_interval_ms", ms(d.RefreshInterval))
			putNonZero(dns, "timeout_ms", ms(d.Timeout))
			r["dns"] = dns
		}
		putNonZero(r, "drain_timeout_ms", ms(c.DrainTimeout))
		m["replicas"] = r
	}
	putNonZero(m, "replica_check_interval_ms", ms(c.ReplicaCheckInterval))
	putNonZero(m, "probe_timeout_ms", ms(c.ProbeTimeout))
	putNonZero(m, "max_lag_bytes", c.MaxLagBytes)
	putNonZero(m, "max_lag_ms", ms(c.MaxLag))
	putNonZero(m, "max_time_lag_ms", ms(c.MaxTimeLag))
	putNonZero(m, "max_replay_stall_ms", ms(c.MaxReplayStall))
	putNonZero(m, "sticky_ttl_s", secs(c.StickyTTL))
	putNonZero(m, "sticky_check_budget_ms", ms(c.StickyCheckBudget))
	if c.NoCaughtUpReplica != "" {
		m["no_caught_up_replica"] = c.NoCaughtUpReplica
	}
	if r := c.Redis; r != nil {
		m["lsn_store"] = map[string]any{"redis": r.jsonMap()}
	}
	pool := map[string]any{}
	putNonZero(pool, "max_size", uint64(c.Pool.MaxSize))
	putNonZero(pool, "min_idle", uint64(c.Pool.MinIdle))
	putNonZero(pool, "connect_timeout_ms", ms(c.Pool.ConnectTimeout))
	putNonZero(pool, "checkout_timeout_ms", ms(c.Pool.CheckoutTimeout))
	putNonZero(pool, "max_lifetime_s", secs(c.Pool.MaxLifetime))
	if len(pool) > 0 {
		m["pool"] = pool
	}
	return m
}

// putNonZero sets m[k] to v unless v is 0 (dlb's default).
func putNonZero(m map[string]any, k string, v uint64) {
	if v != 0 {
		m[k] = v
	}
}

// MarshalJSON encodes the store as the object under "lsn_store.redis" in dlb's JSON (zero
// fields left out), the URLs without their credentials.
func (r RedisConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(r.redacted().jsonMap())
}

// redacted returns a copy of r with its URLs redacted (r is not changed).
func (r RedisConfig) redacted() RedisConfig {
	r.URL = redactURL(r.URL)
	if r.Cluster != nil {
		cluster := make([]string, len(r.Cluster))
		for i, u := range r.Cluster {
			cluster[i] = redactURL(u)
		}
		r.Cluster = cluster
	}
	return r
}

// String returns the fields with their names, the URLs without their credentials.
func (r RedisConfig) String() string { return fmt.Sprintf("%+v", plainRedisConfig(r.redacted())) }

// GoString is used by %#v: Go syntax, the URLs without their credentials.
func (r RedisConfig) GoString() string {
	return "dlb.RedisConfig" + strings.TrimPrefix(
		fmt.Sprintf("%#v", plainRedisConfig(r.redacted())), "dlb.plainRedisConfig")
}

// Format makes every fmt verb print r redacted: %v, %+v and %s print String, %#v GoString.
func (r RedisConfig) Format(f fmt.State, verb rune) {
	formatRedacted(f, verb, "dlb.RedisConfig", r.String, r.GoString)
}

// plainRedisConfig is RedisConfig without its methods: what fmt shows of a redacted copy.
type plainRedisConfig RedisConfig

// jsonMap is the store as dlb's JSON object, zero fields left out, r's values as they are.
func (r RedisConfig) jsonMap() map[string]any {
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
	putNonZero(redis, "op_timeout_ms", ms(r.OpTimeout))
	putNonZero(redis, "pool_size", uint64(r.PoolSize))
	if r.TLSCAFile != "" {
		redis["tls_ca_file"] = r.TLSCAFile
	}
	return redis
}

// OpenConfig validates cfg and opens a balancer with it (see Open).
//
// Errors: ErrInvalidConfig, and those of Open.
func OpenConfig(ctx context.Context, cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	text, err := cfg.configJSON()
	if err != nil {
		return nil, errors.New("dlb: OpenConfig: " + err.Error())
	}
	return Open(ctx, string(text))
}
