package iam

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

func TestProjectsBecomeActive(t *testing.T) {
	e := newTestEnv(t)
	if e.iam.Name() != "iam" {
		t.Fatal(e.iam.Name())
	}
	// The controller runs as the system principal, with only the
	// permissions it needs.
	pc := NewProjectController(func(context.Context) (string, error) { return e.url, nil },
		client.TokenFunc(e.iam.SystemTokenSource("iam-projects")),
		filepath.Join(t.TempDir(), "cp"), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	projects := e.admin.Resources(iamv1.ProjectCollection, "")
	created, err := projects.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: "p1"}, Spec: json.RawMessage(`{"displayName":"P one"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if string(created.Status) != `{"phase":"Active"}` {
		t.Fatalf("new project status %s, want Active from the start", created.Status)
	}
	// Clear the phase: the controller must put it back.
	cleared := &api.Object{Metadata: api.ObjectMeta{Name: "p1"}, Status: json.RawMessage(`{}`)}
	if _, err := projects.UpdateStatus(ctx, cleared); err != nil {
		t.Fatal(err)
	}
	// Invalid status is refused by the kind's validator.
	bad := &api.Object{Metadata: api.ObjectMeta{Name: "p1"}, Status: json.RawMessage(`{"phase":"Sleeping"}`)}
	if _, err := projects.UpdateStatus(ctx, bad); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("bad phase: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "project p1 to become Active again", func() bool {
		o, err := projects.Get(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		var s iamv1.ProjectStatus
		_ = json.Unmarshal(o.Status, &s)
		return s.Phase == "Active"
	})
	// The controller's principal may not do anything else.
	sys, err := e.iam.SystemTokenSource("iam-projects")(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.clientWith(sys).Resources(iamv1.UserCollection, "").List(ctx, client.ListOptions{}); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("system principal listing users: %v, want forbidden", err)
	}
	if _, err := e.clientWith(sys).Resources(iamv1.ProjectCollection, "").Delete(ctx, "p1", 0); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("system principal deleting a project: %v, want forbidden", err)
	}
}

func TestProjectSpecValidation(t *testing.T) {
	def := ProjectKind()
	long := make([]rune, 129)
	for i := range long {
		long[i] = 'x'
	}
	if err := def.ValidateSpec(&iamv1.ProjectSpec{DisplayName: string(long)}); err == nil {
		t.Fatal("129-character display name accepted")
	}
	if err := def.ValidateSpec(&iamv1.ProjectSpec{DisplayName: "ok"}); err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapAdmin: a new cluster gets user admin with a random password
// and a cluster-wide admin binding, once.
func TestBootstrapAdmin(t *testing.T) {
	e := newTestEnv(t)
	pw := e.iam.InitialAdminPassword()
	if len(pw) < 20 {
		t.Fatalf("initial admin password %q is too short", pw)
	}
	c, tok := e.login(BootstrapAdmin, pw)
	if tok.Principal != "user:admin" || tok.RefreshToken == "" {
		t.Fatalf("token response %+v", tok)
	}
	me, err := iamclient.New(c).WhoAmI(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if len(me.ClusterRoles) != 1 || me.ClusterRoles[0] != "admin" {
		t.Fatalf("admin roles %+v", me)
	}
	// The admin can do admin things.
	e2 := c.Resources(iamv1.ProjectCollection, "")
	if _, err := e2.Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	// A second bootstrap does nothing.
	e.iam.mu.Lock()
	e.iam.initialPassword = ""
	e.iam.mu.Unlock()
	if err := e.iam.bootstrapAdmin(e.ctx()); err != nil {
		t.Fatal(err)
	}
	if e.iam.InitialAdminPassword() != "" {
		t.Fatal("bootstrap ran twice")
	}
	// IssueUserTokens (what `up` writes into the client config) works.
	tr, err := e.iam.IssueUserTokens(e.ctx(), BootstrapAdmin)
	if err != nil || tr.RefreshToken == "" {
		t.Fatalf("IssueUserTokens: %+v %v", tr, err)
	}
}
