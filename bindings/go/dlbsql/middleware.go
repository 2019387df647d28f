package dlbsql

import (
	"context"
	"net/http"
)

// DefaultTokenHeader is the header Middleware carries the causal token in by default.
const DefaultTokenHeader = "Dlb-Lsn"

type tokenKey struct{}

// WithToken returns ctx carrying a causal token (an "X/Y" LSN from RecordLSN):
// UpToDateReplica then only returns a replica that has replayed it.
func WithToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// TokenFrom returns the causal token ctx carries, or "".
func TokenFrom(ctx context.Context) string {
	t, _ := ctx.Value(tokenKey{}).(string)
	return t
}

// MiddlewareConfig configures Middleware.
type MiddlewareConfig struct {
	// Key returns the request's sticking key ("" for none), e.g. the repository's path.
	// Required.
	Key func(*http.Request) string
	// IsWrite says whether the request writes. Default: any method but GET, HEAD, OPTIONS.
	IsWrite func(*http.Request) bool
	// Header names the request and response header carrying the causal token (default
	// DefaultTokenHeader). Ignored when Cookie is set.
	Header string
	// Cookie, when set, carries the token in this cookie instead of a header.
	Cookie string
}

// Middleware carries read-your-writes across requests. A request's causal token (from the
// header or cookie) is put in its context (see TokenFrom), so UpToDateReplica waits for it.
// After a write request succeeds (its handler sends a status below 400), the LSN of the
// request's key is recorded (RecordLSN) before the response starts, and sent back as the
// token for the client to carry to its next request. A failed recording is not an error for
// the response (a store failure still yields the write's LSN as the token).
func (lb *LoadBalancer) Middleware(cfg MiddlewareConfig) func(http.Handler) http.Handler {
	if cfg.IsWrite == nil {
		cfg.IsWrite = func(r *http.Request) bool {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
				return false
			}
			return true
		}
	}
	if cfg.Header == "" {
		cfg.Header = DefaultTokenHeader
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if token := cfg.token(r); token != "" {
				ctx = WithToken(ctx, token)
				r = r.WithContext(ctx)
			}
			key := cfg.Key(r)
			if key == "" || !cfg.IsWrite(r) {
				next.ServeHTTP(w, r)
				return
			}
			rw := &recording{ResponseWriter: w, record: func() {
				if lsn, _ := lb.RecordLSN(ctx, key); lsn != "" {
					cfg.send(w, lsn)
				}
			}}
			next.ServeHTTP(rw, r)
		})
	}
}

func (cfg *MiddlewareConfig) token(r *http.Request) string {
	if cfg.Cookie != "" {
		if c, err := r.Cookie(cfg.Cookie); err == nil {
			return c.Value
		}
		return ""
	}
	return r.Header.Get(cfg.Header)
}

func (cfg *MiddlewareConfig) send(w http.ResponseWriter, lsn string) {
	if cfg.Cookie != "" {
		http.SetCookie(w, &http.Cookie{Name: cfg.Cookie, Value: lsn, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteLaxMode})
		return
	}
	w.Header().Set(cfg.Header, lsn)
}

// recording runs record once, just before a successful response's header is sent.
type recording struct {
	http.ResponseWriter
	record  func()
	started bool
}

func (w *recording) WriteHeader(status int) {
	if !w.started {
		w.started = true
		if status < 400 {
			w.record()
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recording) Write(p []byte) (int, error) {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *recording) Unwrap() http.ResponseWriter { return w.ResponseWriter }
