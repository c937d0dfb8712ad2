// Package client is UltraCloud's Go SDK: a client for the resource API of any
// kind (list, get, create, update, status, delete, watch with automatic
// resume), typed wrappers, and node status. Problem responses surface as
// *api.Problem errors that callers test with the helpers in errors.go.
//
// The CLI and every component call UltraCloud through this package. It must
// never import internal/ packages, and it knows no component: a
// component's own operations (iam's login, tokens and audit log) live in a
// client package of their own below this one (iamclient), built on Do and
// DoNoAuth.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Config says where the API is and how to authenticate.
type Config struct {
	// Endpoint is the API base URL, e.g. http://127.0.0.1:7700.
	Endpoint string
	// Token is a static bearer token (e.g. the break-glass admin token, or
	// an access token obtained elsewhere). Ignored when TokenSource is set.
	Token string
	// TokenSource supplies bearer tokens per request, e.g. iamclient's
	// RefreshingTokenSource after a login. When the server answers 401, a
	// source that implements Invalidate is told so and the request is
	// retried once with a new token.
	TokenSource TokenSource
	// HTTPClient is used for requests; a client with sane timeouts if nil.
	HTTPClient *http.Client
	// UserAgent is sent with every request.
	UserAgent string
}

// Client talks to one UltraCloud API endpoint. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	tokens TokenSource
	hc     *http.Client
	ua     string
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("client: no endpoint: pass --endpoint, set ULTRACLOUD_ENDPOINT, or run `ultracloud up` to write a client config")
	}
	u, err := url.Parse(strings.TrimRight(cfg.Endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: endpoint %q is not an http(s) URL (e.g. http://127.0.0.1:7700)", cfg.Endpoint)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 128
		hc = &http.Client{Transport: tr}
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "ultracloud-go-client/" + strconv.Itoa(api.Version)
	}
	ts := cfg.TokenSource
	if ts == nil && cfg.Token != "" {
		ts = StaticToken(cfg.Token)
	}
	return &Client{base: u, tokens: ts, hc: hc, ua: ua}, nil
}

// CloseIdleConnections closes kept-alive connections that carry no request,
// so a server shutting down need not wait for them. Call it when done.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Endpoint returns the base URL.
func (c *Client) Endpoint() string { return c.base.String() }

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	u := *c.base
	u.Path = c.base.Path + path
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	return req, nil
}

// send sends the request build makes, with a bearer token from the token
// source. On a 401 it invalidates the token (if the source can) and sends
// a rebuilt request once more with a fresh one; a 401 means the server did
// nothing, so the retry is safe for any method.
func (c *Client) send(ctx context.Context, build func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, err
		}
		var tok string
		if c.tokens != nil {
			if tok, err = c.tokens.Token(ctx); err != nil {
				return nil, err
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, err
		}
		inv, canRetry := c.tokens.(interface{ Invalidate(string) })
		if resp.StatusCode != http.StatusUnauthorized || !canRetry || attempt > 0 || tok == "" {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		inv.Invalidate(tok)
	}
}

// Do sends a request to path (below the endpoint, e.g. "/v1/status") with
// query q and body encoded as JSON (none if nil), authenticated as the
// client is, and decodes a JSON response into out (if non-nil). An error
// answer comes back as *api.Problem. Per-component client packages build
// their operations on it (and on DoNoAuth), so this package needs to know
// no component.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	return c.do(ctx, method, path, q, body, out)
}

// DoNoAuth is Do without a bearer token, for endpoints that take other
// credentials in the body (a login, a refresh token).
func (c *Client) DoNoAuth(ctx context.Context, method, path string, q url.Values, body, out any) error {
	nc := *c
	nc.tokens = nil
	return nc.do(ctx, method, path, q, body, out)
}

// do sends a request and decodes a JSON response into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.send(ctx, func() (*http.Request, error) { return c.newRequest(ctx, method, path, q, body) })
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readProblem(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decoding %s %s response: %w", method, path, err)
	}
	return nil
}

// readProblem turns an error response into *api.Problem; responses that are
// not problem+json become a Problem with the HTTP status and body text.
func readProblem(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == api.ProblemContentType {
		var p api.Problem
		if err := json.Unmarshal(b, &p); err == nil && p.Code != "" {
			if p.Status == 0 {
				p.Status = resp.StatusCode
			}
			return &p
		}
	}
	return &api.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Code: codeForStatus(resp.StatusCode),
		Detail: strings.TrimSpace(string(b))}
}

func codeForStatus(s int) string {
	switch s {
	case http.StatusNotFound:
		return api.CodeNotFound
	case http.StatusUnauthorized:
		return api.CodeUnauthenticated
	case http.StatusForbidden:
		return api.CodeForbidden
	case http.StatusConflict:
		return api.CodeConflict
	case http.StatusTooManyRequests:
		return api.CodeTooManyRequests
	case http.StatusServiceUnavailable:
		return api.CodeUnavailable
	}
	if s >= 500 {
		return api.CodeInternal
	}
	return api.CodeBadRequest
}

// Discovery lists the kinds the endpoint serves.
func (c *Client) Discovery(ctx context.Context) (*api.Discovery, error) {
	var d api.Discovery
	if err := c.do(ctx, http.MethodGet, "/v1", nil, nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Status returns the node's component status.
func (c *Client) Status(ctx context.Context) (*api.NodeStatus, error) {
	var s api.NodeStatus
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Healthy returns nil when /healthz answers ok.
func (c *Client) Healthy(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready returns nil when /readyz answers ok.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
}

// WaitReady polls /readyz until it answers ok or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	var last error
	for {
		if last = c.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: %s not ready: %w (last error: %v)", c.Endpoint(), ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
