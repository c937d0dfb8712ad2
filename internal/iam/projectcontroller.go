package iam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/controller"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// ProjectController marks every project Active once it exists. It is the
// first controller built on internal/runtime/controller and talks to the API
// through the SDK like any other client, so it starts after the listener.
//
// Two copies (one per iam node) do no harm: every status write carries the
// revision it read, so the slower copy gets a conflict, rereads, finds the
// project Active and stops. They do double the reads and conflicting
// writes and keep a checkpoint per node, so a cluster runs it as a
// singleton (WithElector) where it has a coordination store.
type ProjectController struct {
	component.Readiness
	endpoint   func(context.Context) (string, error)
	tokens     client.TokenSource
	checkpoint string
	log        *slog.Logger
	reg        prometheus.Registerer
	singleton  *controller.Singleton

	ctrl atomic.Pointer[controller.Controller] // set once Run built it
}

var _ component.Component = (*ProjectController)(nil)

// ProjectControllerOption adjusts a ProjectController.
type ProjectControllerOption func(*ProjectController)

// WithElector runs the controller as a cluster-wide singleton: every node
// campaigns in el (a coord.Election, the same name on every node, e.g.
// ProjectControllerElection) as identity (its node name), and only the
// leader reconciles. A singleton keeps no checkpoint: it lists every
// project when it gains leadership (see internal/runtime/controller).
func WithElector(el coord.Elector, identity string) ProjectControllerOption {
	return func(p *ProjectController) {
		p.singleton = &controller.Singleton{Elector: el, Identity: identity}
	}
}

// ProjectControllerElection is the name of the election the project
// controllers of a cluster campaign in.
const ProjectControllerElection = "iam-projects"

// NewProjectController returns the controller component. endpoint yields the
// API URL once the listener is up; tokens authenticates it (in a node, the
// system principal system:iam-projects, allowed only to read projects and
// write their status); checkpointPath keeps its progress (unused by a
// singleton).
func NewProjectController(endpoint func(context.Context) (string, error), tokens client.TokenSource, checkpointPath string, log *slog.Logger, reg prometheus.Registerer, opts ...ProjectControllerOption) *ProjectController {
	p := &ProjectController{endpoint: endpoint, tokens: tokens, checkpoint: checkpointPath, log: log, reg: reg}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Leading reports whether this copy is the singleton's leader. Without
// WithElector it is always false (every copy works).
func (p *ProjectController) Leading() bool {
	c := p.ctrl.Load()
	return c != nil && c.Leading()
}

// StatusDetails describes the controller for /v1/status: whether it runs
// as a singleton and, if so, whether this node leads it.
func (p *ProjectController) StatusDetails() map[string]string {
	if p.singleton == nil {
		return map[string]string{"mode": "every-node"}
	}
	return map[string]string{"mode": "singleton", "leader": strconv.FormatBool(p.Leading())}
}

// Name implements component.Component.
func (p *ProjectController) Name() string { return "iam-projects" }

// Run connects to the API and reconciles projects until ctx ends.
func (p *ProjectController) Run(ctx context.Context) error {
	url, err := p.endpoint(ctx)
	if err != nil {
		return fmt.Errorf("iam: project controller: waiting for the API: %w", err)
	}
	cl, err := client.New(client.Config{Endpoint: url, TokenSource: p.tokens, UserAgent: "ultracloud-iam-controller"})
	if err != nil {
		return fmt.Errorf("iam: project controller: %w", err)
	}
	defer cl.CloseIdleConnections()
	projects := cl.Resources(iamv1.ProjectCollection, "")
	opts := controller.Options{
		Name:       p.Name(),
		Source:     controller.FromClient(projects, ""),
		Reconciler: projectReconciler{projects},
		Logger:     p.log,
		Registerer: p.reg,
		Singleton:  p.singleton,
	}
	if p.singleton == nil {
		opts.Checkpoint = controller.FileCheckpoint(p.checkpoint)
	}
	ctrl, err := controller.New(opts)
	if err != nil {
		return err
	}
	p.ctrl.Store(ctrl)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		select {
		case <-ctrl.Ready():
			p.MarkReady()
		case <-ctx.Done():
		}
	})
	return ctrl.Run(ctx)
}

// projectReconciler sets status.phase to Active on projects that lack it.
type projectReconciler struct{ projects *client.Resources }

var _ controller.HintedReconciler = projectReconciler{}

// Reconcile reads the project and marks it Active if needed.
func (r projectReconciler) Reconcile(ctx context.Context, k controller.Key) (controller.Result, error) {
	o, err := r.projects.Get(ctx, k.Name)
	if client.IsNotFound(err) {
		return controller.Result{}, nil // deleted: nothing of ours to clean up yet
	}
	if err != nil {
		return controller.Result{}, err
	}
	return r.activate(ctx, o)
}

// ReconcileHinted uses the state from the event, saving a read per change.
func (r projectReconciler) ReconcileHinted(ctx context.Context, k controller.Key, h controller.Hint, ok bool) (controller.Result, error) {
	if !ok {
		return r.Reconcile(ctx, k)
	}
	if h.Object == nil {
		return controller.Result{}, nil
	}
	return r.activate(ctx, h.Object)
}

func (r projectReconciler) activate(ctx context.Context, o *api.Object) (controller.Result, error) {
	var st iamv1.ProjectStatus
	if len(o.Status) > 0 {
		if err := json.Unmarshal(o.Status, &st); err != nil {
			return controller.Result{}, fmt.Errorf("iam: project %s: decoding status: %w", o.Metadata.Name, err)
		}
	}
	if st.Phase == "Active" {
		return controller.Result{}, nil
	}
	st.Phase = "Active"
	b, err := json.Marshal(st)
	if err != nil {
		return controller.Result{}, err
	}
	upd := *o
	upd.Status = b
	// upd carries the revision we saw: a concurrent change (or a stale hint)
	// makes this a 409 and the key is retried against a fresh read.
	if _, err := r.projects.UpdateStatus(ctx, &upd); err != nil {
		return controller.Result{}, fmt.Errorf("iam: project %s: writing status: %w", o.Metadata.Name, err)
	}
	return controller.Result{}, nil
}
