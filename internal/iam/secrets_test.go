package iam

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// TestSecretsNeverLeak drives every flow that handles a secret (logins
// right and wrong, a password typed into the user name field, password
// changes, access key creation and exchange, node enrollment and node key
// exchange right and wrong, refresh, logout, bad tokens) with debug
// logging on, then checks that no password, secret access key, join token,
// node key, access token, refresh token or the bootstrap token appears in
// the logs,
// in any error response, in the audit log, or anywhere in the store in the
// clear.
func TestSecretsNeverLeak(t *testing.T) {
	e := newTestEnv(t)
	secrets := map[string]string{"bootstrap token": bootstrapToken, "initial admin password": e.iam.InitialAdminPassword()}
	var errBodies []string
	req := func(method, path, token, body string) response {
		r := e.do(method, path, token, body)
		if r.code >= 400 {
			errBodies = append(errBodies, r.body)
		}
		return r
	}
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.create(iamv1.ServiceAccountCollection, "alpha", "ci", iamv1.ServiceAccountSpec{})
	e.create(iamv1.UserCollection, "", "alice", iamv1.UserSpec{})
	secrets["password"] = "correct-horse-battery"
	secrets["new password"] = "staple-horse-correct"
	secrets["wrong password"] = "guess-number-one-x"
	secrets["password as user name"] = "my-secret-passphrase"
	secrets["short password"] = "tiny-pw"
	req("POST", "/v1/users/alice/password", bootstrapToken, `{"password":"`+secrets["short password"]+`"}`)
	req("POST", "/v1/users/alice/password", bootstrapToken, `{"password":"`+secrets["password"]+`"}`)
	req("POST", iamv1.LoginPath, "", `{"username":"alice","password":"`+secrets["wrong password"]+`"}`)
	req("POST", iamv1.LoginPath, "", `{"username":"`+secrets["password as user name"]+`","password":"x"}`)
	req("POST", iamv1.LoginPath, "", `{"username":"alice","password":"`+secrets["password"]+`","extra":"`+secrets["wrong password"]+`"}`)
	req("POST", iamv1.LoginPath, "", `{"username":"alice","password":`)
	var tr iamv1.TokenResponse
	if err := json.Unmarshal([]byte(req("POST", iamv1.LoginPath, "", `{"username":"alice","password":"`+secrets["password"]+`"}`).body), &tr); err != nil {
		t.Fatal(err)
	}
	secrets["access token"], secrets["refresh token"] = tr.AccessToken, tr.RefreshToken
	var tr2 iamv1.TokenResponse
	_ = json.Unmarshal([]byte(req("POST", iamv1.TokenPath, "", `{"grantType":"refresh_token","refreshToken":"`+tr.RefreshToken+`"}`).body), &tr2)
	secrets["second refresh token"] = tr2.RefreshToken
	req("POST", "/v1/users/alice/password", tr2.AccessToken, `{"password":"`+secrets["new password"]+`","currentPassword":"`+secrets["wrong password"]+`"}`)
	req("POST", "/v1/users/alice/password", tr2.AccessToken, `{"password":"`+secrets["new password"]+`","currentPassword":"`+secrets["password"]+`"}`)
	req("POST", iamv1.TokenPath, "", `{"grantType":"refresh_token","refreshToken":"`+tr2.RefreshToken+`"}`)
	req("POST", iamv1.LogoutPath, "", `{"refreshToken":"`+tr.RefreshToken+`"}`)
	o := e.create(iamv1.AccessKeyCollection, "alpha", "k", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	var st iamv1.AccessKeyStatus
	_ = json.Unmarshal(o.Status, &st)
	secrets["secret access key"] = st.SecretAccessKey
	req("POST", iamv1.TokenPath, "", `{"grantType":"access_key","accessKeyId":"`+st.AccessKeyID+`","secretAccessKey":"`+st.SecretAccessKey+`x"}`)
	var kt iamv1.TokenResponse
	_ = json.Unmarshal([]byte(req("POST", iamv1.TokenPath, "", `{"grantType":"access_key","accessKeyId":"`+st.AccessKeyID+`","secretAccessKey":"`+st.SecretAccessKey+`"}`).body), &kt)
	secrets["service account token"] = kt.AccessToken
	nc := e.create(iamv1.NodeCredentialCollection, "", "worker1", iamv1.NodeCredentialSpec{})
	var ncs iamv1.NodeCredentialStatus
	_ = json.Unmarshal(nc.Status, &ncs)
	secrets["join token"] = ncs.JoinToken
	req("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", ncs.JoinToken+"x"))
	req("POST", iamv1.NodeEnrollPath, "", enrollBody("worker2", ncs.JoinToken))
	var enrolled iamv1.NodeEnrollResponse
	_ = json.Unmarshal([]byte(req("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", ncs.JoinToken)).body), &enrolled)
	secrets["node key"] = enrolled.NodeKey
	req("POST", iamv1.NodeEnrollPath, "", enrollBody("worker1", ncs.JoinToken))
	req("POST", iamv1.TokenPath, "", nodeKeyBody("worker1", enrolled.NodeKey+"x"))
	var nt iamv1.TokenResponse
	_ = json.Unmarshal([]byte(req("POST", iamv1.TokenPath, "", nodeKeyBody("worker1", enrolled.NodeKey)).body), &nt)
	secrets["node access token"] = nt.AccessToken
	req("GET", "/v1/users", nt.AccessToken, "")
	req("GET", "/v1/projects/alpha/widgets", enrolled.NodeKey, "")
	req("GET", "/v1/projects/alpha/widgets", ncs.JoinToken, "")
	req("GET", "/v1/projects/alpha/widgets", kt.AccessToken+"x", "")
	req("GET", "/v1/projects/alpha/widgets", secrets["secret access key"], "")
	req("GET", "/v1/projects/alpha/widgets", secrets["password"], "")
	req("DELETE", "/v1/users/alice", tr2.AccessToken, "")
	// Wait for the audit writer to catch up, then read everything.
	testkit.Eventually(t, 5*time.Second, "the audit log to hold the last request", func() bool {
		l, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.Items {
			if r.Verb == "delete" && r.Name == "alice" {
				return true
			}
		}
		return false
	})
	audit, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Limit: 5000})
	if err != nil {
		t.Fatal(err)
	}
	auditJSON, _ := json.Marshal(audit)
	kvs, _, err := e.store.Range(context.Background(), []byte{0}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var store bytes.Buffer
	for _, kv := range kvs {
		store.Write(kv.Key)
		store.Write(kv.Value)
	}
	places := map[string]string{
		"logs":            e.logs.String(),
		"error responses": strings.Join(errBodies, "\n"),
		"audit log":       string(auditJSON),
		"store":           store.String(),
	}
	if len(e.logs.String()) < 1000 {
		t.Fatalf("suspiciously little log output (%d bytes): is debug logging captured?", len(e.logs.String()))
	}
	for what, secret := range secrets {
		if len(secret) < 6 {
			t.Fatalf("secret %s is empty or too short to search for: %q", what, secret)
		}
		for where, text := range places {
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "key")
	k1, err := LoadOrCreateKeyFile(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	k2, err := LoadOrCreateKeyFile(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file accepted: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyFile(bad); err == nil {
		t.Fatal("malformed key file accepted")
	}
}

func TestSealer(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("/a", []byte("top secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("top secret")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if p, err := s.Open("/a", sealed); err != nil || string(p) != "top secret" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := s.Open("/b", sealed); err == nil {
		t.Fatal("opened under another context")
	}
	other, _ := NewSealer(bytes.Repeat([]byte{2}, 32))
	if _, err := other.Open("/a", sealed); err == nil {
		t.Fatal("opened with another key")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.Open("/a", sealed); err == nil {
		t.Fatal("opened a tampered value")
	}
	if _, err := NewSealer([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}

// TestProblemOnBadBody: iam's own endpoints decode strictly.
func TestProblemOnBadBody(t *testing.T) {
	e := newTestEnv(t)
	r := e.do("POST", iamv1.LoginPath, "", `{"username":"a","password":"b","pasword":"c"}`)
	if r.code != 400 || r.problem().Code != api.CodeUnknownField {
		t.Fatalf("unknown field: %d %s", r.code, r.body)
	}
}
