package iam

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// projectScoped are the project-scoped collections that exist: the test
// kind plus iam's own.
var projectScoped = []string{"widgets", iamv1.ServiceAccountCollection, iamv1.RoleBindingCollection, iamv1.AccessKeyCollection}

// isolationWorld: projects alpha and bravo; alice is a member of alpha,
// bob of bravo, vera a viewer of alpha. Every project-scoped collection
// has objects in both projects; bravo's names all contain "bravo".
type isolationWorld struct {
	e                          *testEnv
	alice, vera                string // access tokens
	aliceClient                *client.Client
	bravoNames, alphaNames     map[string]string // collection -> an object name
	bodyOf                     func(coll, name string) string
	aliceSeesNothingOfBravo    func(t *testing.T, where, body string)
	listAllAs                  func(t *testing.T, token, path string) []api.Object
	spec                       map[string]any
	bobClient                  *client.Client
	bobToken                   string
	aliceTokenResp, bobTokResp *iamv1.TokenResponse
}

func newIsolationWorld(t *testing.T) *isolationWorld {
	e := newTestEnv(t)
	w := &isolationWorld{e: e, bravoNames: map[string]string{}, alphaNames: map[string]string{}}
	for _, p := range []string{"alpha", "bravo"} {
		e.create(iamv1.ProjectCollection, "", p, iamv1.ProjectSpec{})
	}
	e.user("alice", "alice-password-1")
	e.user("bob", "bob-password-123")
	e.user("vera", "vera-password-1")
	e.bind("alice-member", "member", "user:alice", "alpha")
	e.bind("bravo-bob-member", "member", "user:bob", "bravo")
	e.bind("vera-viewer", "viewer", "user:vera", "alpha")
	for _, p := range []string{"alpha", "bravo"} {
		e.create(iamv1.ServiceAccountCollection, p, p+"-sa", iamv1.ServiceAccountSpec{})
	}
	w.spec = map[string]any{
		"widgets":                      widgetSpec{Size: 1},
		iamv1.ServiceAccountCollection: iamv1.ServiceAccountSpec{},
		iamv1.RoleBindingCollection:    iamv1.RoleBindingSpec{Role: "viewer", Principal: "user:vera"},
		iamv1.AccessKeyCollection:      nil, // per project, below
	}
	for _, coll := range projectScoped {
		for _, p := range []string{"alpha", "bravo"} {
			name := p + "-only-" + coll[:4]
			spec := w.spec[coll]
			if coll == iamv1.AccessKeyCollection {
				spec = iamv1.AccessKeySpec{ServiceAccount: p + "-sa"}
			}
			e.create(coll, p, name, spec)
			if p == "bravo" {
				w.bravoNames[coll] = name
			} else {
				w.alphaNames[coll] = name
			}
		}
	}
	w.aliceClient, w.aliceTokenResp = e.login("alice", "alice-password-1")
	w.alice = w.aliceTokenResp.AccessToken
	_, vt := e.login("vera", "vera-password-1")
	w.vera = vt.AccessToken
	w.bobClient, w.bobTokResp = e.login("bob", "bob-password-123")
	w.bobToken = w.bobTokResp.AccessToken
	w.bodyOf = func(coll, name string) string {
		spec := w.spec[coll]
		if coll == iamv1.AccessKeyCollection {
			spec = iamv1.AccessKeySpec{ServiceAccount: "alpha-sa"}
		}
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"name": name}, "spec": spec})
		return string(b)
	}
	w.aliceSeesNothingOfBravo = func(t *testing.T, where, body string) {
		t.Helper()
		if strings.Contains(body, "bravo") {
			t.Errorf("%s: alice's response mentions bravo:\n%s", where, body)
		}
	}
	w.listAllAs = func(t *testing.T, token, path string) []api.Object {
		t.Helper()
		var out []api.Object
		cont := ""
		for {
			q := url.Values{"limit": {"1"}}
			if cont != "" {
				q.Set("continue", cont)
			}
			r := e.do("GET", path+"?"+q.Encode(), token, "")
			if r.code != 200 {
				t.Fatalf("GET %s: %d %s", path, r.code, r.body)
			}
			var l api.List
			if err := json.Unmarshal([]byte(r.body), &l); err != nil {
				t.Fatal(err)
			}
			out = append(out, l.Items...)
			if l.Metadata.Continue == "" {
				return out
			}
			raw, _ := base64.RawURLEncoding.DecodeString(l.Metadata.Continue)
			if strings.Contains(string(raw), "bravo") {
				t.Errorf("GET %s: continue token %s names a bravo position", path, raw)
			}
			cont = l.Metadata.Continue
		}
	}
	return w
}

