// Command dlb-example is a small registry-like HTTP service on dlb (modelled on the GitLab
// container registry's database load balancing): PUT /tags?repo=R&tag=T writes a tag on the
// primary, GET /tags?repo=R lists a repository's tags from a replica that has replayed the
// client's writes (read-your-writes), GET /health serves dlb's status.
//
// It uses the binding's parts: a typed dlb.Config, dlbsql's load balancer (one *sql.DB per
// host, opened and closed with dlb's host events; connectivity errors reported to dlb by the
// wrapped driver; a 100 ms pick budget by default), its middleware (which records the
// write's LSN for "repo:R" and hands the client a causal token in the Dlb-Lsn header, signed
// with DLB_TOKEN_SECRET, carried to the next request) and health handler.
//
// With -serve ADDR it serves until interrupted; without, it starts on a free port, acts as
// its own client (one write, then a read carrying the token) and exits, failing on a stale
// read.
//
// Build against an installed dlb (make install): PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig go
// build; inside the repository: go build -tags dlb_dev (after cargo build --release --lib).
//
// Run against the test cluster (scripts/testenv.sh):
//
//	eval "$(bash scripts/testenv.sh env)" && ./dlb-example -repo group/project -tag v1.2.3
//
// lib/pq defaults to sslmode=require: the configuration built from DLB_TEST_PRIMARY adds
// sslmode=disable (the test servers have no TLS).
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	dlb "github.com/dlb-project/dlb/bindings/go"
	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/lib/pq"
)

func main() {
	serve := flag.String("serve", "", "serve on this address until interrupted (default: run one round and exit)")
	repo := flag.String("repo", "group/project", "repository path (one round)")
	tag := flag.String("tag", fmt.Sprintf("v%d", time.Now().Unix()), "tag to create (one round)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("dlb-example: ")
	if err := run(*serve, *repo, *tag); err != nil {
		log.Fatal(err)
	}
}

// config is the test cluster's, from its environment.
func config() (dlb.Config, error) {
	primary, replicas := os.Getenv("DLB_TEST_PRIMARY"), os.Getenv("DLB_TEST_REPLICAS")
	if primary == "" {
		return dlb.Config{}, errors.New(`no cluster: run eval "$(bash scripts/testenv.sh env)"`)
	}
	if !strings.Contains(primary, "sslmode=") {
		primary += " sslmode=disable"
	}
	cfg := dlb.Config{Primary: primary, ReplicaCheckInterval: 200 * time.Millisecond}
	for _, h := range strings.Split(replicas, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.Replicas = append(cfg.Replicas, h)
		}
	}
	return cfg, nil
}

type service struct{ lb *dlbsql.DBLoadBalancer }

func repoKey(r *http.Request) string { return "repo:" + r.URL.Query().Get("repo") }

func (s *service) tags(w http.ResponseWriter, r *http.Request) {
	// No dlb-specific glue: the pick's budget is dlbsql's default (100 ms, the registry's),
	// and the pools opened with Config.Driver report connectivity errors to dlb themselves.
	ctx := r.Context()
	repo := r.URL.Query().Get("repo")
	switch r.Method {
	case http.MethodPut:
		_, err := s.lb.Primary().ExecContext(ctx, `INSERT INTO dlb_example_tags (repo, name)
			VALUES ($1, $2) ON CONFLICT DO NOTHING`, repo, r.URL.Query().Get("tag"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated) // the middleware records the LSN first
	case http.MethodGet:
		db, err := s.lb.UpToDateReplica(ctx, repoKey(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		rows, err := db.QueryContext(ctx, `SELECT name FROM dlb_example_tags WHERE repo = $1
			ORDER BY created_at, name`, repo)
		if err != nil {
			// A connectivity error has taken the host out of rotation already.
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			names = append(names, n)
		}
		w.Header().Set("Dlb-Host", db.Route.Addr)
		w.Header().Set("Dlb-Route", db.Route.String()) // e.g. "replica (caught_up_cached)"
		fmt.Fprintln(w, strings.Join(names, "\n"))
	default:
		http.Error(w, "PUT or GET", http.StatusMethodNotAllowed)
	}
}

func run(serve, repo, tag string) error {
	cfg, err := config()
	if err != nil {
		return err
	}
	ctx := context.Background()
	b, err := dlb.OpenConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	// dlbsql opens the pools with the driver: a connection a handler leaves with session
	// state (SET, a transaction begun with a statement) is closed, never reused.
	lb, err := dlbsql.New(ctx, b, dlbsql.Config{Driver: pq.Driver{}, MaxOpenConns: 10})
	if err != nil {
		return err
	}
	defer lb.Close()
	if _, err := lb.Primary().Exec(`CREATE TABLE IF NOT EXISTS dlb_example_tags (
		repo text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (repo, name))`); err != nil {
		return fmt.Errorf("create table on the primary: %w", err)
	}
	s := &service{lb: lb}
	mux := http.NewServeMux()
	// The secret signing the causal tokens: the same in every instance (here from the
	// environment; a random one only holds within this process).
	secret := []byte(os.Getenv("DLB_TOKEN_SECRET"))
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
	}
	mux.Handle("/tags", lb.Middleware(dlbsql.MiddlewareConfig{Key: repoKey, Secret: secret})(
		http.HandlerFunc(s.tags)))
	mux.Handle("/health", dlbsql.HealthHandler(b))
	if serve == "" {
		serve = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", serve)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	fmt.Printf("dlb %s: serving on http://%s\n", dlb.Version(), l.Addr())
	if flag.Lookup("serve").Value.String() != "" {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, os.Interrupt)
		<-stop
		return nil
	}
	return oneRound("http://"+l.Addr().String(), repo, tag)
}

// oneRound writes a tag, then lists the tags carrying the causal token the write returned.
func oneRound(base, repo, tag string) error {
	req, _ := http.NewRequest(http.MethodPut, base+"/tags?repo="+repo+"&tag="+tag, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	token := resp.Header.Get(dlbsql.DefaultTokenHeader)
	if resp.StatusCode != http.StatusCreated || token == "" {
		return fmt.Errorf("PUT: %s, token %q", resp.Status, token)
	}
	fmt.Printf("wrote tag %s of %s; causal token %s\n", tag, repo, token)
	req, _ = http.NewRequest(http.MethodGet, base+"/tags?repo="+repo, nil)
	req.Header.Set(dlbsql.DefaultTokenHeader, token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET: %s %s %v", resp.Status, body, err)
	}
	names := strings.Fields(string(body))
	fmt.Printf("listed %d tags of %s from %s\n", len(names), repo, resp.Header.Get("Dlb-Host"))
	for _, n := range names {
		if n == tag {
			return nil
		}
	}
	return fmt.Errorf("read-your-writes violated: tag %s not listed by %s", tag, resp.Header.Get("Dlb-Host"))
}
