package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
)

type vmSpec struct {
	CPUs int `json:"cpus"`
}

type startRequest struct {
	Force bool `json:"force"`
	Delay int  `json:"delay,omitempty"`
}

type startResult struct {
	VM     string `json:"vm"`
	Forced bool   `json:"forced"`
}

type pingResult struct {
	Pong string `json:"pong"`
}

// endpointEnv serves a project-scoped VM kind with actions and a few
// component endpoints, with fake authentication, authorization and audit.
type endpointEnv struct {
	api     *apiserver.API
	srv     *httptest.Server
	auditor *fakeAuditor
	started atomic.Int32
	// streamDone receives when the log stream's handler has returned.
	streamDone chan struct{}
}

func newEndpointEnv(t *testing.T) *endpointEnv {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aud := &fakeAuditor{}
	// bob may start VMs in alpha; carol may only read there; dave sees
	// nothing; erin may read the node's status.
	grants := map[string]map[string][]string{
		"bob":   {"alpha": {"get", "start", "logs"}},
		"carol": {"alpha": {"get"}},
		"erin":  {"": {"get"}},
	}
	a := apiserver.New(st, apiserver.Options{Authenticator: fakeAuthn{}, Authorizer: fakeAuthz{grants}, Auditor: aud})
	e := &endpointEnv{api: a, auditor: aud, streamDone: make(chan struct{}, 1)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(apiserver.Register(a, "compute", apiserver.KindDef[vmSpec, struct{}]{
		Kind: "VM", Collection: "vms", Singular: "vm", Scope: api.ScopeProject, MaxBody: 256,
		Actions: []apiserver.Action{
			{Name: "start", Summary: "boot the VM", Handler: apiserver.JSON(func(c *apiserver.Call, req *startRequest) (*startResult, error) {
				e.started.Add(1)
				return &startResult{VM: c.Object.Metadata.Name, Forced: req.Force}, nil
			}).WithStatus(http.StatusAccepted)},
			{Name: "logs", Method: http.MethodGet, Summary: "follow the console log",
				Handler: apiserver.Stream(apiserver.NDJSONContentType, func(c *apiserver.Call, w http.ResponseWriter) error {
					defer func() { e.streamDone <- struct{}{} }()
					w.Header().Set("Content-Type", apiserver.NDJSONContentType)
					w.WriteHeader(http.StatusOK)
					fmt.Fprintf(w, "{\"line\":\"booting %s\"}\n", c.Name)
					if err := http.NewResponseController(w).Flush(); err != nil {
						return err
					}
					<-c.Context().Done()
					return nil
				})},
		},
	}))
	must(apiserver.Register(a, "compute", apiserver.KindDef[vmSpec, struct{}]{
		Kind: "Host", Collection: "hosts", Singular: "host", Scope: api.ScopeCluster,
		Actions: []apiserver.Action{{Name: "drain", Verb: "update", AuditVerb: "drain",
			Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*apiserver.NoBody, error) { return nil, nil })}},
	}))
	must(a.Handle("node", apiserver.Endpoint{Method: http.MethodGet, Path: "/v1/status", OperationID: "getStatus",
		Collection: "status", Verb: "get",
		Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*pingResult, error) {
			return &pingResult{Pong: c.Principal.Name}, nil
		})}))
	must(a.Handle("node", apiserver.Endpoint{Method: http.MethodPost, Path: "/v1/ping", OperationID: "ping",
		Access: apiserver.AccessPublic, Collection: "pings", AuditVerb: "ping",
		Handler: apiserver.JSON(func(c *apiserver.Call, req *startRequest) (*pingResult, error) {
			c.Header().Set("Cache-Control", "no-store")
			return &pingResult{Pong: fmt.Sprint(req.Delay)}, nil
		})}))
	must(a.Handle("node", apiserver.Endpoint{Method: http.MethodGet, Path: "/v1/me", OperationID: "me",
		Access: apiserver.AccessAuthenticated,
		Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*pingResult, error) {
			return &pingResult{Pong: c.Principal.Name}, nil
		})}))
	mux := http.NewServeMux()
	a.Mount(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		a.CloseStreams()
		e.srv.Close()
		st.Close()
	})
	for _, name := range []string{"vm1"} {
		r := e.do(t, "POST", "/v1/projects/alpha/vms", "super", `{"metadata":{"name":"`+name+`"},"spec":{"cpus":2}}`)
		if r.status != http.StatusCreated {
			t.Fatalf("creating %s: %s", name, r)
		}
	}
	return e
}

