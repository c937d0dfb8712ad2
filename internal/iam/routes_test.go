package iam

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// undocumentedRoutes are the only routes of a node that /openapi.json does
// not list: internal/runtime/httpserver's health, readiness and metrics.
var undocumentedRoutes = []string{"GET /healthz", "GET /metrics", "GET /readyz"}

// TestEveryRouteDocumented: with iam's real registration and the node's
// real listener on one mux, every mounted route but the listener's own
// is in /openapi.json, and every documented operation is served.
func TestEveryRouteDocumented(t *testing.T) {
	e := newTestEnv(t)
	resp, err := e.hc.Get(e.url + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json: HTTP %d %v", resp.StatusCode, err)
	}
	routes := e.routes.Patterns()
	undocumented, unserved := apiserver.CheckRoutes(doc, routes)
	if !slices.Equal(undocumented, undocumentedRoutes) {
		t.Errorf("routes missing from /openapi.json: %v; only %v may be", undocumented, undocumentedRoutes)
	}
	if len(unserved) > 0 {
		t.Errorf("documented operations no route serves: %v", unserved)
	}
	// iam's own routes are among them, at their unchanged paths.
	paths := doc["paths"].(map[string]any)
	for path, method := range map[string]string{
		iamv1.WellKnownOpenIDConfiguration: "get", iamv1.JWKSPath: "get", iamv1.LoginPath: "post",
		iamv1.TokenPath: "post", iamv1.LogoutPath: "post", iamv1.WhoAmIPath: "get",
		iamv1.RotateSigningKeyPath: "post", iamv1.AuditPath: "get",
		"/v1/users/{name}/" + iamv1.PasswordSubresource: "post",
	} {
		if _, ok := paths[path].(map[string]any)[method]; !ok {
			t.Errorf("/openapi.json lacks %s %s", method, path)
		}
	}
}

// TestEndpointWire: the headers, media types, status codes and bodies of
// iam's endpoints as clients and OIDC libraries rely on them.
func TestEndpointWire(t *testing.T) {
	e := newTestEnv(t)
	r := e.do("GET", iamv1.WellKnownOpenIDConfiguration, "", "")
	if r.code != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=300" ||
		r.header.Get("Content-Type") != "application/json" || !strings.Contains(r.body, `"jwks_uri":"`+e.url+iamv1.JWKSPath+`"`) {
		t.Errorf("OIDC discovery = %d %v %s", r.code, r.header, r.body)
	}
	r = e.do("GET", iamv1.JWKSPath, "", "")
	var want bytes.Buffer
	_ = json.NewEncoder(&want).Encode(e.iam.keys.JWKS())
	if r.code != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=60" ||
		r.header.Get("Content-Type") != "application/jwk-set+json" || r.body != want.String() || !strings.Contains(r.body, `"kty":"EC"`) {
		t.Errorf("JWKS = %d %v %s, want the key set as go-jose encodes it: %s", r.code, r.header, r.body, want.String())
	}
	r = e.do("GET", iamv1.WhoAmIPath, "", "")
	if r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Bearer realm="ultracloud"` {
		t.Errorf("whoami without a token = %d %v", r.code, r.header)
	}
	r = e.do("POST", iamv1.RotateSigningKeyPath, bootstrapToken, "{}")
	var rot map[string]string
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &rot) != nil || len(rot) != 1 || rot["kid"] == "" {
		t.Errorf("rotate = %d %s", r.code, r.body)
	}
	e.user("alice", "alice-password-1")
	_, tr := e.login("alice", "alice-password-1")
	r = e.do("POST", iamv1.LogoutPath, "", `{"refreshToken":"`+tr.RefreshToken+`"}`)
	if r.code != http.StatusNoContent || r.body != "" {
		t.Errorf("logout = %d %q", r.code, r.body)
	}
	r = e.do("POST", iamv1.LoginPath, "", `{"username":"alice","pasword":"x"}`)
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, `"field":"pasword"`) {
		t.Errorf("login with a misspelt field = %d %s", r.code, r.body)
	}
}
