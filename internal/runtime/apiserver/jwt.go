package apiserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// SigningAlgorithm is the one JWS algorithm UltraCloud signs and accepts.
const SigningAlgorithm = "ES256"

// MaxTokenSize bounds the bearer tokens the verifier will parse.
const MaxTokenSize = 8 << 10

// Sentinel errors of token verification; the *Error the verifier returns
// wraps one of them.
var (
	ErrTokenExpired    = errors.New("apiserver: token expired")
	ErrTokenInvalid    = errors.New("apiserver: token invalid")
	ErrTokenUnknownKey = errors.New("apiserver: token signed by an unknown key")
)

// AccessClaims are the claims of UltraCloud access tokens: the registered
// JWT claims (iss, sub = principal name, aud, exp, nbf, iat, jti) plus the
// principal's UID and the access key the token was obtained with.
type AccessClaims struct {
	jwt.RegisteredClaims
	UID         string `json:"uid,omitempty"`
	AccessKeyID string `json:"akid,omitempty"`
}

// KeySet gives the public keys tokens may be signed with, by key ID.
type KeySet interface {
	PublicKey(ctx context.Context, kid string) (crypto.PublicKey, bool)
}

// JWTOptions configure a JWTVerifier.
type JWTOptions struct {
	// Issuer returns the expected iss (a function: a node learns its
	// address only once it listens).
	Issuer func() string
	// Audience is the required aud.
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat (30s if 0).
	Leeway time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// CacheSize bounds the cache of verified tokens (10000 if 0; a
	// negative value disables it).
	CacheSize int
}

// JWTVerifier checks access tokens offline against a KeySet: signature
// (ES256 only), issuer, audience, expiry and not-before. Verified tokens are
// cached until they expire, so a client reusing its token pays for the
// signature check once.
type JWTVerifier struct {
	keys   KeySet
	opts   JWTOptions
	parser *jwt.Parser

	mu    sync.RWMutex
	cache map[string]Principal
}

// NewJWTVerifier returns a verifier over keys.
func NewJWTVerifier(keys KeySet, opts JWTOptions) *JWTVerifier {
	if opts.Leeway == 0 {
		opts.Leeway = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10000
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{SigningAlgorithm}),
		jwt.WithAudience(opts.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(opts.Leeway),
		jwt.WithTimeFunc(opts.Now),
	)
	return &JWTVerifier{keys: keys, opts: opts, parser: p, cache: map[string]Principal{}}
}

// Flush forgets every cached verification (after a key was withdrawn
// early).
func (v *JWTVerifier) Flush() {
	v.mu.Lock()
	v.cache = map[string]Principal{}
	v.mu.Unlock()
}

// Verify checks raw and returns the principal it names. Errors are 401
// *Error values that never include the token.
func (v *JWTVerifier) Verify(ctx context.Context, raw string) (Principal, error) {
	now := v.opts.Now()
	if v.opts.CacheSize > 0 {
		v.mu.RLock()
		p, ok := v.cache[raw]
		v.mu.RUnlock()
		if ok && now.Before(p.ExpiresAt) {
			return p, nil
		}
	}
	p, err := v.verify(ctx, raw)
	if err != nil {
		return Principal{}, err
	}
	if v.opts.CacheSize > 0 {
		v.mu.Lock()
		if len(v.cache) >= v.opts.CacheSize {
			for k, c := range v.cache {
				if !now.Before(c.ExpiresAt) {
					delete(v.cache, k)
				}
			}
			if len(v.cache) >= v.opts.CacheSize {
				v.cache = map[string]Principal{}
			}
		}
		v.cache[raw] = p
		v.mu.Unlock()
	}
	return p, nil
}