type response struct {
	status int
	header http.Header
	body   string
}

func (r response) String() string { return fmt.Sprintf("HTTP %d %s", r.status, r.body) }

func (r response) problem(t *testing.T) api.Problem {
	t.Helper()
	var p api.Problem
	if ct := r.header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Fatalf("%s: content type %q, want problem+json", r, ct)
	}
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	return p
}

func (e *endpointEnv) do(t *testing.T, method, path, token, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestAction: an action runs only on an object that exists and that the
// caller may see (else the 404 a get gives), with the action's own
// permission (else 403), is audited, and its body is limited and decoded
// strictly; unknown actions are a 404 that lists the kind's actions.
func TestAction(t *testing.T) {
	e := newEndpointEnv(t)
	const start = "/v1/projects/alpha/vms/vm1/start"

	r := e.do(t, "POST", start, "tok-bob", `{"force":true}`)
	var res startResult
	if r.status != http.StatusAccepted || json.Unmarshal([]byte(r.body), &res) != nil || res.VM != "vm1" || !res.Forced {
		t.Fatalf("allowed start: %s", r)
	}
	if e.started.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", e.started.Load())
	}
	evs := e.auditor.events()
	if len(evs) == 0 {
		t.Fatal("the start was not audited")
	}
	if ev := evs[len(evs)-1]; ev.Verb != "start" || ev.Component != "compute" || ev.Collection != "vms" || ev.Project != "alpha" ||
		ev.Name != "vm1" || ev.Principal != "bob" || ev.Code != http.StatusAccepted {
		t.Errorf("audit record of the start = %+v", ev)
	}

	// Missing and hidden objects give the very 404 of a get.
	getMissing := e.do(t, "GET", "/v1/projects/alpha/vms/nope", "tok-bob", "").problem(t)
	missing := e.do(t, "POST", "/v1/projects/alpha/vms/nope/start", "tok-bob", `{}`).problem(t)
	if missing.Status != http.StatusNotFound || missing.Detail != getMissing.Detail {
		t.Errorf("start of a missing vm = %+v, want the get's 404 %+v", missing, getMissing)
	}
	getHidden := e.do(t, "GET", "/v1/projects/alpha/vms/vm1", "tok-dave", "").problem(t)
	hidden := e.do(t, "POST", start, "tok-dave", `{}`).problem(t)
	if hidden.Status != http.StatusNotFound || hidden.Detail != getHidden.Detail || getHidden.Status != http.StatusNotFound {
		t.Errorf("start by a principal who cannot see alpha = %+v, want the get's 404 %+v", hidden, getHidden)
	}
	// Visible but not permitted: 403 naming the permission.
	if p := e.do(t, "POST", start, "tok-carol", `{}`).problem(t); p.Status != http.StatusForbidden || !strings.Contains(p.Detail, "compute.vms.start") {
		t.Errorf("start by a reader = %+v, want 403 naming compute.vms.start", p)
	}
	// Unauthenticated: 401.
	if r := e.do(t, "POST", start, "", `{}`); r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("start without a token = %s", r)
	}
	if e.started.Load() != 1 {
		t.Fatalf("refused starts ran the handler: %d runs", e.started.Load())
	}

	// Unknown action names list the kind's actions.
	if p := e.do(t, "POST", "/v1/projects/alpha/vms/vm1/reboot", "tok-bob", `{}`).problem(t); p.Status != http.StatusNotFound ||
		!strings.Contains(p.Detail, `"reboot"`) || !strings.Contains(p.Detail, "POST start") || !strings.Contains(p.Detail, "GET logs") {
		t.Errorf("unknown action = %+v, want a 404 listing POST start and GET logs", p)
	}
	// A known action with another method: 405 with Allow.
	if r := e.do(t, "GET", start, "tok-bob", ""); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET of a POST action = %s (Allow %q)", r, r.header.Get("Allow"))
	}

	// A cluster-scoped kind's action, with its own verb and audit verb.
	if r := e.do(t, "POST", "/v1/hosts", "super", `{"metadata":{"name":"h1"},"spec":{}}`); r.status != http.StatusCreated {
		t.Fatalf("creating a host: %s", r)
	}
	if r := e.do(t, "POST", "/v1/hosts/h1/drain", "super", ""); r.status != http.StatusNoContent {
		t.Errorf("drain = %s", r)
	}
	if p := e.do(t, "POST", "/v1/hosts/h1/drain", "tok-bob", "").problem(t); p.Status != http.StatusForbidden || !strings.Contains(p.Detail, "compute.hosts.update") {
		t.Errorf("drain without compute.hosts.update = %+v", p)
	}
	if ev := e.auditor.events(); ev[len(ev)-1].Verb != "drain" || ev[len(ev)-1].Code != http.StatusForbidden {
		t.Errorf("audit record of a refused drain = %+v", ev[len(ev)-1])
	}

	// Bodies: too large, not JSON, wrong type, unknown field.
	big := `{"force":true,"delay":` + strings.Repeat("1", 300) + `}`
	if p := e.do(t, "POST", start, "tok-bob", big).problem(t); p.Status != http.StatusRequestEntityTooLarge || p.Code != api.CodeBodyTooLarge {
		t.Errorf("oversized body = %+v, want 413", p)
	}
	req, _ := http.NewRequest("POST", e.srv.URL+start, strings.NewReader("force=1"))
	req.Header.Set("Authorization", "Bearer tok-bob")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("form body = %v %v, want 415", resp, err)
	} else {
		resp.Body.Close()
	}
	if p := e.do(t, "POST", start, "tok-bob", `{"force":"yes"}`).problem(t); p.Status != http.StatusBadRequest || p.Field != "force" {
		t.Errorf("wrong type = %+v, want 400 naming force", p)
	}
	if p := e.do(t, "POST", start, "tok-bob", `{"forse":true}`).problem(t); p.Status != http.StatusBadRequest || p.Code != api.CodeUnknownField || p.Field != "forse" {
		t.Errorf("unknown field = %+v, want 400 unknown_field naming forse", p)
	}
	if e.started.Load() != 1 {
		t.Fatalf("bad bodies ran the handler: %d runs", e.started.Load())
	}
	// The refused and bad calls were audited too, with the action's verb.
	var codes []int
	for _, ev := range e.auditor.events() {
		if ev.Verb == "start" && ev.Name == "vm1" {
			codes = append(codes, ev.Code)
		}
	}
	for _, want := range []int{http.StatusAccepted, http.StatusNotFound, http.StatusForbidden, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusBadRequest} {
		if !slices.Contains(codes, want) {
			t.Errorf("no audit record of a start answered %d; have %v", want, codes)
		}
	}
}

