// Package slog is a compile-only stand-in for Go 1.21's log/slog: the declarations (types,
// constants, signatures) of the part of its API this repository may use, with no behaviour
// (every function panics). bindings/go/test.sh type-checks the go1.21 files against it
// (GOPATH mode with this directory first, -tags go1.21) on a toolchain older than Go 1.21,
// where they are never compiled otherwise. Signatures as in Go 1.21's documentation
// (pkg.go.dev/log/slog); a declaration missing here fails the check ("undefined"): add it as
// Go 1.21 declares it.
package slog

import (
	"context"
	"io"
	"log"
	"time"
)

// Level is the importance of a record.
type Level int

// The levels.
const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

// Keys of the built-in attributes.
const (
	TimeKey    = "time"
	LevelKey   = "level"
	MessageKey = "msg"
	SourceKey  = "source"
)

func (l Level) String() string                   { panic(stub) }
func (l Level) Level() Level                     { panic(stub) }
func (l Level) MarshalJSON() ([]byte, error)     { panic(stub) }
func (l *Level) UnmarshalJSON(data []byte) error { panic(stub) }
func (l Level) MarshalText() ([]byte, error)     { panic(stub) }
func (l *Level) UnmarshalText(data []byte) error { panic(stub) }

// Leveler provides a Level.
type Leveler interface {
	Level() Level
}

// LevelVar is a Level variable.
type LevelVar struct{ _ [0]func() }

func (v *LevelVar) Level() Level   { panic(stub) }
func (v *LevelVar) Set(l Level)    { panic(stub) }
func (v *LevelVar) String() string { panic(stub) }

// Kind is the kind of a Value.
type Kind int

// The kinds.
const (
	KindAny Kind = iota
	KindBool
	KindDuration
	KindFloat64
	KindInt64
	KindString
	KindTime
	KindUint64
	KindGroup
	KindLogValuer
)

func (k Kind) String() string { panic(stub) }

// Value is any Go value, without allocation for small ones. Not comparable with ==.
type Value struct {
	_ [0]func()
	v any
}

func AnyValue(v any) Value                { panic(stub) }
func BoolValue(v bool) Value              { panic(stub) }
func DurationValue(v time.Duration) Value { panic(stub) }
func Float64Value(v float64) Value        { panic(stub) }
func Int64Value(v int64) Value            { panic(stub) }
func IntValue(v int) Value                { panic(stub) }
func StringValue(value string) Value      { panic(stub) }
func TimeValue(v time.Time) Value         { panic(stub) }
func Uint64Value(v uint64) Value          { panic(stub) }
func GroupValue(as ...Attr) Value         { panic(stub) }
func (v Value) Any() any                  { panic(stub) }
func (v Value) Bool() bool                { panic(stub) }
func (v Value) Duration() time.Duration   { panic(stub) }
func (v Value) Equal(w Value) bool        { panic(stub) }
func (v Value) Float64() float64          { panic(stub) }
func (v Value) Group() []Attr             { panic(stub) }
func (v Value) Int64() int64              { panic(stub) }
func (v Value) Kind() Kind                { panic(stub) }
func (v Value) LogValuer() LogValuer      { panic(stub) }
func (v Value) Resolve() Value            { panic(stub) }
func (v Value) String() string            { panic(stub) }
func (v Value) Time() time.Time           { panic(stub) }
func (v Value) Uint64() uint64            { panic(stub) }

// LogValuer is any Go value that can convert itself into a Value for logging.
type LogValuer interface {
	LogValue() Value
}

// Attr is a key-value pair.
type Attr struct {
	Key   string
	Value Value
}

func Any(key string, value any) Attr            { panic(stub) }
func Bool(key string, v bool) Attr              { panic(stub) }
func Duration(key string, v time.Duration) Attr { panic(stub) }
func Float64(key string, v float64) Attr        { panic(stub) }
func Group(key string, args ...any) Attr        { panic(stub) }
func Int(key string, value int) Attr            { panic(stub) }
func Int64(key string, value int64) Attr        { panic(stub) }
func String(key, value string) Attr             { panic(stub) }
func Time(key string, v time.Time) Attr         { panic(stub) }
func Uint64(key string, v uint64) Attr          { panic(stub) }
func (a Attr) Equal(b Attr) bool                { panic(stub) }
func (a Attr) String() string                   { panic(stub) }

