// Package iamclient is the Go client of iam's own operations, the ones that
// are not resources: logging in, exchanging refresh tokens, access keys and
// node keys for access tokens, enrolling a node with its join token,
// logging out, whoami, setting a password, rotating the
// signing key and reading the audit log. It also holds the token sources
// built on them (RefreshingTokenSource, AccessKeySource) and the saved
// Credentials of a login.
//
// iam's resources (users, projects, roles, bindings, service accounts,
// access keys) need nothing from here: they are served by the generic
// resource API of package client. Like client, this package must never
// import internal/ packages.
package iamclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Client calls iam's operations through an API client.
type Client struct {
	c *client.Client
}

// New returns iam's operations on c. Login, Refresh, ExchangeAccessKey and
// Logout send no bearer token, so c need carry no credentials for them.
func New(c *client.Client) *Client { return &Client{c: c} }

// Login exchanges a user name and password for tokens. Failed logins are
// rate limited per user and per source address (429 too_many_requests,
// with Retry-After).
func (c *Client) Login(ctx context.Context, username, password string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	if err := c.c.DoNoAuth(ctx, http.MethodPost, iamv1.LoginPath, nil, iamv1.LoginRequest{Username: username, Password: password}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Refresh redeems a refresh token for new tokens (the old refresh token
// stops working shortly after).
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	req := iamv1.TokenRequest{GrantType: iamv1.GrantTypeRefreshToken, RefreshToken: refreshToken}
	if err := c.c.DoNoAuth(ctx, http.MethodPost, iamv1.TokenPath, nil, req, &out); err != nil {
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
	if err := c.c.DoNoAuth(ctx, http.MethodPost, iamv1.TokenPath, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EnrollNode trades a node credential's one-time join token for the
// node's key (shown only in this answer). Any failure of the token (wrong,
// expired, used, unknown node) is one 401.
func (c *Client) EnrollNode(ctx context.Context, node, joinToken string) (*iamv1.NodeEnrollResponse, error) {
	var out iamv1.NodeEnrollResponse
	req := iamv1.NodeEnrollRequest{Node: node, JoinToken: joinToken}
	if err := c.c.DoNoAuth(ctx, http.MethodPost, iamv1.NodeEnrollPath, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ExchangeNodeKey trades an enrolled node's key for an access token acting
// as node:NAME (no refresh token: exchange the key again).
func (c *Client) ExchangeNodeKey(ctx context.Context, node, nodeKey string) (*iamv1.TokenResponse, error) {
	var out iamv1.TokenResponse
	req := iamv1.TokenRequest{GrantType: iamv1.GrantTypeNodeKey, Node: node, NodeKey: nodeKey}
	if err := c.c.DoNoAuth(ctx, http.MethodPost, iamv1.TokenPath, nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logout revokes a refresh token.
func (c *Client) Logout(ctx context.Context, refreshToken string) error {
	return c.c.DoNoAuth(ctx, http.MethodPost, iamv1.LogoutPath, nil, iamv1.LogoutRequest{RefreshToken: refreshToken}, nil)
}

// WhoAmI describes the caller's principal and role bindings.
func (c *Client) WhoAmI(ctx context.Context) (*iamv1.WhoAmI, error) {
	var out iamv1.WhoAmI
	if err := c.c.Do(ctx, http.MethodGet, iamv1.WhoAmIPath, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPassword sets user's password. Users changing their own password pass
// their current one; administrators need not.
func (c *Client) SetPassword(ctx context.Context, user, password, current string) (*api.Object, error) {
	var out api.Object
	path := "/v1/" + iamv1.UserCollection + "/" + url.PathEscape(user) + "/" + iamv1.PasswordSubresource
	if err := c.c.Do(ctx, http.MethodPost, path, nil, iamv1.SetPasswordRequest{Password: password, CurrentPassword: current}, &out); err != nil {
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
	if err := c.c.Do(ctx, http.MethodPost, iamv1.RotateSigningKeyPath, nil, struct{}{}, &out); err != nil {
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
	if err := c.c.Do(ctx, http.MethodGet, iamv1.AuditPath, q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
