package dlbsql

import (
	"context"
	"errors"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

// DefaultTokenHeader is the header Middleware carries the causal token in by default.
const DefaultTokenHeader = "Dlb-Lsn"

type tokenKey struct{}

// WithToken returns ctx carrying a causal token (an "X/Y" LSN from RecordLSN, not signed:
// Middleware puts the LSN of a verified token here): UpToDateReplica then only returns a
// replica that has replayed it.
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
	// Secret signs the tokens sent and verifies the tokens received (HMAC-SHA256, see
	// SignToken): at least MinSecretLength bytes, the same in every instance that must accept
	// another's tokens (and in a Ruby service using DLB::RackMiddleware with the same
	// secret). Give each database cluster its own secret: a token of another cluster is
	// then rejected as forged. Required.
	Secret []byte
	// RejectedToken, when set, is called for a token that is ignored (err is
	// ErrMalformedToken or ErrForgedToken), instead of the default: a line in the standard
	// logger, at most one a second. The request goes on without a token either way, and
	// DBLoadBalancer.RejectedTokens counts it.
	RejectedToken func(r *http.Request, err error)
}

// TokenCounts counts the causal tokens Middleware ignored.
type TokenCounts struct {
	// Malformed: not "LSN--MAC" (ErrMalformedToken).
	Malformed uint64
	// Forged: a MAC that is not the secret's (ErrForgedToken): forged, altered, or signed by
	// another cluster's middleware.
	Forged uint64
}

// RejectedTokens returns how many causal tokens the middleware ignored so far.
func (lb *DBLoadBalancer) RejectedTokens() TokenCounts {
	return TokenCounts{Malformed: lb.malformedTokens.Load(), Forged: lb.forgedTokens.Load()}
}

// logRejected is the default RejectedToken: at most one line a second (a client sending bad
// tokens cannot flood the log), with the count so far.
func (lb *DBLoadBalancer) logRejected(r *http.Request, err error) {
	now := time.Now().UnixNano()
	last := lb.lastTokenLog.Load()
	if now-last < int64(time.Second) || !lb.lastTokenLog.CompareAndSwap(last, now) {
		return
	}
	c := lb.RejectedTokens()
	log.Printf("%v from %s, ignored (ignored so far: %d malformed, %d forged)", err,
		r.RemoteAddr, c.Malformed, c.Forged)
}

// tokenCounters are the DBLoadBalancer's counts of rejected tokens.
type tokenCounters struct {
	malformedTokens, forgedTokens atomic.Uint64
	lastTokenLog                  atomic.Int64 // UnixNano of the default log's last line
}

// Middleware carries read-your-writes across requests. A request's causal token (from the
// header or cookie) is verified with cfg.Secret and its LSN put in the request's context (see
// TokenFrom), so UpToDateReplica waits for it. A malformed or forged token (or one signed with
// another secret) is ignored: counted (RejectedTokens), reported (cfg.RejectedToken), and the
// request goes on as one without a token; it never fails the request.
// After a write request succeeds (its handler sends a status below 400), the LSN of the
// request's key is recorded (RecordLSN) before the response starts, and sent back as the
// token for the client to carry to its next request. A failed recording is not an error for
// the response (a store failure still yields the write's LSN as the token). The token sent is
// signed (SignToken).
//
// Middleware panics when cfg.Key is nil or cfg.Secret is shorter than MinSecretLength: a
// configuration error, found when the handler is built.
func (lb *DBLoadBalancer) Middleware(cfg MiddlewareConfig) func(http.Handler) http.Handler {
	if cfg.Key == nil {
		panic("dlbsql: MiddlewareConfig.Key is nil")
	}
	if len(cfg.Secret) < MinSecretLength {
		panic("dlbsql: MiddlewareConfig.Secret is shorter than 16 bytes")
	}
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	if cfg.RejectedToken == nil {
		cfg.RejectedToken = lb.logRejected
	}
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
				lsn, err := VerifyToken(cfg.Secret, token)
				if err == nil {
					ctx = WithToken(ctx, lsn)
					r = r.WithContext(ctx)
				} else {
					if errors.Is(err, ErrForgedToken) {
						lb.forgedTokens.Add(1)
					} else {
						lb.malformedTokens.Add(1)
					}
					cfg.RejectedToken(r, err)
				}
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
		http.SetCookie(w, &http.Cookie{Name: cfg.Cookie, Value: SignToken(cfg.Secret, lsn),
			Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		return
	}
	w.Header().Set(cfg.Header, SignToken(cfg.Secret, lsn))
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
