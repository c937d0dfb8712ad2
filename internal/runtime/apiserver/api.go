// Package apiserver is the resource API framework every component shares:
// kinds are registered with typed spec and status, and the framework serves
// them as REST/JSON (list with pagination and label selectors, get, create,
// update with optimistic concurrency, delete, watch, status), stores them in a
// storage.Store, reports errors as problem+json, and generates the OpenAPI
// document from the Go types. Non-resource routes are declared here too:
// actions and sub-resources on a kind's objects (Action), component
// endpoints (Endpoint, API.Handle) and long-lived streams (Stream), and
// Mount is the one place every route is mounted.
//
// It owns the HTTP semantics of resources and the enforcement points of
// security: every resource request is authenticated (an Authenticator),
// authorized per permission and project (an Authorizer; 401, 403 and 404 as
// the brief defines them, cross-project lists filtered so other projects'
// names never appear), and every mutating request is handed to an Auditor.
// It does not own the policy behind those interfaces (iam does), listeners,
// or any component's business logic (components hook in through KindDef
// hooks and their own controllers).
package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// Options tune an API.
type Options struct {
	Logger *slog.Logger
	// Now returns the current time (for createdAt/updatedAt); time.Now if nil.
	Now func() time.Time
	// NewUID returns a fresh UID; random UUIDs if nil.
	NewUID func() string
	// Authenticator checks every request except discovery; nil allows all
	// (only for tests).
	Authenticator Authenticator
	// Authorizer decides what authenticated principals may do; nil allows
	// every authenticated request (only for tests and single-token nodes).
	Authorizer Authorizer
	// Auditor records every mutating request; nil records nothing.
	Auditor Auditor
	// BookmarkInterval is how often an idle watch stream gets a bookmark
	// event (keepalive); 15s if 0.
	BookmarkInterval time.Duration
	// DefaultLimit and MaxLimit bound list page sizes (500 and 5000 if 0).
	DefaultLimit, MaxLimit int
}

// API serves the registered kinds.
type API struct {
	store storage.Store
	opts  Options
	log   *slog.Logger

	mu    sync.RWMutex
	kinds map[string]*kind // by collection
	// endpoints are the declared non-resource endpoints, in declaration
	// order; operationIDs the operation IDs they and actions take.
	endpoints    []*endpoint
	operationIDs map[string]bool
	// mounted is set by Mount, after which nothing may be declared;
	// routes are the patterns it registered.
	mounted bool
	routes  []string

	// streams is cancelled when the server shuts down so long-running watch
	// responses end and graceful shutdown can finish.
	streams      context.Context
	closeStreams context.CancelFunc
}

// New returns an API over store.
func New(store storage.Store, opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewUID == nil {
		opts.NewUID = func() string { return uuid.NewString() }
	}
	if opts.BookmarkInterval <= 0 {
		opts.BookmarkInterval = 15 * time.Second
	}
	if opts.DefaultLimit <= 0 {
		opts.DefaultLimit = 500
	}
	if opts.MaxLimit <= 0 {
		opts.MaxLimit = 5000
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &API{store: store, opts: opts, log: opts.Logger, kinds: map[string]*kind{}, operationIDs: map[string]bool{},
		streams: ctx, closeStreams: cancel}
	discovery := JSON(func(*Call, *NoBody) (*api.Discovery, error) {
		return &api.Discovery{Version: api.Version, Kinds: a.Kinds()}, nil
	})
	for _, e := range []*endpoint{
		{Endpoint: Endpoint{Method: http.MethodGet, Path: "/v1", OperationID: "getDiscovery",
			Summary: "the API version and the kinds this endpoint serves", Access: AccessPublic, Handler: discovery}},
		{Endpoint: Endpoint{Method: http.MethodGet, Path: "/v1/{$}", OperationID: "getDiscoverySlash",
			Summary: "the same as GET /v1", Access: AccessPublic, Handler: discovery}, docPath: "/v1/"},
		{Endpoint: Endpoint{Method: http.MethodGet, Path: "/openapi.json", OperationID: "getOpenAPI",
			Summary: "this OpenAPI 3.1 document", Access: AccessPublic,
			Handler: JSON(func(*Call, *NoBody) (*map[string]any, error) { doc := a.OpenAPI(); return &doc, nil })}},
	} {
		e.component = "apiserver"
		a.operationIDs[e.OperationID] = true
		a.endpoints = append(a.endpoints, e)
	}
	return a
}

// CloseStreams ends every open watch stream. The HTTP server calls it when it
// starts shutting down.
func (a *API) CloseStreams() { a.closeStreams() }

func (a *API) addKind(k *kind) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if k.info.Collection == "projects" && k.info.Scope != api.ScopeCluster {
		return fmt.Errorf("apiserver: collection %q is reserved for the cluster-scoped Project kind", k.info.Collection)
	}
	if a.mounted {
		return fmt.Errorf("apiserver: kind %s registered after Mount", k.info.Kind)
	}
	for _, ac := range k.actions {
		if a.operationIDs[ac.OperationID] {
			return fmt.Errorf("apiserver: kind %s: action %s: operationId %q is taken", k.info.Kind, ac.Name, ac.OperationID)
		}
	}
	if _, dup := a.kinds[k.info.Collection]; dup {
		return fmt.Errorf("apiserver: collection %q registered twice", k.info.Collection)
	}
	for _, o := range a.kinds {
		if o.info.Kind == k.info.Kind {
			return fmt.Errorf("apiserver: kind %q registered twice", k.info.Kind)
		}
	}
	a.kinds[k.info.Collection] = k
	for _, ac := range k.actions {
		a.operationIDs[ac.OperationID] = true
	}
	return nil
}

