package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Access says who may call a declared endpoint. The zero value demands a
// permission, so an endpoint is never left unauthenticated or unauthorized
// by omission: the other modes must be named.
type Access uint8

const (
	// AccessPermission admits an authenticated principal that holds the
	// endpoint's permission component.Collection.Verb in its project.
	AccessPermission Access = iota
	// AccessAuthenticated admits any authenticated principal; the handler
	// decides the rest (whoami answers everyone about themselves).
	AccessAuthenticated
	// AccessPublic admits everyone, without credentials. Only for what must
	// be reachable before a client has a token: the API's discovery and
	// OpenAPI documents, OIDC discovery, JWKS, and the endpoints that
	// exchange other credentials for tokens (login, token, logout).
	AccessPublic
)

// Endpoint declares one non-resource route of a component (a component
// endpoint such as /v1/auth/login or /v1/status). Register it with
// API.Handle before Mount. The framework authenticates and authorizes the
// call (per Access), audits it if it is mutating, limits and strictly
// decodes its body, reports errors as problem+json, and documents it in
// /openapi.json. Endpoints on named objects of a kind are Actions instead.
type Endpoint struct {
	// Method is GET, POST, PUT, PATCH or DELETE.
	Method string
	// Path is a ServeMux path; wildcards ({name}) are whole segments. A
	// {project} wildcard is the project the permission is checked in.
	Path string
	// OperationID names the operation in /openapi.json (required, unique);
	// Summary describes it in one line.
	OperationID, Summary string
	Access               Access
	// Collection and Verb complete the permission component.Collection.Verb
	// that AccessPermission requires; they also fill the audit record
	// (Collection may be set for any access mode, for audit only).
	Collection, Verb string
	// AuditVerb, if set, is the verb audit records carry instead of Verb.
	AuditVerb string
	// Project, if set, returns the project the permission is checked in
	// ("" is cluster level), e.g. from a query parameter; its errors go to
	// the client (return a FieldError). Without it: the {project}
	// wildcard, or cluster level.
	Project func(r *http.Request) (string, error)
	// Query names the query parameters, for /openapi.json.
	Query []string
	// MaxBody limits the request body (DefaultMaxBody if 0).
	MaxBody int64
	// Handler serves admitted calls: JSON or Stream.
	Handler Handler
}

// Action declares an endpoint on one named object of a kind, listed in
// KindDef.Actions and served at the object's path plus "/"+Name: an action
// (POST /v1/projects/{project}/vms/{name}/start) or a sub-resource (GET and
// PUT .../volumes/{name}/attach: one Action per method). The object must
// exist and be visible to the caller, else the call gets the same 404 as a
// get; the permission is component.collection.Verb in the object's project.
type Action struct {
	// Name is the path segment: a DNS label other than "status".
	Name string
	// Method is POST if empty.
	Method string
	// Verb completes the permission (Name if empty); AuditVerb, if set, is
	// the verb audit records carry instead.
	Verb, AuditVerb string
	// OperationID names the operation in /openapi.json (Name+Kind if
	// empty); Summary describes it.
	OperationID, Summary string
	// MaxBody limits the request body (the kind's limit if 0).
	MaxBody int64
	// Allow, if set, may admit a caller the permission refuses with 403
	// (never one it hides with 404), e.g. a user acting on itself. The
	// handler sees which through Call.Granted.
	Allow func(c *Call) bool
	// Handler serves admitted calls: JSON or Stream.
	Handler Handler
}

// Call is one admitted request to an endpoint or action, as its handler
// sees it.
type Call struct {
	// Request is the HTTP request. Its context ends with the request; for
	// streams also when the server shuts down or the credential expires.
	Request *http.Request
	// Principal is the caller (zero for public endpoints).
	Principal Principal
	// Project and Name are the path's {project} and {name} (for actions:
	// the object's); Project is the permission's project when an
	// Endpoint's Project function gave it.
	Project, Name string
	// Object is, for actions, the object as stored when the call was
	// admitted.
	Object *api.Object
	// Granted says the caller holds the endpoint's permission; false for
	// endpoints without one and for calls an action's Allow admitted.
	Granted bool

	// target is the action's object (actions only), for Update.
	target *target

	w       http.ResponseWriter
	a       *API
	maxBody int64
}

// Context returns the call's context.
func (c *Call) Context() context.Context { return c.Request.Context() }

// Header returns the response headers, sent with the result or the error
// (e.g. Cache-Control, Retry-After).
func (c *Call) Header() http.Header { return c.w.Header() }