// TestEndpointAccess: component endpoints are authenticated unless
// declared public, authorized by their permission, audited when mutating,
// and answer errors as problems.
func TestEndpointAccess(t *testing.T) {
	e := newEndpointEnv(t)
	if r := e.do(t, "GET", "/v1/status", "", ""); r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("status without a token = %s", r)
	}
	if p := e.do(t, "GET", "/v1/status", "tok-bob", "").problem(t); p.Status != http.StatusForbidden || !strings.Contains(p.Detail, "node.status.get") {
		t.Errorf("status without node.status.get = %+v", p)
	}
	if r := e.do(t, "GET", "/v1/status", "tok-erin", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"pong":"erin"`) {
		t.Errorf("status with node.status.get = %s", r)
	}
	if r := e.do(t, "GET", "/v1/me", "tok-dave", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"pong":"dave"`) {
		t.Errorf("authenticated endpoint = %s", r)
	}
	if r := e.do(t, "GET", "/v1/me", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("authenticated endpoint without a token = %s", r)
	}
	r := e.do(t, "POST", "/v1/ping", "", `{"delay":7}`)
	if r.status != http.StatusOK || !strings.Contains(r.body, `"pong":"7"`) || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("public endpoint = %s %v", r, r.header)
	}
	if p := e.do(t, "POST", "/v1/ping", "", `{"delay":"x"}`).problem(t); p.Status != http.StatusBadRequest || p.Field != "delay" {
		t.Errorf("public endpoint with a bad body = %+v", p)
	}
	evs := e.auditor.events()
	n := 0
	for _, ev := range evs {
		if ev.Path == "/v1/ping" {
			n++
			if ev.Verb != "ping" || ev.Component != "node" || ev.Collection != "pings" {
				t.Errorf("audit record of a ping = %+v", ev)
			}
		}
		if ev.Method == http.MethodGet {
			t.Errorf("a GET was audited: %+v", ev)
		}
	}
	if n != 2 {
		t.Errorf("%d pings audited, want 2", n)
	}
}