// Kinds returns every registered kind, sorted by collection.
func (a *API) Kinds() []api.KindInfo {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]api.KindInfo, 0, len(a.kinds))
	for _, k := range a.kinds {
		out = append(out, k.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Collection < out[j].Collection })
	return out
}

func (a *API) kind(collection string) (*kind, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	k, ok := a.kinds[collection]
	return k, ok
}

// Mux is what Mount registers routes on; *http.ServeMux is one.
type Mux interface {
	Handle(pattern string, handler http.Handler)
}

// Mount registers every route of the API on mux: the resource routes of
// all kinds, their actions, and every declared endpoint (discovery at GET
// /v1 and the OpenAPI document at GET /openapi.json among them), each
// wrapped in audit, authentication and authorization. It is the one place
// routes are mounted, so Routes lists them all. Register kinds and declare
// endpoints before calling it; call it once.
func (a *API) Mount(mux Mux) {
	a.mu.Lock()
	a.mounted = true
	endpoints := a.endpoints
	scopes := map[api.Scope]bool{}
	actionMethods := map[api.Scope]map[string]bool{api.ScopeCluster: {}, api.ScopeProject: {}}
	for _, k := range a.kinds {
		scopes[k.info.Scope] = true
		for _, ac := range k.actions {
			actionMethods[k.info.Scope][ac.Method] = true
		}
	}
	a.mu.Unlock()
	handle := func(pattern string, h http.Handler) {
		a.mu.Lock()
		a.routes = append(a.routes, pattern)
		a.mu.Unlock()
		mux.Handle(pattern, h)
	}
	auth := func(h http.HandlerFunc) http.Handler { return a.audited(a.authenticated(h)) }
	// Resource routes are mounted for the scopes some kind has, so that
	// every route is one /openapi.json documents. Lists of cluster-scoped
	// kinds, and cross-project lists of project-scoped ones:
	if len(scopes) > 0 {
		handle("GET /v1/{collection}", auth(a.handleList))
	}
	if scopes[api.ScopeCluster] {
		handle("POST /v1/{collection}", auth(a.handleCreate))
		handle("GET /v1/{collection}/{name}", auth(a.handleGet))
		handle("PUT /v1/{collection}/{name}", auth(a.handleUpdate))
		handle("DELETE /v1/{collection}/{name}", auth(a.handleDelete))
		handle("PUT /v1/{collection}/{name}/status", auth(a.handleStatus))
	}
	if scopes[api.ScopeProject] {
		handle("GET /v1/projects/{project}/{collection}", auth(a.handleList))
		handle("POST /v1/projects/{project}/{collection}", auth(a.handleCreate))
		handle("GET /v1/projects/{project}/{collection}/{name}", auth(a.handleGet))
		handle("PUT /v1/projects/{project}/{collection}/{name}", auth(a.handleUpdate))
		handle("DELETE /v1/projects/{project}/{collection}/{name}", auth(a.handleDelete))
		handle("PUT /v1/projects/{project}/{collection}/{name}/status", auth(a.handleStatus))
	}
	// Actions, for the methods some kind's actions use.
	for _, m := range sortedKeys(actionMethods[api.ScopeCluster]) {
		handle(m+" /v1/{collection}/{name}/{action}", auth(a.handleAction))
	}
	for _, m := range sortedKeys(actionMethods[api.ScopeProject]) {
		handle(m+" /v1/projects/{project}/{collection}/{name}/{action}", auth(a.handleAction))
	}
	for _, e := range endpoints {
		handle(e.Method+" "+e.Path, a.endpointHandler(e))
	}
}

