package dlb_test

// Values that hold a secret (Config, RedisConfig, Route) print and marshal without it, while
// OpenConfig still sends the complete configuration. No database needed, except for
// TestOpenConfigSendsSecrets.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// Every password below is made of these pieces; none may show, in clear or in hex.
var secretParts = []string{"SECRETxyz", "PARTtwo"}

// dsnCase is a DSN holding a password and the host it must still show ("" for none: text
// dlb cannot parse shows nothing).
type dsnCase struct{ name, dsn, host string }

var secretDSNs = []dsnCase{
	{"key=value", "host=db1.example port=5433 user=app password=SECRETxyz dbname=app",
		"db1.example"},
	{"key=value quoted, spaces and escaped quotes",
		`host=db1.example user=app password='SECRETxyz PARTtwo \'q\' \\ x' dbname=app`,
		"db1.example"},
	{"key=value spaces around =", "host = db1.example password = 'SECRETxyz PARTtwo'",
		"db1.example"},
	{"url", "postgres://app:SECRETxyz@db1.example:5433/app?sslmode=disable", "db1.example"},
	// libpq ends the user info at the first @: the host would hold the rest, @ and all,
	// which dlb refuses to parse, so nothing of it is shown.
	{"url, raw @ in the password", "postgresql://app:SECRETxyz@PARTtwo@db1.example/app", ""},
	{"url, percent-encoded @ ? # in the password",
		"postgres://app:SECRETxyz%40%3F%23PARTtwo@db1.example/app", "db1.example"},
	{"url, password in the query", "postgres://db1.example/app?user=app&password=SECRETxyz",
		"db1.example"},
	{"url, raw ? in the password", "postgres://app:SECRETxyz?PARTtwo@db1.example/app", ""},
	{"url, raw # in the password", "postgres://app:SECRETxyz#PARTtwo@db1.example/app", ""},
	{"not a DSN", "SECRETxyz PARTtwo", ""},
	{"a NUL byte", "host=db1.example password=SECRETxyz\x00PARTtwo", ""},
	{"invalid UTF-8", "host=db1.example password=\xffSECRETxyz", ""},
}

// Redis URLs holding a password, and the host each must still show.
var secretRedisURLs = []dsnCase{
	{"user and password", "redis://app:SECRETxyz@redis.example:6379/0", "redis.example"},
	{"raw @ in the password", "rediss://:SECRETxyz@PARTtwo@redis.example:6380", "redis.example"},
	{"raw / and , in the password", "redis://:SECRETxyz/PARTtwo,x@redis.example:1",
		"redis.example"},
	{"unix socket, pass in the query", "redis+unix:///run/redis.sock?db=1&pass=SECRETxyz",
		"/run/redis.sock"},
	{"unix socket, raw @ in pass", "redis+unix:///run/redis.sock?pass=SECRETxyz@PARTtwo&db=1",
		""},
	{"unix socket, raw ? # & in pass", "unix:///run/redis.sock?pass=SECRETxyz?PARTtwo#x&db=2",
		"/run/redis.sock"},
}

// showsSecret returns the piece of a password that text shows, in clear or in hex, or "".
func showsSecret(text string) string {
	for _, p := range secretParts {
		for _, form := range []string{p, hex.EncodeToString([]byte(p)),
			strings.ToUpper(hex.EncodeToString([]byte(p)))} {
			if strings.Contains(text, form) {
				return form
			}
		}
	}
	return ""
}

// renderings returns every way of printing or marshalling v checked here, by name; the
// names starting with "hex" print hex, where no host can show in clear.
func renderings(t *testing.T, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%t", "%10.5000s",
		"%-20v"} {
		out["Sprintf "+verb] = fmt.Sprintf(verb, v)
	}
	out["hex %x"] = fmt.Sprintf("%x", v)
	out["hex %X"] = fmt.Sprintf("% X", v)
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	out["Errorf %v"] = fmt.Errorf("bad: %v", v).Error()
	out["Sprintf %+v in a struct"] = fmt.Sprintf("%+v", struct{ V any }{v})
	out["Sprintf %#v in a slice"] = fmt.Sprintf("%#v", []any{v})
	for name, m := range map[string]any{
		"json.Marshal":             v,
		"json.Marshal in a struct": struct{ V any }{v},
		"json.Marshal in a map":    map[string]any{"v": v},
		"json.Marshal in a slice":  []any{v},
	} {
		text, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = string(text)
	}
	return out
}

// checkRedacted fails t when a rendering of v shows a secret or misses one of hosts.
func checkRedacted(t *testing.T, v any, hosts ...string) {
	t.Helper()
	for name, text := range renderings(t, v) {
		if s := showsSecret(text); s != "" {
			t.Errorf("%s of %T shows %q: %s", name, v, s, text)
			continue
		}
		if strings.HasPrefix(name, "hex") {
			continue
		}
		for _, h := range hosts {
			if h != "" && !strings.Contains(text, h) {
				t.Errorf("%s of %T does not show %q: %s", name, v, h, text)
			}
		}
	}
}

// secretConfig is a configuration holding the password of d and every Redis URL (the first
// as the URL, all of them as the cluster) and a replica.
func secretConfig(d dsnCase) dlb.Config {
	r := &dlb.RedisConfig{URL: secretRedisURLs[0].dsn, KeyPrefix: "app:"}
	for _, u := range secretRedisURLs {
		r.Cluster = append(r.Cluster, u.dsn)
	}
	return dlb.Config{Primary: d.dsn, Replicas: []string{"db2.example:5432"}, Redis: r}
}

