// Package iamv1 holds the wire types of iam's resources (version 1), shared
// by the iam component and SDK users.
package iamv1

// ProjectSpec is the desired state of a project.
type ProjectSpec struct {
	// DisplayName is a human-friendly name (at most 128 characters).
	DisplayName string `json:"displayName,omitempty"`
	// Description says what the project is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
}

// ProjectStatus is the observed state of a project.
type ProjectStatus struct {
	// Phase is Active or Terminating.
	Phase string `json:"phase,omitempty"`
}

// Project collection and kind names.
const (
	ProjectKind       = "Project"
	ProjectCollection = "projects"
)
