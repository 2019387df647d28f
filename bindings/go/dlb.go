package dlb

// #cgo CFLAGS: -I${SRCDIR}/../../include -I${SRCDIR}
// #include <stdlib.h>
// #include "dlbgo.h"
import "C"

import (
	"runtime"
	"strconv"
	"strings"
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

// lsnBufSize holds any LSN text and its NUL.
const lsnBufSize = C.LB_LSN_MAX_LENGTH + 1

// Output buffers: the first try of a call uses at least minOutput bytes (more when an
// earlier call of the same kind needed more); after LB_ERR_BUFFER_TOO_SMALL the call is
// retried with the length reported plus some slack, at most maxAttempts times in all.
const (
	minOutput   = 256
	maxAttempts = 8
	// Scratch buffers larger than this are not kept for reuse.
	maxPooled = 64 << 10
)

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
}

// maxInterned bounds Balancer.dsns (hosts may come and go with DNS discovery).
const maxInterned = 64

// intern returns p as a string, the same one for the same DSN.
func (b *Balancer) intern(p []byte) string {
	if m := b.dsns.Load(); m != nil {
		if s, ok := (*m)[string(p)]; ok { // no allocation for the lookup
			return s
		}
	}
	s := string(p)
	b.dsnsMu.Lock()
	defer b.dsnsMu.Unlock()
	next := map[string]string{s: s}
	if m := b.dsns.Load(); m != nil && len(*m) < maxInterned {
		for k, v := range *m {
			next[k] = v
		}
	}
	b.dsns.Store(&next)
	return s
}

// Kinds of output text, for Balancer.hints.
const (
	kindDSN = iota
	kindStatus
	kindMetrics
	numKinds
)

// Open creates a balancer from a JSON configuration, e.g.
//
//	{"primary": "host=db1 port=5432 user=app dbname=app",
//	 "replicas": {"hosts": ["db2:5432", "db3:5432"]}}
//
// (see the configuration table in dlb's README.md; unknown fields are rejected).
//
// Blocking: Open runs one health check of every host before returning, bounded by the
// configuration's probe_timeout_ms (default 100 ms), then starts a background monitor
// thread. A host that is down does not make Open fail: replicas become eligible once the
// monitor sees them healthy.
//
// Errors: ErrInvalidConfig (the message names the offending field as a JSON path),
// ErrInvalidArgument (the JSON is not valid UTF-8 or contains a NUL byte).
func Open(configJSON string) (*Balancer, error) {
	const op = "Open"
	if strings.IndexByte(configJSON, 0) >= 0 {
		return nil, argError(op, "argument `configJSON` contains a NUL byte")
	}
	cjson := C.CString(configJSON)
	defer C.free(unsafe.Pointer(cjson))
	r := C.dlbgo_balancer_new(cjson)
	if r.status != C.LB_OK {
		return nil, resultError(op, r)
	}
	b := &Balancer{h: r.handle}
	runtime.SetFinalizer(b, (*Balancer).Close)
	return b, nil
}

// Close stops the balancer's monitor thread, closes its connection pools and frees it.
//
// It waits for calls in progress on other goroutines to return first; calls made after
// Close return ErrClosed. Closing again is a no-op. Close always returns nil (the error
// result is there to satisfy io.Closer).
//
// Blocking: waits for the monitor thread to exit (at most about one probe_timeout_ms).
func (b *Balancer) Close() error {
	if b == nil {
		return nil
	}
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

// scratch is a reusable buffer for a call's NUL-terminated inputs and its output text.
type scratch struct{ b []byte }

var scratchPool = sync.Pool{New: func() any { return &scratch{b: make([]byte, 2*minOutput)} }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) {
	if cap(s.b) <= maxPooled {
		scratchPool.Put(s)
	}
}

// layout places the NUL-terminated inputs at the start of s's buffer, followed by an output
// area of at least outCap bytes, and returns pointers to the inputs (in order) and to the
// output area; at most two inputs. Go memory holding no Go pointers may be passed to C for
// the duration of a call.
func (s *scratch) layout(outCap int, inputs ...string) (in [2]*C.char, out []byte) {
	need := outCap
	for _, v := range inputs {
		need += len(v) + 1
	}
	if cap(s.b) < need {
		s.b = make([]byte, need)
	}
	buf := s.b[:cap(s.b)]
	off := 0
	for i, v := range inputs {
		copy(buf[off:], v)
		buf[off+len(v)] = 0
		in[i] = (*C.char)(unsafe.Pointer(&buf[off]))
		off += len(v) + 1
	}
	return in, buf[off:]
}

func bufPtr(b []byte) *C.char { return (*C.char)(unsafe.Pointer(&b[0])) }

// checkString rejects a string C would see cut short at a NUL byte.
func checkString(op, name, v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return argError(op, "argument `"+name+"` contains a NUL byte")
	}
	return nil
}

