package iam

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// TestCustomRolesAndBindings: custom roles with wildcards and exclusions
// grant exactly what they say; invalid roles and bindings are refused
// naming the field; grants and revocations apply to the writer's very next
// request; bindings do not survive into a recreated project.
func TestCustomRolesAndBindings(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.user("carl", "carl-password-1")
	e.user("dave", "dave-password-1")
	roles := e.admin.Resources(iamv1.RoleCollection, "")
	mk := func(name string, perms ...string) error {
		b, _ := json.Marshal(iamv1.RoleSpec{Permissions: perms})
		_, err := roles.Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
		return err
	}
	if err := mk("bad", "test.widgets.get", "test.Widgets.get"); !client.HasCode(err, api.CodeInvalidField) ||
		!strings.Contains(err.Error(), "spec.permissions[1]") {
		t.Fatalf("invalid pattern: %v", err)
	}
	for _, p := range []string{"a.b", "a.b.c.d", "", "a..b", "*a.b.c", "!", "a.b.c!"} {
		if err := mk("bad", p); !client.HasCode(err, api.CodeInvalidField) {
			t.Errorf("pattern %q: %v", p, err)
		}
	}
	if err := mk("admin", "*.*.*"); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("role named like a built-in: %v", err)
	}
	if err := mk("widget-reader", "test.widgets.get", "test.widgets.list"); err != nil {
		t.Fatal(err)
	}
	if err := mk("no-deletes", "*.*.*", "!*.*.delete"); err != nil {
		t.Fatal(err)
	}
	e.create("widgets", "alpha", "w1", widgetSpec{})
	_, ct := e.login("carl", "carl-password-1")
	_, dt := e.login("dave", "dave-password-1")
	carl, dave := ct.AccessToken, dt.AccessToken

	// No binding yet: alpha is invisible. Binding applies at once.
	if r := e.do("GET", "/v1/projects/alpha/widgets/w1", carl, ""); r.code != 404 {
		t.Fatalf("carl before binding: %d", r.code)
	}
	e.bind("carl-reads", "widget-reader", "user:carl", "alpha")
	for _, rq := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/projects/alpha/widgets/w1", 200},
		{"GET", "/v1/projects/alpha/widgets", 200},
		{"GET", "/v1/projects/alpha/widgets?watch=true&since=1", 403},
		{"DELETE", "/v1/projects/alpha/widgets/w1", 403},
		{"GET", "/v1/projects/alpha/serviceaccounts", 403},
		{"GET", "/v1/projects/alpha", 403},
	} {
		if r := e.do(rq.method, rq.path, carl, ""); r.code != rq.want {
			t.Errorf("carl %s %s: %d %s, want %d", rq.method, rq.path, r.code, r.body, rq.want)
		}
	}
	e.bind("dave-all", "no-deletes", "user:dave", "")
	if r := e.do("POST", "/v1/projects/alpha/widgets", dave, `{"metadata":{"name":"w2"},"spec":{}}`); r.code != 201 {
		t.Errorf("dave create: %d %s", r.code, r.body)
	}
	if r := e.do("DELETE", "/v1/projects/alpha/widgets/w2", dave, ""); r.code != 403 {
		t.Errorf("dave delete: %d %s", r.code, r.body)
	}
	if r := e.do("POST", "/v1/projects", dave, `{"metadata":{"name":"beta"}}`); r.code != 201 {
		t.Errorf("dave creating a project with a cluster binding: %d %s", r.code, r.body)
	}
	// Changing the role changes what it grants, at once.
	b, _ := json.Marshal(iamv1.RoleSpec{Permissions: []string{"test.widgets.get"}})
	if _, err := roles.Update(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "widget-reader"}, Spec: b}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/v1/projects/alpha/widgets", carl, ""); r.code != 403 {
		t.Errorf("carl list after the role lost list: %d", r.code)
	}
	// Bindings: role and principal are checked and immutable; project and
	// role must exist.
	rbs := e.admin.Resources(iamv1.RoleBindingCollection, "alpha")
	for name, spec := range map[string]iamv1.RoleBindingSpec{
		"bad-principal": {Role: "viewer", Principal: "carl"},
		"bad-sa":        {Role: "viewer", Principal: "serviceaccount:nope"},
		"bad-role":      {Role: "Viewer", Principal: "user:carl"},
		"missing-role":  {Role: "nosuchrole", Principal: "user:carl"},
	} {
		b, _ := json.Marshal(spec)
		_, err := rbs.Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
		if p, ok := client.ProblemOf(err); !ok || p.Status != http.StatusBadRequest || p.Field == "" {
			t.Errorf("%s: %v", name, err)
		}
	}
	b, _ = json.Marshal(iamv1.RoleBindingSpec{Role: "viewer", Principal: "user:carl"})
	if _, err := e.admin.Resources(iamv1.RoleBindingCollection, "nowhere").Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "x"}, Spec: b}); !client.IsNotFound(err) {
		t.Errorf("binding in a missing project: %v", err)
	}
	if _, err := rbs.Update(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "carl-reads"}, Spec: b}); !client.HasCode(err, api.CodeInvalidField) {
		t.Errorf("changing a binding's role: %v", err)
	}
	// Revocation applies at once.
	if _, err := rbs.Delete(e.ctx(), "carl-reads", 0); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/v1/projects/alpha/widgets/w1", carl, ""); r.code != 404 {
		t.Errorf("carl after the binding was deleted: %d", r.code)
	}
	// A binding made for an earlier project of the same name does not
	// apply to a new one.
	e.bind("carl-view", "viewer", "user:carl", "alpha")
	if r := e.do("GET", "/v1/projects/alpha", carl, ""); r.code != 200 {
		t.Fatalf("carl viewer: %d", r.code)
	}
	if _, err := e.admin.Resources(iamv1.ProjectCollection, "").Delete(e.ctx(), "alpha", 0); err != nil {
		t.Fatal(err)
	}
	// The API's clock is the env's fake one: the recreated project is
	// created a millisecond (createdAt's resolution) after the binding.
	e.clock.Advance(time.Millisecond)
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	if r := e.do("GET", "/v1/projects/alpha", carl, ""); r.code != 404 {
		t.Errorf("carl's old binding applies to a recreated project: %d", r.code)
	}
}

