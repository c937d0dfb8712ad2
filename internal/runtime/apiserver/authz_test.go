package apiserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// fakeAuthn maps "tok-NAME" to principal NAME, "node-NAME" to the node
// principal node:NAME and "super" to a superuser.
type fakeAuthn struct{}

func (fakeAuthn) Authenticate(r *http.Request) (apiserver.Principal, error) {
	tok := apiserver.BearerToken(r)
	switch {
	case tok == "super":
		return apiserver.Principal{Name: "bootstrap:admin", Superuser: true}, nil
	case strings.HasPrefix(tok, "tok-"):
		return apiserver.Principal{Name: strings.TrimPrefix(tok, "tok-")}, nil
	case strings.HasPrefix(tok, "node-"):
		n := strings.TrimPrefix(tok, "node-")
		return apiserver.Principal{Name: "node:" + n, Node: n}, nil
	}
	return apiserver.Principal{}, apiserver.ErrBadToken()
}

// fakeAuthz: grants[principal][project] lists allowed verbs; a principal
// sees the projects it has grants in; project "" holds cluster grants.
type fakeAuthz struct {
	grants map[string]map[string][]string
}

func (f fakeAuthz) Authorize(_ context.Context, p apiserver.Principal, at apiserver.Attributes) apiserver.Decision {
	if slices.Contains(f.grants[p.Name][""], at.Verb) || slices.Contains(f.grants[p.Name][at.Project], at.Verb) {
		return apiserver.Allow
	}
	if _, sees := f.grants[p.Name][at.Project]; sees || at.Project == "" {
		return apiserver.Deny
	}
	return apiserver.Hide
}

func (f fakeAuthz) Projects(_ context.Context, p apiserver.Principal, at apiserver.Attributes) []string {
	var out []string
	for proj, verbs := range f.grants[p.Name] {
		if proj != "" && slices.Contains(verbs, at.Verb) {
			out = append(out, proj)
		}
	}
	slices.Sort(out)
	return out
}

type fakeAuditor struct {
	mu  sync.Mutex
	evs []apiserver.AuditEvent
}

func (f *fakeAuditor) Record(_ context.Context, ev apiserver.AuditEvent) {
	f.mu.Lock()
	f.evs = append(f.evs, ev)
	f.mu.Unlock()
}

func (f *fakeAuditor) events() []apiserver.AuditEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.evs)
}

type authzEnv struct {
	st      *pebblestore.Store
	srv     *httptest.Server
	auditor *fakeAuditor
	after   chan int64
}

func newAuthzEnv(t *testing.T, grants map[string]map[string][]string) *authzEnv {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aud := &fakeAuditor{}
	a := apiserver.New(st, apiserver.Options{Authenticator: fakeAuthn{}, Authorizer: fakeAuthz{grants}, Auditor: aud, BookmarkInterval: 50 * time.Millisecond})
	e := &authzEnv{st: st, auditor: aud, after: make(chan int64, 100)}
	type secretStatus struct {
		ID     string `json:"id,omitempty"`
		Secret string `json:"secret,omitempty"`
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, widgetStatus]{
		Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject,
		AfterWrite: func(_ context.Context, rev int64) { e.after <- rev },
	}))
	must(apiserver.Register(a, "test", apiserver.KindDef[struct{}, struct{}]{Kind: "Project", Collection: "projects", Singular: "project", Scope: api.ScopeCluster}))
	must(apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, secretStatus]{
		Kind: "Key", Collection: "keys", Singular: "key", Scope: api.ScopeProject,
		OnCreate: func(ctx context.Context, c *apiserver.Creation[widgetSpec, secretStatus]) error {
			if c.Spec.Size < 0 {
				return apiserver.FieldError("spec.size", "negative")
			}
			c.Status.ID = "id-" + c.Name
			c.Ops = append(c.Ops, storage.Op{Type: storage.OpPut, Key: []byte("/secrets/" + c.Name), Value: []byte("s3cr3t")})
			c.Require = append(c.Require, apiserver.Precondition{
				Compare: storage.Compare{Key: apiserver.ObjectKey("projects", "", c.Project), Target: storage.CompareExists},
				Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", c.Project),
			})
			c.ResponseStatus = &secretStatus{ID: c.Status.ID, Secret: "s3cr3t"}
			return nil
		},
		OnDelete: func(ctx context.Context, d *apiserver.Deletion[widgetSpec, secretStatus]) error {
			d.Ops = append(d.Ops, storage.Op{Type: storage.OpDelete, Key: []byte("/secrets/" + d.Object.Metadata.Name)})
			return nil
		},
	}))
	mux := http.NewServeMux()
	a.Mount(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		a.CloseStreams()
		e.srv.Close()
		st.Close()
	})
	// Seed as the superuser.
	for _, p := range []string{"alpha", "bravo", "charlie"} {
		e.req(t, "POST", "/v1/projects", "super", `{"metadata":{"name":"`+p+`"}}`, 201)
		for _, w := range []string{"w1", "w2"} {
			e.req(t, "POST", "/v1/projects/"+p+"/widgets", "super", `{"metadata":{"name":"`+p+`-`+w+`"},"spec":{"size":1}}`, 201)
		}
	}
	return e
}