// TestTenantIsolation: a member of project alpha cannot read, list, watch,
// change or delete anything of project bravo, on every project-scoped
// collection (iam's and a test kind iam knows nothing about) and on the
// project object itself; everything of bravo answers exactly as if it did
// not exist, and no response, list or continue token ever names it.
func TestTenantIsolation(t *testing.T) {
	w := newIsolationWorld(t)
	e := w.e
	for _, coll := range projectScoped {
		t.Run(coll, func(t *testing.T) {
			name := w.bravoNames[coll]
			base := "/v1/projects/bravo/" + coll
			missing := e.do("GET", base+"/does-not-exist", w.alice, "")
			for _, rq := range []struct{ method, path, body string }{
				{"GET", base + "/" + name, ""},
				{"GET", base, ""},
				{"GET", base + "?watch=true", ""},
				{"POST", base, w.bodyOf(coll, "alice-was-here")},
				{"PUT", base + "/" + name, w.bodyOf(coll, name)},
				{"PUT", base + "/" + name + "/status", `{"metadata":{"name":"` + name + `"},"status":{}}`},
				{"DELETE", base + "/" + name, ""},
			} {
				r := e.do(rq.method, rq.path, w.alice, rq.body)
				if r.code != http.StatusNotFound || r.problem().Code != api.CodeNotFound {
					t.Errorf("%s %s as alice: %d %s, want 404 not_found", rq.method, rq.path, r.code, r.body)
				}
			}
			// An existing bravo object and a missing one look the same.
			got := e.do("GET", base+"/"+name, w.alice, "")
			if strings.ReplaceAll(got.problem().Detail, name, "X") != strings.ReplaceAll(missing.problem().Detail, "does-not-exist", "X") {
				t.Errorf("existing and missing bravo objects differ: %q vs %q", got.problem().Detail, missing.problem().Detail)
			}
			// Cross-project lists show alpha only, whatever the page size.
			items := w.listAllAs(t, w.alice, "/v1/"+coll)
			for _, o := range items {
				if o.Metadata.Project != "alpha" {
					t.Errorf("cross-project list of %s as alice shows %s/%s", coll, o.Metadata.Project, o.Metadata.Name)
				}
			}
			if len(items) == 0 {
				t.Errorf("cross-project list of %s as alice is empty; alpha's objects are missing", coll)
			}
			r := e.do("GET", "/v1/"+coll, w.alice, "")
			w.aliceSeesNothingOfBravo(t, "list "+coll, r.body)
			// Bravo's object is untouched.
			if _, err := e.admin.Resources(coll, "bravo").Get(e.ctx(), name); err != nil {
				t.Errorf("bravo's %s was changed: %v", name, err)
			}
		})
	}

	t.Run("projects", func(t *testing.T) {
		missing := e.do("GET", "/v1/projects/nope", w.alice, "")
		for _, rq := range []struct{ method, path, body string }{
			{"GET", "/v1/projects/bravo", ""},
			{"PUT", "/v1/projects/bravo", `{"metadata":{"name":"bravo"},"spec":{"displayName":"mine"}}`},
			{"PUT", "/v1/projects/bravo/status", `{"metadata":{"name":"bravo"},"status":{"phase":"Terminating"}}`},
			{"DELETE", "/v1/projects/bravo", ""},
		} {
			r := e.do(rq.method, rq.path, w.alice, rq.body)
			if r.code != http.StatusNotFound {
				t.Errorf("%s %s as alice: %d %s, want 404", rq.method, rq.path, r.code, r.body)
			}
		}
		got := e.do("GET", "/v1/projects/bravo", w.alice, "")
		if strings.ReplaceAll(got.problem().Detail, "bravo", "X") != strings.ReplaceAll(missing.problem().Detail, "nope", "X") {
			t.Errorf("existing and missing projects differ: %q vs %q", got.problem().Detail, missing.problem().Detail)
		}
		items := w.listAllAs(t, w.alice, "/v1/projects")
		if len(items) != 1 || items[0].Metadata.Name != "alpha" {
			t.Errorf("alice lists projects %v, want only alpha", names(items))
		}
		w.aliceSeesNothingOfBravo(t, "list projects", e.do("GET", "/v1/projects", w.alice, "").body)
		// Her own project she may read.
		if r := e.do("GET", "/v1/projects/alpha", w.alice, ""); r.code != 200 {
			t.Errorf("alice reading alpha: %d %s", r.code, r.body)
		}
		// Creating projects needs a cluster binding: 403, nothing hidden.
		if r := e.do("POST", "/v1/projects", w.alice, `{"metadata":{"name":"charlie"}}`); r.code != http.StatusForbidden {
			t.Errorf("alice creating a project: %d %s, want 403", r.code, r.body)
		}
	})

	t.Run("watches", func(t *testing.T) {
		for _, path := range []string{"/v1/projects", "/v1/widgets"} {
			evs := make(chan api.Event, 100)
			req, _ := http.NewRequestWithContext(e.ctx(), "GET", e.url+path+"?watch=true", nil)
			req.Header.Set("Authorization", "Bearer "+w.alice)
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer close(evs)
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					var ev api.Event
					if json.Unmarshal(sc.Bytes(), &ev) == nil {
						evs <- ev
					}
				}
			}()
			next := func() api.Event {
				for {
					select {
					case ev, ok := <-evs:
						if !ok {
							t.Fatalf("watch %s ended", path)
						}
						if ev.Type != api.EventBookmark {
							return ev
						}
					case <-time.After(10 * time.Second):
						t.Fatalf("no event on %s", path)
					}
				}
			}
			first := next()
			if first.Object == nil {
				t.Fatalf("watch %s: first event %+v %+v", path, first, first.Error)
			}
			if first.Object.Metadata.Name != "alpha" && first.Object.Metadata.Project != "alpha" {
				t.Errorf("watch %s as alice starts with %+v", path, first.Object.Metadata)
			}
			// Changes in bravo are not delivered; the next change in alpha is.
			if path == "/v1/projects" {
				e.update(iamv1.ProjectCollection, "", "bravo", iamv1.ProjectSpec{DisplayName: "b2"})
				e.update(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{DisplayName: "a2"})
			} else {
				e.create("widgets", "bravo", "bravo-new", widgetSpec{})
				e.create("widgets", "alpha", "alpha-new", widgetSpec{})
			}
			for {
				ev := next()
				if ev.Object.Metadata.Project == "bravo" || ev.Object.Metadata.Name == "bravo" {
					t.Errorf("watch %s as alice delivered bravo's %+v", path, ev.Object.Metadata)
				}
				if ev.Object.Metadata.Name == "alpha-new" || (ev.Object.Metadata.Name == "alpha" && ev.Type == api.EventModified) {
					break
				}
			}
			resp.Body.Close()
		}
	})

	t.Run("403 inside the project", func(t *testing.T) {
		// A member may not manage iam in its project; a viewer may not
		// write at all. Both can see the project, so this is 403.
		for _, rq := range []struct {
			token, method, path, body string
		}{
			{w.alice, "POST", "/v1/projects/alpha/rolebindings", `{"metadata":{"name":"x"},"spec":{"role":"admin","principal":"user:alice"}}`},
			{w.alice, "DELETE", "/v1/projects/alpha/serviceaccounts/alpha-sa", ""},
			{w.vera, "POST", "/v1/projects/alpha/widgets", `{"metadata":{"name":"x"},"spec":{"size":1}}`},
			{w.vera, "DELETE", "/v1/projects/alpha/widgets/" + w.alphaNames["widgets"], ""},
			{w.alice, "GET", "/v1/users", ""},
		} {
			r := e.do(rq.method, rq.path, rq.token, rq.body)
			if r.code != http.StatusForbidden || r.problem().Code != api.CodeForbidden {
				t.Errorf("%s %s: %d %s, want 403", rq.method, rq.path, r.code, r.body)
			}
		}
		// A member may write other components' resources there; a viewer may read.
		if r := e.do("POST", "/v1/projects/alpha/widgets", w.alice, `{"metadata":{"name":"ok"},"spec":{"size":2}}`); r.code != 201 {
			t.Errorf("alice creating a widget in alpha: %d %s", r.code, r.body)
		}
		if r := e.do("GET", "/v1/projects/alpha/widgets/ok", w.vera, ""); r.code != 200 {
			t.Errorf("vera reading a widget in alpha: %d %s", r.code, r.body)
		}
		// Users read their own user object, not others'.
		if r := e.do("GET", "/v1/users/alice", w.alice, ""); r.code != 200 {
			t.Errorf("alice reading herself: %d %s", r.code, r.body)
		}
		if r := e.do("GET", "/v1/users/bob", w.alice, ""); r.code != http.StatusForbidden {
			t.Errorf("alice reading bob: %d %s", r.code, r.body)
		}
	})

	t.Run("401", func(t *testing.T) {
		for _, tok := range []string{"", "nonsense", "a.b.c"} {
			r := e.do("GET", "/v1/projects/alpha/widgets", tok, "")
			if r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("token %q: %d %s", tok, r.code, r.body)
			}
		}
	})
}

func names(items []api.Object) []string {
	var out []string
	for _, o := range items {
		out = append(out, fmt.Sprintf("%s/%s", o.Metadata.Project, o.Metadata.Name))
	}
	return out
}

// update replaces an object's spec as the admin.
func (e *testEnv) update(coll, project, name string, spec any) {
	e.t.Helper()
	b, _ := json.Marshal(spec)
	if _, err := e.admin.Resources(coll, project).Update(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b}); err != nil {
		e.t.Fatal(err)
	}
}