// Routes returns the patterns Mount registered, in order.
func (a *API) Routes() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return append([]string(nil), a.routes...)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// target is the resource (or collection) a request addresses.
type target struct {
	k       *kind
	project string // "" for cluster-scoped kinds and cross-project lists
	name    string // "" for collection requests
}

// key returns the store key of the named resource.
func (t target) key() []byte {
	if t.project != "" {
		return []byte(t.k.prefix + t.project + "/" + t.name)
	}
	return []byte(t.k.prefix + t.name)
}

// listPrefix returns the key prefix the collection request covers.
func (t target) listPrefix() string {
	if t.project != "" {
		return t.k.prefix + t.project + "/"
	}
	return t.k.prefix
}

// resolve works out the target of r and checks that the path fits the kind's
// scope; named says whether the route carries {name}.
func (a *API) resolve(r *http.Request, named bool) (target, error) {
	coll := r.PathValue("collection")
	project := r.PathValue("project")
	k, ok := a.kind(coll)
	if !ok {
		return target{}, Errorf(http.StatusNotFound, api.CodeNotFound, "no collection %q here; GET /v1 lists the collections this endpoint serves", coll)
	}
	t := target{k: k, project: project, name: r.PathValue("name")}
	inProject := project != ""
	switch k.info.Scope {
	case api.ScopeCluster:
		if inProject {
			return target{}, Errorf(http.StatusNotFound, api.CodeNotFound, "%s is cluster-scoped: use /v1/%s", coll, coll)
		}
	case api.ScopeProject:
		if !inProject && (named || r.Method != http.MethodGet) {
			return target{}, Errorf(http.StatusNotFound, api.CodeNotFound, "%s is project-scoped: use /v1/projects/{project}/%s", coll, coll)
		}
		if inProject {
			if err := ValidateName("project", project); err != nil {
				return target{}, err
			}
		}
	}
	if named {
		if err := ValidateName("metadata.name", t.name); err != nil {
			return target{}, err
		}
	}
	return t, nil
}

// objectFromKV decodes a stored resource and stamps its revision.
// ObjectFromKV decodes a stored resource (a value under ObjectKey), with
// its revision, for components that read their own kinds from the store.
func ObjectFromKV(kv storage.KV) (*api.Object, error) { return objectFromKV(kv) }

func objectFromKV(kv storage.KV) (*api.Object, error) {
	var o api.Object
	if err := json.Unmarshal(kv.Value, &o); err != nil {
		return nil, fmt.Errorf("apiserver: decoding stored object %q: %w", kv.Key, err)
	}
	o.Metadata.Revision = kv.ModRevision
	return &o, nil
}

// encodeStored encodes o for the store; the revision is never stored (the
// store's ModRevision is the truth).
func encodeStored(o *api.Object) ([]byte, error) {
	c := *o
	c.Metadata.Revision = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("apiserver: encoding object: %w", err)
	}
	return b, nil
}

func (a *API) now() *time.Time {
	t := a.opts.Now().UTC().Truncate(time.Millisecond)
	return &t
}

// CollectionPrefix returns the store key prefix under which collection's
// objects live, for components that watch the store directly (iam's
// policy cache). Project-scoped objects are under prefix+project+"/".
func CollectionPrefix(collection string) string { return "/r/" + collection + "/" }

// ObjectKey returns the store key of an object (project "" for
// cluster-scoped kinds).
func ObjectKey(collection, project, name string) []byte {
	if project != "" {
		return []byte(CollectionPrefix(collection) + project + "/" + name)
	}
	return []byte(CollectionPrefix(collection) + name)
}

// DecodeObject decodes a stored object and stamps its revision.
func DecodeObject(kv storage.KV) (*api.Object, error) { return objectFromKV(kv) }

// EncodeObject encodes an object the way the API stores it, for
// components that write objects inside their own transactions.
func EncodeObject(o *api.Object) ([]byte, error) { return encodeStored(o) }
