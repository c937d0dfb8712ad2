package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// slotSpec/slotStatus: a node-bound test kind. A slot is bound to
// status.node when set (as a scheduler would place it), else spec.host.
type slotSpec struct {
	Host string `json:"host,omitempty"`
}

type slotStatus struct {
	Node  string `json:"node,omitempty"`
	Ready bool   `json:"ready,omitempty"`
}

// newNodeEnv serves slots (node-bound, with an action) and widgets (not
// node-bound); the node principals node:w1 and node:w2 hold get, list,
// watch, updatestatus and poke at cluster level, as the node role does.
func newNodeEnv(t *testing.T) *authzEnv {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	verbs := []string{"get", "list", "watch", "updatestatus", "poke"}
	grants := map[string]map[string][]string{"node:w1": {"": verbs}, "node:w2": {"": verbs}}
	a := apiserver.New(st, apiserver.Options{Authenticator: fakeAuthn{}, Authorizer: fakeAuthz{grants}, BookmarkInterval: 50 * time.Millisecond})
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(apiserver.Register(a, "test", apiserver.KindDef[slotSpec, slotStatus]{
		Kind: "Slot", Collection: "slots", Singular: "slot", Scope: api.ScopeProject,
		NodeBinding: func(_ *api.ObjectMeta, s *slotSpec, st *slotStatus) string {
			if st.Node != "" {
				return st.Node
			}
			return s.Host
		},
		Actions: []apiserver.Action{{Name: "poke", Method: "POST",
			Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*apiserver.NoBody, error) { return nil, nil })}},
	}))
	must(apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, widgetStatus]{Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject}))
	must(apiserver.Register(a, "test", apiserver.KindDef[struct{}, slotStatus]{Kind: "Member", Collection: "members", Singular: "member",
		Scope: api.ScopeCluster, SelfRegistered: true,
		NodeBinding: func(m *api.ObjectMeta, _ *struct{}, _ *slotStatus) string { return m.Name }}))
	must(apiserver.Register(a, "test", apiserver.KindDef[struct{}, struct{}]{Kind: "Project", Collection: "projects", Singular: "project", Scope: api.ScopeCluster}))
	mux := http.NewServeMux()
	a.Mount(mux)
	e := &authzEnv{st: st, srv: httptest.NewServer(mux)}
	t.Cleanup(func() {
		a.CloseStreams()
		e.srv.Close()
		st.Close()
	})
	for _, p := range []string{"alpha", "bravo"} {
		e.req(t, "POST", "/v1/projects", "super", `{"metadata":{"name":"`+p+`"}}`, 201)
		e.req(t, "POST", "/v1/projects/"+p+"/widgets", "super", `{"metadata":{"name":"shared"},"spec":{"size":1}}`, 201)
		for _, s := range []struct{ name, host string }{{"on-w1", "w1"}, {"on-w2", "w2"}, {"unbound", ""}} {
			e.req(t, "POST", "/v1/projects/"+p+"/slots", "super", `{"metadata":{"name":"`+s.name+`"},"spec":{"host":"`+s.host+`"}}`, 201)
		}
	}
	return e
}