func (c *Call) fail(err error) { c.a.fail(c.w, c.Request, err) }

// Update changes an action's object (a start action setting the desired
// power state): change gets the object as stored and edits its labels,
// spec or status in place; the write is a compare-and-swap retried on
// races (change runs again on the fresh object), writes nothing when
// nothing changed, and runs the kind's AfterWrite. The kind's validation
// hooks do not run: the action is responsible for what it writes.
func (c *Call) Update(change func(o *api.Object) error) (*api.Object, error) {
	if c.target == nil {
		return nil, errors.New("apiserver: Call.Update is for actions")
	}
	return c.a.modify(c.Request, *c.target, 0, func(o *api.Object) (hookWrites, error) { return hookWrites{}, change(o) })
}

// NoBody as a JSON handler's request type reads no body; as its response
// type, answers 204 No Content.
type NoBody struct{}

// Handler serves admitted calls of one endpoint and carries the types that
// document it. Make one with JSON or Stream.
type Handler struct {
	serve     func(h *Handler, c *Call)
	request   reflect.Type // nil: no request body
	response  reflect.Type // nil: no response body
	status    int
	mediaType string
	stream    bool
}

// WithStatus returns h answering success with code (200 by default, 204
// for NoBody responses).
func (h Handler) WithStatus(code int) Handler { h.status = code; return h }

// WithMediaType returns h sending its JSON response as media type mt (e.g.
// application/jwk-set+json) instead of application/json.
func (h Handler) WithMediaType(mt string) Handler { h.mediaType = mt; return h }

// JSON returns a handler that decodes the request body strictly into Req
// (415 unless JSON, 413 beyond the body limit, 400 naming the bad field;
// no body is read when Req is NoBody), calls fn, and writes its result as
// JSON, or fn's error as problem+json.
func JSON[Req, Resp any](fn func(c *Call, req *Req) (*Resp, error)) Handler {
	noReq := reflect.TypeFor[Req]() == reflect.TypeFor[NoBody]()
	noResp := reflect.TypeFor[Resp]() == reflect.TypeFor[NoBody]()
	h := Handler{status: http.StatusOK, mediaType: "application/json"}
	if !noReq {
		h.request = reflect.TypeFor[Req]()
	}
	if noResp {
		h.status = http.StatusNoContent
	} else {
		h.response = reflect.TypeFor[Resp]()
	}
	h.serve = func(h *Handler, c *Call) {
		req := new(Req)
		if !noReq {
			if err := DecodeJSON(c.Request, req, c.maxBody); err != nil {
				c.fail(err)
				return
			}
		}
		resp, err := fn(c, req)
		if err != nil {
			c.fail(err)
			return
		}
		if noResp {
			c.w.WriteHeader(h.status)
			return
		}
		writeJSONAs(c.w, h.status, h.mediaType, resp)
	}
	return h
}

// Stream returns a handler for a long-lived response of mediaType (an
// NDJSON log follow, a console WebSocket after its upgrade). fn writes the
// response itself. c.Context() ends when the client goes away, when the
// server shuts down (API.CloseStreams) or when the caller's credential
// expires (a client resumes with a fresh one), and fn must then return. An
// error fn returns before it wrote anything is sent as problem+json; after
// that it only ends the stream. The server's write timeout applies: extend
// it with http.NewResponseController(w).SetWriteDeadline as data flows (a
// hijacked connection keeps the deadlines it had).
func Stream(mediaType string, fn func(c *Call, w http.ResponseWriter) error) Handler {
	h := Handler{status: http.StatusOK, mediaType: mediaType, stream: true}
	h.serve = func(_ *Handler, c *Call) {
		ctx, cancel := context.WithCancel(c.Context())
		defer cancel()
		defer context.AfterFunc(c.a.streams, cancel)()
		if exp := c.Principal.ExpiresAt; !exp.IsZero() {
			defer time.AfterFunc(time.Until(exp), cancel).Stop()
		}
		c.Request = c.Request.WithContext(ctx)
		sw := &codeWriter{ResponseWriter: c.w}
		c.w = sw
		if err := fn(c, sw); err != nil {
			if sw.code == 0 {
				c.fail(err)
				return
			}
			if ae := AsError(err); ae.Status >= 500 && ctx.Err() == nil {
				c.a.log.WarnContext(ctx, "stream ended with an error", "path", c.Request.URL.Path, "err", err)
			}
		}
	}
	return h
}