// grow returns the capacity for the next try after LB_ERR_BUFFER_TOO_SMALL reported `need`
// bytes (without the NUL): the text may change between calls, so leave some slack.
func grow(need int) int { return need + 1 + need/8 + 64 }

// firstCap is the capacity of a call's first try, from the longest text seen so far.
func firstCap(hint *atomic.Int64) int {
	n := int(hint.Load())
	if n < minOutput {
		return minOutput
	}
	return grow(n)
}

// noteLen records a text length for firstCap.
func noteLen(hint *atomic.Int64, n int) {
	for {
		old := hint.Load()
		if int64(n) <= old || hint.CompareAndSwap(old, int64(n)) {
			return
		}
	}
}

func tooManyTries(op string) error {
	return &Error{Op: op, Code: ErrBufferTooSmall,
		Message: "the output kept growing after " + strconv.Itoa(maxAttempts) + " tries"}
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
// Errors: ErrInvalidKey (empty or longer than MaxKeyLength), ErrInvalidArgument,
// ErrPrimaryUnavailable, ErrQuery, ErrStore, ErrClosed. ErrStore comes after the LSN was
// read (the write happened; only recording it failed) as a *StoreError whose LSN field holds
// it: carry it as a causal token (PickReplicaMinLSN) or retry with RecordLSNValue.
//
//	lsn, err := b.RecordLSN(key)
//	var se *dlb.StoreError
//	if errors.As(err, &se) {
//		lsn = se.LSN // still a valid causal token
//	}
func (b *Balancer) RecordLSN(key string) (string, error) {
	const op = "RecordLSN"
	if err := checkString(op, "key", key); err != nil {
		return "", err
	}
	lb, err := b.acquire()
	if err != nil {
		return "", err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, out := s.layout(lsnBufSize, key)
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
// Errors: ErrInvalidKey, ErrInvalidLSN, ErrInvalidArgument, ErrStore, ErrClosed.
func (b *Balancer) RecordLSNValue(key, lsn string) error {
	const op = "RecordLSNValue"
	if err := checkString(op, "key", key); err != nil {
		return err
	}
	if err := checkString(op, "lsn", lsn); err != nil {
		return err
	}
	lb, err := b.acquire()
	if err != nil {
		return err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, _ := s.layout(0, key, lsn)
	if r := C.dlbgo_record_lsn_value(lb, in[0], in[1]); r.status != C.LB_OK {
		return resultError(op, r)
	}
	return nil
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
// Errors: ErrInvalidArgument (ttl not positive), ErrInvalidKey, ErrStore, ErrClosed.
func (b *Balancer) ForcePrimary(key string, ttl time.Duration) error {
	const op = "ForcePrimary"
	if err := checkString(op, "key", key); err != nil {
		return err
	}
	if ttl <= 0 {
		return argError(op, "argument `ttl` must be positive (got "+ttl.String()+")")
	}
	ms := uint64((ttl + time.Millisecond - 1) / time.Millisecond)
	lb, err := b.acquire()
	if err != nil {
		return err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, _ := s.layout(0, key)
	if r := C.dlbgo_force_primary(lb, in[0], C.uint64_t(ms)); r.status != C.LB_OK {
		return resultError(op, r)
	}
	return nil
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
// sticky_check_budget_ms (default 100 ms) in total.
//
// The returned DSN contains the password (see Route).
//
// Errors: ErrInvalidKey (longer than MaxKeyLength), ErrInvalidArgument,
// ErrNoCaughtUpReplica (only with "no_caught_up_replica": "error"), ErrClosed.
func (b *Balancer) PickReplica(key string) (Route, error) {
	const op = "PickReplica"
	if err := checkString(op, "key", key); err != nil {
		return Route{}, err
	}
	if key == NoKey {
		return b.pick(op, false)
	}
	return b.pick(op, false, key)
}

// PickReplicaMinLSN picks, in round-robin order, a replica that has replayed at least
// minLSN ("X/Y", a causal token from RecordLSN), else the primary with ReasonNotCaughtUp
// (or ErrNoCaughtUpReplica under the "error" policy).
//
// Blocking: only when the cached replay positions show no replica caught up, it asks the
// replicas live for at most sticky_check_budget_ms in total.
//
// Errors: ErrInvalidLSN, ErrInvalidArgument, ErrNoCaughtUpReplica, ErrClosed.
func (b *Balancer) PickReplicaMinLSN(minLSN string) (Route, error) {
	const op = "PickReplicaMinLSN"
	if err := checkString(op, "minLSN", minLSN); err != nil {
		return Route{}, err
	}
	return b.pick(op, true, minLSN)
}

// pick runs lb_pick_replica (arg: none, or the key) or, when minLSN is set,
// lb_pick_replica_min_lsn (arg: the LSN), growing the DSN buffer as needed. Every try is a
// new pick.
func (b *Balancer) pick(op string, minLSN bool, arg ...string) (Route, error) {
	lb, err := b.acquire()
	if err != nil {
		return Route{}, err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	outCap := firstCap(&b.hints[kindDSN])
	for try := 0; try < maxAttempts; try++ {
		in, out := s.layout(outCap, arg...)
		var r C.dlbgo_result
		if minLSN {
			r = C.dlbgo_pick_replica_min_lsn(lb, in[0], bufPtr(out), C.size_t(len(out)))
		} else { // in[0] is nil without a key: round-robin
			r = C.dlbgo_pick_replica(lb, in[0], bufPtr(out), C.size_t(len(out)))
		}
		switch r.status {
		case C.LB_OK:
			return Route{DSN: b.intern(out[:r.len]), Role: Role(r.role), Reason: Reason(r.reason)}, nil
		case C.LB_ERR_BUFFER_TOO_SMALL:
			noteLen(&b.hints[kindDSN], int(r.len))
			outCap = grow(int(r.len))
		default:
			return Route{}, resultError(op, r)
		}
	}
	return Route{}, tooManyTries(op)
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
	lb, err := b.acquire()
	if err != nil {
		return err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, _ := s.layout(0, dsn)
	if r := C.dlbgo_report_failure(lb, in[0]); r.status != C.LB_OK {
		return resultError(op, r)
	}
	return nil
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

// Status returns a JSON health report: the primary and every replica (addr, redacted dsn,
// state, quarantine reason, replay_lsn, lag_bytes, lag_seconds, last_error, pool sizes),
// primary_lsn, checks and healthy_replicas. It contains no password. Never blocks on I/O.
// StatusReport decodes it.
//
// Errors: ErrClosed.
func (b *Balancer) Status() (string, error) {
	return b.text("Status", kindStatus, func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result {
		return C.dlbgo_status_json(lb, buf, n)
	})
}

// text runs an output-only call, growing the buffer until the text fits.
func (b *Balancer) text(op string, kind int,
	call func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result) (string, error) {
	lb, err := b.acquire()
	if err != nil {
		return "", err
	}
	defer b.release()
	hint := &b.hints[kind]
	s := getScratch()
	defer putScratch(s)
	outCap := firstCap(hint)
	for try := 0; try < maxAttempts; try++ {
		_, out := s.layout(outCap)
		r := call(lb, bufPtr(out), C.size_t(len(out)))
		switch r.status {
		case C.LB_OK:
			noteLen(hint, int(r.len))
			if kind == kindDSN {
				return b.intern(out[:r.len]), nil
			}
			return string(out[:r.len]), nil
		case C.LB_ERR_BUFFER_TOO_SMALL:
			noteLen(hint, int(r.len))
			outCap = grow(int(r.len))
		default:
			return "", resultError(op, r)
		}
	}
	return "", tooManyTries(op)
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
