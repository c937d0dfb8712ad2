package plasmavmc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// rawConn sends requests the JSON SDK does not make (a streamed upload, a
// download, a WebSocket) with the credentials the SDK would use: those of
// clikit's token source (the static token, or the saved login's tokens,
// refreshed and saved back).
type rawConn struct {
	endpoint *url.URL
	tokens   client.TokenSource
	hc       *http.Client
}

func openRaw(cf *clikit.ClientFlags) (*rawConn, error) {
	ts, c, err := cf.TokenSource()
	if err != nil {
		return nil, err
	}
	if c.Endpoint == "" {
		return nil, fmt.Errorf("no endpoint: pass --endpoint, set ULTRACLOUD_ENDPOINT, or run `ultracloud up` to write a client config")
	}
	u, err := url.Parse(strings.TrimRight(c.Endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not an http(s) URL (e.g. http://127.0.0.1:7700)", c.Endpoint)
	}
	return &rawConn{endpoint: u, tokens: ts, hc: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}, nil
}

// close drops the kept-alive connections.
func (r *rawConn) close() { r.hc.CloseIdleConnections() }

// url is the endpoint's URL of path (below the endpoint) with query q.
func (r *rawConn) url(path string, q url.Values) string {
	u := *r.endpoint
	u.Path = r.endpoint.Path + path
	u.RawQuery = q.Encode()
	return u.String()
}

// authHeader returns the Authorization header to send ("" without
// credentials).
func (r *rawConn) authHeader(ctx context.Context) (string, error) {
	if r.tokens == nil {
		return "", nil
	}
	tok, err := r.tokens.Token(ctx)
	if err != nil || tok == "" {
		return "", err
	}
	return "Bearer " + tok, nil
}

// invalidate tells a refreshing token source that the server refused the
// token in header, so the next request gets a fresh one; it reports
// whether a retry can help.
func (r *rawConn) invalidate(header string) bool {
	inv, ok := r.tokens.(interface{ Invalidate(string) })
	if !ok || header == "" {
		return false
	}
	inv.Invalidate(strings.TrimPrefix(header, "Bearer "))
	return true
}

// do sends the request build makes, authenticated; on a 401 it retries
// once with a fresh token (a 401 means the server did nothing, so build
// must simply be able to make the request again). An answer of 300 or
// more comes back as an *api.Problem, as the SDK returns them.
func (r *rawConn) do(ctx context.Context, build func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := build()
		if err != nil {
			return nil, err
		}
		auth, err := r.authHeader(ctx)
		if err != nil {
			return nil, err
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := r.hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && r.invalidate(auth) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			continue
		}
		if resp.StatusCode >= 300 {
			defer resp.Body.Close()
			return nil, problemOf(resp)
		}
		return resp, nil
	}
}

// problemOf turns an error answer into an *api.Problem; one that is not
// problem+json becomes a Problem with the HTTP status and the body's text.
func problemOf(resp *http.Response) error {
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
	code := api.CodeBadRequest
	switch {
	case resp.StatusCode == http.StatusNotFound:
		code = api.CodeNotFound
	case resp.StatusCode == http.StatusUnauthorized:
		code = api.CodeUnauthenticated
	case resp.StatusCode == http.StatusForbidden:
		code = api.CodeForbidden
	case resp.StatusCode == http.StatusConflict:
		code = api.CodeConflict
	case resp.StatusCode >= 500:
		code = api.CodeInternal
	}
	detail := strings.TrimSpace(string(b))
	if detail == "" {
		detail = http.StatusText(resp.StatusCode)
	}
	return &api.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Code: code, Detail: detail}
}

// objectPath is the API path of a project-scoped object, plus sub (an
// action or sub-resource) if given.
func objectPath(project string, k clikit.Kind, name, sub string) string {
	p := "/v1/projects/" + url.PathEscape(project) + "/" + k.Collection + "/" + url.PathEscape(name)
	if sub != "" {
		p += "/" + sub
	}
	return p
}
