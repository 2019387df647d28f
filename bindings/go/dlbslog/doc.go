// Package dlbslog bridges dlb to structured logging (slog): host events become records with
// fields (host, host_id, event, health, reason, lag_bytes, lag_seconds, error), and dlb's own
// log records are forwarded with their level.
//
// With Go 1.21 and later it takes log/slog's *slog.Logger (dlbslog_go121.go). Before 1.21,
// which has no log/slog, it takes golang.org/x/exp/slog's Logger, the same design (Debian's
// golang-golang-x-exp-dev; dlbslog.go). It lives in its own module (github.com/dlb-project/dlb/bindings/go/dlbslog)
// so that the core package keeps no dependency.
package dlbslog
