package metadata

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// IMDSv2 headers, as EC2 names them.
const (
	HeaderToken    = "X-aws-ec2-metadata-token"
	HeaderTokenTTL = "X-aws-ec2-metadata-token-ttl-seconds"
	// MaxTokenTTL is EC2's upper bound, 6 hours, and the TTL cloud-init asks for.
	MaxTokenTTL = 21600
)

var (
	errTokenMalformed = errors.New("metadata: token is malformed")
	errTokenExpired   = errors.New("metadata: token has expired")
	errTokenForeign   = errors.New("metadata: token was not issued to this instance")
)

// tokenDomain separates these MACs from any other use of the key.
const tokenDomain = "ultracloud-imds-token-v1\x00"

// A token is base64url(expiry(8 bytes, Unix seconds, big endian) ||
// HMAC-SHA256(key, domain || expiry || instance-id)): it proves that this
// server issued it to this instance and until when, with nothing stored.
const tokenRawLen = 8 + sha256.Size

func tokenMAC(key []byte, instanceID string, exp uint64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenDomain))
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], exp)
	m.Write(e[:])
	m.Write([]byte(instanceID))
	return m.Sum(nil)
}

func issueToken(key []byte, instanceID string, expires time.Time) string {
	exp := uint64(expires.Unix())
	raw := make([]byte, 8, tokenRawLen)
	binary.BigEndian.PutUint64(raw, exp)
	raw = append(raw, tokenMAC(key, instanceID, exp)...)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// verifyToken checks that tok was issued by key to instanceID and has not
// expired at now.
func verifyToken(key []byte, instanceID, tok string, now time.Time) error {
	if len(tok) != base64.RawURLEncoding.EncodedLen(tokenRawLen) {
		return errTokenMalformed
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(raw) != tokenRawLen {
		return errTokenMalformed
	}
	exp := binary.BigEndian.Uint64(raw[:8])
	if !hmac.Equal(raw[8:], tokenMAC(key, instanceID, exp)) {
		return errTokenForeign
	}
	if exp > uint64(1<<62) || now.Unix() >= int64(exp) {
		return errTokenExpired
	}
	return nil
}

// parseTTL reads X-aws-ec2-metadata-token-ttl-seconds: decimal digits only,
// 1 to MaxTokenTTL, as EC2 accepts it.
func parseTTL(v string) (time.Duration, error) {
	if v == "" {
		return 0, fmt.Errorf("metadata: %s is missing", HeaderTokenTTL)
	}
	if len(v) > 5 {
		return 0, fmt.Errorf("metadata: %s %q is not 1-%d", HeaderTokenTTL, v, MaxTokenTTL)
	}
	n := 0
	for _, r := range v {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("metadata: %s %q is not a number of seconds", HeaderTokenTTL, v)
		}
		n = n*10 + int(r-'0')
	}
	if n < 1 || n > MaxTokenTTL {
		return 0, fmt.Errorf("metadata: %s %q is not 1-%d", HeaderTokenTTL, v, MaxTokenTTL)
	}
	return time.Duration(n) * time.Second, nil
}
