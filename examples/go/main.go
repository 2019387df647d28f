// Command dlb-example shows dlb from Go the way a container registry uses it (modelled on
// the GitLab container registry's database load balancing): a tag is written on the
// primary, the write's WAL position is recorded for the repository ("repo:<path>"), and the
// repository's tags are then listed from a replica that has replayed that write
// (read-your-writes), falling back to the primary when none has.
//
// Build (after `cargo build --release --lib` at the repository root):
//
//	cd examples/go && go build -o dlb-example .
//
// Run against the test cluster (scripts/testenv.sh):
//
//	eval "$(bash scripts/testenv.sh env)" && ./dlb-example -repo group/project -tag v1.2.3
//
// or with a configuration: -config '{"primary": "...", "replicas": {"hosts": [...]}}' (or
// DLB_CONFIG_JSON). lib/pq defaults to sslmode=require: add sslmode=disable to the primary
// DSN for servers without TLS (the configuration built from DLB_TEST_PRIMARY does).
package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	dlb "dlb/bindings/go"

	_ "github.com/lib/pq"
)

func main() {
	configJSON := flag.String("config", os.Getenv("DLB_CONFIG_JSON"),
		"dlb configuration JSON (default: $DLB_CONFIG_JSON, else built from $DLB_TEST_PRIMARY and $DLB_TEST_REPLICAS)")
	repo := flag.String("repo", "group/project", "repository path")
	tag := flag.String("tag", fmt.Sprintf("v%d", time.Now().Unix()), "tag to create")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("dlb-example: ")
	if err := run(*configJSON, *repo, *tag); err != nil {
		log.Fatal(err)
	}
}

// testConfig builds a configuration from the test cluster's environment.
func testConfig() (string, error) {
	primary, replicas := os.Getenv("DLB_TEST_PRIMARY"), os.Getenv("DLB_TEST_REPLICAS")
	if primary == "" {
		return "", errors.New("no configuration: pass -config or set DLB_CONFIG_JSON, or " +
			`run: eval "$(bash scripts/testenv.sh env)"`)
	}
	if !strings.Contains(primary, "sslmode=") {
		primary += " sslmode=disable" // lib/pq's default is require; dlb uses no TLS
	}
	hosts := []string{}
	for _, h := range strings.Split(replicas, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	text, err := json.Marshal(map[string]any{
		"primary":  primary,
		"replicas": map[string]any{"hosts": hosts},
		// Checks often enough that a fresh process sees its replicas quickly.
		"replica_check_interval_ms": 200,
	})
	return string(text), err
}

func run(configJSON, repo, tag string) error {
	// dlb's warnings (a replica quarantined...) go to the program's logger.
	if err := dlb.SetLogHandler(dlb.LogWarn, func(level dlb.LogLevel, msg string) {
		log.Printf("dlb %s: %s", level, msg)
	}); err != nil {
		return err
	}
	defer dlb.SetLogHandler(dlb.LogOff, nil)

	if configJSON == "" {
		var err error
		if configJSON, err = testConfig(); err != nil {
			return err
		}
	}
	b, err := dlb.Open(configJSON)
	if err != nil {
		return err // e.g. "dlb: Open: invalid configuration: replicas.hosts[1]: ..."
	}
	defer b.Close()
	fmt.Printf("dlb %s\n", dlb.Version())

	// The write, on the primary.
	primaryDSN, err := b.PrimaryDSN()
	if err != nil {
		return err
	}
	primary, err := sql.Open("postgres", primaryDSN)
	if err != nil {
		return err
	}
	defer primary.Close()
	if _, err := primary.Exec(`CREATE TABLE IF NOT EXISTS dlb_example_tags (
		repo text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (repo, name))`); err != nil {
		return fmt.Errorf("create table on the primary: %w", err)
	}
	if _, err := primary.Exec(`INSERT INTO dlb_example_tags (repo, name) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, repo, tag); err != nil {
		return fmt.Errorf("insert the tag on the primary: %w", err)
	}

	// The write committed: record its position for the repository.
	key := "repo:" + repo
	lsn, err := b.RecordLSN(key)
	if err != nil {
		return err
	}
	fmt.Printf("wrote tag %s of %s on the primary; recorded LSN %s for %q\n", tag, repo, lsn, key)

	// The read: a replica that has replayed the write, else the primary.
	route, err := b.PickReplica(key)
	if err != nil {
		return err
	}
	tags, err := listTags(route.DSN, repo)
	if err != nil {
		// A network error on a replica: take it out of the rotation, read from the primary.
		log.Printf("reading from %v at %s failed: %v; falling back to the primary", route, addr(route.DSN), err)
		if rerr := b.ReportFailure(route.DSN); rerr != nil {
			log.Print(rerr)
		}
		route = dlb.Route{DSN: primaryDSN, Role: dlb.RolePrimary, Reason: dlb.ReasonReplicaUnavailable}
		if tags, err = listTags(route.DSN, repo); err != nil {
			return err
		}
	}
	shown := tags
	if len(shown) > 5 {
		shown = shown[len(shown)-5:]
	}
	fmt.Printf("listed %d tags of %s from the %s at %s (reason: %s), last: %s\n",
		len(tags), repo, route.Role, addr(route.DSN), route.Reason, strings.Join(shown, ", "))
	found := false
	for _, t := range tags {
		found = found || t == tag
	}
	if !found {
		return fmt.Errorf("read-your-writes violated: tag %s not visible on %v", tag, route)
	}

	// A read without sticking (no key): plain round-robin over the healthy replicas.
	rr, err := b.PickReplica(dlb.NoKey)
	if err != nil {
		return err
	}
	fmt.Printf("a read without a key goes to the %s at %s (reason: %s)\n", rr.Role, addr(rr.DSN), rr.Reason)
	return nil
}

// listTags lists repo's tags on dsn.
func listTags(dsn, repo string) ([]string, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM dlb_example_tags WHERE repo = $1 ORDER BY created_at, name`, repo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tags []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tags = append(tags, t)
	}
	return tags, rows.Err()
}

// addr returns "host:port" of a key=value DSN, for printing: never print a DSN itself, it
// holds the password.
func addr(dsn string) string {
	var host, port string
	for _, f := range strings.Fields(dsn) {
		switch {
		case strings.HasPrefix(f, "host="):
			host = strings.TrimPrefix(f, "host=")
		case strings.HasPrefix(f, "port="):
			port = strings.TrimPrefix(f, "port=")
		}
	}
	if host == "" {
		return "?"
	}
	return host + ":" + port
}