func TestNodePrincipalSeesOnlyObjectsBoundToItsNode(t *testing.T) {
	e := newNodeEnv(t)

	// Reads: the own node's objects, 404 for every other, unbound included.
	e.req(t, "GET", "/v1/projects/alpha/slots/on-w1", "node-w1", "", 200)
	for _, name := range []string{"on-w2", "unbound", "missing"} {
		body := e.req(t, "GET", "/v1/projects/alpha/slots/"+name, "node-w1", "", 404)
		var p api.Problem
		if err := json.Unmarshal([]byte(body), &p); err != nil || p.Code != api.CodeNotFound || p.Detail != `slot "`+name+`" not found in project "alpha"` {
			t.Errorf("get %s as node:w1: %s (want the same 404 as a missing slot)", name, body)
		}
	}
	if got, want := e.listAll(t, "/v1/slots", "node-w1", "on-w2"), []string{"alpha/on-w1", "bravo/on-w1"}; !slices.Equal(got, want) {
		t.Errorf("node:w1 lists %v, want %v", got, want)
	}
	if got := e.listAll(t, "/v1/projects/bravo/slots", "node-w2", "on-w1"); !slices.Equal(got, []string{"bravo/on-w2"}) {
		t.Errorf("node:w2 lists %v in bravo", got)
	}
	// Kinds that are not node-bound, and other principals, are unaffected.
	if got := e.listAll(t, "/v1/widgets", "node-w1", "\x00"); len(got) != 2 {
		t.Errorf("node:w1 lists widgets %v, want both shared ones", got)
	}
	if got := e.listAll(t, "/v1/slots", "super", "\x00"); len(got) != 6 {
		t.Errorf("the admin lists %v, want all 6 slots", got)
	}

	// Writes: status of its own slots only; never moving one to another node.
	e.req(t, "PUT", "/v1/projects/alpha/slots/on-w1/status", "node-w1", `{"status":{"ready":true}}`, 200)
	e.req(t, "PUT", "/v1/projects/alpha/slots/on-w2/status", "node-w1", `{"status":{"ready":true}}`, 404)
	e.req(t, "PUT", "/v1/projects/alpha/slots/on-w1/status", "node-w1", `{"status":{"node":"w2"}}`, 403)
	var o api.Object
	if err := json.Unmarshal([]byte(e.req(t, "GET", "/v1/projects/alpha/slots/on-w2", "super", "", 200)), &o); err != nil || len(o.Status) != 0 {
		t.Errorf("node:w1 changed on-w2's status: %s", o.Status)
	}
	if err := json.Unmarshal([]byte(e.req(t, "GET", "/v1/projects/alpha/slots/on-w1", "super", "", 200)), &o); err != nil || string(o.Status) != `{"ready":true}` {
		t.Errorf("on-w1's status is %s after a refused move, want {\"ready\":true}", o.Status)
	}
	// Actions follow the same reach.
	e.req(t, "POST", "/v1/projects/alpha/slots/on-w1/poke", "node-w1", "", 204)
	e.req(t, "POST", "/v1/projects/alpha/slots/on-w2/poke", "node-w1", "", 404)
}

func TestNodePrincipalWatchFollowsBinding(t *testing.T) {
	e := newNodeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/projects/alpha/slots?watch=true", nil)
	r.Header.Set("Authorization", "Bearer node-w1")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan api.Event, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev api.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type != api.EventBookmark {
				events <- ev
			}
		}
	}()
	next := func(want api.EventType, name string) {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended, want %s %s", want, name)
			}
			if ev.Type != want || ev.Object == nil || ev.Object.Metadata.Name != name {
				t.Fatalf("got %s %v, want %s %s", ev.Type, ev.Object, want, name)
			}
		case <-ctx.Done():
			t.Fatalf("no event, want %s %s", want, name)
		}
	}
	next(api.EventAdded, "on-w1")
	// Changes elsewhere are not shown; a slot placed on w1 appears as
	// ADDED, one moved away leaves as DELETED, a deleted one as DELETED.
	e.req(t, "PUT", "/v1/projects/alpha/slots/on-w2/status", "super", `{"status":{"ready":true}}`, 200)
	e.req(t, "PUT", "/v1/projects/alpha/slots/unbound/status", "super", `{"status":{"node":"w1"}}`, 200)
	next(api.EventAdded, "unbound")
	e.req(t, "PUT", "/v1/projects/alpha/slots/unbound/status", "node-w1", `{"status":{"node":"w1","ready":true}}`, 200)
	next(api.EventModified, "unbound")
	e.req(t, "PUT", "/v1/projects/alpha/slots/on-w1/status", "super", `{"status":{"node":"w2"}}`, 200)
	next(api.EventDeleted, "on-w1")
	e.req(t, "DELETE", "/v1/projects/alpha/slots/on-w2", "super", "", 200)
	e.req(t, "DELETE", "/v1/projects/alpha/slots/unbound", "super", "", 200)
	next(api.EventDeleted, "unbound")
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %s %s", ev.Type, ev.Object.Metadata.Name)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNodeRegistersOnlyItself: on a self-registered kind a node principal
// creates the object bound to its own node, and nothing else.
func TestNodeRegistersOnlyItself(t *testing.T) {
	e := newNodeEnv(t)
	e.req(t, "POST", "/v1/members", "node-w1", `{"metadata":{"name":"w2"},"spec":{}}`, 403)
	e.req(t, "POST", "/v1/members", "node-w1", `{"metadata":{"name":"w1"},"spec":{}}`, 201)
	e.req(t, "POST", "/v1/members", "node-w1", `{"metadata":{"name":"w1"},"spec":{}}`, 409)
	e.req(t, "PUT", "/v1/members/w1/status", "node-w1", `{"status":{"ready":true}}`, 200)
	e.req(t, "GET", "/v1/members/w2", "super", "", 404)
	// Creating a slot (not self-registered) stays refused.
	e.req(t, "POST", "/v1/projects/alpha/slots", "node-w1", `{"metadata":{"name":"mine"},"spec":{"host":"w1"}}`, 404) // the fake authorizer hides projects it grants nothing in
}
