package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// TestAllInOneWiring: the single-node profile, built by the real wiring,
// runs every module's units in dependency order, each reporting its own
// endpoints and details; every component's metrics are registered once;
// resources go through flaredb and iam's controller reconciles them.
func TestAllInOneWiring(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := n.Admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]api.ComponentStatus{}
	for _, c := range st.Components {
		names = append(names, c.Name)
		byName[c.Name] = c
		if c.State != "ready" {
			t.Errorf("%s is %s", c.Name, c.State)
		}
	}
	// Other modules' units may sit in between; these must come in this
	// order.
	want := []string{"chainfire", "flaredb", "store", "iam", "http", "iam-projects"}
	i := 0
	for _, name := range names {
		if i < len(want) && name == want[i] {
			i++
		}
	}
	if i != len(want) {
		t.Errorf("start order %v does not have %v in this order", names, want)
	}
	if e := byName["chainfire"].Endpoints["etcd"]; e != n.Config.Chainfire.ClientURL || byName["chainfire"].Details["leader"] != "nodetest" {
		t.Errorf("chainfire reports %+v", byName["chainfire"])
	}
	if f := byName["flaredb"]; f.Endpoints["api"] != n.Config.FlareDB.APIAdvertise || f.Details["state"] != "Leader" {
		t.Errorf("flaredb reports %+v", f)
	}
	if h := byName["http"]; h.Endpoints["api"] != n.APIURL() || h.Endpoints["openapi"] != n.APIURL()+"/openapi.json" {
		t.Errorf("http reports %+v", h)
	}

	resp, err := http.Get(n.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, family := range []string{"chainfire_", "flaredb_", "ultracloud_iam_audit_records_total", "go_goroutines"} {
		if !strings.Contains(string(body), family) {
			t.Errorf("/metrics has no %s metrics", family)
		}
	}

	projects := n.Admin.Resources(iamv1.ProjectCollection, "")
	spec, _ := json.Marshal(iamv1.ProjectSpec{DisplayName: "Wiring"})
	if _, err := projects.Create(ctx, &api.Object{Kind: iamv1.ProjectKind, Metadata: api.ObjectMeta{Name: "wiring"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		o, err := projects.Get(ctx, "wiring")
		if err != nil {
			t.Fatal(err)
		}
		var s iamv1.ProjectStatus
		_ = json.Unmarshal(o.Status, &s)
		if s.Phase == "Active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("project never became active: %s", o.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNodeWithoutIAM: a node that runs no iam builds no iam units, and its
// API accepts only the break-glass token.
func TestNodeWithoutIAM(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Roles = []string{"flaredb"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := n.Admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range st.Components {
		names = append(names, c.Name)
	}
	if slices.Contains(names, "iam") || slices.Contains(names, "chainfire") || !slices.Contains(names, "flaredb") {
		t.Errorf("units %v", names)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer not-the-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token got %d", resp.StatusCode)
	}
	if n.InitialAdminPassword() != "" {
		t.Error("a node without iam created an admin")
	}
}

// TestWorkerActsAsItsNode: a node without iam that names a control plane
// runs the node-identity unit: it enrolls with its join token, is ready
// once it holds the credential, and reports its principal and token
// expiry (never the key) in its status.
func TestWorkerActsAsItsNode(t *testing.T) {
	cp := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Roles, c.Storage.Backend = []string{"iam"}, config.BackendLocal
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := cp.Admin.Resources(iamv1.NodeCredentialCollection, "").Create(ctx,
		&api.Object{Metadata: api.ObjectMeta{Name: "worker"}, Spec: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var cs iamv1.NodeCredentialStatus
	_ = json.Unmarshal(o.Status, &cs)
	joinFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(joinFile, []byte(cs.JoinToken), 0o600); err != nil {
		t.Fatal(err)
	}
	w := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Node, c.Roles, c.Storage.Backend = "worker", []string{"flaredb"}, config.BackendLocal
		c.ControlPlane.Endpoints, c.ControlPlane.JoinTokenFile = []string{cp.APIURL()}, joinFile
	}})
	st, err := w.Admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ident *api.ComponentStatus
	for i, c := range st.Components {
		if c.Name == "node-identity" {
			ident = &st.Components[i]
		}
	}
	if ident == nil || ident.State != "ready" || ident.Details["principal"] != "node:worker" ||
		ident.Endpoints["controlPlane"] != cp.APIURL() || ident.Details["tokenExpiresAt"] == "" {
		t.Fatalf("node-identity reports %+v", ident)
	}
	raw, _ := json.Marshal(st)
	key, err := os.ReadFile(filepath.Join(w.Config.DataDir, "node-credential"))
	if err != nil {
		t.Fatal(err)
	}
	var cred struct{ NodeKey string }
	if err := json.Unmarshal(key, &cred); err != nil || cred.NodeKey == "" || strings.Contains(string(raw), cred.NodeKey) {
		t.Fatalf("the node key is missing (%v) or in the status", err)
	}
	got, err := cp.Admin.Resources(iamv1.NodeCredentialCollection, "").Get(ctx, "worker")
	if err != nil || !strings.Contains(string(got.Status), iamv1.NodeCredentialEnrolled) {
		t.Fatalf("credential after the worker started: %+v %v", got, err)
	}
}

// TestLocalBackend: with storage.backend local the node runs no flaredb
// member even with the role listed elsewhere, and keeps resources.
func TestLocalBackend(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Roles, c.Storage.Backend = []string{"iam"}, config.BackendLocal
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := n.Admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Components {
		if c.Name == "flaredb" {
			t.Errorf("flaredb runs with the local backend")
		}
	}
	if _, err := n.Admin.Resources(iamv1.ProjectCollection, "").List(ctx, client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestEveryRouteIsInOpenAPI: every route the node mounts is in its
// /openapi.json, except the listener's health, readiness and metrics.
func TestEveryRouteIsInOpenAPI(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Roles, c.Storage.Backend = []string{"iam"}, config.BackendLocal
	}})
	resp, err := http.Get(n.APIURL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	undocumented, unserved := apiserver.CheckRoutes(doc, n.Routes())
	if got := strings.Join(undocumented, ", "); got != "GET /healthz, GET /metrics, GET /readyz" {
		t.Errorf("routes missing from /openapi.json: %s", got)
	}
	if len(unserved) > 0 {
		t.Errorf("documented but not served: %v", unserved)
	}
}
