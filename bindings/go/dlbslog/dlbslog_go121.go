//go:build go1.21

package dlbslog

import (
	"context"
	"log/slog"

	dlb "github.com/dlb-project/dlb/bindings/go"
)

// Level maps a dlb log level to slog's.
func Level(l dlb.LogLevel) slog.Level {
	switch l {
	case dlb.LogError:
		return slog.LevelError
	case dlb.LogWarn:
		return slog.LevelWarn
	case dlb.LogInfo:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// Forward sends dlb's log records of level and more severe to logger, as records with the
// message and the attribute component=dlb. Process-wide (it replaces any dlb.SetLogHandler
// handler); dlb.SetLogHandler(dlb.LogOff, nil) stops it.
//
// Errors: those of dlb.SetLogHandler.
func Forward(logger *slog.Logger, level dlb.LogLevel) error {
	return dlb.SetLogHandler(level, func(l dlb.LogLevel, msg string) {
		logger.LogAttrs(context.Background(), Level(l), msg, slog.String("component", "dlb"))
	})
}

// Events logs every host event of b to logger until the returned stop is called (or b is
// closed): "dlb host <event>" at warn level for quarantined, info otherwise, with the
// host's address, id, health, reason, lag and last error as attributes.
func Events(b *dlb.Balancer, logger *slog.Logger) (stop func()) {
	return b.WatchEvents(func(e dlb.HostEvent) {
		warn, msg, fields := eventRecord(e)
		level := slog.LevelInfo
		if warn {
			level = slog.LevelWarn
		}
		attrs := make([]slog.Attr, len(fields))
		for i, f := range fields {
			switch f.kind {
			case 'u':
				attrs[i] = slog.Uint64(f.key, f.u)
			case 'f':
				attrs[i] = slog.Float64(f.key, f.f)
			default:
				attrs[i] = slog.String(f.key, f.s)
			}
		}
		logger.LogAttrs(context.Background(), level, msg, attrs...)
	})
}
