package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// TokenSource supplies the bearer token for each request.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource that always returns the same token.
type StaticToken string

// Token implements TokenSource.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// TokenFunc adapts a function to a TokenSource.
type TokenFunc func(ctx context.Context) (string, error)

// Token implements TokenSource.
func (f TokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

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

// NewRefreshingTokenSource returns a token source for creds against
// endpoint. hc may be nil; onRefresh may be nil.
func NewRefreshingTokenSource(endpoint string, hc *http.Client, creds Credentials, onRefresh func(Credentials)) (*RefreshingTokenSource, error) {
	c, err := New(Config{Endpoint: endpoint, HTTPClient: hc, UserAgent: "ultracloud-go-client-auth"})
	if err != nil {
		return nil, err
	}
	return &RefreshingTokenSource{c: c, creds: creds, onRefresh: onRefresh, now: time.Now}, nil
}

// ErrSessionExpired means the refresh token no longer works: log in again.
var ErrSessionExpired = errors.New("client: session expired or revoked: run `ultracloud login`")

// Token implements TokenSource.
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
	if HasCode(err, api.CodeUnauthenticated) {
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

// Login exchanges a user name and password for tokens. It needs no
// credentials on c. Failed logins are rate limited per user and per
// source address (429 too_many_requests, with Retry-After).
func (c *Client) Login(ctx context.Context, username, password string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	if err := c.doNoAuth(ctx, http.MethodPost, iamv1.LoginPath, iamv1.LoginRequest{Username: username, Password: password}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Refresh redeems a refresh token for new tokens (the old refresh token
// stops working shortly after).
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	req := iamv1.TokenRequest{GrantType: iamv1.GrantTypeRefreshToken, RefreshToken: refreshToken}
	if err := c.doNoAuth(ctx, http.MethodPost, iamv1.TokenPath, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ExchangeAccessKey trades an access key ID and secret for an access token
// acting as the key's user or service account (no refresh token: exchange
// the key again when it expires).
func (c *Client) ExchangeAccessKey(ctx context.Context, id, secret string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	req := iamv1.TokenRequest{GrantType: iamv1.GrantTypeAccessKey, AccessKeyID: id, SecretAccessKey: secret}
	if err := c.doNoAuth(ctx, http.MethodPost, iamv1.TokenPath, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logout revokes a refresh token.
func (c *Client) Logout(ctx context.Context, refreshToken string) error {
	return c.doNoAuth(ctx, http.MethodPost, iamv1.LogoutPath, iamv1.LogoutRequest{RefreshToken: refreshToken}, nil)
}

// AccessKeySource is a TokenSource for a service (or user) holding an
// access key: it exchanges the key for access tokens and renews them
// before they expire.
func (c *Client) AccessKeySource(id, secret string) TokenSource {
	var mu sync.Mutex
	var tok string
	var exp time.Time
	return TokenFunc(func(ctx context.Context) (string, error) {
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

// doNoAuth is do without a bearer token.
func (c *Client) doNoAuth(ctx context.Context, method, path string, body, out any) error {
	nc := *c
	nc.tokens = nil
	return nc.do(ctx, method, path, nil, body, out)
}

// WhoAmI describes the caller's principal and role bindings.
func (c *Client) WhoAmI(ctx context.Context) (*iamv1.WhoAmI, error) {
	var out iamv1.WhoAmI
	if err := c.do(ctx, http.MethodGet, iamv1.WhoAmIPath, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPassword sets user's password. Users changing their own password pass
// their current one; administrators need not.
func (c *Client) SetPassword(ctx context.Context, user, password, current string) (*api.Object, error) {
	var out api.Object
	path := "/v1/" + iamv1.UserCollection + "/" + url.PathEscape(user) + "/" + iamv1.PasswordSubresource
	if err := c.do(ctx, http.MethodPost, path, nil, iamv1.SetPasswordRequest{Password: password, CurrentPassword: current}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateSigningKey makes iam sign with a new key now; tokens signed by the
// old one stay valid until they expire. It returns the new key ID.
func (c *Client) RotateSigningKey(ctx context.Context) (string, error) {
	var out struct {
		Kid string `json:"kid"`
	}
	if err := c.do(ctx, http.MethodPost, iamv1.RotateSigningKeyPath, nil, struct{}{}, &out); err != nil {
		return "", err
	}
	return out.Kid, nil
}

// AuditOptions select audit records.
type AuditOptions struct {
	Since, Until time.Time
	Principal    string
	Project      string
	Limit        int
	Continue     string
}

// Audit returns one page of audit records, oldest first.
func (c *Client) Audit(ctx context.Context, o AuditOptions) (*iamv1.AuditList, error) {
	q := url.Values{}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if !o.Until.IsZero() {
		q.Set("until", o.Until.UTC().Format(time.RFC3339Nano))
	}
	if o.Principal != "" {
		q.Set("principal", o.Principal)
	}
	if o.Project != "" {
		q.Set("project", o.Project)
	}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	if o.Continue != "" {
		q.Set("continue", o.Continue)
	}
	var out iamv1.AuditList
	if err := c.do(ctx, http.MethodGet, iamv1.AuditPath, q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
