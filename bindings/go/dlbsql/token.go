package dlbsql

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// MinSecretLength is the shortest MiddlewareConfig.Secret accepted, in bytes.
const MinSecretLength = 16

// The reasons a causal token is rejected (VerifyToken's errors, RejectedToken's argument).
var (
	// ErrMalformedToken: not "LSN--MAC" with an "X/Y" LSN and 64 hex digits of MAC.
	ErrMalformedToken = errors.New("dlbsql: malformed causal token")
	// ErrForgedToken: well formed, but its MAC is not the secret's: forged, altered, or
	// signed with another secret (another cluster's, or a rotated one).
	ErrForgedToken = errors.New("dlbsql: causal token not signed with this secret")
)

// SignToken returns lsn ("X/Y", from RecordLSN) as a signed causal token,
// "LSN--HMAC", the HMAC-SHA256 of the LSN under secret in lowercase hex: the format of the
// Ruby gem's DLB::RackMiddleware, so a Go and a Ruby service sharing the secret accept each
// other's tokens. Middleware signs the tokens it sends; call SignToken to carry one
// elsewhere (a job, a redirect).
func SignToken(secret []byte, lsn string) string {
	return lsn + "--" + mac(secret, lsn)
}

// VerifyToken returns the LSN of a token SignToken made with secret, or ErrMalformedToken
// or ErrForgedToken. The MAC is compared in constant time.
func VerifyToken(secret []byte, token string) (string, error) {
	i := strings.LastIndex(token, "--")
	if i < 0 {
		return "", ErrMalformedToken
	}
	lsn, sum := token[:i], token[i+2:]
	if len(sum) != 2*sha256.Size || !validLSN(lsn) {
		return "", ErrMalformedToken
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return "", ErrMalformedToken
	}
	if !hmac.Equal([]byte(sum), []byte(mac(secret, lsn))) {
		return "", ErrForgedToken
	}
	return lsn, nil
}

func mac(secret []byte, lsn string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(lsn))
	return hex.EncodeToString(m.Sum(nil))
}

// validLSN says whether s is "X/Y" with 1 to 8 hex digits on each side, as dlb parses LSNs.
func validLSN(s string) bool {
	hi, lo, ok := strings.Cut(s, "/")
	return ok && isHex8(hi) && isHex8(lo)
}

func isHex8(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
