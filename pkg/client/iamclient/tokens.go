package iamclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Credentials are what a login yields: a short-lived access token and the
// refresh token that renews it. The CLI keeps them in its client config.
type Credentials struct {
	Principal             string    `json:"principal,omitempty" yaml:"principal,omitempty"`
	AccessToken           string    `json:"accessToken,omitempty" yaml:"accessToken,omitempty"`
	AccessTokenExpiresAt  time.Time `json:"accessTokenExpiresAt,omitzero" yaml:"accessTokenExpiresAt,omitempty"`
	RefreshToken          string    `json:"refreshToken,omitempty" yaml:"refreshToken,omitempty"`
	RefreshTokenExpiresAt time.Time `json:"refreshTokenExpiresAt,omitzero" yaml:"refreshTokenExpiresAt,omitempty"`
}

// CredentialsFrom converts a token response.
func CredentialsFrom(t *iamv1.TokenResponse) Credentials {
	c := Credentials{Principal: t.Principal, AccessToken: t.AccessToken, AccessTokenExpiresAt: t.ExpiresAt, RefreshToken: t.RefreshToken}
	if t.RefreshExpiresAt != nil {
		c.RefreshTokenExpiresAt = *t.RefreshExpiresAt
	}
	return c
}

// refreshMargin is how long before expiry an access token is renewed, so
// clock skew and request time never present an expired one.
const refreshMargin = 30 * time.Second

// RefreshingTokenSource hands out the access token of a set of
// credentials and renews it with the refresh token shortly before it
// expires (or when the server refuses it). Refresh tokens rotate: every
// renewal replaces both tokens, and OnRefresh is called with the new
// credentials so they can be saved. It is safe for concurrent use.
type RefreshingTokenSource struct {
	c         *Client // unauthenticated, for the token endpoint
	onRefresh func(Credentials)
	now       func() time.Time

	mu    sync.Mutex
	creds Credentials
}

var _ client.TokenSource = (*RefreshingTokenSource)(nil)

// NewRefreshingTokenSource returns a token source for creds against
// endpoint. hc may be nil; onRefresh may be nil.
func NewRefreshingTokenSource(endpoint string, hc *http.Client, creds Credentials, onRefresh func(Credentials)) (*RefreshingTokenSource, error) {
	c, err := client.New(client.Config{Endpoint: endpoint, HTTPClient: hc, UserAgent: "ultracloud-go-client-auth"})
	if err != nil {
		return nil, err
	}
	return &RefreshingTokenSource{c: New(c), creds: creds, onRefresh: onRefresh, now: time.Now}, nil
}

// ErrSessionExpired means the refresh token no longer works: log in again.
var ErrSessionExpired = errors.New("client: session expired or revoked: run `ultracloud login`")

// Token implements client.TokenSource.
func (s *RefreshingTokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.creds.AccessToken != "" && s.now().Add(refreshMargin).Before(s.creds.AccessTokenExpiresAt) {
		return s.creds.AccessToken, nil
	}
	if s.creds.RefreshToken == "" {
		return "", ErrSessionExpired
	}
	t, err := s.c.Refresh(ctx, s.creds.RefreshToken)
	if client.HasCode(err, api.CodeUnauthenticated) {
		return "", fmt.Errorf("%w (%w)", ErrSessionExpired, err)
	}
	if err != nil {
		return "", err
	}
	s.creds = CredentialsFrom(t)
	if s.onRefresh != nil {
		s.onRefresh(s.creds)
	}
	return s.creds.AccessToken, nil
}

// Invalidate forgets tok if it is the current access token (the server
// refused it), so the next Token call refreshes.
func (s *RefreshingTokenSource) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.creds.AccessToken == tok {
		s.creds.AccessToken = ""
	}
}

// Credentials returns the current credentials.
func (s *RefreshingTokenSource) Credentials() Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// AccessKeySource is a token source for a service (or user) holding an
// access key: it exchanges the key for access tokens and renews them
// before they expire.
func (c *Client) AccessKeySource(id, secret string) client.TokenSource {
	var mu sync.Mutex
	var tok string
	var exp time.Time
	return client.TokenFunc(func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if tok != "" && time.Now().Add(refreshMargin).Before(exp) {
			return tok, nil
		}
		t, err := c.ExchangeAccessKey(ctx, id, secret)
		if err != nil {
			return "", err
		}
		tok, exp = t.AccessToken, t.ExpiresAt
		return tok, nil
	})
}