// TestHandleRefusesMistakes: an endpoint without a permission must say
// so, and declarations after Mount or twice fail.
func TestHandleRefusesMistakes(t *testing.T) {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := apiserver.New(st, apiserver.Options{})
	h := apiserver.JSON(func(*apiserver.Call, *apiserver.NoBody) (*pingResult, error) { return nil, nil })
	for name, ep := range map[string]apiserver.Endpoint{
		"no permission":  {Method: "GET", Path: "/v1/x", OperationID: "x", Handler: h},
		"no handler":     {Method: "GET", Path: "/v1/x", OperationID: "x", Access: apiserver.AccessPublic},
		"no operationId": {Method: "GET", Path: "/v1/x", Access: apiserver.AccessPublic, Handler: h},
		"bad method":     {Method: "FETCH", Path: "/v1/x", OperationID: "x", Access: apiserver.AccessPublic, Handler: h},
		"rest not last":  {Method: "GET", Path: "/v1/x/{rest...}/y", OperationID: "x", Access: apiserver.AccessPublic, Handler: h},
		"taken opId":     {Method: "GET", Path: "/v1/x", OperationID: "getOpenAPI", Access: apiserver.AccessPublic, Handler: h},
	} {
		if err := a.Handle("c", ep); err == nil {
			t.Errorf("%s: declared without error", name)
		}
	}
	ok := apiserver.Endpoint{Method: "GET", Path: "/v1/x", OperationID: "x", Access: apiserver.AccessPublic, Handler: h}
	if err := a.Handle("c", ok); err != nil {
		t.Fatal(err)
	}
	if err := a.Handle("c", ok); err == nil {
		t.Error("declared twice without error")
	}
	// A rest-of-path wildcard is allowed last.
	if err := a.Handle("c", apiserver.Endpoint{Method: "GET", Path: "/v1/files/{path...}", OperationID: "getFile",
		Access: apiserver.AccessPublic, Handler: h}); err != nil {
		t.Fatal(err)
	}
	if err := apiserver.Register(a, "c", apiserver.KindDef[vmSpec, struct{}]{Kind: "Thing", Collection: "things", Singular: "thing",
		Scope: api.ScopeCluster, Actions: []apiserver.Action{{Name: "status", Handler: h}}}); err == nil {
		t.Error("an action named status was accepted")
	}
	a.Mount(http.NewServeMux())
	ok.Path, ok.OperationID = "/v1/y", "y"
	if err := a.Handle("c", ok); err == nil {
		t.Error("declared after Mount without error")
	}
}