func (e *authzEnv) req(t *testing.T, method, path, token, body string, want int) string {
	t.Helper()
	r, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want != 0 && resp.StatusCode != want {
		t.Fatalf("%s %s as %q: %d %s, want %d", method, path, token, resp.StatusCode, b, want)
	}
	return string(b)
}

// listAll pages through path one item at a time and checks every continue
// token names only allowed positions.
func (e *authzEnv) listAll(t *testing.T, path, token string, forbidden string) []string {
	t.Helper()
	var out []string
	cont := ""
	for i := 0; i < 100; i++ {
		q := url.Values{"limit": {"1"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var l api.List
		if err := json.Unmarshal([]byte(e.req(t, "GET", path+"?"+q.Encode(), token, "", 200)), &l); err != nil {
			t.Fatal(err)
		}
		for _, o := range l.Items {
			out = append(out, o.Metadata.Project+"/"+o.Metadata.Name)
		}
		if l.Metadata.Continue == "" {
			return out
		}
		raw, _ := base64.RawURLEncoding.DecodeString(l.Metadata.Continue)
		if strings.Contains(string(raw), forbidden) {
			t.Fatalf("continue token %s names %s", raw, forbidden)
		}
		cont = l.Metadata.Continue
	}
	t.Fatal("listing never ended")
	return nil
}

func TestAuthorization(t *testing.T) {
	e := newAuthzEnv(t, map[string]map[string][]string{
		// alice: reads alpha and charlie; writes widgets in alpha.
		"alice": {"alpha": {"get", "list", "watch", "create", "update", "updatestatus", "delete"}, "charlie": {"get", "list"}},
		"carol": {"": {"get", "list"}},
	})
	// 401 without or with a bad token.
	e.req(t, "GET", "/v1/projects/alpha/widgets", "", "", 401)
	e.req(t, "GET", "/v1/projects/alpha/widgets", "bad", "", 401)
	// Allowed.
	e.req(t, "GET", "/v1/projects/alpha/widgets/alpha-w1", "tok-alice", "", 200)
	e.req(t, "PUT", "/v1/projects/alpha/widgets/alpha-w1", "tok-alice", `{"metadata":{"name":"alpha-w1"},"spec":{"size":5}}`, 200)
	// Visible but not allowed: 403.
	e.req(t, "DELETE", "/v1/projects/charlie/widgets/charlie-w1", "tok-alice", "", 403)
	e.req(t, "GET", "/v1/projects/charlie/widgets?watch=true", "tok-alice", "", 403)
	// Invisible: 404, the same as a missing object.
	hidden := e.req(t, "GET", "/v1/projects/bravo/widgets/bravo-w1", "tok-alice", "", 404)
	missing := e.req(t, "GET", "/v1/projects/bravo/widgets/nope", "tok-alice", "", 404)
	var hp, mp api.Problem
	_ = json.Unmarshal([]byte(hidden), &hp)
	_ = json.Unmarshal([]byte(missing), &mp)
	if strings.Replace(hp.Detail, "bravo-w1", "X", 1) != strings.Replace(mp.Detail, "nope", "X", 1) {
		t.Errorf("hidden %q vs missing %q", hp.Detail, mp.Detail)
	}
	e.req(t, "GET", "/v1/projects/bravo/widgets", "tok-alice", "", 404)
	e.req(t, "POST", "/v1/projects/bravo/widgets", "tok-alice", `{"metadata":{"name":"x"},"spec":{}}`, 404)
	e.req(t, "PUT", "/v1/projects/bravo/widgets/bravo-w1/status", "tok-alice", `{"metadata":{"name":"bravo-w1"},"status":{"ready":true}}`, 404)
	e.req(t, "GET", "/v1/projects/bravo", "tok-alice", "", 404)
	e.req(t, "DELETE", "/v1/projects/bravo", "tok-alice", "", 404)
	// Cluster level is never hidden: 403.
	e.req(t, "POST", "/v1/projects", "tok-alice", `{"metadata":{"name":"delta"}}`, 403)
	// Lists: cross-project and projects show only what may be seen, at any
	// page size, and continue tokens never name bravo.
	got := e.listAll(t, "/v1/widgets", "tok-alice", "bravo")
	if want := []string{"alpha/alpha-w1", "alpha/alpha-w2", "charlie/charlie-w1", "charlie/charlie-w2"}; !slices.Equal(got, want) {
		t.Errorf("alice's cross-project list %v, want %v", got, want)
	}
	if got := e.listAll(t, "/v1/projects", "tok-alice", "bravo"); !slices.Equal(got, []string{"/alpha", "/charlie"}) {
		t.Errorf("alice's projects %v", got)
	}
	// A cluster-wide reader sees all.
	if got := e.listAll(t, "/v1/widgets", "tok-carol", "\x00"); len(got) != 6 {
		t.Errorf("carol's cross-project list %v", got)
	}
	// Nobody's list: empty, not an error.
	if got := e.listAll(t, "/v1/widgets", "tok-nobody", "alpha"); len(got) != 0 {
		t.Errorf("nobody's list %v", got)
	}
	// A continue token from an unrestricted list does not widen a
	// restricted one.
	var l api.List
	_ = json.Unmarshal([]byte(e.req(t, "GET", "/v1/widgets?limit=3", "tok-carol", "", 200)), &l) // ends in bravo
	var rest api.List
	_ = json.Unmarshal([]byte(e.req(t, "GET", "/v1/widgets?limit=10&continue="+l.Metadata.Continue, "tok-alice", "", 200)), &rest)
	for _, o := range rest.Items {
		if o.Metadata.Project == "bravo" {
			t.Errorf("alice resumed into bravo: %s", o.Metadata.Name)
		}
	}
}

func TestAuditEvents(t *testing.T) {
	e := newAuthzEnv(t, map[string]map[string][]string{"alice": {"alpha": {"get", "list", "create"}}})
	before := len(e.auditor.events())
	e.req(t, "GET", "/v1/projects/alpha/widgets", "tok-alice", "", 200)
	e.req(t, "POST", "/v1/projects/alpha/widgets", "tok-alice", `{"metadata":{"name":"new"},"spec":{}}`, 201)
	e.req(t, "DELETE", "/v1/projects/alpha/widgets/new", "tok-alice", "", 403)
	e.req(t, "DELETE", "/v1/projects/bravo/widgets/bravo-w1", "tok-alice", "", 404)
	e.req(t, "POST", "/v1/projects/alpha/widgets", "", `{"metadata":{"name":"x"},"spec":{}}`, 401)
	evs := e.auditor.events()[before:]
	want := []apiserver.AuditEvent{
		{Principal: "alice", Verb: "create", Component: "test", Collection: "widgets", Project: "alpha", Name: "new", Code: 201, Method: "POST"},
		{Principal: "alice", Verb: "delete", Component: "test", Collection: "widgets", Project: "alpha", Name: "new", Code: 403, Method: "DELETE"},
		{Principal: "alice", Verb: "delete", Component: "test", Collection: "widgets", Project: "bravo", Name: "bravo-w1", Code: 404, Method: "DELETE"},
		{Principal: "", Verb: "create", Collection: "widgets", Project: "alpha", Code: 401, Method: "POST"},
	}
	if len(evs) != len(want) {
		t.Fatalf("audit events %+v", evs)
	}
	for i, w := range want {
		g := evs[i]
		if g.Principal != w.Principal || g.Verb != w.Verb || g.Component != w.Component || g.Collection != w.Collection ||
			g.Project != w.Project || g.Name != w.Name || g.Code != w.Code || g.Method != w.Method || g.Time.IsZero() || g.SourceIP == "" {
			t.Errorf("event %d = %+v, want %+v", i, g, w)
		}
	}
}

// TestKindHooks: OnCreate's extra ops and status commit with the object,
// its response-only status is never stored, a failed precondition writes
// nothing; OnDelete's ops commit with the delete; AfterWrite sees every
// write's revision.
func TestKindHooks(t *testing.T) {
	e := newAuthzEnv(t, nil)
	for len(e.after) > 0 {
		<-e.after
	}
	body := e.req(t, "POST", "/v1/projects/alpha/keys", "super", `{"metadata":{"name":"k1"},"spec":{}}`, 201)
	if !strings.Contains(body, `"secret":"s3cr3t"`) || !strings.Contains(body, `"id":"id-k1"`) {
		t.Fatalf("create response %s", body)
	}
	got := e.req(t, "GET", "/v1/projects/alpha/keys/k1", "super", "", 200)
	if strings.Contains(got, "s3cr3t") || !strings.Contains(got, `"id":"id-k1"`) {
		t.Fatalf("stored object %s", got)
	}
	if _, err := e.st.Get(context.Background(), []byte("/secrets/k1")); err != nil {
		t.Fatalf("OnCreate's op was not committed: %v", err)
	}
	e.req(t, "POST", "/v1/projects/nowhere/keys", "super", `{"metadata":{"name":"k2"},"spec":{}}`, 404)
	e.req(t, "GET", "/v1/projects/nowhere/keys/k2", "super", "", 404)
	e.req(t, "POST", "/v1/projects/alpha/keys", "super", `{"metadata":{"name":"k3"},"spec":{"size":-1}}`, 400)
	e.req(t, "POST", "/v1/projects/alpha/keys", "super", `{"metadata":{"name":"k1"},"spec":{}}`, 409)
	e.req(t, "DELETE", "/v1/projects/alpha/keys/k1", "super", "", 200)
	e.req(t, "DELETE", "/v1/projects/alpha/keys/k1", "super", "", 404)
	if _, err := e.st.Get(context.Background(), []byte("/secrets/k1")); err == nil {
		t.Fatal("OnDelete's op was not committed")
	}
	// AfterWrite: create, update, status, delete of widgets.
	e.req(t, "POST", "/v1/projects/alpha/widgets", "super", `{"metadata":{"name":"h"},"spec":{}}`, 201)
	e.req(t, "PUT", "/v1/projects/alpha/widgets/h", "super", `{"metadata":{"name":"h"},"spec":{"size":2}}`, 200)
	e.req(t, "PUT", "/v1/projects/alpha/widgets/h", "super", `{"metadata":{"name":"h"},"spec":{"size":2}}`, 200) // no-op: no write
	e.req(t, "PUT", "/v1/projects/alpha/widgets/h/status", "super", `{"metadata":{"name":"h"},"status":{"ready":true}}`, 200)
	e.req(t, "DELETE", "/v1/projects/alpha/widgets/h", "super", "", 200)
	var revs []int64
	for len(e.after) > 0 {
		revs = append(revs, <-e.after)
	}
	if len(revs) != 4 || !slices.IsSorted(revs) {
		t.Fatalf("AfterWrite revisions %v, want 4 increasing", revs)
	}
}
