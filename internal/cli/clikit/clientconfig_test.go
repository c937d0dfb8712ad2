package clikit

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// TestTokenSourcePicksTheEffectiveCredentials: a static token wins; the
// saved login's tokens are used only for the endpoint they were saved for;
// with neither there is no token source at all (not a typed nil).
func TestTokenSourcePicksTheEffectiveCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	creds := iamclient.Credentials{Principal: "alice", AccessToken: "saved-access", AccessTokenExpiresAt: time.Now().Add(time.Hour),
		RefreshToken: "saved-refresh", RefreshTokenExpiresAt: time.Now().Add(24 * time.Hour)}
	if err := WriteClientConfig(path, ClientConfig{Endpoint: "http://127.0.0.1:7700", Credentials: &creds}); err != nil {
		t.Fatal(err)
	}
	flags := func(vars map[string]string) *ClientFlags {
		vars["ULTRACLOUD_CLIENT_CONFIG"] = path
		return NewClientFlags(Env{Stderr: &bytes.Buffer{}, Getenv: func(k string) string { return vars[k] }})
	}
	ctx := context.Background()

	ts, c, err := flags(map[string]string{"ULTRACLOUD_TOKEN": "static"}).TokenSource()
	if err != nil || ts == nil || c.Endpoint != "http://127.0.0.1:7700" {
		t.Fatalf("static token: %v %v %+v", ts, err, c)
	}
	if tok, err := ts.Token(ctx); err != nil || tok != "static" {
		t.Fatalf("static token: %q %v", tok, err)
	}

	ts, _, err = flags(map[string]string{}).TokenSource()
	if err != nil || ts == nil {
		t.Fatalf("saved credentials: %v %v", ts, err)
	}
	if tok, err := ts.Token(ctx); err != nil || tok != "saved-access" {
		t.Fatalf("saved credentials: %q %v", tok, err)
	}

	ts, c, err = flags(map[string]string{"ULTRACLOUD_ENDPOINT": "http://127.0.0.1:7800"}).TokenSource()
	if err != nil || ts != nil || c.Endpoint != "http://127.0.0.1:7800" {
		t.Fatalf("another endpoint: %v %v %+v (want no token source)", ts, err, c)
	}
}
