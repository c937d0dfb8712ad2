package iam

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

func TestProjectsBecomeActive(t *testing.T) {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const token = "iam-test-token-123456"
	a := apiserver.New(st, apiserver.Options{Authenticator: apiserver.TokenAuthenticator{Token: token}})
	comp, err := New(a)
	if err != nil {
		t.Fatal(err)
	}
	if comp.Name() != "iam" {
		t.Fatal(comp.Name())
	}
	mux := http.NewServeMux()
	a.Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer a.CloseStreams()

	pc := NewProjectController(func(context.Context) (string, error) { return srv.URL, nil }, token,
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

	cl, _ := client.New(client.Config{Endpoint: srv.URL, Token: token})
	projects := cl.Resources(iamv1.ProjectCollection, "")
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, err := projects.Get(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		var s iamv1.ProjectStatus
		_ = json.Unmarshal(o.Status, &s)
		if s.Phase == "Active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("project p1 never became Active; status %s", o.Status)
		}
		time.Sleep(20 * time.Millisecond)
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