// Record holds information about a log event.
type Record struct {
	Time    time.Time
	Message string
	Level   Level
	PC      uintptr
}

func NewRecord(t time.Time, level Level, msg string, pc uintptr) Record { panic(stub) }
func (r *Record) Add(args ...any)                                       { panic(stub) }
func (r *Record) AddAttrs(attrs ...Attr)                                { panic(stub) }
func (r Record) Attrs(f func(Attr) bool)                                { panic(stub) }
func (r Record) Clone() Record                                          { panic(stub) }
func (r Record) NumAttrs() int                                          { panic(stub) }

// Handler handles log records produced by a Logger.
type Handler interface {
	Enabled(context.Context, Level) bool
	Handle(context.Context, Record) error
	WithAttrs(attrs []Attr) Handler
	WithGroup(name string) Handler
}

// HandlerOptions are options for a TextHandler or JSONHandler.
type HandlerOptions struct {
	AddSource   bool
	Level       Leveler
	ReplaceAttr func(groups []string, a Attr) Attr
}

// JSONHandler writes records as line-delimited JSON objects.
type JSONHandler struct{ _ [0]func() }

func NewJSONHandler(w io.Writer, opts *HandlerOptions) *JSONHandler { panic(stub) }
func (h *JSONHandler) Enabled(_ context.Context, level Level) bool  { panic(stub) }
func (h *JSONHandler) Handle(_ context.Context, r Record) error     { panic(stub) }
func (h *JSONHandler) WithAttrs(attrs []Attr) Handler               { panic(stub) }
func (h *JSONHandler) WithGroup(name string) Handler                { panic(stub) }

// TextHandler writes records as key=value pairs.
type TextHandler struct{ _ [0]func() }

func NewTextHandler(w io.Writer, opts *HandlerOptions) *TextHandler { panic(stub) }
func (h *TextHandler) Enabled(_ context.Context, level Level) bool  { panic(stub) }
func (h *TextHandler) Handle(_ context.Context, r Record) error     { panic(stub) }
func (h *TextHandler) WithAttrs(attrs []Attr) Handler               { panic(stub) }
func (h *TextHandler) WithGroup(name string) Handler                { panic(stub) }

// Logger records structured information about each call to its methods.
type Logger struct{ _ [0]func() }

func New(h Handler) *Logger                                                     { panic(stub) }
func Default() *Logger                                                          { panic(stub) }
func SetDefault(l *Logger)                                                      { panic(stub) }
func NewLogLogger(h Handler, level Level) *log.Logger                           { panic(stub) }
func (l *Logger) Debug(msg string, args ...any)                                 { panic(stub) }
func (l *Logger) DebugContext(ctx context.Context, msg string, args ...any)     { panic(stub) }
func (l *Logger) Enabled(ctx context.Context, level Level) bool                 { panic(stub) }
func (l *Logger) Error(msg string, args ...any)                                 { panic(stub) }
func (l *Logger) ErrorContext(ctx context.Context, msg string, args ...any)     { panic(stub) }
func (l *Logger) Handler() Handler                                              { panic(stub) }
func (l *Logger) Info(msg string, args ...any)                                  { panic(stub) }
func (l *Logger) InfoContext(ctx context.Context, msg string, args ...any)      { panic(stub) }
func (l *Logger) Log(ctx context.Context, level Level, msg string, args ...any) { panic(stub) }
func (l *Logger) LogAttrs(ctx context.Context, level Level, msg string, attrs ...Attr) {
	panic(stub)
}
func (l *Logger) Warn(msg string, args ...any)                             { panic(stub) }
func (l *Logger) WarnContext(ctx context.Context, msg string, args ...any) { panic(stub) }
func (l *Logger) With(args ...any) *Logger                                 { panic(stub) }
func (l *Logger) WithGroup(name string) *Logger                            { panic(stub) }

const stub = "log/slog stand-in: compile-only (bindings/go/testdata/go121)"
