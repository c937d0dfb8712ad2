package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// user is a second CLI user on the same machine: its own home and client
// config, pointed at n.
func (h *harness) user(t *testing.T, n *nodeproc.Node) *harness {
	t.Helper()
	home, err := nodeproc.NewHome(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	home.Extra = []string{"ULTRACLOUD_ENDPOINT=" + n.URL}
	return &harness{t: t, home: home}
}

// TestIAM drives identity and access through the real binary and CLI:
// `up` makes the first admin and a working client config; the admin
// creates projects, users, bindings, service accounts and access keys with
// `ultracloud iam`; a second user logs in on the same machine and sees only
// its project; tokens verify with a standard OIDC library via discovery;
// the audit log shows what happened; credentials refresh by themselves;
// and no secret reaches the node's logs.
func TestIAM(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A short token lifetime, so every CLI call here refreshes.
	h.home.Extra = []string{"ULTRACLOUD_IAM_ACCESS_TOKEN_LIFETIME=10s"}
	n := h.start(nodeproc.NodeOptions{LogLevel: "debug"})
	if n.AdminPassword == "" {
		t.Fatalf("the first start printed no admin password:\n%s", n.Stdout().String())
	}
	secrets := map[string]string{"admin password": n.AdminPassword}

	// `up` then `get projects`, no other step.
	if out := h.ok("get", "projects"); !strings.Contains(out, "No projects found.") {
		t.Errorf("get projects right after up:\n%s", out)
	}
	h.ok("iam", "project", "create", "alpha")
	h.ok("iam", "project", "create", "bravo", "--display-name", "Bravo")
	const bobPassword = "bob-e2e-password-1"
	secrets["bob's password"] = bobPassword
	res := h.cli([]byte(bobPassword+"\n"), "iam", "user", "create", "bob", "--email", "bob@example.com", "--password-stdin")
	if res.ExitCode != 0 {
		t.Fatalf("user create:\n%s", res)
	}
	h.ok("iam", "binding", "create", "bob-alpha", "--role", "member", "--user", "bob", "-p", "alpha")
	h.ok("iam", "serviceaccount", "create", "ci", "-p", "alpha")
	h.ok("iam", "binding", "create", "ci-alpha", "--role", "viewer", "--serviceaccount", "ci", "-p", "alpha")
	out := h.ok("iam", "accesskey", "create", "ci-key", "-p", "alpha", "--serviceaccount", "ci")
	var keyID, keySecret string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Access key ID:"); ok {
			keyID = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Secret access key:"); ok {
			keySecret = strings.TrimSpace(v)
		}
	}
	if keyID == "" || len(keySecret) != 40 {
		t.Fatalf("accesskey create printed:\n%s", out)
	}
	secrets["secret access key"] = keySecret
	if out := h.ok("iam", "accesskey", "list", "-p", "alpha", "-o", "json"); strings.Contains(out, keySecret) || !strings.Contains(out, keyID) {
		t.Errorf("accesskey list shows the secret or lacks the ID:\n%s", out)
	}
	if out := h.ok("iam", "whoami"); !strings.Contains(out, "user:admin") || !strings.Contains(out, "Cluster roles: admin") {
		t.Errorf("whoami:\n%s", out)
	}

	// Bob logs in on the same machine, with his own client config.
	bob := h.user(t, n)
	if res := bob.cli([]byte(bobPassword+"\n"), "login", "-u", "bob", "--password-stdin"); res.ExitCode != 0 {
		t.Fatalf("bob's login:\n%s", res)
	}
	for _, p := range []string{bob.home.ClientConfigPath()} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v %v, want 0600", p, fi.Mode().Perm(), err)
		}
	}
	bobCfg := readClientConfig(t, bob.home)
	secrets["bob's refresh token"] = bobCfg.Credentials.RefreshToken
	if out := bob.ok("get", "projects"); !strings.Contains(out, "alpha") || strings.Contains(out, "bravo") {
		t.Errorf("bob's projects:\n%s", out)
	}
	if res := bob.fails("get", "project", "bravo"); !strings.Contains(res.Stderr, "not_found") || !strings.Contains(res.Stderr, "404") {
		t.Errorf("bob reading bravo:\n%s", res)
	}
	if res := bob.fails("iam", "project", "delete", "bravo"); !strings.Contains(res.Stderr, "not_found") {
		t.Errorf("bob deleting bravo:\n%s", res)
	}
	if res := bob.fails("iam", "project", "create", "mine"); !strings.Contains(res.Stderr, "forbidden") {
		t.Errorf("bob creating a project:\n%s", res)
	}
	if res := bob.fails("iam", "serviceaccount", "create", "x", "-p", "alpha"); !strings.Contains(res.Stderr, "forbidden") {
		t.Errorf("bob (member) creating a service account:\n%s", res)
	}
	if out := bob.ok("iam", "binding", "list", "-A"); strings.Contains(out, "bravo") || !strings.Contains(out, "bob-alpha") {
		t.Errorf("bob's bindings across projects:\n%s", out)
	}
	if res := bob.fails("status"); !strings.Contains(res.Stderr, "forbidden") {
		t.Errorf("bob reading node status:\n%s", res)
	}

	// Credentials refresh by themselves (10s tokens are always within the
	// refresh margin) and are saved back, still 0600.
	before := readClientConfig(t, bob.home).Credentials.RefreshToken
	bob.ok("get", "projects")
	after := readClientConfig(t, bob.home)
	if after.Credentials.RefreshToken == before || after.Credentials.AccessToken == "" {
		t.Error("bob's credentials were not refreshed and saved")
	}
	secrets["bob's access token"] = after.Credentials.AccessToken

	// A standard OIDC client verifies our tokens through discovery.
	ctx := oidc.ClientContext(t.Context(), &http.Client{Timeout: 10 * time.Second})
	provider, err := oidc.NewProvider(ctx, n.URL)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: iamv1.DefaultAudience}).Verify(ctx, after.Credentials.AccessToken)
	if err != nil || idt.Subject != "user:bob" {
		t.Fatalf("go-oidc: %+v %v", idt, err)
	}

	// The access key exchanges for a service account token.
	anon, err := client.New(client.Config{Endpoint: n.URL})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := iamclient.New(anon).ExchangeAccessKey(t.Context(), keyID, keySecret)
	if err != nil || tr.Principal != "serviceaccount:alpha/ci" {
		t.Fatalf("access key exchange: %+v %v", tr, err)
	}
	secrets["service account token"] = tr.AccessToken
	ci, _ := client.New(client.Config{Endpoint: n.URL, Token: tr.AccessToken})
	if _, err := ci.Resources(iamv1.ServiceAccountCollection, "alpha").List(t.Context(), client.ListOptions{}); err != nil {
		t.Errorf("service account listing its project: %v", err)
	}
	if _, err := ci.Resources(iamv1.ServiceAccountCollection, "bravo").List(t.Context(), client.ListOptions{}); !client.IsNotFound(err) {
		t.Errorf("service account listing bravo: %v", err)
	}

	// Wrong passwords are rate limited per user (10 at once).
	var limited bool
	for i := 0; i < 12 && !limited; i++ {
		res := bob.cli([]byte("not-bobs-password\n"), "login", "-u", "bob", "--password-stdin")
		limited = strings.Contains(res.Stderr, "too_many_requests") && strings.Contains(res.Stderr, "429")
	}
	if !limited {
		t.Error("12 wrong passwords in a row were never rate limited")
	}

	// The audit log.
	var recs []iamv1.AuditRecord
	err = nodeproc.WaitFor(t.Context(), 10*time.Second, "bob's login in the audit log", func() (bool, error) {
		out := h.ok("iam", "audit", "--principal", "user:bob", "-o", "json")
		var l iamv1.AuditList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			return false, err
		}
		recs = l.Items
		return len(recs) > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Verb+" "+r.Collection+" "+strconv.Itoa(r.Code)] = true
	}
	for _, want := range []string{"login users 200", "delete projects 404", "create projects 403", "create serviceaccounts 403"} {
		if !seen[want] {
			t.Errorf("audit log of bob lacks %q; has %v", want, seen)
		}
	}
	if out := h.ok("iam", "audit", "--since", "1h"); !strings.Contains(out, "user:admin") || !strings.Contains(out, "accesskeys") {
		t.Errorf("audit table:\n%s", out)
	}
	if res := bob.fails("iam", "audit"); !strings.Contains(res.Stderr, "forbidden") {
		t.Errorf("bob reading the audit log:\n%s", res)
	}

	// Logout revokes.
	bob.ok("logout")
	if res := bob.fails("get", "projects"); !strings.Contains(res.Stderr, "unauthenticated") && !strings.Contains(res.Stderr, "login") {
		t.Errorf("after logout:\n%s", res)
	}

	// The break-glass token still works, and no secret reached the logs.
	if _, err := sdk(t, n).Resources(iamv1.ProjectCollection, "").Get(t.Context(), "bravo"); err != nil {
		t.Errorf("break-glass token: %v", err)
	}
	logs := n.Stderr().String()
	if !strings.Contains(logs, "level=DEBUG") {
		t.Fatal("no debug logs captured")
	}
	for what, s := range secrets {
		if s == "" {
			t.Errorf("%s was never captured", what)
			continue
		}
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the node's logs", what)
		}
	}
	if strings.Count(n.Stdout().String(), n.AdminPassword) != 1 {
		t.Error("the admin password is not printed exactly once")
	}
}

