package dlb

// #cgo CFLAGS: -I${SRCDIR}
// #include <stdlib.h>
// #include "dlbgo.h"
import "C"

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MaxKeyLength is the longest accepted sticking key, in bytes.
const MaxKeyLength = C.LB_MAX_KEY_LENGTH

// NoKey, passed to PickReplica, asks for a plain round-robin pick without sticking.
const NoKey = ""

// The version of dlb.h these bindings were compiled against; Version returns the version
// of the library linked in.
const (
	HeaderVersionMajor = C.LB_VERSION_MAJOR
	HeaderVersionMinor = C.LB_VERSION_MINOR
	HeaderVersionPatch = C.LB_VERSION_PATCH
)

// Version returns the linked library's version, "MAJOR.MINOR.PATCH". Never blocks.
func Version() string { return C.GoString(C.lb_version()) }

// Balancer is a load balancer over one PostgreSQL primary and its streaming replicas.
//
// It is safe for concurrent use by any number of goroutines. Close releases it; a finalizer
// closes one that becomes unreachable, but call Close to control when its monitor thread
// and connection pools go away.
type Balancer struct {
	// mu is read-locked by every call and write-locked by Close, so that the C handle is
	// never freed while a call uses it.
	mu sync.RWMutex
	h  C.dlbgo_handle // the lb_balancer; 0 once closed

	// Longest text of each kind seen so far, to size the first try's buffer.
	hints [numKinds]atomic.Int64

	// The DSNs handed out so far (a balancer has few hosts), so that a pick returns a
	// string without allocating: an immutable map, replaced (copy on write) under dsnsMu.
	dsns   atomic.Pointer[map[string]string]
	dsnsMu sync.Mutex

	// watch fans host events out (WatchEvents).
	watch watchers
}

