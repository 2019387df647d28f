package dlb

// #include <stdint.h>
// #include "dlbgo.h"
import "C"

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// LogLevel is the severity of one of dlb's log records, or a filter for SetLogHandler.
type LogLevel uint32

// Log levels, from none to the most verbose.
const (
	LogOff   LogLevel = C.LB_LOG_OFF
	LogError LogLevel = C.LB_LOG_ERROR
	// LogWarn: a replica quarantined, a primary check failed...
	LogWarn LogLevel = C.LB_LOG_WARN
	// LogInfo: start-up, a replica healthy or re-admitted...
	LogInfo LogLevel = C.LB_LOG_INFO
	// LogDebug: every check's outcome.
	LogDebug LogLevel = C.LB_LOG_DEBUG
	LogTrace LogLevel = C.LB_LOG_TRACE
)

// String returns "off", "error", "warn", "info", "debug" or "trace".
func (l LogLevel) String() string {
	switch l {
	case LogOff:
		return "off"
	case LogError:
		return "error"
	case LogWarn:
		return "warn"
	case LogInfo:
		return "info"
	case LogDebug:
		return "debug"
	case LogTrace:
		return "trace"
	}
	return "LogLevel(" + strconv.FormatUint(uint64(l), 10) + ")"
}

// LogHandler receives one of dlb's log records. Messages never contain a password; records
// of the libraries dlb uses come with their origin as a prefix ("r2d2: ...").
//
// It is called from dlb's own threads (the health monitor) as well as from goroutines
// calling a Balancer, possibly concurrently: it must be safe for concurrent use and should
// return quickly. A panic in it is recovered and the record dropped (it cannot unwind
// through dlb's C frames).
type LogHandler func(level LogLevel, msg string)

var (
	logMu      sync.Mutex // serializes SetLogHandler
	logHandler atomic.Pointer[LogHandler]
)

// SetLogHandler routes dlb's log records of level and more severe (LogError .. LogTrace) to
// h. A nil h, or LogOff, turns forwarding off. It is process-wide: one handler for every
// Balancer. When SetLogHandler returns, the previous handler is no longer running and will
// not be called again. A handler must not call SetLogHandler itself (it would deadlock).
//
// Errors: ErrInvalidArgument (level above LogTrace), ErrLoggerUnavailable (other Rust code
// in the process installed a logger first).
func SetLogHandler(level LogLevel, h LogHandler) error {
	const op = "SetLogHandler"
	logMu.Lock()
	defer logMu.Unlock()
	if h == nil || level == LogOff {
		if r := C.dlbgo_set_log_callback(C.LB_LOG_OFF, 0); r.status != C.LB_OK {
			return resultError(op, r)
		}
		logHandler.Store(nil)
		return nil
	}
	if level > LogTrace {
		return argError(op, "argument `level` must be at most LogTrace (got "+level.String()+")")
	}
	old := logHandler.Swap(&h)
	if r := C.dlbgo_set_log_callback(C.uint32_t(level), 1); r.status != C.LB_OK {
		logHandler.Store(old)
		return resultError(op, r)
	}
	return nil
}

//export dlbgoLog
func dlbgoLog(level C.uint32_t, msg *C.char) {
	h := logHandler.Load()
	if h == nil {
		return
	}
	defer func() { _ = recover() }()
	(*h)(LogLevel(level), C.GoString(msg))
}