// TestAccessKeys: secrets are shown once and stored sealed; only a user
// (or a user administrator) creates keys acting as that user; keys for
// service accounts need the account in the key's project.
func TestAccessKeys(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.create(iamv1.ProjectCollection, "", "bravo", iamv1.ProjectSpec{})
	e.create(iamv1.ServiceAccountCollection, "alpha", "ci", iamv1.ServiceAccountSpec{})
	e.create(iamv1.ServiceAccountCollection, "bravo", "ci-b", iamv1.ServiceAccountSpec{})
	e.user("alice", "alice-password-1")
	e.user("bob", "bob-password-123")
	e.bind("alice-admin", "admin", "user:alice", "alpha")
	e.bind("ci", "member", "serviceaccount:alpha/ci", "alpha")
	alice, _ := e.login("alice", "alice-password-1")
	keys := alice.Resources(iamv1.AccessKeyCollection, "alpha")
	mk := func(name string, spec iamv1.AccessKeySpec) (*api.Object, error) {
		b, _ := json.Marshal(spec)
		return keys.Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
	}
	if _, err := mk("for-bob", iamv1.AccessKeySpec{User: "bob"}); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("alice creating a key for bob: %v", err)
	}
	if _, err := mk("other-project", iamv1.AccessKeySpec{ServiceAccount: "ci-b"}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("key for another project's account: %v", err)
	}
	if _, err := mk("both", iamv1.AccessKeySpec{ServiceAccount: "ci", User: "alice"}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("key for two principals: %v", err)
	}
	if _, err := mk("mine", iamv1.AccessKeySpec{User: "alice"}); err != nil {
		t.Fatalf("alice creating her own key: %v", err)
	}
	o, err := mk("ci-key", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	var st iamv1.AccessKeyStatus
	_ = json.Unmarshal(o.Status, &st)
	if !validAccessKeyID(st.AccessKeyID) || len(st.SecretAccessKey) != 40 {
		t.Fatalf("new key %+v", st)
	}
	again, err := keys.Get(e.ctx(), "ci-key")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(again.Status), st.SecretAccessKey) || !strings.Contains(string(again.Status), st.AccessKeyID) {
		t.Fatalf("stored status %s", again.Status)
	}
	list, err := keys.List(e.ctx(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(list); strings.Contains(string(b), st.SecretAccessKey) {
		t.Fatal("the secret appears in a list")
	}
	tok, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), st.AccessKeyID, st.SecretAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	ci := e.clientWith(tok.AccessToken)
	if _, err := ci.Resources("widgets", "alpha").Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "from-ci"}, Spec: json.RawMessage(`{}`)}); err != nil {
		t.Fatalf("service account creating a widget: %v", err)
	}
	if _, err := ci.Resources("widgets", "bravo").List(e.ctx(), client.ListOptions{}); !client.IsNotFound(err) {
		t.Fatalf("service account reading bravo: %v", err)
	}
	// The SDK's access key source.
	sdk, err := client.New(client.Config{Endpoint: e.url, TokenSource: iamclient.New(e.clientWith("")).AccessKeySource(st.AccessKeyID, st.SecretAccessKey)})
	if err != nil {
		t.Fatal(err)
	}
	if me, err := iamclient.New(sdk).WhoAmI(e.ctx()); err != nil || me.Principal != "serviceaccount:alpha/ci" {
		t.Fatalf("whoami via access key: %+v %v", me, err)
	}
	if _, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), st.AccessKeyID, st.SecretAccessKey+"x"); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("wrong secret: %v", err)
	}
	// Status is server-owned.
	if _, err := keys.UpdateStatus(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "ci-key"}, Status: json.RawMessage(`{"accessKeyId":"UCAKAAAAAAAAAAAAAAAA"}`)}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("writing key status: %v", err)
	}
}