// Open creates a balancer from a JSON configuration, e.g.
//
//	{"primary": "host=db1 port=5432 user=app dbname=app",
//	 "replicas": {"hosts": ["db2:5432", "db3:5432"]}}
//
// (see the configuration table in dlb's docs/configuration.md; unknown fields are rejected).
//
// Blocking: Open runs one health check of every host before returning, bounded by the
// configuration's probe_timeout_ms (default 100 ms), then starts a background monitor
// thread. A host that is down does not make Open fail: replicas become eligible once the
// monitor sees them healthy.
//
// ctx is checked before and after that check (which cannot be interrupted): when it is done,
// ctx.Err() is returned as is (and a balancer made meanwhile is closed).
//
// Errors: ErrInvalidConfig (the message names the offending field as a JSON path),
// ErrInvalidArgument (the JSON is not valid UTF-8 or contains a NUL byte), ctx.Err().
func Open(ctx context.Context, configJSON string) (*Balancer, error) {
	const op = "Open"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cjson, err := cString(op, "configJSON", configJSON)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cjson))
	r := C.dlbgo_balancer_new(cjson)
	if r.status != C.LB_OK {
		return nil, resultError(op, r)
	}
	b := &Balancer{h: r.handle}
	runtime.SetFinalizer(b, (*Balancer).Close)
	if err := ctx.Err(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// budgetOf is the time left before ctx's deadline, in microseconds (0: no deadline), or
// ctx.Err() (context.DeadlineExceeded when the deadline has passed) when ctx is done.
func budgetOf(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	left := time.Until(d)
	if left <= 0 {
		return 0, context.DeadlineExceeded
	}
	if left < time.Microsecond {
		return 1, nil
	}
	return uint64(left / time.Microsecond), nil
}

// Close stops the balancer's monitor thread, closes its connection pools and frees it.
//
// It waits for calls in progress on other goroutines to return first; calls made after
// Close return ErrClosed. Closing again is a no-op. Close always returns nil (the error
// result is there to satisfy io.Closer).
//
// Blocking: waits for the monitor thread to exit, not for a probe or connect in progress
// (a vanished host costs nothing here): see lb_balancer_free in dlb.h.
func (b *Balancer) Close() error {
	if b == nil {
		return nil
	}
	// A goroutine waiting in NextEvent holds the read lock: wake it first.
	b.mu.RLock()
	if b.h != 0 {
		C.dlbgo_wake_event_waiters(b.h)
	}
	b.mu.RUnlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h != 0 {
		C.dlbgo_balancer_free(b.h)
		b.h = 0
		runtime.SetFinalizer(b, nil)
	}
	return nil
}

// acquire returns the C handle, read-locked; release must follow.
func (b *Balancer) acquire() (C.dlbgo_handle, error) {
	if b == nil {
		return 0, ErrClosed
	}
	b.mu.RLock()
	if b.h == 0 {
		b.mu.RUnlock()
		return 0, ErrClosed
	}
	return b.h, nil
}

func (b *Balancer) release() {
	b.mu.RUnlock()
	// The finalizer must not run while a call uses the handle (RUnlock above already keeps
	// b alive; this says so explicitly).
	runtime.KeepAlive(b)
}

// RecordLSN records the primary's current WAL insert position for key and returns it as
// "X/Y". Call it after a write for key commits: for the next sticky_ttl_s seconds, sticky
// picks for key only return replicas that have replayed it. A key's LSN never moves
// backwards. The LSN is also a causal token for PickReplicaMinLSN and RecordLSNValue (carry
// it in a job or a header).
//
// Blocking: one round trip to the primary on a pooled connection (connecting first if
// needed, up to pool.checkout_timeout_ms), plus the LSN store's write.
//
// ctx is checked first (ctx.Err() is returned as is when it is done); the call itself is
// bounded by the pool's and the store's timeouts, not by ctx.
//
// Errors: ErrInvalidKey (empty or longer than MaxKeyLength), ErrInvalidArgument,
// ErrPrimaryUnavailable, ErrQuery, ErrStore, ErrClosed, ctx.Err(). ErrStore comes after the LSN was
// read (the write happened; only recording it failed) as a *StoreError whose LSN field holds
// it: carry it as a causal token (PickReplicaMinLSN) or retry with RecordLSNValue.
//
//	lsn, err := b.RecordLSN(ctx, key)
//	var se *dlb.StoreError
//	if errors.As(err, &se) {
//		lsn = se.LSN // still a valid causal token
//	}
func (b *Balancer) RecordLSN(ctx context.Context, key string) (string, error) {
	const op = "RecordLSN"
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := checkString(op, "key", key); err != nil {
		return "", err
	}
	// The buffer (minOutput bytes) always holds an LSN: one try, and on LB_ERR_STORE the LSN
	// the C call read is in it too.
	lb, err := b.acquire()
	if err != nil {
		return "", err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, out := s.layout(minOutput, key)
	r := C.dlbgo_record_lsn(lb, in[0], bufPtr(out), C.size_t(len(out)))
	if r.status != C.LB_OK {
		// On LB_ERR_STORE the C call wrote the LSN it read (see lb_record_lsn).
		stored := r.status == C.LB_ERR_STORE && r.len > 0 && int(r.len) < len(out)
		lsn := ""
		if stored {
			lsn = string(out[:r.len])
		}
		err := resultError(op, r)
		if stored {
			return "", &StoreError{Err: err.(*Error), LSN: lsn}
		}
		return "", err
	}
	return string(out[:r.len]), nil
}

// RecordLSNValue records an LSN the caller already has for key: a causal token carried in
// a header or a job (from RecordLSN), or the result of its own
// SELECT pg_current_wal_insert_lsn(). lsn is "X/Y" (hex). Same rules as RecordLSN.
//
// Blocking: no database I/O; blocks only on the LSN store (never with the default in-memory
// one).
//
// Errors: ErrInvalidKey, ErrInvalidLSN, ErrInvalidArgument, ErrStore, ErrClosed, ctx.Err()
// (checked first).
func (b *Balancer) RecordLSNValue(ctx context.Context, key, lsn string) error {
	const op = "RecordLSNValue"
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkString(op, "key", key); err != nil {
		return err
	}
	if err := checkString(op, "lsn", lsn); err != nil {
		return err
	}
	return b.withInputs(op, []string{key, lsn}, func(lb C.dlbgo_handle, in cIn) C.dlbgo_result {
		return C.dlbgo_record_lsn_value(lb, in[0], in[1])
	})
}

// ForcePrimary sends every sticky read of key to the primary for ttl (for data that must
// never be read from a replica): sticky picks of key return the primary with
// ReasonForcedPrimary. ttl is rounded up to whole milliseconds; it must be positive (over
// 10 years it counts as 10 years).
//
// The force is kept apart from the LSN recorded for key: it never erases it (when the force
// ends, sticky picks still wait for a replica that replayed the LSN), and nothing shortens it
// (a later RecordLSN or a shorter ForcePrimary leaves its end as it is; a longer one extends
// it).
//
// Blocking: no database I/O; blocks only on the LSN store (never with the default in-memory
// one).
//
// Errors: ErrInvalidArgument (ttl not positive), ErrInvalidKey, ErrStore, ErrClosed,
// ctx.Err() (checked first).
func (b *Balancer) ForcePrimary(ctx context.Context, key string, ttl time.Duration) error {
	const op = "ForcePrimary"
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkString(op, "key", key); err != nil {
		return err
	}
	if ttl <= 0 {
		return argError(op, "argument `ttl` must be positive (got "+ttl.String()+")")
	}
	ms := C.uint64_t((ttl + time.Millisecond - 1) / time.Millisecond)
	return b.withInputs(op, []string{key}, func(lb C.dlbgo_handle, in cIn) C.dlbgo_result {
		return C.dlbgo_force_primary(lb, in[0], ms)
	})
}

// PickReplica picks where a read should go.
//
// With key == NoKey (""), it is a plain round-robin pick over the healthy replicas: no lock,
// no I/O, never blocks. With a sticking key (1 to MaxKeyLength bytes), it only returns a
// replica that has replayed the LSN recorded for key (RecordLSN), else the primary with
// ReasonNotCaughtUp. When no replica is healthy (or none is configured) the primary is
// returned with the reason; that is not an error.
//
// Blocking with a key: reads the LSN store and, when the cached replay positions show no
// replica caught up, asks the replicas live, in parallel, for at most
// sticky_check_budget_ms (default 100 ms) in total. ctx's deadline is the budget of that
// work (the store's read and the live checks end by then); when ctx is done before or after
// the pick, ctx.Err() is returned as is.
//
// The returned DSN contains the password (see Route).
//
// Errors: ErrInvalidKey (longer than MaxKeyLength), ErrInvalidArgument,
// ErrNoCaughtUpReplica (only with "no_caught_up_replica": "error"), ErrClosed, ctx.Err().
func (b *Balancer) PickReplica(ctx context.Context, key string) (Route, error) {
	return b.PickReplicaWith(ctx, key, PickOptions{})
}

// PickReplicaWith is PickReplica with per-call options (see PickOptions).
func (b *Balancer) PickReplicaWith(ctx context.Context, key string, opts PickOptions) (Route, error) {
	const op = "PickReplica"
	if err := checkString(op, "key", key); err != nil {
		return Route{}, err
	}
	var in []string // nil: round-robin
	if key != NoKey {
		in = []string{key}
	}
	return b.pickCtx(ctx, op, in, pickKey, opts)
}

// PickReplicaMinLSN picks, in round-robin order, a replica that has replayed at least
// minLSN ("X/Y", a causal token from RecordLSN), else the primary with ReasonNotCaughtUp
// (or ErrNoCaughtUpReplica under the "error" policy).
//
// Blocking: only when the cached replay positions show no replica caught up, it asks the
// replicas live for at most sticky_check_budget_ms in total, and by ctx's deadline.
//
// Errors: ErrInvalidLSN, ErrInvalidArgument, ErrNoCaughtUpReplica, ErrClosed, ctx.Err().
func (b *Balancer) PickReplicaMinLSN(ctx context.Context, minLSN string) (Route, error) {
	return b.PickReplicaMinLSNWith(ctx, minLSN, PickOptions{})
}

// PickReplicaMinLSNWith is PickReplicaMinLSN with per-call options (see PickOptions).
func (b *Balancer) PickReplicaMinLSNWith(ctx context.Context, minLSN string, opts PickOptions) (Route, error) {
	const op = "PickReplicaMinLSN"
	if err := checkString(op, "minLSN", minLSN); err != nil {
		return Route{}, err
	}
	return b.pickCtx(ctx, op, []string{minLSN}, pickLSN, opts)
}

// PickReplicaKeyMinLSN is one pick for a read that must see both the writes recorded for key
// (RecordLSN) and the causal token minLSN: a replica that has replayed the newer of the two,
// else the primary with ReasonNotCaughtUp (or ErrNoCaughtUpReplica under the "error"
// policy). A key forced to the primary, or an LSN store that fails, sends the read to the
// primary as PickReplica does; a token of another cluster or timeline, as PickReplicaMinLSN
// does. key == NoKey is PickReplicaMinLSNWith, minLSN == "" PickReplicaWith.
//
// Two picks, one per requirement, would not do: each may be met by another replica, and the
// second one chosen need not have replayed what the first required.
//
// Blocking and errors: as PickReplica and PickReplicaMinLSN.
func (b *Balancer) PickReplicaKeyMinLSN(ctx context.Context, key, minLSN string,
	opts PickOptions) (Route, error) {
	switch {
	case minLSN == "":
		return b.PickReplicaWith(ctx, key, opts)
	case key == NoKey:
		return b.PickReplicaMinLSNWith(ctx, minLSN, opts)
	}
	const op = "PickReplicaKeyMinLSN"
	if err := checkString(op, "key", key); err != nil {
		return Route{}, err
	}
	if err := checkString(op, "minLSN", minLSN); err != nil {
		return Route{}, err
	}
	return b.pickCtx(ctx, op, []string{key, minLSN}, pickKeyLSN, opts)
}

// pickMode says what a pick's inputs are.
type pickMode uint8

const (
	pickKey    pickMode = iota // nothing (round-robin) or {key}
	pickLSN                    // {minLSN}
	pickKeyLSN                 // {key, minLSN}
)

// PickOptions are per-call options of a pick. The zero value is PickReplica's behaviour.
type PickOptions struct {
	// CachedOnly: never block. No live replay check, and no read of an LSN store that may
	// block (Redis): a keyed read is routed from the cached replay positions only, and goes
	// to the primary (ReasonStoreError) when the store would have to be asked.
	CachedOnly bool
	// NoCaughtUp is what a read no replica can serve gets, for this call.
	NoCaughtUp NoCaughtUpPolicy
}

// NoCaughtUpPolicy says what a read no replica can serve gets.
type NoCaughtUpPolicy uint32

// The policies of PickOptions.NoCaughtUp.
const (
	// NoCaughtUpDefault: the configuration's no_caught_up_replica.
	NoCaughtUpDefault NoCaughtUpPolicy = C.LB_NO_CAUGHT_UP_DEFAULT
	// NoCaughtUpPrimary: the primary, with ReasonNotCaughtUp.
	NoCaughtUpPrimary NoCaughtUpPolicy = C.LB_NO_CAUGHT_UP_PRIMARY
	// NoCaughtUpError: ErrNoCaughtUpReplica.
	NoCaughtUpError NoCaughtUpPolicy = C.LB_NO_CAUGHT_UP_ERROR
)

// pickCtx runs a pick within ctx: its deadline is the pick's budget.
func (b *Balancer) pickCtx(ctx context.Context, op string, in []string, mode pickMode,
	opts PickOptions) (Route, error) {
	budget, err := budgetOf(ctx)
	if err != nil {
		return Route{}, err
	}
	r, err := b.pick(op, in, mode, budget, opts)
	if cerr := ctx.Err(); cerr != nil {
		return Route{}, cerr
	}
	return r, err
}

var infoPool = sync.Pool{New: func() any { return new(C.lb_pick_info) }}

// pick runs a pick; every try (after the DSN buffer grows) is a new pick.
func (b *Balancer) pick(op string, inputs []string, mode pickMode, budget uint64,
	opts PickOptions) (Route, error) {
	info := infoPool.Get().(*C.lb_pick_info)
	defer infoPool.Put(info)
	flags := C.uint32_t(0)
	if opts.CachedOnly {
		flags |= C.LB_PICK_CACHED_ONLY
	}
	return withOutput(b, op, kindDSN, inputs,
		func(lb C.dlbgo_handle, in cIn, buf *C.char, n C.size_t) C.dlbgo_result {
			key, lsn := in[0], in[1] // in[1] is nil unless mode is pickKeyLSN
			if mode == pickLSN {
				key, lsn = nil, in[0]
			}
			return C.dlbgo_pick_opts(lb, key, lsn, flags, C.uint64_t(budget),
				C.uint32_t(opts.NoCaughtUp), buf, n, info)
		},
		func(dsn []byte, r C.dlbgo_result) Route { return b.route(dsn, r, info) })
}

// route is the Route of a pick's DSN and info.
func (b *Balancer) route(dsn []byte, r C.dlbgo_result, info *C.lb_pick_info) Route {
	addr := (*[C.LB_ADDR_BUFFER_SIZE]byte)(unsafe.Pointer(&info.addr[0]))[:]
	if i := bytes.IndexByte(addr, 0); i >= 0 {
		addr = addr[:i]
	}
	return Route{DSN: b.intern(dsn), Role: Role(r.role), Reason: Reason(r.reason),
		HostID: uint64(info.host_id), Addr: b.intern(addr)}
}

// PrimaryRoute returns the route of a write: the primary's DSN (password included), its
// host id and address, with ReasonWrite (counted as a routing decision in the metrics).
// Never blocks.
//
// Errors: ErrClosed.
func (b *Balancer) PrimaryRoute() (Route, error) {
	info := infoPool.Get().(*C.lb_pick_info)
	defer infoPool.Put(info)
	return withOutput(b, "PrimaryRoute", kindDSN, nil,
		func(lb C.dlbgo_handle, _ cIn, buf *C.char, n C.size_t) C.dlbgo_result {
			return C.dlbgo_primary_route(lb, buf, n, info)
		},
		func(dsn []byte, r C.dlbgo_result) Route { return b.route(dsn, r, info) })
}

// RecordedLSN returns the LSN currently recorded for key ("X/Y"), or "" when none is (or it
// expired). ctx is checked first.
//
// Blocking: reads the LSN store only (never blocks with the default in-memory one).
//
// Errors: ErrInvalidKey, ErrInvalidArgument, ErrStore, ErrClosed, ctx.Err().
func (b *Balancer) RecordedLSN(ctx context.Context, key string) (string, error) {
	const op = "RecordedLSN"
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := checkString(op, "key", key); err != nil {
		return "", err
	}
	return withOutput(b, op, kindLSN, []string{key},
		func(lb C.dlbgo_handle, in cIn, buf *C.char, n C.size_t) C.dlbgo_result {
			return C.dlbgo_recorded_lsn(lb, in[0], buf, n)
		},
		func(text []byte, _ C.dlbgo_result) string { return string(text) })
}

// PrimaryDSN returns the primary's DSN, for writes; it contains the password (hand it to
// the driver, never to a log). Counts as a routing decision with ReasonWrite in the
// metrics. Never blocks.
//
// Errors: ErrClosed.
func (b *Balancer) PrimaryDSN() (string, error) {
	return b.text("PrimaryDSN", kindDSN, func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result {
		return C.dlbgo_primary_dsn(lb, buf, n)
	})
}

// ReportFailure tells the balancer that the caller saw a network error on a host, given by
// its DSN exactly as handed out or by its "host:port". A replica leaves the rotation at
// once, until a probe that starts after this call succeeds; the monitor re-checks every host
// at once (throttled). Never blocks.
//
// Errors: ErrUnknownHost (not one of the balancer's hosts; the message does not repeat the
// argument, which may hold a password), ErrInvalidArgument, ErrClosed.
func (b *Balancer) ReportFailure(dsn string) error {
	const op = "ReportFailure"
	if err := checkString(op, "dsn", dsn); err != nil {
		return err
	}
	return b.withInputs(op, []string{dsn}, func(lb C.dlbgo_handle, in cIn) C.dlbgo_result {
		return C.dlbgo_report_failure(lb, in[0])
	})
}

// Metrics returns every metric in the Prometheus text exposition format (names prefixed
// "dlb_"): picks by role and reason, quarantines, replica state and lag, pool connections...
// It contains no secrets. Never blocks on I/O.
//
// Errors: ErrClosed.
func (b *Balancer) Metrics() (string, error) {
	return b.text("Metrics", kindMetrics, func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result {
		return C.dlbgo_metrics_text(lb, buf, n)
	})
}

// StatusJSON returns the health report (see Status) as JSON text, as the C API's
// lb_status_json writes it. It contains no password. Never blocks on I/O.
//
// Errors: ErrClosed.
func (b *Balancer) StatusJSON() (string, error) { return b.statusJSON("StatusJSON") }

func (b *Balancer) statusJSON(op string) (string, error) {
	return b.text(op, kindStatus, func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result {
		return C.dlbgo_status_json(lb, buf, n)
	})
}

// benchPickC makes n round-robin picks in a C loop, in one cgo call: the baseline of
// BenchmarkPickReplicaC, which measures the binding's overhead against it.
func (b *Balancer) benchPickC(n int) error {
	lb, err := b.acquire()
	if err != nil {
		return err
	}
	defer b.release()
	if r := C.dlbgo_bench_pick(lb, C.long(n)); r.status != C.LB_OK {
		return resultError("benchPickC", r)
	}
	return nil
}