func TestConfigPrintsAndMarshalsRedacted(t *testing.T) {
	for _, d := range secretDSNs {
		t.Run(d.name, func(t *testing.T) {
			cfg := secretConfig(d)
			orig := secretConfig(d)
			hosts := []string{d.host, "db2.example", "redis.example", "app:"}
			checkRedacted(t, cfg, hosts...)
			checkRedacted(t, &cfg, hosts...)
			// Embedded: the promoted methods stand for the outer value (Go's rule), redacted.
			checkRedacted(t, struct{ dlb.Config }{cfg}, hosts...)
			checkRedacted(t, struct {
				Name string
				Cfg  dlb.Config
				Ptr  *dlb.Config
			}{"x", cfg, &cfg}, hosts...)
			checkRedacted(t, *cfg.Redis, "redis.example")
			checkRedacted(t, cfg.Redis, "redis.example")
			if !reflect.DeepEqual(cfg, orig) {
				t.Errorf("printing changed the configuration: %#v", cfg.Redis.Cluster)
			}
		})
	}
}

// Each Redis URL alone, as the URL and as the cluster.
func TestRedisConfigURLsRedacted(t *testing.T) {
	for _, u := range secretRedisURLs {
		t.Run(u.name, func(t *testing.T) {
			checkRedacted(t, dlb.RedisConfig{URL: u.dsn}, u.host)
			checkRedacted(t, dlb.RedisConfig{Cluster: []string{u.dsn, u.dsn}}, u.host)
		})
	}
	// What stays: a URL without credentials, and the db and protocol parameters.
	for _, u := range []string{"redis://redis.example:6379/2",
		"redis+unix:///s.sock?db=3&protocol=resp3"} {
		if s := fmt.Sprint(dlb.RedisConfig{URL: u}); !strings.Contains(s, u) {
			t.Errorf("%s printed as %s", u, s)
		}
	}
}

// A route's DSN is the configured one with another host: the same password.
func TestRouteMarshalsRedacted(t *testing.T) {
	for _, d := range secretDSNs {
		t.Run(d.name, func(t *testing.T) {
			r := dlb.Route{DSN: d.dsn, Role: dlb.RoleReplica, Reason: dlb.ReasonCaughtUpCached,
				HostID: 7, Addr: "db1.example:5433"}
			// fmt leaves the DSN out (String, GoString), JSON has it redacted (below).
			checkRedacted(t, r)
			checkRedacted(t, &r)
			text, _ := json.Marshal(r)
			var got map[string]any
			if err := json.Unmarshal(text, &got); err != nil || got["HostID"] != 7.0 ||
				(d.host != "" && !strings.Contains(got["DSN"].(string), d.host)) {
				t.Errorf("json.Marshal(route) = %s (%v)", text, err)
			}
		})
	}
}

// The redacted JSON is dlb's, with the same keys as the JSON OpenConfig sends; that one is
// complete.
func TestConfigJSONForOpenIsComplete(t *testing.T) {
	cfg := secretConfig(secretDSNs[0])
	cfg.ProbeTimeout = 250 * time.Millisecond
	full, err := dlb.ConfigJSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	shown, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var f, s map[string]any
	if err := json.Unmarshal(full, &f); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(shown, &s); err != nil {
		t.Fatal(err)
	}
	redisOf := func(m map[string]any) map[string]any {
		return m["lsn_store"].(map[string]any)["redis"].(map[string]any)
	}
	if f["primary"] != cfg.Primary || redisOf(f)["url"] != cfg.Redis.URL ||
		fmt.Sprint(redisOf(f)["cluster"]) != fmt.Sprint(cfg.Redis.Cluster) ||
		f["probe_timeout_ms"] != 250.0 {
		t.Errorf("the JSON for Open is not the configuration: %s", full)
	}
	if len(f) != len(s) || len(redisOf(f)) != len(redisOf(s)) || s["probe_timeout_ms"] != 250.0 ||
		s["primary"] != "host=db1.example port=5433 user=app password=******** dbname=app" {
		t.Errorf("MarshalJSON is not dlb's JSON redacted:\n%s\nvs\n%s", shown, full)
	}
}

// OpenConfig sends the passwords: the primary's comes back in PrimaryDSN, and the Redis
// store that requires one records an LSN.
func TestOpenConfigSendsSecrets(t *testing.T) {
	c := needCluster(t)
	redisAuth := os.Getenv("DLB_TEST_REDIS_AUTH")
	if redisAuth == "" {
		t.Skip("DLB_TEST_REDIS_AUTH is not set")
	}
	cfg := dlb.Config{Primary: c.primary + dsnSuffix, Replicas: c.replicas,
		Redis: &dlb.RedisConfig{URL: redisAuth, KeyPrefix: "go-redact-test:"}}
	ctx := context.Background()
	b, err := dlb.OpenConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("OpenConfig: %v", err)
	}
	defer b.Close()
	dsn, err := b.PrimaryDSN()
	if err != nil || !strings.Contains(dsn, "password="+secret) {
		t.Fatalf("PrimaryDSN() = %q, %v: the password did not reach dlb", dsn, err)
	}
	lsn, err := b.RecordLSN(ctx, "go-redact")
	var se *dlb.StoreError
	if errors.As(err, &se) || err != nil || lsn == "" {
		t.Fatalf("RecordLSN with the authenticated Redis store: %q, %v", lsn, err)
	}
	if got, err := b.RecordedLSN(ctx, "go-redact"); err != nil || got == "" {
		t.Fatalf("RecordedLSN: %q, %v", got, err)
	}
}
