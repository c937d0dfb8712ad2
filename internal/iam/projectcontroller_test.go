package iam

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// gateElector elects its candidate once the test opens the gate.
type gateElector struct{ gate chan struct{} }

func (g gateElector) Campaign(ctx context.Context, _ string) (coord.Leadership, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	lctx, cancel := context.WithCancel(ctx)
	return &gateLeadership{ctx: lctx, cancel: cancel}, nil
}

type gateLeadership struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *gateLeadership) Context() context.Context     { return l.ctx }
func (l *gateLeadership) Resign(context.Context) error { l.cancel(); return nil }
func (l *gateLeadership) Revision() int64              { return 1 }
func (l *gateLeadership) IsLeaderCmp() clientv3.Cmp    { return clientv3.Cmp{} }

// TestProjectControllerAsSingletonWorksOnlyWhileLeading: given an elector,
// the project controller is ready while standing by but touches no
// project; once elected it reconciles, and its status says it leads.
func TestProjectControllerAsSingletonWorksOnlyWhileLeading(t *testing.T) {
	e := newTestEnv(t)
	el := gateElector{gate: make(chan struct{})}
	pc := NewProjectController(func(context.Context) (string, error) { return e.url, nil },
		client.TokenFunc(e.iam.SystemTokenSource("iam-projects")), "", slog.New(slog.DiscardHandler),
		prometheus.NewRegistry(), WithElector(el, "node-1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-pc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("a standing-by project controller is not ready")
	}

	projects := e.admin.Resources(iamv1.ProjectCollection, "")
	if _, err := projects.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: "p1"}, Spec: json.RawMessage(`{"displayName":"P"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := projects.UpdateStatus(ctx, &api.Object{Metadata: api.ObjectMeta{Name: "p1"}, Status: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	phase := func() string {
		o, err := projects.Get(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		var s iamv1.ProjectStatus
		_ = json.Unmarshal(o.Status, &s)
		return s.Phase
	}
	// A standby must not act: give it time to (wrongly) do so.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if p := phase(); p != "" {
			t.Fatalf("a standby marked p1 %q", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := pc.StatusDetails(); d["mode"] != "singleton" || d["leader"] != "false" {
		t.Fatalf("standby status details %v", d)
	}

	close(el.gate)
	testkit.Eventually(t, 10*time.Second, "the elected project controller to mark p1 Active", func() bool { return phase() == "Active" })
	if d := pc.StatusDetails(); d["leader"] != "true" {
		t.Fatalf("leader status details %v", d)
	}
}