// endpoint is a registered Endpoint with its defaults applied.
type endpoint struct {
	Endpoint
	component string
	// docPath, if set, is the path /openapi.json shows (for the API's own
	// GET /v1/{$}, a form Handle refuses).
	docPath string
}

var endpointMethods = map[string]bool{http.MethodGet: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true}

// Handle declares a non-resource endpoint of component; call it before
// Mount. Its permission is component.e.Collection.e.Verb.
func (a *API) Handle(component string, e Endpoint) error {
	if component == "" {
		return errors.New("apiserver: an endpoint needs its component's name")
	}
	if !endpointMethods[e.Method] {
		return fmt.Errorf("apiserver: endpoint %s %s: method must be one of GET, POST, PUT, PATCH, DELETE", e.Method, e.Path)
	}
	if _, err := pathParams(e.Path); err != nil {
		return fmt.Errorf("apiserver: endpoint %s %s: %w", e.Method, e.Path, err)
	}
	if e.OperationID == "" {
		return fmt.Errorf("apiserver: endpoint %s %s needs an OperationID", e.Method, e.Path)
	}
	if e.Handler.serve == nil {
		return fmt.Errorf("apiserver: endpoint %s %s needs a Handler (JSON or Stream)", e.Method, e.Path)
	}
	switch e.Access {
	case AccessPermission:
		if e.Collection == "" || e.Verb == "" {
			return fmt.Errorf("apiserver: endpoint %s %s needs Collection and Verb for its permission, or an explicit Access", e.Method, e.Path)
		}
	case AccessAuthenticated, AccessPublic:
	default:
		return fmt.Errorf("apiserver: endpoint %s %s: unknown Access %d", e.Method, e.Path, e.Access)
	}
	if e.MaxBody == 0 {
		e.MaxBody = DefaultMaxBody
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mounted {
		return fmt.Errorf("apiserver: endpoint %s %s declared after Mount", e.Method, e.Path)
	}
	for _, o := range a.endpoints {
		if o.Method == e.Method && o.Path == e.Path {
			return fmt.Errorf("apiserver: endpoint %s %s declared twice", e.Method, e.Path)
		}
	}
	if a.operationIDs[e.OperationID] {
		return fmt.Errorf("apiserver: endpoint %s %s: operationId %q is taken", e.Method, e.Path, e.OperationID)
	}
	a.operationIDs[e.OperationID] = true
	a.endpoints = append(a.endpoints, &endpoint{Endpoint: e, component: component})
	return nil
}

// pathParams returns the wildcard names of a ServeMux path, refusing the
// forms /openapi.json cannot express ({x...}, {$}, partial segments).
func pathParams(path string) ([]string, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, errors.New("path must start with /")
	}
	var out []string
	segs := strings.Split(path[1:], "/")
	for i, seg := range segs {
		if !strings.ContainsAny(seg, "{}") {
			continue
		}
		name, ok := strings.CutPrefix(seg, "{")
		if name, ok = strings.CutSuffix(name, "}"); ok && i == len(segs)-1 {
			// {name...}, the rest of the path, is allowed last.
			name = strings.TrimSuffix(name, "...")
		}
		if !ok || name == "" || strings.ContainsAny(name, "{}.$") {
			return nil, fmt.Errorf("wildcard segment %q must be a whole segment {name} (or {name...} last)", seg)
		}
		out = append(out, name)
	}
	return out, nil
}

// auditVerb is the verb audit records of e carry.
func (e *endpoint) auditVerb() string {
	if e.AuditVerb != "" {
		return e.AuditVerb
	}
	return e.Verb
}

// handler wraps e's handler with audit, authentication and authorization.
func (a *API) endpointHandler(e *endpoint) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &Call{Request: r, Project: r.PathValue("project"), Name: r.PathValue("name"), w: w, a: a, maxBody: e.MaxBody}
		c.Principal, _ = PrincipalFrom(r.Context())
		if e.Access == AccessPermission {
			if e.Project != nil {
				p, err := e.Project(r)
				if err != nil {
					a.fail(w, r, err)
					return
				}
				c.Project = p
			}
			hidden := Errorf(http.StatusNotFound, api.CodeNotFound, "not found")
			if c.Project != "" {
				hidden = Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", c.Project)
			}
			err := a.Authorize(r.Context(), Attributes{Component: e.component, Collection: e.Collection, Verb: e.Verb,
				Project: c.Project, Name: c.Name}, hidden)
			annotateVerb(r.Context(), e.AuditVerb)
			if err != nil {
				a.fail(w, r, err)
				return
			}
			c.Granted = true
		}
		e.Handler.serve(&e.Handler, c)
	})
	var h http.Handler = inner
	if e.Access != AccessPublic {
		h = a.authenticated(inner)
	}
	// The audit record names the endpoint even when authentication fails.
	named := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		AnnotateAudit(r.Context(), func(ev *AuditEvent) {
			ev.Component = e.component
			if e.Collection != "" {
				ev.Collection = e.Collection
			}
			if v := e.auditVerb(); v != "" {
				ev.Verb = v
			}
		})
		h.ServeHTTP(w, r)
	})
	return a.audited(named)
}