func (v *JWTVerifier) verify(ctx context.Context, raw string) (Principal, error) {
	if len(raw) > MaxTokenSize {
		return Principal{}, tokenError(fmt.Errorf("%w: %d bytes", ErrTokenInvalid, len(raw)))
	}
	var claims AccessClaims
	_, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, fmt.Errorf("%w: no kid", ErrTokenUnknownKey)
		}
		k, ok := v.keys.PublicKey(ctx, kid)
		if !ok {
			return nil, ErrTokenUnknownKey
		}
		return k, nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, tokenError(fmt.Errorf("%w: %w", ErrTokenExpired, err))
	case err != nil:
		return Principal{}, tokenError(fmt.Errorf("%w: %w", ErrTokenInvalid, err))
	}
	if v.opts.Issuer != nil && claims.Issuer != v.opts.Issuer() {
		return Principal{}, tokenError(fmt.Errorf("%w: issuer mismatch", ErrTokenInvalid))
	}
	if claims.Subject == "" {
		return Principal{}, tokenError(fmt.Errorf("%w: no subject", ErrTokenInvalid))
	}
	return Principal{Name: claims.Subject, UID: claims.UID, AccessKeyID: claims.AccessKeyID, ExpiresAt: claims.ExpiresAt.Time}, nil
}

// tokenError wraps a verification failure in the 401 the client sees.
func tokenError(err error) *Error {
	if errors.Is(err, ErrTokenExpired) {
		return &Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthenticated,
			Detail: "the access token has expired: refresh it or run `ultracloud login`", Err: err}
	}
	return &Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthenticated, Detail: "the bearer token is not valid for this cluster", Err: err}
}

// RemoteKeySet is a KeySet fetched from a JWKS URL (iam's /v1/auth/jwks),
// for components that run where iam does not. Keys are cached; an unknown
// key ID triggers a refetch, at most once per MinRefresh.
type RemoteKeySet struct {
	url        string
	hc         *http.Client
	minRefresh time.Duration
	now        func() time.Time

	fetchMu sync.Mutex
	mu      sync.RWMutex
	keys    map[string]crypto.PublicKey
	fetched time.Time
}

// NewRemoteKeySet returns a key set for the JWKS at url. hc may be nil.
func NewRemoteKeySet(url string, hc *http.Client, minRefresh time.Duration, now func() time.Time) *RemoteKeySet {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	if minRefresh <= 0 {
		minRefresh = 10 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &RemoteKeySet{url: url, hc: hc, minRefresh: minRefresh, now: now, keys: map[string]crypto.PublicKey{}}
}

// PublicKey implements KeySet.
func (s *RemoteKeySet) PublicKey(ctx context.Context, kid string) (crypto.PublicKey, bool) {
	s.mu.RLock()
	k, ok := s.keys[kid]
	s.mu.RUnlock()
	if ok {
		return k, true
	}
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	s.mu.RLock()
	k, ok = s.keys[kid]
	recent := s.now().Sub(s.fetched) < s.minRefresh
	s.mu.RUnlock()
	if ok || recent {
		return k, ok
	}
	keys, err := s.fetch(ctx)
	s.mu.Lock()
	s.fetched = s.now()
	if err == nil {
		s.keys = keys
	}
	k, ok = s.keys[kid]
	s.mu.Unlock()
	return k, ok
}

func (s *RemoteKeySet) fetch(ctx context.Context) (map[string]crypto.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("apiserver: jwks: %w", err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("apiserver: fetching jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("apiserver: fetching jwks: HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("apiserver: reading jwks: %w", err)
	}
	return ParseJWKS(b)
}

// ParseJWKS parses a JSON Web Key Set and returns its ES256 signing keys by
// key ID; other keys are skipped.
func ParseJWKS(b []byte) (map[string]crypto.PublicKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("apiserver: parsing jwks: %w", err)
	}
	out := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		if k.KeyID == "" || !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") ||
			(k.Algorithm != "" && k.Algorithm != SigningAlgorithm) {
			continue
		}
		if pub, ok := k.Key.(*ecdsa.PublicKey); ok {
			out[k.KeyID] = pub
		}
	}
	return out, nil
}
