package dlb

// #include <stdlib.h>
// #include "dlbgo.h"
import "C"

import (
	"errors"
	"strconv"
	"strings"
	"unsafe"
)

// Code is a status code of dlb's C API (an LB_ERR_* value of dlb.h).
//
// The Err* codes double as sentinel errors: every failure of this package is an *Error (or a
// *StoreError, which holds one) whose Code matches with errors.Is, for example
//
//	if errors.Is(err, dlb.ErrNoCaughtUpReplica) { /* read from the primary */ }
//
// Codes are stable; new ones may be added, so treat an unknown code as a generic failure.
type Code uint32

// The status codes of the C API, usable as sentinel errors with errors.Is.
const (
	// ErrInvalidArgument: an argument is out of range, not valid UTF-8, or contains a NUL
	// byte. The message names the argument.
	ErrInvalidArgument Code = C.LB_ERR_INVALID_ARGUMENT
	// ErrInvalidConfig: the configuration JSON is malformed or a field is invalid. The
	// message names the field as a JSON path ("pool.max_size", "replicas.hosts[1]").
	ErrInvalidConfig Code = C.LB_ERR_INVALID_CONFIG
	// ErrBufferTooSmall: an output kept growing while the binding retried with larger
	// buffers. The binding retries on its own; seeing it means the text grew every time.
	ErrBufferTooSmall Code = C.LB_ERR_BUFFER_TOO_SMALL
	// ErrPrimaryUnavailable: the primary cannot be reached. Retryable.
	ErrPrimaryUnavailable Code = C.LB_ERR_PRIMARY_UNAVAILABLE
	// ErrNoCaughtUpReplica: no replica has replayed the required LSN and the configuration
	// says "no_caught_up_replica": "error". Retryable (or read from the primary).
	ErrNoCaughtUpReplica Code = C.LB_ERR_NO_CAUGHT_UP_REPLICA
	// ErrStore: the LSN store failed. Retryable.
	ErrStore Code = C.LB_ERR_STORE
	// ErrPanic: dlb panicked (a bug); the balancer is still usable.
	ErrPanic Code = C.LB_ERR_PANIC
	// ErrInvalidLSN: a string is not a valid "X/Y" LSN.
	ErrInvalidLSN Code = C.LB_ERR_INVALID_LSN
	// ErrInvalidKey: a sticking key is empty or longer than MaxKeyLength bytes.
	ErrInvalidKey Code = C.LB_ERR_INVALID_KEY
	// ErrReplicaUnavailable: a replica cannot be reached. Retryable.
	ErrReplicaUnavailable Code = C.LB_ERR_REPLICA_UNAVAILABLE
	// ErrQuery: a query dlb issued itself (reading the primary's WAL position) failed.
	// Retryable.
	ErrQuery Code = C.LB_ERR_QUERY
	// ErrUnknownHost: ReportFailure was given a DSN or host:port that is none of the
	// balancer's hosts.
	ErrUnknownHost Code = C.LB_ERR_UNKNOWN_HOST
	// ErrInternal: an error the C API has no specific code for.
	ErrInternal Code = C.LB_ERR_INTERNAL
	// ErrLoggerUnavailable: SetLogHandler cannot install dlb's logger because other Rust
	// code in the process installed one first.
	ErrLoggerUnavailable Code = C.LB_ERR_LOGGER_UNAVAILABLE
	// ErrForked: the Balancer was opened by another process, before a fork (a child of a
	// process that forks after Open): open a new one in this process.
	ErrForked Code = C.LB_ERR_FORKED
)

// ErrClosed is returned by every method of a Balancer after Close (and of a nil *Balancer).
var ErrClosed = errors.New("dlb: balancer is closed")

// String returns the C API's short description of the code ("invalid configuration", ...),
// or "unknown status (N)" for a code this version does not know.
func (c Code) String() string {
	s := C.GoString(C.lb_status_str(C.lb_status(c)))
	if s == "unknown status" {
		return s + " (" + strconv.FormatUint(uint64(c), 10) + ")"
	}
	return s
}

// Error makes a Code usable as a sentinel error: "dlb: " followed by its description.
func (c Code) Error() string { return "dlb: " + c.String() }

// Retryable reports whether a call that failed with this code may succeed when retried
// later (the cluster can change state): ErrPrimaryUnavailable, ErrNoCaughtUpReplica,
// ErrStore, ErrReplicaUnavailable and ErrQuery.
func (c Code) Retryable() bool { return bool(C.lb_status_is_retryable(C.lb_status(c))) }

// Error is a failure of a dlb call: the C API's status code, the binding's operation and the
// C library's message, which names the offending argument or field and never contains a
// password.
//
// errors.Is(err, dlb.ErrInvalidConfig) (or any other Code) matches an *Error with that code;
// errors.As gives access to the fields.
type Error struct {
	// Op is the Balancer method (or package function) that failed, e.g. "PickReplica".
	Op string
	// Code is the status code.
	Code Code
	// Message is the detail recorded by the C library, without the C function's name it
	// starts with (or by the binding, for checks it makes itself before calling into C). It
	// may be empty.
	Message string
}

// Error returns "dlb: Op: message" (the code's description when there is no message).
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code.String()
	}
	return "dlb: " + e.Op + ": " + msg
}

// Is reports whether target is the Code of e, so that errors.Is(err, dlb.ErrInvalidLSN)
// works.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// StoreError is the error RecordLSN returns when the LSN store fails after the primary's
// LSN was read: the write happened at LSN, only recording it failed. Carry LSN as a causal
// token (PickReplicaMinLSN), or retry with RecordLSNValue.
//
// It wraps an *Error with Code ErrStore: errors.Is(err, dlb.ErrStore) matches it, and
// errors.As gives either the *StoreError or the *Error.
type StoreError struct {
	// Err is the failure itself (Op "RecordLSN", Code ErrStore, Message).
	Err *Error
	// LSN is the LSN that was read but could not be stored, "X/Y".
	LSN string
}

// Error returns the wrapped error's text and the LSN.
func (e *StoreError) Error() string {
	return e.Err.Error() + " (LSN " + e.LSN + " not stored)"
}

// Unwrap returns the *Error.
func (e *StoreError) Unwrap() error { return e.Err }

// IsRetryable reports whether err is a dlb error that may succeed when the call is retried
// later (see Code.Retryable).
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Code.Retryable()
	}
	var c Code
	if errors.As(err, &c) {
		return c.Retryable()
	}
	return false
}

// resultError turns a failed C result into an *Error, freeing its message.
func resultError(op string, r C.dlbgo_result) error {
	e := &Error{Op: op, Code: Code(r.status)}
	if r.err != nil {
		e.Message = trimCFunc(C.GoString(r.err))
		C.free(unsafe.Pointer(r.err))
	}
	return e
}

// argError is a failure detected by the binding before calling into C.
func argError(op, msg string) error {
	return &Error{Op: op, Code: ErrInvalidArgument, Message: msg}
}

// trimCFunc removes the "lb_function_name: " prefix of a C API message: the Go error names
// the Go operation instead.
func trimCFunc(msg string) string {
	if !strings.HasPrefix(msg, "lb_") {
		return msg
	}
	for i := 3; i < len(msg); i++ {
		c := msg[i]
		switch {
		case c == ':' && i+1 < len(msg) && msg[i+1] == ' ':
			return msg[i+2:]
		case c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
		default:
			return msg
		}
	}
	return msg
}
