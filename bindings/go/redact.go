package dlb

// Printing and marshalling values that hold a secret (a DSN's password, a Redis URL's
// credentials) without it.

// #include "dlbgo.h"
import "C"

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// redactedText stands for a secret, and for a whole DSN dlb cannot parse.
const redactedText = "********"

// redactDSN returns dsn (key=value or URL) as dlb's lb_dsn_redact renders it: every value not
// known to be safe (the password first) replaced by "********", the host, port, user and
// database shown. One rule for the whole project: the Rust code, the status JSON and this
// binding redact with the same parser. Text dlb cannot parse, or cannot be given (a NUL
// byte, invalid UTF-8), gives "********" alone; "" stays "".
func redactDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if strings.IndexByte(dsn, 0) >= 0 {
		return redactedText
	}
	s := getScratch()
	defer putScratch(s)
	outCap := grow(len(dsn))
	for try := 0; try < maxAttempts; try++ {
		in, out := s.layout(outCap, dsn)
		var n C.size_t
		switch C.lb_dsn_redact(in[0], bufPtr(out), C.size_t(len(out)), &n) {
		case C.LB_OK:
			return string(out[:n])
		case C.LB_ERR_BUFFER_TOO_SMALL:
			outCap = grow(int(n))
		default:
			return redactedText
		}
	}
	return redactedText
}

// redisSafeQueryKeys are the Redis URL query parameters shown by redactURL.
var redisSafeQueryKeys = map[string]bool{"db": true, "protocol": true}

// redactURL returns u (a configured Redis URL) without its credentials, by the rule of dlb's
// Rust side (src/redact.rs, redact_url): everything between "://" and the last "@" becomes
// "***", so a password holding '/', ',', '@' or spaces is hidden too (text without "://"
// loses everything up to its last "@"); the query, where redis+unix:// URLs
// carry the password ("?pass=..."), keeps only the values of db and protocol; a fragment
// becomes "#***"; and when a '?' or '#' comes before that last "@" (a password in the query
// holding an "@", or a raw '?' or '#' in the user info, which Redis's URL parser does not
// take anyway), nothing after the scheme is shown. "" stays "".
func redactURL(u string) string {
	scheme, rest := "", u
	if i := strings.Index(u, "://"); i >= 0 {
		scheme, rest = u[:i+3], u[i+3:]
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if strings.ContainsAny(rest[:at], "?#") {
			return scheme + "***"
		}
		rest = "***" + rest[at:]
	}
	rest, fragment, hasFragment := strings.Cut(rest, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString(rest)
	if hasQuery {
		b.WriteByte('?')
		for i, pair := range strings.Split(query, "&") {
			if i > 0 {
				b.WriteByte('&')
			}
			k, _, hasValue := strings.Cut(pair, "=")
			name, err := url.QueryUnescape(k)
			switch {
			case err == nil && hasValue && redisSafeQueryKeys[name]:
				b.WriteString(pair)
			case err == nil && hasValue:
				b.WriteString(k + "=***")
			case pair != "":
				b.WriteString("***")
			}
		}
	}
	if hasFragment && fragment != "" {
		b.WriteString("#***")
	}
	return b.String()
}

// formatRedacted implements fmt.Formatter for a type whose fields hold a secret: %#v writes
// goString(), and every other verb formats str() (the redacted text) as a string operand
// (%v and %+v as %s; %s, %q, %x and %X with their flags, width and precision), so fmt never
// walks the fields themselves. typeName names the type in a bad verb's message.
func formatRedacted(f fmt.State, verb rune, typeName string, str, goString func() string) {
	switch verb {
	case 'v', 's', 'q', 'x', 'X':
		if verb == 'v' {
			if f.Flag('#') {
				io.WriteString(f, goString())
				return
			}
			verb = 's'
		}
		spec := []byte{'%'}
		for _, flag := range "+-# 0" {
			if f.Flag(int(flag)) {
				spec = append(spec, byte(flag))
			}
		}
		if w, ok := f.Width(); ok {
			spec = strconv.AppendInt(spec, int64(w), 10)
		}
		if p, ok := f.Precision(); ok {
			spec = append(spec, '.')
			spec = strconv.AppendInt(spec, int64(p), 10)
		}
		spec = append(spec, byte(verb))
		fmt.Fprintf(f, string(spec), str())
	default:
		fmt.Fprintf(f, "%%!%c(%s=%s)", verb, typeName, str())
	}
}