// TestAudit: every mutating request is recorded with who, what, which
// resource, when and the result, including refused ones, and queries
// filter by time, principal and project, within the caller's permission.
func TestAudit(t *testing.T) {
	e := newTestEnv(t)
	start := e.clock.Now()
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.create(iamv1.ProjectCollection, "", "bravo", iamv1.ProjectSpec{})
	e.user("alice", "alice-password-1")
	e.bind("alice", "member", "user:alice", "alpha")
	_, at := e.login("alice", "alice-password-1")
	e.do("POST", "/v1/projects/alpha/widgets", at.AccessToken, `{"metadata":{"name":"w1"},"spec":{}}`)
	e.do("DELETE", "/v1/projects/bravo/widgets/w9", at.AccessToken, "")
	e.do("POST", "/v1/projects/alpha/serviceaccounts", at.AccessToken, `{"metadata":{"name":"sa"},"spec":{}}`)
	e.do("POST", "/v1/projects/alpha/widgets", "bad-token", `{"metadata":{"name":"w2"},"spec":{}}`)
	e.do("POST", iamv1.LoginPath, "", `{"username":"alice","password":"wrong-password-x"}`)

	var recs []iamv1.AuditRecord
	testkit.Eventually(t, 5*time.Second, "audit records of alice", func() bool {
		l, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Principal: "user:alice", Since: start})
		if err != nil {
			t.Fatal(err)
		}
		recs = l.Items
		return len(recs) >= 5
	})
	want := []struct {
		verb, coll, project, name string
		code                      int
	}{
		{"login", "users", "", "alice", 200},
		{"create", "widgets", "alpha", "w1", 201},
		{"delete", "widgets", "bravo", "w9", 404},
		{"create", "serviceaccounts", "alpha", "", 403},
		{"login", "users", "", "alice", 401},
	}
	for i, w := range want {
		r := recs[i]
		if r.Verb != w.verb || r.Collection != w.coll || r.Project != w.project || r.Name != w.name || r.Code != w.code ||
			r.Principal != "user:alice" || r.Time.IsZero() || r.SourceIP == "" {
			t.Errorf("record %d = %+v, want %+v", i, r, w)
		}
	}
	// The unauthenticated attempt is recorded without a principal.
	all, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Since: start, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range all.Items {
		if r.Code == 401 && r.Collection == "widgets" && r.Principal == "" {
			found = true
		}
	}
	if !found {
		t.Error("the unauthenticated create is not in the audit log")
	}
	// Paging.
	page, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Since: start, Limit: 2})
	if err != nil || len(page.Items) != 2 || page.Continue == "" {
		t.Fatalf("page: %+v %v", page, err)
	}
	next, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Since: start, Limit: 2, Continue: page.Continue})
	if err != nil || len(next.Items) != 2 || next.Items[0].ID <= page.Items[1].ID {
		t.Fatalf("next page: %+v %v", next, err)
	}
	// Time filter.
	if l, err := iamclient.New(e.admin).Audit(e.ctx(), iamclient.AuditOptions{Since: e.clock.Now().Add(time.Hour)}); err != nil || len(l.Items) != 0 {
		t.Fatalf("future since: %+v %v", l, err)
	}
	// Who may read it: a member may not; a project admin reads only its
	// project; other projects are hidden.
	alice := e.clientWith(at.AccessToken)
	if _, err := iamclient.New(alice).Audit(e.ctx(), iamclient.AuditOptions{}); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("member reading the audit log: %v", err)
	}
	e.bind("alice-admin", "admin", "user:alice", "alpha")
	l, err := iamclient.New(alice).Audit(e.ctx(), iamclient.AuditOptions{Project: "alpha"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.Items {
		if r.Project != "alpha" {
			t.Errorf("project audit shows %+v", r)
		}
	}
	if _, err := iamclient.New(alice).Audit(e.ctx(), iamclient.AuditOptions{Project: "bravo"}); !client.IsNotFound(err) {
		t.Fatalf("alice reading bravo's audit: %v", err)
	}
	// Append-only: there is no way to change or delete records.
	for _, m := range []string{"PUT", "DELETE", "POST"} {
		if r := e.do(m, iamv1.AuditPath, bootstrapToken, `{}`); r.code != http.StatusMethodNotAllowed && r.code != http.StatusNotFound {
			t.Errorf("%s %s: %d", m, iamv1.AuditPath, r.code)
		}
	}
	// Retention.
	n, err := e.iam.audit.prune(e.ctx(), e.clock.Now().Add(time.Hour))
	if err != nil || n == 0 {
		t.Fatalf("prune: %d %v", n, err)
	}
}
