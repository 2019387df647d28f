package dlbsql

import (
	"strings"
	"testing"
)

var testSecret = []byte("0123456789abcdef-secret")

// The format is the Ruby gem's: this token was made by DLB::RackMiddleware#sign with the
// same secret (OpenSSL::HMAC.hexdigest("SHA256", secret, lsn)).
const rubyToken = "0/16B3748--a40d32b3b32b59455e818c4fdcfff3ef46c48269be8c043e7316a529b966b550"

func TestTokenMatchesRuby(t *testing.T) {
	if got := SignToken(testSecret, "0/16B3748"); got != rubyToken {
		t.Fatalf("SignToken = %s, want the Ruby gem's %s", got, rubyToken)
	}
	if lsn, err := VerifyToken(testSecret, rubyToken); err != nil || lsn != "0/16B3748" {
		t.Fatalf("VerifyToken(Ruby's token) = %q, %v", lsn, err)
	}
}

func TestVerifyTokenRejects(t *testing.T) {
	good := SignToken(testSecret, "1A/2B")
	mac := good[strings.LastIndex(good, "--")+2:]
	for _, c := range []struct {
		token string
		want  error
	}{
		{"FFFFFFFF/FFFFFFFF", ErrMalformedToken}, // an unsigned LSN
		{"garbage", ErrMalformedToken},
		{"", ErrMalformedToken},
		{"1A/2B--", ErrMalformedToken},
		{"1A/2B--" + mac[:63], ErrMalformedToken},
		{"1A/2B--" + strings.Repeat("z", 64), ErrMalformedToken},
		{"1A2B--" + mac, ErrMalformedToken},
		{"123456789/0--" + mac, ErrMalformedToken}, // more than 8 hex digits
		{"1A/2B--" + mac + "--" + mac, ErrMalformedToken},
		{"FFFFFFFF/FFFFFFFF--" + mac, ErrForgedToken}, // another LSN under good's MAC
		{"1A/2B--" + strings.Repeat("0", 64), ErrForgedToken},
		{SignToken([]byte("another cluster's secret"), "1A/2B"), ErrForgedToken},
	} {
		if lsn, err := VerifyToken(testSecret, c.token); err != c.want {
			t.Errorf("VerifyToken(%q) = %q, %v; want %v", c.token, lsn, err, c.want)
		}
	}
	if lsn, err := VerifyToken(testSecret, good); err != nil || lsn != "1A/2B" {
		t.Fatalf("VerifyToken(good) = %q, %v", lsn, err)
	}
}