// TestIAMRestart: the first admin is made once; a restart prints no
// password and rewrites working credentials; the password printed on the
// first start logs in; the key file is reused.
func TestIAMRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n := h.start(nodeproc.NodeOptions{})
	pw := n.AdminPassword
	key, err := os.ReadFile(n.KeyPath())
	if err != nil {
		t.Fatal(err)
	}
	h.ok("iam", "project", "create", "keep")
	if _, err := n.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	n2 := h.start(nodeproc.NodeOptions{})
	if n2.AdminPassword != "" {
		t.Error("a restart printed an admin password again")
	}
	if key2, _ := os.ReadFile(n2.KeyPath()); string(key2) != string(key) {
		t.Error("the encryption key file changed across a restart")
	}
	if out := h.ok("get", "projects"); !strings.Contains(out, "keep") {
		t.Errorf("get projects after restart:\n%s", out)
	}
	other := h.user(t, n2)
	if res := other.cli([]byte(pw+"\n"), "login", "-u", "admin", "--password-stdin"); res.ExitCode != 0 {
		t.Fatalf("admin login with the first start's password:\n%s", res)
	}
	if out := other.ok("iam", "user", "list"); !strings.Contains(out, "admin") {
		t.Errorf("user list:\n%s", out)
	}
	// The key file is checked: a world-readable one stops the node.
	if _, err := n2.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(h.dataDir, "iam-encryption-key"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := binary.Start(h.home, "up", "--data-dir", h.dataDir, "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(30 * time.Second)
	if err != nil {
		_ = p.Kill()
		t.Fatal(err)
	}
	if code == 0 || !strings.Contains(p.Stderr().String(), "chmod 600") {
		t.Errorf("node with a world-readable key file: exit %d\n%s", code, p.Stderr().String())
	}
}
