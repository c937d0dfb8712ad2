package iam

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/httpserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type widgetSpec struct {
	Size int `json:"size"`
}

type widgetStatus struct {
	Ready bool `json:"ready"`
}

// slotSpec is the spec of the node-bound test kind "slots": bound to host.
type slotSpec struct {
	Host string `json:"host"`
}

const bootstrapToken = "bootstrap-token-0123456789abcdef"

// testEnv is an iam component with the API framework over a real store,
// served by httptest, with a fake clock and captured debug logs. It also
// registers a project-scoped test kind ("widgets" of component "test") so
// isolation is checked on a kind iam knows nothing about, and a node-bound
// one ("slots", bound to spec.host) for node principals.
type testEnv struct {
	t      testing.TB
	routes *httpserver.RecordingMux // every pattern mounted
	store  *pebblestore.Store
	iam    *Component
	api    *apiserver.API
	url    string
	hc     *http.Client
	clock  *testkit.Clock
	logs   *syncBuffer
	admin  *client.Client // the break-glass token
	cancel context.CancelFunc
}

func newTestEnv(t testing.TB, tune ...func(*Config, *Options)) *testEnv {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clk := testkit.NewClock(time.Now().UTC().Truncate(time.Second))
	var issuer string
	cfg := Default()
	opts := Options{
		Issuer:        func() string { return issuer },
		EncryptionKey: bytes.Repeat([]byte{7}, 32),
		Argon2:        Argon2Params{Memory: 64, Time: 1, Threads: 1},
		Now:           clk.Now,
	}
	for _, f := range tune {
		f(&cfg, &opts)
	}
	ic, err := New(cfg, component.Deps{Logger: log, Store: st,
		Node: component.Identity{Name: "test", BootstrapToken: bootstrapToken}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	a := apiserver.New(st, apiserver.Options{Logger: log, Now: clk.Now, Authenticator: ic, Authorizer: ic.Authorizer(), Auditor: ic.Auditor(),
		BookmarkInterval: 50 * time.Millisecond})
	if err := apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, widgetStatus]{
		Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject}); err != nil {
		t.Fatal(err)
	}
	if err := apiserver.Register(a, "test", apiserver.KindDef[slotSpec, widgetStatus]{
		Kind: "Slot", Collection: "slots", Singular: "slot", Scope: api.ScopeProject,
		NodeBinding: func(_ *api.ObjectMeta, s *slotSpec, _ *widgetStatus) string { return s.Host }}); err != nil {
		t.Fatal(err)
	}
	if err := ic.Register(a); err != nil {
		t.Fatal(err)
	}
	routes := httpserver.NewRecordingMux()
	a.Mount(routes)
	// The node's real listener, so its access log is part of what the
	// tests capture.
	srv := httpserver.New(httpserver.Config{Addr: "127.0.0.1:0", ShutdownGrace: 5 * time.Second}, routes, log,
		prometheus.NewRegistry(), func() error { return nil }, a.CloseStreams)
	ctx, cancel := context.WithCancel(context.Background())
	iamDone, srvDone := make(chan error, 1), make(chan error, 1)
	go func() { iamDone <- ic.Run(ctx) }()
	select {
	case <-ic.Ready():
	case err := <-iamDone:
		t.Fatalf("iam failed to start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("iam not ready after 10s")
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	go func() { srvDone <- srv.Run(srvCtx) }()
	addr, err := srv.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	issuer = "http://" + addr
	tr := http.DefaultTransport.(*http.Transport).Clone()
	e := &testEnv{t: t, routes: routes, store: st, iam: ic, api: a, url: issuer, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		clock: clk, logs: logs, cancel: cancel}
	e.admin = e.clientWith(bootstrapToken)
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		stopSrv()
		if err := <-srvDone; err != nil {
			t.Errorf("http Run: %v", err)
		}
		cancel()
		if err := <-iamDone; err != nil {
			t.Errorf("iam Run: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func (e *testEnv) clientWith(token string) *client.Client {
	c, err := client.New(client.Config{Endpoint: e.url, Token: token, HTTPClient: e.hc})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *testEnv) ctx() context.Context { return e.t.Context() }

// create creates an object as the break-glass admin.
func (e *testEnv) create(coll, project, name string, spec any) *api.Object {
	e.t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	o, err := e.admin.Resources(coll, project).Create(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: b})
	if err != nil {
		e.t.Fatalf("create %s %s/%s: %v", coll, project, name, err)
	}
	return o
}

// user creates a user with a password.
func (e *testEnv) user(name, password string) {
	e.t.Helper()
	e.create(iamv1.UserCollection, "", name, iamv1.UserSpec{})
	if _, err := iamclient.New(e.admin).SetPassword(e.ctx(), name, password, ""); err != nil {
		e.t.Fatal(err)
	}
}

// bind grants role to principal in project ("" for cluster-wide).
func (e *testEnv) bind(name, role, principal, project string) {
	e.t.Helper()
	coll := iamv1.RoleBindingCollection
	if project == "" {
		coll = iamv1.ClusterRoleBindingCollection
	}
	e.create(coll, project, name, iamv1.RoleBindingSpec{Role: role, Principal: principal})
}

// login logs in and returns a client with the access token, and the
// token response.
func (e *testEnv) login(user, password string) (*client.Client, *iamv1.TokenResponse) {
	e.t.Helper()
	t, err := iamclient.New(e.clientWith("")).Login(e.ctx(), user, password)
	if err != nil {
		e.t.Fatalf("login %s: %v", user, err)
	}
	return e.clientWith(t.AccessToken), t
}

// response is a raw HTTP response.
type response struct {
	code   int
	header http.Header
	body   string
}

// do sends a raw request with a bearer token.
func (e *testEnv) do(method, path, token, body string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// problem decodes a problem body.
func (r response) problem() api.Problem {
	var p api.Problem
	_ = json.Unmarshal([]byte(r.body), &p)
	return p
}
