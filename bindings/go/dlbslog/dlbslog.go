// Package dlbslog bridges dlb to structured logging (slog): host events become records with
// fields (host, host_id, event, health, reason, lag_bytes, lag_seconds, error), and dlb's own
// log records are forwarded with their level.
//
// Go 1.19 (this repository's toolchain) has no log/slog: the bridge uses
// golang.org/x/exp/slog, the same design (Debian's golang-golang-x-exp-dev). It lives in its
// own module (dlb/bindings/go/dlbslog) so that the core package keeps no dependency.
package dlbslog

import (
	dlb "dlb/bindings/go"

	"golang.org/x/exp/slog"
)

// Level maps a dlb log level to slog's.
func Level(l dlb.LogLevel) slog.Level {
	switch l {
	case dlb.LogError:
		return slog.ErrorLevel
	case dlb.LogWarn:
		return slog.WarnLevel
	case dlb.LogInfo:
		return slog.InfoLevel
	}
	return slog.DebugLevel
}

// Forward sends dlb's log records of level and more severe to logger, as records with the
// message and the attribute component=dlb. Process-wide (it replaces any dlb.SetLogHandler
// handler); dlb.SetLogHandler(dlb.LogOff, nil) stops it.
//
// Errors: those of dlb.SetLogHandler.
func Forward(logger slog.Logger, level dlb.LogLevel) error {
	return dlb.SetLogHandler(level, func(l dlb.LogLevel, msg string) {
		logger.LogAttrs(Level(l), msg, slog.String("component", "dlb"))
	})
}

// Events logs every host event of b to logger until the returned stop is called (or b is
// closed): "dlb host <event>" at warn level for quarantined, info otherwise, with the
// host's address, id, health, reason, lag and last error as attributes.
func Events(b *dlb.Balancer, logger slog.Logger) (stop func()) {
	return b.WatchEvents(func(e dlb.HostEvent) {
		level := slog.InfoLevel
		if e.Event == dlb.EventQuarantined {
			level = slog.WarnLevel
		}
		attrs := []slog.Attr{
			slog.String("component", "dlb"),
			slog.String("event", e.Event),
			slog.String("host", e.Addr),
			slog.Uint64("host_id", e.HostID),
			slog.String("health", e.Health),
			slog.Uint64("lag_bytes", e.LagBytes),
		}
		if e.LagSeconds != nil {
			attrs = append(attrs, slog.Float64("lag_seconds", *e.LagSeconds))
		}
		if e.Reason != "" {
			attrs = append(attrs, slog.String("reason", e.Reason))
		}
		if e.Error != "" {
			attrs = append(attrs, slog.String("error", e.Error))
		}
		if e.Dropped > 0 {
			attrs = append(attrs, slog.Uint64("dropped", e.Dropped))
		}
		logger.LogAttrs(level, "dlb host "+e.Event, attrs...)
	})
}