// annotateVerb sets the audit record's verb when v is set.
func annotateVerb(ctx context.Context, v string) {
	if v != "" {
		AnnotateAudit(ctx, func(ev *AuditEvent) { ev.Verb = v })
	}
}

// checkActions validates a kind's actions and applies their defaults.
func checkActions(k *kind, acts []Action) error {
	if len(acts) > 0 && k.isProjects() {
		return fmt.Errorf("apiserver: kind %s: actions on projects are not supported (their paths are those of project-scoped collections)", k.info.Kind)
	}
	for _, ac := range acts {
		if ValidateName("action", ac.Name) != nil || ac.Name == "status" {
			return fmt.Errorf("apiserver: kind %s: action name %q must be a DNS label other than status", k.info.Kind, ac.Name)
		}
		if ac.Method == "" {
			ac.Method = http.MethodPost
		}
		if !endpointMethods[ac.Method] {
			return fmt.Errorf("apiserver: kind %s: action %s: method must be one of GET, POST, PUT, PATCH, DELETE", k.info.Kind, ac.Name)
		}
		if ac.Verb == "" {
			ac.Verb = ac.Name
		}
		if ac.OperationID == "" {
			ac.OperationID = ac.Name + k.info.Kind
		}
		if ac.MaxBody == 0 {
			ac.MaxBody = k.maxBody
		}
		if ac.Handler.serve == nil {
			return fmt.Errorf("apiserver: kind %s: action %s needs a Handler (JSON or Stream)", k.info.Kind, ac.Name)
		}
		for _, o := range k.actions {
			if o.Name == ac.Name && o.Method == ac.Method {
				return fmt.Errorf("apiserver: kind %s: action %s %s declared twice", k.info.Kind, ac.Method, ac.Name)
			}
		}
		k.actions = append(k.actions, &ac)
	}
	return nil
}

// findAction returns k's action name for method: a 404 listing the kind's
// actions when it has no such action, a 405 when it has it for other
// methods only.
func (k *kind) findAction(w http.ResponseWriter, name, method string) (*Action, error) {
	var names, methods []string
	for _, ac := range k.actions {
		if ac.Name == name {
			if ac.Method == method {
				return ac, nil
			}
			methods = append(methods, ac.Method)
		}
		names = append(names, ac.Method+" "+ac.Name)
	}
	if len(methods) > 0 {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		return nil, Errorf(http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "%s action %q takes %s, not %s",
			k.info.Singular, name, strings.Join(methods, " or "), method)
	}
	if len(names) == 0 {
		return nil, Errorf(http.StatusNotFound, api.CodeNotFound, "%s has no actions; %q is not one", k.info.Singular, name)
	}
	return nil, Errorf(http.StatusNotFound, api.CodeNotFound, "%s has no action %q; its actions are: %s",
		k.info.Singular, name, strings.Join(names, ", "))
}

// handleAction serves METHOD <object path>/{action}: it finds the kind's
// action, authorizes it on the object like a get would be (hidden -> 404),
// requires the object to exist, and runs the action's handler.
func (a *API) handleAction(w http.ResponseWriter, r *http.Request) {
	t, err := a.resolve(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ac, err := t.k.findAction(w, r.PathValue("action"), r.Method)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c := &Call{Request: r, Project: t.project, Name: t.name, w: w, a: a, maxBody: ac.MaxBody, target: &t}
	c.Principal, _ = PrincipalFrom(r.Context())
	err = a.authorize(r, t, ac.Verb)
	annotateVerb(r.Context(), ac.AuditVerb)
	var ae *Error
	switch {
	case err == nil:
		c.Granted = true
	case ac.Allow != nil && errors.As(err, &ae) && ae.Status == http.StatusForbidden && ac.Allow(c):
	default:
		a.fail(w, r, err)
		return
	}
	_, o, err := a.readReachable(r.Context(), t, 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c.Object = o
	ac.Handler.serve(&ac.Handler, c)
}
