package apiserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

type memKeys map[string]crypto.PublicKey

func (m memKeys) PublicKey(_ context.Context, kid string) (crypto.PublicKey, bool) {
	k, ok := m[kid]
	return k, ok
}

type testSigner struct {
	key *ecdsa.PrivateKey
	now time.Time
}

func newTestSigner(t testing.TB) *testSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{key: k, now: time.Unix(1_800_000_000, 0)}
}

func (s *testSigner) token(t testing.TB, sub string, ttl time.Duration) string {
	c := apiserver.AccessClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: "https://iss", Subject: sub, Audience: jwt.ClaimStrings{"ultracloud"},
		ExpiresAt: jwt.NewNumericDate(s.now.Add(ttl)), IssuedAt: jwt.NewNumericDate(s.now), NotBefore: jwt.NewNumericDate(s.now),
	}, UID: "u1"}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = "k1"
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *testSigner) verifier(clock *testkit.Clock) *apiserver.JWTVerifier {
	return apiserver.NewJWTVerifier(memKeys{"k1": &s.key.PublicKey}, apiserver.JWTOptions{
		Issuer: func() string { return "https://iss" }, Audience: "ultracloud",
		Now: clock.Now,
	})
}

func TestJWTVerifier(t *testing.T) {
	s := newTestSigner(t)
	clock := testkit.NewClock(s.now)
	v := s.verifier(clock)
	tok := s.token(t, "user:alice", time.Minute)
	for range 2 { // verified, then from the cache
		p, err := v.Verify(context.Background(), tok)
		if err != nil || p.Name != "user:alice" || p.UID != "u1" || !p.ExpiresAt.Equal(s.now.Add(time.Minute)) {
			t.Fatalf("%+v %v", p, err)
		}
	}
	// The cache never outlives the token.
	clock.Set(s.now.Add(time.Minute + 31*time.Second)) // past exp and the 30s leeway
	_, err := v.Verify(context.Background(), tok)
	var ae *apiserver.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !errors.Is(err, apiserver.ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("the error repeats the token")
	}
}

func TestParseJWKS(t *testing.T) {
	s := newTestSigner(t)
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &s.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"},
		{Key: &other.PublicKey, KeyID: "k2", Algorithm: "ES384", Use: "sig"},
		{Key: &s.key.PublicKey, KeyID: "k3", Algorithm: "ES256", Use: "enc"},
		{Key: s.key, KeyID: "k4", Algorithm: "ES256", Use: "sig"}, // a private key: refused
	}}
	b, _ := json.Marshal(set)
	keys, err := apiserver.ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys["k1"] == nil {
		t.Fatalf("parsed %v, want only k1", keys)
	}
}

// FuzzVerifyToken: arbitrary bearer tokens never panic and are never
// accepted, unless they are exactly the one validly signed token, and
// every failure is a 401 that does not repeat the token.
func FuzzVerifyToken(f *testing.F) {
	s := newTestSigner(f)
	good := s.token(f, "user:alice", time.Hour)
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add(strings.Replace(good, ".", "..", 1))
	clock := testkit.NewClock(s.now)
	v := s.verifier(clock)
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(context.Background(), tok)
		if err == nil {
			if tok != good || p.Name != "user:alice" {
				t.Fatalf("accepted %q as %+v", tok, p)
			}
			return
		}
		var ae *apiserver.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("%q: %v, want a 401", tok, err)
		}
		if len(tok) > 8 && strings.Contains(ae.Detail, tok) {
			t.Fatalf("the 401 repeats the token")
		}
	})
}

// FuzzParseJWKS: arbitrary key sets never panic; what is accepted is only
// ES256 public keys.
func FuzzParseJWKS(f *testing.F) {
	s := newTestSigner(f)
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &s.key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	f.Add(b)
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"x"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA","kid":"x"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := apiserver.ParseJWKS(b)
		if err != nil {
			return
		}
		for kid, k := range keys {
			ec, ok := k.(*ecdsa.PublicKey)
			if !ok || ec.Curve != elliptic.P256() || kid == "" {
				t.Fatalf("accepted %s: %T", kid, k)
			}
		}
	})
}
