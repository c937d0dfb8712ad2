// Package api holds the wire types of UltraCloud's resource APIs: the resource
// envelope, lists, watch events, problem details and discovery documents.
//
// Servers (under internal/) and clients (pkg/client, the CLI, users' programs)
// share these types so both sides agree on the JSON. The package must stay
// free of behaviour beyond encoding helpers, and must never import internal/.
package api

import (
	"encoding/json"
	"time"
)

// Version is the resource API version served under /v1. Changelog:
//   - 1 (2026-11-25): resource envelope, list/get/create/update/delete/watch,
//     status subresource, discovery, problem+json errors.
const Version = 1

// ObjectMeta is the metadata every resource carries. Name and Labels are set
// by the client; the server owns UID, Revision and the timestamps.
type ObjectMeta struct {
	// Name is unique within the collection (and project, for project-scoped
	// kinds). A DNS label: lower-case letters, digits and '-', at most 63.
	Name string `json:"name"`
	// Project is the owning project; empty for cluster-scoped kinds.
	Project string `json:"project,omitempty"`
	// UID is assigned at creation and never reused.
	UID string `json:"uid,omitempty"`
	// Revision is the store revision of the last change. Send it back on
	// update to make the update conditional (a stale value fails with 409).
	Revision int64 `json:"revision,omitempty"`
	// CreatedAt is when the resource was created.
	CreatedAt *time.Time `json:"createdAt,omitempty"`
	// UpdatedAt is when the resource was last changed.
	UpdatedAt *time.Time `json:"updatedAt,omitempty"`
	// Labels are free-form key/value pairs that list selectors match on.
	Labels map[string]string `json:"labels,omitempty"`
}

// Object is a resource of any kind with its spec and status left undecoded.
// Typed servers decode Spec and Status into their own Go types.
type Object struct {
	Kind     string          `json:"kind"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     json.RawMessage `json:"spec,omitempty"`
	Status   json.RawMessage `json:"status,omitempty"`
}

// List is one page of a collection.
type List struct {
	Kind     string   `json:"kind"`
	Items    []Object `json:"items"`
	Metadata ListMeta `json:"metadata"`
}

// ListMeta says where a page sits. Continue is empty on the last page;
// otherwise pass it back as the `continue` query parameter for the next page.
// Revision is the store revision the page was read at: start a watch from
// Revision+1 to see every change after it.
type ListMeta struct {
	Continue string `json:"continue,omitempty"`
	Revision int64  `json:"revision"`
}

// EventType is the type of a watch event.
type EventType string

const (
	EventAdded    EventType = "ADDED"
	EventModified EventType = "MODIFIED"
	EventDeleted  EventType = "DELETED"
	// EventBookmark carries no object; it tells the watcher how far the
	// stream has got (Revision) so a resume can start after it.
	EventBookmark EventType = "BOOKMARK"
	// EventError ends the stream; Error says why (e.g. code
	// "revision_compacted": re-list and watch from the list's revision).
	EventError EventType = "ERROR"
)

// Event is one line of a watch stream (newline-delimited JSON).
type Event struct {
	Type     EventType `json:"type"`
	Revision int64     `json:"revision"`
	Object   *Object   `json:"object,omitempty"`
	Error    *Problem  `json:"error,omitempty"`
}

// Scope says whether a kind lives inside projects or at cluster level.
type Scope string

const (
	ScopeProject Scope = "project"
	ScopeCluster Scope = "cluster"
)

// KindInfo describes one resource kind a server offers, so generic clients
// (the CLI's get/apply/delete/watch) can address any kind.
type KindInfo struct {
	Kind       string   `json:"kind"`
	Collection string   `json:"collection"`
	Singular   string   `json:"singular"`
	ShortNames []string `json:"shortNames,omitempty"`
	Scope      Scope    `json:"scope"`
	Component  string   `json:"component"`
	// Columns are extra table columns: a header and a dotted JSON path into
	// the object, e.g. {"Name":"DISPLAY","Path":"spec.displayName"}.
	Columns []Column `json:"columns,omitempty"`
}

// Column is an extra table column for a kind.
type Column struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Discovery is served at /v1 and lists every kind of this endpoint.
type Discovery struct {
	Version int        `json:"version"`
	Kinds   []KindInfo `json:"kinds"`
}

// ComponentStatus is one component's state as reported by /v1/status.
type ComponentStatus struct {
	Name      string            `json:"name"`
	State     string            `json:"state"` // starting, ready, stopping, stopped, failed
	Error     string            `json:"error,omitempty"`
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// Details are a component's own facts for operators, e.g. a replicated
	// store's leader, member count and revision.
	Details map[string]string `json:"details,omitempty"`
}

// NodeStatus is served at /v1/status: the node and its components.
type NodeStatus struct {
	Node       string            `json:"node"`
	Version    int               `json:"apiVersion"`
	Ready      bool              `json:"ready"`
	Components []ComponentStatus `json:"components"`
}