// TestStreamEndsOnCloseStreams: a stream endpoint is authorized like any
// other and its handler's context ends when the server closes streams.
func TestStreamEndsOnCloseStreams(t *testing.T) {
	e := newEndpointEnv(t)
	const logs = "/v1/projects/alpha/vms/vm1/logs"
	if p := e.do(t, "GET", logs, "tok-carol", "").problem(t); p.Status != http.StatusForbidden {
		t.Errorf("logs without compute.vms.logs = %+v", p)
	}
	if p := e.do(t, "GET", "/v1/projects/alpha/vms/nope/logs", "tok-bob", "").problem(t); p.Status != http.StatusNotFound {
		t.Errorf("logs of a missing vm = %+v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+logs, nil)
	req.Header.Set("Authorization", "Bearer tok-bob")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != apiserver.NDJSONContentType {
		t.Fatalf("logs: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "booting vm1") {
		t.Fatalf("first line %q, %v", line, err)
	}
	select {
	case <-e.streamDone:
		t.Fatal("the stream ended before CloseStreams")
	default:
	}
	e.api.CloseStreams()
	select {
	case <-e.streamDone:
	case <-ctx.Done():
		t.Fatal("the stream handler did not return within 10s of CloseStreams")
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after CloseStreams the stream should end cleanly: %q, %v", rest, err)
	}
}

// TestEveryRouteDocumented: every pattern Mount registered is reached by
// an operation of /openapi.json and every operation is served; the check
// itself notices an undocumented route.
func TestEveryRouteDocumented(t *testing.T) {
	e := newEndpointEnv(t)
	r := e.do(t, "GET", "/openapi.json", "", "")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || r.status != http.StatusOK {
		t.Fatalf("openapi: %s %v", r, err)
	}
	routes := e.api.Routes()
	for _, want := range []string{"GET /v1/{collection}/{name}", "POST /v1/{collection}/{name}/{action}",
		"GET /v1/projects/{project}/{collection}/{name}/{action}", "GET /openapi.json", "GET /v1/status", "POST /v1/ping"} {
		if !slices.Contains(routes, want) {
			t.Errorf("Mount did not record %q: %v", want, routes)
		}
	}
	undocumented, unserved := apiserver.CheckRoutes(doc, routes)
	if len(undocumented) > 0 || len(unserved) > 0 {
		t.Errorf("routes missing from /openapi.json: %v; operations no route serves: %v", undocumented, unserved)
	}
	if u, _ := apiserver.CheckRoutes(doc, append(routes, "GET /v1/secret/{x}")); !slices.Equal(u, []string{"GET /v1/secret/{x}"}) {
		t.Errorf("CheckRoutes missed an undocumented route: %v", u)
	}

	// The action's and the stream's entries.
	paths := doc["paths"].(map[string]any)
	start, _ := paths["/v1/projects/{project}/vms/{name}/start"].(map[string]any)["post"].(map[string]any)
	if start["operationId"] != "startVM" {
		t.Fatalf("start operation = %v", start)
	}
	b, _ := json.Marshal(start)
	for _, want := range []string{`"force"`, `"202"`, `"403"`, `"404"`, `"413"`, `"forced"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("start operation lacks %s: %s", want, b)
		}
	}
	logs, _ := paths["/v1/projects/{project}/vms/{name}/logs"].(map[string]any)["get"].(map[string]any)
	if b, _ := json.Marshal(logs); !strings.Contains(string(b), apiserver.NDJSONContentType) {
		t.Errorf("logs operation does not name its media type: %s", b)
	}
	ping, _ := paths["/v1/ping"].(map[string]any)["post"].(map[string]any)
	if sec, ok := ping["security"].([]any); !ok || len(sec) != 0 {
		t.Errorf("the public endpoint does not say it needs no credentials: %v", ping)
	}
}
