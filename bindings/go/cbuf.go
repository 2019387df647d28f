package dlb

// The plumbing of the C calls: NUL-terminated inputs, output buffers grown and retried after
// LB_ERR_BUFFER_TOO_SMALL, and the Go strings made from the text.

// #include <stdlib.h>
// #include "dlbgo.h"
import "C"

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Output buffers: the first try of a call uses at least minOutput bytes (more when an
// earlier call of the same kind needed more); after LB_ERR_BUFFER_TOO_SMALL the call is
// retried with the length reported plus some slack, at most maxAttempts times in all.
const (
	minOutput   = 256
	maxAttempts = 8
	// Scratch buffers larger than this are not kept for reuse.
	maxPooled = 64 << 10
)

// Kinds of output text, for Balancer.hints.
const (
	kindDSN = iota
	kindLSN
	kindStatus
	kindMetrics
	kindEvent
	numKinds
)

// cIn is a call's NUL-terminated inputs, in order (nil where there are fewer).
type cIn = [2]*C.char

// withInputs runs call with the inputs NUL-terminated (at most two), on the balancer's
// handle, for a C function that writes no text.
func (b *Balancer) withInputs(op string, inputs []string,
	call func(lb C.dlbgo_handle, in cIn) C.dlbgo_result) error {
	lb, err := b.acquire()
	if err != nil {
		return err
	}
	defer b.release()
	s := getScratch()
	defer putScratch(s)
	in, _ := s.layout(0, inputs...)
	if r := call(lb, in); r.status != C.LB_OK {
		return resultError(op, r)
	}
	return nil
}

// withOutput runs call with the inputs NUL-terminated (at most two) and an output buffer,
// on the balancer's handle, growing the buffer after LB_ERR_BUFFER_TOO_SMALL until the text
// fits; every try is a new call. On LB_OK it returns done of the text (which lives in a
// reused buffer: done must copy what it keeps) and of the call's result.
func withOutput[T any](b *Balancer, op string, kind int, inputs []string,
	call func(lb C.dlbgo_handle, in cIn, buf *C.char, n C.size_t) C.dlbgo_result,
	done func(text []byte, r C.dlbgo_result) T) (T, error) {
	var zero T
	lb, err := b.acquire()
	if err != nil {
		return zero, err
	}
	defer b.release()
	hint := &b.hints[kind]
	s := getScratch()
	defer putScratch(s)
	outCap := firstCap(hint)
	for try := 0; try < maxAttempts; try++ {
		in, out := s.layout(outCap, inputs...)
		r := call(lb, in, bufPtr(out), C.size_t(len(out)))
		switch r.status {
		case C.LB_OK:
			noteLen(hint, int(r.len))
			return done(out[:r.len], r), nil
		case C.LB_ERR_BUFFER_TOO_SMALL:
			noteLen(hint, int(r.len))
			outCap = grow(int(r.len))
		default:
			return zero, resultError(op, r)
		}
	}
	return zero, &Error{Op: op, Code: ErrBufferTooSmall,
		Message: "the output kept growing after " + strconv.Itoa(maxAttempts) + " tries"}
}

// text runs an output-only call and returns its text: a DSN interned, anything else copied.
func (b *Balancer) text(op string, kind int,
	call func(lb C.dlbgo_handle, buf *C.char, n C.size_t) C.dlbgo_result) (string, error) {
	return withOutput(b, op, kind, nil,
		func(lb C.dlbgo_handle, _ cIn, buf *C.char, n C.size_t) C.dlbgo_result {
			return call(lb, buf, n)
		},
		func(text []byte, _ C.dlbgo_result) string {
			if kind == kindDSN {
				return b.intern(text)
			}
			return string(text)
		})
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
func (s *scratch) layout(outCap int, inputs ...string) (in cIn, out []byte) {
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

// cString is v as a C string (malloc'd: the caller frees it), or an error when v holds a NUL
// byte.
func cString(op, name, v string) (*C.char, error) {
	if err := checkString(op, name, v); err != nil {
		return nil, err
	}
	return C.CString(v), nil
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
