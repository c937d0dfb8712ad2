package iam

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/controller"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// ProjectController marks every project Active once it exists. It is the
// first controller built on internal/runtime/controller and talks to the API
// through the SDK like any other client, so it starts after the listener.
type ProjectController struct {
	component.Readiness
	endpoint   func(context.Context) (string, error)
	token      string
	checkpoint string
	log        *slog.Logger
	reg        prometheus.Registerer
}

var _ component.Component = (*ProjectController)(nil)

// NewProjectController returns the controller component. endpoint yields the
// API URL once the listener is up; checkpointPath keeps its progress.
func NewProjectController(endpoint func(context.Context) (string, error), token, checkpointPath string, log *slog.Logger, reg prometheus.Registerer) *ProjectController {
	return &ProjectController{endpoint: endpoint, token: token, checkpoint: checkpointPath, log: log, reg: reg}
}

// Name implements component.Component.
func (p *ProjectController) Name() string { return "iam-projects" }

// Run connects to the API and reconciles projects until ctx ends.
func (p *ProjectController) Run(ctx context.Context) error {
	url, err := p.endpoint(ctx)
	if err != nil {
		return fmt.Errorf("iam: project controller: waiting for the API: %w", err)
	}
	cl, err := client.New(client.Config{Endpoint: url, Token: p.token, UserAgent: "ultracloud-iam-controller"})
	if err != nil {
		return fmt.Errorf("iam: project controller: %w", err)
	}
	defer cl.CloseIdleConnections()
	projects := cl.Resources(iamv1.ProjectCollection, "")
	ctrl, err := controller.New(controller.Options{
		Name:   p.Name(),
		Source: controller.FromClient(projects, ""),
		Reconciler: controller.ReconcilerFunc(func(ctx context.Context, k controller.Key) (controller.Result, error) {
			return reconcileProject(ctx, projects, k)
		}),
		Checkpoint: controller.FileCheckpoint(p.checkpoint),
		Logger:     p.log,
		Registerer: p.reg,
	})
	if err != nil {
		return err
	}
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

// reconcileProject sets status.phase to Active on a project that lacks it.
func reconcileProject(ctx context.Context, projects *client.Resources, k controller.Key) (controller.Result, error) {
	o, err := projects.Get(ctx, k.Name)
	if client.IsNotFound(err) {
		return controller.Result{}, nil // deleted: nothing of ours to clean up yet
	}
	if err != nil {
		return controller.Result{}, err
	}
	var st iamv1.ProjectStatus
	if len(o.Status) > 0 {
		if err := json.Unmarshal(o.Status, &st); err != nil {
			return controller.Result{}, fmt.Errorf("iam: project %s: decoding status: %w", k.Name, err)
		}
	}
	if st.Phase == "Active" {
		return controller.Result{}, nil
	}
	st.Phase = "Active"
	o.Status, err = json.Marshal(st)
	if err != nil {
		return controller.Result{}, err
	}
	// o carries the revision we read: a concurrent change makes this a 409
	// and the key is retried against the new state.
	if _, err := projects.UpdateStatus(ctx, o); err != nil {
		return controller.Result{}, fmt.Errorf("iam: project %s: writing status: %w", k.Name, err)
	}
	return controller.Result{}, nil
}
