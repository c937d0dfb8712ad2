package apiserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

type widgetSpec struct {
	Size  int    `json:"size"`
	Color string `json:"color,omitempty"`
}

type widgetStatus struct {
	Ready bool `json:"ready"`
}

const testToken = "test-token-0123456789"

type env struct {
	srv   *httptest.Server
	api   *apiserver.API
	store *pebblestore.Store
	cl    *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := apiserver.New(st, apiserver.Options{Authenticator: apiserver.TokenAuthenticator{Token: testToken}, BookmarkInterval: 50 * time.Millisecond})
	err = apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, widgetStatus]{
		Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject, MaxBody: 4096,
		Default: func(s *widgetSpec) {
			if s.Color == "" {
				s.Color = "grey"
			}
		},
		ValidateSpec: func(s *widgetSpec) error {
			if s.Size < 0 || s.Size > 100 {
				return apiserver.FieldError("spec.size", "%d is out of range 0..100", s.Size)
			}
			return nil
		},
		ValidateUpdate: func(old, new *widgetSpec) error {
			if old.Color != new.Color {
				return apiserver.FieldError("spec.color", "is immutable")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := apiserver.Register(a, "test", apiserver.KindDef[struct{}, struct{}]{Kind: "Zone", Collection: "zones", Singular: "zone", Scope: api.ScopeCluster}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Mount(mux)
	srv := httptest.NewServer(mux)
	cl, err := client.New(client.Config{Endpoint: srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.CloseStreams()
		srv.Close()
		st.Close()
	})
	return &env{srv: srv, api: a, store: st, cl: cl}
}

func widget(name string, size int, labels map[string]string) *api.Object {
	spec, _ := json.Marshal(widgetSpec{Size: size})
	return &api.Object{Kind: "Widget", Metadata: api.ObjectMeta{Name: name, Labels: labels}, Spec: spec}
}

// raw sends a request and returns status, content type and body.
func (e *env) raw(t *testing.T, method, path, ctype, body string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func (e *env) revision(t *testing.T) int64 {
	rev, _, err := e.store.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func TestCRUD(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ws := e.cl.Resources("widgets", "p1")
	created, err := ws.Create(ctx, widget("w1", 3, map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	m := created.Metadata
	if m.UID == "" || m.Revision == 0 || m.CreatedAt == nil || m.Project != "p1" || created.Kind != "Widget" {
		t.Fatalf("created metadata incomplete: %+v", m)
	}
	var spec widgetSpec
	_ = json.Unmarshal(created.Spec, &spec)
	if spec.Color != "grey" {
		t.Fatalf("default not applied: %+v", spec)
	}
	got, err := ws.Get(ctx, "w1")
	if err != nil || got.Metadata.Revision != m.Revision || got.Metadata.UID != m.UID {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := ws.Create(ctx, widget("w1", 3, nil)); !client.IsAlreadyExists(err) {
		t.Fatalf("duplicate create: %v", err)
	}
	// Other projects do not see it.
	if _, err := e.cl.Resources("widgets", "p2").Get(ctx, "w1"); !client.IsNotFound(err) {
		t.Fatalf("cross-project get: %v", err)
	}

	// Update with the current revision succeeds; the stale one is a 409.
	upd := widget("w1", 4, nil)
	upd.Spec, _ = json.Marshal(widgetSpec{Size: 4, Color: "grey"})
	upd.Metadata.Revision = m.Revision
	u1, err := ws.Update(ctx, upd)
	if err != nil || u1.Metadata.Revision <= m.Revision || u1.Metadata.UID != m.UID {
		t.Fatalf("update = %+v, %v", u1, err)
	}
	before := e.revision(t)
	_, err = ws.Update(ctx, upd) // still carries the old revision
	if !client.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	p, _ := client.ProblemOf(err)
	if p.Status != 409 || !strings.Contains(p.Detail, fmt.Sprintf("revision %d", m.Revision)) {
		t.Fatalf("problem = %+v", p)
	}
	if e.revision(t) != before {
		t.Fatal("rejected update changed the store")
	}
	// Immutable field.
	imm := widget("w1", 4, nil)
	imm.Spec, _ = json.Marshal(widgetSpec{Size: 4, Color: "red"})
	if _, err := ws.Update(ctx, imm); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("immutable change: %v", err)
	}
	// No-op update writes nothing.
	same := widget("w1", 4, nil)
	same.Spec = u1.Spec
	u2, err := ws.Update(ctx, same)
	if err != nil || u2.Metadata.Revision != u1.Metadata.Revision {
		t.Fatalf("no-op update = %+v, %v", u2, err)
	}

	// Status is separate from spec.
	st := *u2
	st.Status, _ = json.Marshal(widgetStatus{Ready: true})
	st.Spec, _ = json.Marshal(widgetSpec{Size: 99, Color: "grey"}) // ignored
	s1, err := ws.UpdateStatus(ctx, &st)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(s1.Spec, &spec)
	if spec.Size != 4 || !strings.Contains(string(s1.Status), `"ready":true`) {
		t.Fatalf("status update touched spec or lost status: %s %s", s1.Spec, s1.Status)
	}
	// A spec update keeps the status.
	upd2 := widget("w1", 5, nil)
	upd2.Spec, _ = json.Marshal(widgetSpec{Size: 5, Color: "grey"})
	u3, err := ws.Update(ctx, upd2)
	if err != nil || !strings.Contains(string(u3.Status), `"ready":true`) {
		t.Fatalf("spec update lost status: %+v %v", u3, err)
	}

	// Conditional delete with a stale revision fails; plain delete works.
	if _, err := ws.Delete(ctx, "w1", m.Revision); !client.IsConflict(err) {
		t.Fatalf("stale delete: %v", err)
	}
	d, err := ws.Delete(ctx, "w1", 0)
	if err != nil || d.Metadata.Name != "w1" {
		t.Fatalf("delete = %+v, %v", d, err)
	}
	if _, err := ws.Get(ctx, "w1"); !client.IsNotFound(err) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := ws.Delete(ctx, "w1", 0); !client.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestBadInputChangesNothing sends malformed requests and checks each gets
// the right problem+json and leaves the store untouched.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	good := `{"metadata":{"name":"ok"},"spec":{"size":1}}`
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code, field                     string
	}{
		{"unknown field", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a"},"spec":{"size":1,"colour":"x"}}`, 400, api.CodeUnknownField, "spec.colour"},
		{"unknown label field", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a","lables":{}},"spec":{}}`, 400, api.CodeUnknownField, "metadata.lables"},
		{"unknown top field", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a"},"spek":{}}`, 400, api.CodeUnknownField, "spek"},
		{"wrong type", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a"},"spec":{"size":"big"}}`, 400, api.CodeInvalidField, "spec.size"},
		{"validation", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a"},"spec":{"size":1000}}`, 400, api.CodeInvalidField, "spec.size"},
		{"bad name", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"Bad_Name"},"spec":{}}`, 400, api.CodeInvalidName, "metadata.name"},
		{"empty name", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{},"spec":{}}`, 400, api.CodeInvalidName, "metadata.name"},
		{"bad project", "POST", "/v1/projects/P!/widgets", "application/json", good, 400, api.CodeInvalidName, "project"},
		{"project mismatch", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a","project":"q"},"spec":{}}`, 400, api.CodeInvalidField, "metadata.project"},
		{"bad label", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a","labels":{"-x":"y"}},"spec":{}}`, 400, api.CodeInvalidField, "metadata.labels"},
		{"wrong kind", "POST", "/v1/projects/p/widgets", "application/json", `{"kind":"Zone","metadata":{"name":"a"},"spec":{}}`, 400, api.CodeInvalidField, "kind"},
		{"malformed", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":`, 400, api.CodeBadRequest, ""},
		{"trailing", "POST", "/v1/projects/p/widgets", "application/json", good + `{}`, 400, api.CodeBadRequest, ""},
		{"empty body", "POST", "/v1/projects/p/widgets", "application/json", ``, 400, api.CodeBadRequest, ""},
		{"no content type", "POST", "/v1/projects/p/widgets", "", good, 415, api.CodeUnsupportedMedia, ""},
		{"text content type", "POST", "/v1/projects/p/widgets", "text/plain", good, 415, api.CodeUnsupportedMedia, ""},
		{"oversize", "POST", "/v1/projects/p/widgets", "application/json", `{"metadata":{"name":"a","labels":{"a":"` + strings.Repeat("x", 5000) + `"}},"spec":{}}`, 413, api.CodeBodyTooLarge, ""},
		{"unknown collection", "GET", "/v1/projects/p/gadgets", "", "", 404, api.CodeNotFound, ""},
		{"cluster kind in project", "POST", "/v1/projects/p/zones", "application/json", good, 404, api.CodeNotFound, ""},
		{"project kind at cluster", "POST", "/v1/widgets", "application/json", good, 404, api.CodeNotFound, ""},
		{"bad limit", "GET", "/v1/projects/p/widgets?limit=-1", "", "", 400, api.CodeInvalidField, "limit"},
		{"bad continue", "GET", "/v1/projects/p/widgets?continue=garbage", "", "", 400, api.CodeInvalidContinue, "continue"},
		{"foreign continue", "GET", "/v1/projects/p/widgets?continue=" + crossToken(), "", "", 400, api.CodeInvalidContinue, "continue"},
		{"bad selector", "GET", "/v1/projects/p/widgets?labelSelector=a%20in%20(", "", "", 400, api.CodeInvalidSelector, "labelSelector"},
		{"rename", "PUT", "/v1/projects/p/widgets/x", "application/json", `{"metadata":{"name":"y"},"spec":{}}`, 400, api.CodeInvalidField, "metadata.name"},
		{"bad delete revision", "DELETE", "/v1/projects/p/widgets/x?revision=abc", "", "", 400, api.CodeInvalidField, "revision"},
	}
	before := e.revision(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, ctype, body := e.raw(t, c.method, c.path, c.ctype, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			if ctype != api.ProblemContentType {
				t.Fatalf("content type %q, want problem+json", ctype)
			}
			var p api.Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Code != c.code || p.Field != c.field || p.Status != c.status || p.Detail == "" {
				t.Fatalf("problem %+v, want code %s field %q", p, c.code, c.field)
			}
		})
	}
	if after := e.revision(t); after != before {
		t.Fatalf("rejected requests changed the store: revision %d -> %d", before, after)
	}
	l, err := e.cl.Resources("widgets", "").List(context.Background(), client.ListOptions{})
	if err != nil || len(l.Items) != 0 {
		t.Fatalf("items stored by rejected requests: %+v %v", l, err)
	}
}

// crossToken is a valid token of a cross-project list, which a
// single-project list must refuse.
func crossToken() string {
	return "eyJ2IjoxLCJrIjoicC94In0" // {"v":1,"k":"p/x"}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	for _, tok := range []string{"", "wrong-token"} {
		cl, _ := client.New(client.Config{Endpoint: e.srv.URL, Token: tok})
		_, err := cl.Resources("widgets", "p").List(context.Background(), client.ListOptions{})
		if !client.HasCode(err, api.CodeUnauthenticated) {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
	// Discovery needs no token.
	cl, _ := client.New(client.Config{Endpoint: e.srv.URL})
	d, err := cl.Discovery(context.Background())
	if err != nil || len(d.Kinds) != 2 {
		t.Fatalf("discovery: %+v %v", d, err)
	}
}

// TestPaginationUnderWrites pages through a collection while other writers
// create, update and delete: every item that exists for the whole listing
// appears exactly once, and no item ever appears twice.
func TestPaginationUnderWrites(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ws := e.cl.Resources("widgets", "p")
	stable := map[string]bool{}
	for i := 0; i < 120; i++ {
		name := fmt.Sprintf("s-%03d", i)
		stable[name] = true
		if _, err := ws.Create(ctx, widget(name, i%100, map[string]string{"set": "stable"})); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("x%d-%03d", w, i%50)
				_, _ = ws.Create(ctx, widget(name, 1, nil))
				_, _ = ws.Update(ctx, widget(fmt.Sprintf("s-%03d", (i*7+w)%120), (i+1)%100, map[string]string{"set": "stable"}))
				if i%3 == 0 {
					_, _ = ws.Delete(ctx, name, 0)
				}
			}
		}(w)
	}
	for round := 0; round < 5; round++ {
		seen := map[string]int{}
		opts := client.ListOptions{Limit: 7}
		pages := 0
		for {
			l, err := ws.List(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(l.Items) > 7 {
				t.Fatalf("page of %d items, limit 7", len(l.Items))
			}
			for _, o := range l.Items {
				seen[o.Metadata.Name]++
			}
			if l.Metadata.Continue == "" {
				break
			}
			opts.Continue = l.Metadata.Continue
		}
		for name, n := range seen {
			if n != 1 {
				t.Fatalf("round %d: %s listed %d times", round, name, n)
			}
		}
		for name := range stable {
			if seen[name] != 1 {
				t.Fatalf("round %d: stable item %s missed", round, name)
			}
		}
		if pages < 17 {
			t.Fatalf("only %d pages", pages)
		}
	}
	close(stop)
	wg.Wait()

	// Selector pagination returns only matches, each once.
	items, _, err := ws.ListAll(ctx, client.ListOptions{Limit: 10, LabelSelector: "set=stable"})
	if err != nil || len(items) != 120 {
		t.Fatalf("selector list: %d items, %v", len(items), err)
	}
	items, _, err = ws.ListAll(ctx, client.ListOptions{Limit: 10, LabelSelector: "set!=stable"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range items {
		if o.Metadata.Labels["set"] == "stable" {
			t.Fatalf("selector leaked %s", o.Metadata.Name)
		}
	}
}

func TestWatchOrderingAndResume(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Writes use fresh connections so killing the server's connections only
	// breaks the watch stream.
	noKeepAlive, _ := client.New(client.Config{Endpoint: e.srv.URL, Token: testToken,
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	ws := noKeepAlive.Resources("widgets", "p")
	if _, err := ws.Create(ctx, widget("pre", 1, nil)); err != nil {
		t.Fatal(err)
	}
	l, err := ws.List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	since := l.Metadata.Revision
	w, err := e.cl.Resources("widgets", "p").Watch(ctx, client.WatchOptions{Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// Make 30 changes; between them, kill every connection from the server
	// side a few times to force resumes.
	var wantRevs []int64
	for i := 0; i < 30; i++ {
		var o *api.Object
		var err error
		switch {
		case i%3 == 0:
			o, err = ws.Create(ctx, widget(fmt.Sprintf("w%d", i), i, nil))
		case i%3 == 1:
			o, err = ws.Update(ctx, widget(fmt.Sprintf("w%d", i-1), i, nil))
		default:
			o, err = ws.Delete(ctx, fmt.Sprintf("w%d", i-2), 0)
		}
		if err != nil {
			t.Fatal(err)
		}
		wantRevs = append(wantRevs, o.Metadata.Revision)
		if i%10 == 5 {
			e.srv.CloseClientConnections()
		}
	}
	var types []api.EventType
	var got []int64
	for len(got) < len(wantRevs) {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended: %v", w.Err())
			}
			if ev.Type == api.EventBookmark {
				continue
			}
			got = append(got, ev.Revision)
			types = append(types, ev.Type)
		case <-ctx.Done():
			t.Fatalf("timed out with %d of %d events", len(got), len(wantRevs))
		}
	}
	for i := range wantRevs {
		if got[i] != wantRevs[i] {
			t.Fatalf("event %d revision %d, want %d (got %v)", i, got[i], wantRevs[i], got)
		}
		want := []api.EventType{api.EventAdded, api.EventModified, api.EventDeleted}[i%3]
		if types[i] != want {
			t.Fatalf("event %d type %s, want %s", i, types[i], want)
		}
	}
	// No extra event follows.
	select {
	case ev := <-w.Events():
		if ev.Type != api.EventBookmark {
			t.Fatalf("unexpected extra event %+v", ev)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func TestWatchInitialSnapshotAndSelector(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := e.cl.Resources("widgets", "p")
	for i, app := range []string{"web", "db", "web"} {
		if _, err := ws.Create(ctx, widget(fmt.Sprintf("a%d", i), 1, map[string]string{"app": app})); err != nil {
			t.Fatal(err)
		}
	}
	w, err := ws.Watch(ctx, client.WatchOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() api.Event {
		for {
			select {
			case ev := <-w.Events():
				if ev.Type != api.EventBookmark {
					return ev
				}
			case <-ctx.Done():
				t.Fatal("timeout")
			}
		}
	}
	if a, b := next(), next(); a.Object.Metadata.Name != "a0" || b.Object.Metadata.Name != "a2" || a.Type != api.EventAdded {
		t.Fatalf("snapshot = %+v %+v", a, b)
	}
	_, _ = ws.Create(ctx, widget("db2", 1, map[string]string{"app": "db"}))
	_, _ = ws.Create(ctx, widget("web2", 1, map[string]string{"app": "web"}))
	if ev := next(); ev.Object.Metadata.Name != "web2" {
		t.Fatalf("selector let through %+v", ev)
	}
	// Leaving the selection is a DELETED, entering it an ADDED.
	relabel := func(name, app string) {
		o, err := ws.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		o.Metadata.Labels = map[string]string{"app": app}
		if _, err := ws.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	relabel("a0", "db")
	if ev := next(); ev.Type != api.EventDeleted || ev.Object.Metadata.Name != "a0" {
		t.Fatalf("relabelled out of the selection: %s %s, want DELETED a0", ev.Type, ev.Object.Metadata.Name)
	}
	relabel("db2", "web")
	if ev := next(); ev.Type != api.EventAdded || ev.Object.Metadata.Name != "db2" {
		t.Fatalf("relabelled into the selection: %s %s, want ADDED db2", ev.Type, ev.Object.Metadata.Name)
	}
	relabel("a1", "cache") // never selected: nothing
	relabel("db2", "web2")
	if ev := next(); ev.Type != api.EventDeleted || ev.Object.Metadata.Name != "db2" {
		t.Fatalf("got %s %s, want DELETED db2 (a1 never matched)", ev.Type, ev.Object.Metadata.Name)
	}
}

func TestWatchCompacted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ws := e.cl.Resources("widgets", "p")
	for i := 0; i < 5; i++ {
		if _, err := ws.Create(ctx, widget(fmt.Sprintf("c%d", i), 1, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.store.Compact(ctx, 4); err != nil {
		t.Fatal(err)
	}
	since := int64(1)
	_, err := ws.Watch(ctx, client.WatchOptions{Since: &since})
	if !client.IsCompacted(err) {
		t.Fatalf("watch from compacted revision: %v", err)
	}
	p, _ := client.ProblemOf(err)
	if p.Status != http.StatusGone {
		t.Fatalf("status %d, want 410", p.Status)
	}
	since = 3
	w, err := ws.Watch(ctx, client.WatchOptions{Since: &since})
	if err != nil {
		t.Fatalf("watch from retained revision: %v", err)
	}
	w.Stop()
}

func TestOpenAPI(t *testing.T) {
	e := newEnv(t)
	status, _, body := e.raw(t, "GET", "/openapi.json", "", "")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	var doc struct {
		OpenAPI    string                    `json:"openapi"`
		Paths      map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	if _, ok := doc.Paths["/v1/projects/{project}/widgets/{name}"]["put"]; !ok {
		t.Fatalf("missing widget item path: %v", doc.Paths)
	}
	if _, ok := doc.Paths["/v1/zones"]["post"]; !ok {
		t.Fatal("missing zone collection path")
	}
	ws := string(doc.Components.Schemas["Widget"])
	for _, want := range []string{`"size"`, `"color"`, `"labels"`, `"additionalProperties":false`} {
		if !bytes.Contains([]byte(ws), []byte(want)) {
			t.Fatalf("Widget schema lacks %s: %s", want, ws)
		}
	}
}
