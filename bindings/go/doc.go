// Package dlb is the Go binding of dlb, client-side PostgreSQL load balancing: it tells the
// application which DSN to connect to for each read (a healthy, recent-enough streaming
// replica, or the primary) and for writes (the primary). It does not open connections for
// the application: pass the DSNs it hands out to database/sql with the driver of your
// choice.
//
// It wraps dlb's C API (include/dlb.h) with cgo and uses the standard library only.
//
// # Usage
//
//	b, err := dlb.Open(ctx, `{"primary": "host=db1 port=5432 user=app dbname=app password=...",
//	                     "replicas": {"hosts": ["db2:5432", "db3:5432"]}}`)
//	if err != nil {
//		return err // errors.Is(err, dlb.ErrInvalidConfig): the message names the field
//	}
//	defer b.Close()
//
//	// A write, then record its position for the key it affects...
//	primary, _ := b.PrimaryDSN()
//	// ... INSERT on primary ...
//	if _, err := b.RecordLSN(ctx, "repo:" + path); err != nil {
//		return err
//	}
//
//	// ...so that reads for that key only go to replicas that have replayed the write
//	// (read-your-writes). Without a key (dlb.NoKey), a plain round-robin pick. ctx's
//	// deadline bounds the pick's store read and live checks.
//	route, err := b.PickReplica(ctx, "repo:" + path)
//	if err != nil {
//		return err
//	}
//	log.Printf("reading from %v", route) // "replica (caught_up_cached)"; never logs the DSN
//	db, err := sql.Open("postgres", route.DSN)
//
// # Routing
//
// PickReplica returns a Route: the DSN (the configured primary DSN with host and port
// replaced, password included: give it to the driver, never to a log), its Role and the
// Reason it was chosen. When no replica qualifies the primary is returned, which is not an
// error, unless the configuration says "no_caught_up_replica": "error" (then
// ErrNoCaughtUpReplica). After a connection error on a DSN, call ReportFailure so that the
// host leaves the rotation at once.
//
// # Errors
//
// Every failure is an *Error carrying the operation, the status Code of the C API and the
// library's message (which names the offending argument or configuration field and never
// contains a password). The codes are sentinel errors:
//
//	if errors.Is(err, dlb.ErrNoCaughtUpReplica) { ... }
//	var e *dlb.Error
//	if errors.As(err, &e) { log.Print(e.Code, e.Message) }
//	if dlb.IsRetryable(err) { ... }
//
// Calls on a closed Balancer return ErrClosed.
//
// # Concurrency and blocking
//
// A Balancer is safe for concurrent use. Close waits for calls in progress. Calls block the
// calling goroutine's OS thread while in C:
//   - Open runs one health check of every host (bounded by probe_timeout_ms).
//   - RecordLSN makes one round trip to the primary.
//   - PickReplica with a key, and PickReplicaMinLSN, may check replicas live for at most
//     sticky_check_budget_ms when the cached positions show none caught up.
//   - PickReplica without a key, PrimaryDSN, ReportFailure, Metrics, Status and StatusJSON
//     never block on I/O.
//
// dlb's health monitor runs on its own thread. SetLogHandler forwards its log records.
//
// # Building
//
// By default the package links the installed library (make install PREFIX=...) through
// pkg-config (#cgo pkg-config: dlb): set PKG_CONFIG_PATH to $PREFIX/lib/pkgconfig for a
// prefix pkg-config does not search. Inside the repository, the build tag dlb_dev links the
// release build's libdlb.a (cargo build --release --lib), and dlb_shared its libdlb.so with
// an rpath. See README.md.
//
// # Subpackages
//
// dlbsql puts database/sql pools behind a Balancer (one *sql.DB per host, opened and closed
// with host events; an error classifier; an http middleware carrying the causal token; a
// health handler). Host events (NextEvent) and a typed Config are in this package.
package dlb
