// Package iam is the identity and tenancy component. Today it owns the
// Project kind, the tenant boundary every project-scoped resource lives in;
// users, roles and tokens join it later (see docs/architecture.md).
//
// It must not know how other components store or serve their kinds.
package iam

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// ProjectKind declares the Project resource.
func ProjectKind() apiserver.KindDef[iamv1.ProjectSpec, iamv1.ProjectStatus] {
	return apiserver.KindDef[iamv1.ProjectSpec, iamv1.ProjectStatus]{
		Kind: iamv1.ProjectKind, Collection: iamv1.ProjectCollection, Singular: "project", ShortNames: []string{"proj"},
		Scope:   api.ScopeCluster,
		Columns: []api.Column{{Name: "DISPLAY NAME", Path: "spec.displayName"}, {Name: "PHASE", Path: "status.phase"}},
		MaxBody: 64 << 10,
		ValidateSpec: func(s *iamv1.ProjectSpec) error {
			if n := utf8.RuneCountInString(s.DisplayName); n > 128 {
				return apiserver.FieldError("spec.displayName", "is %d characters; at most 128", n)
			}
			if n := utf8.RuneCountInString(s.Description); n > 1024 {
				return apiserver.FieldError("spec.description", "is %d characters; at most 1024", n)
			}
			return nil
		},
		// A project is usable the moment it exists; the project controller
		// repairs any project that lacks the phase.
		InitialStatus: func(*iamv1.ProjectSpec) *iamv1.ProjectStatus { return &iamv1.ProjectStatus{Phase: "Active"} },
		ValidateStatus: func(s *iamv1.ProjectStatus) error {
			switch s.Phase {
			case "", "Active", "Terminating":
				return nil
			}
			return apiserver.FieldError("status.phase", "%q is not Active or Terminating", s.Phase)
		},
	}
}

// Component is the iam component.
type Component struct {
	component.Readiness
}

var _ component.Component = (*Component)(nil)

// New registers iam's kinds on a and returns the component.
func New(a *apiserver.API) (*Component, error) {
	if err := apiserver.Register(a, "iam", ProjectKind()); err != nil {
		return nil, fmt.Errorf("iam: %w", err)
	}
	return &Component{}, nil
}

// Name implements component.Component.
func (c *Component) Name() string { return "iam" }

// Run serves until ctx ends; the API framework handles Project requests.
func (c *Component) Run(ctx context.Context) error {
	c.MarkReady()
	<-ctx.Done()
	return nil
}
