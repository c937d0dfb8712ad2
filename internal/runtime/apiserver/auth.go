package apiserver

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Principal is who a request acts as.
type Principal struct {
	// Name is the canonical principal name: "user:alice",
	// "serviceaccount:proj/ci", "system:iam-projects" or "bootstrap:admin".
	Name string
	// UID is the UID of the user or service account the credential was
	// issued to, so a principal deleted and recreated under the same name
	// does not inherit old credentials.
	UID string
	// Superuser principals (the break-glass bootstrap token) skip
	// authorization entirely.
	Superuser bool
	// ExpiresAt is when the credential stops being valid (zero: never).
	// Watch streams end then, so a resumed stream is authorized afresh.
	ExpiresAt time.Time
	// AccessKeyID is the access key a token was obtained with, if any.
	AccessKeyID string
	// Node is set for a node principal (the identity of a worker's host
	// agents, "node:NAME"): the node's name. On node-bound kinds
	// (KindDef.NodeBinding) it sees only the objects bound to that node.
	Node string
}

// BootstrapPrincipal is the name of the break-glass token's holder.
const BootstrapPrincipal = "bootstrap:admin"

// Authenticator establishes the principal of a request, or fails with an
// *Error (401). iam supplies the real one (tokens it signs, plus the
// break-glass bootstrap token); TokenAuthenticator is the bootstrap token
// alone.
type Authenticator interface {
	Authenticate(r *http.Request) (Principal, error)
}

// Attributes describe what a request does, for authorization. The
// permission is Component.Collection.Verb, e.g. "iam.projects.get".
type Attributes struct {
	Component  string
	Collection string
	// Verb is get, list, watch, create, update, updatestatus or delete for
	// resource routes; other endpoints name their own.
	Verb string
	// Project is the project the request acts in: the path's project for
	// project-scoped kinds, the project's own name for a named Project,
	// and "" for cluster-level requests (cluster-scoped kinds, creating or
	// listing projects, cross-project lists).
	Project string
	// Name is the resource's name ("" for collection requests).
	Name string
}

// Permission returns "component.collection.verb".
func (a Attributes) Permission() string { return a.Component + "." + a.Collection + "." + a.Verb }

// Decision is an authorization outcome.
type Decision uint8

const (
	// Deny: the principal may see the target but not do this (403).
	Deny Decision = iota
	// Allow: go ahead.
	Allow
	// Hide: the principal has no access to the project at all, so the
	// target must look as if it did not exist (404).
	Hide
)

// Authorizer decides whether a principal may act. Implementations deny by
// default and must be fast: they run on every request (iam's caches its
// decisions).
type Authorizer interface {
	// Authorize decides one request.
	Authorize(ctx context.Context, p Principal, attrs Attributes) Decision
	// Projects returns the projects in which p holds the permission of
	// attrs (attrs.Project is ignored), sorted, for filtering
	// cross-project lists when Authorize at cluster level did not allow.
	Projects(ctx context.Context, p Principal, attrs Attributes) []string
}

type principalKey struct{}

// PrincipalFrom returns the authenticated principal of ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p (for in-process callers and tests).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// BearerToken returns the bearer token of r, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

// ErrNoToken is the 401 for requests without a bearer token.
func ErrNoToken() *Error {
	return Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
		"missing bearer token: run `ultracloud login`, pass --token, set ULTRACLOUD_TOKEN, or use the client config written by `ultracloud up`")
}

// authenticated wraps h so it runs only for authenticated requests, with
// the principal in the request context (and in the audit record of
// mutating requests).
func (a *API) authenticated(h http.HandlerFunc) http.Handler {
	if a.opts.Authenticator == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.opts.Authenticator.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ultracloud"`)
			a.fail(w, r, err)
			return
		}
		AnnotateAudit(r.Context(), func(e *AuditEvent) { e.Principal = p.Name })
		h(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// Authorize decides attrs for the principal of ctx and returns nil, a 403
// or a 404 *Error. Without an Authorizer, without an authenticated
// principal (only possible when the API runs without an Authenticator, in
// tests), or for a superuser, everything is allowed. notFound is the error
// a hidden target reports; it must be the same error the target gives when
// it really does not exist.
func (a *API) Authorize(ctx context.Context, attrs Attributes, notFound error) error {
	AnnotateAudit(ctx, func(e *AuditEvent) {
		e.Verb, e.Component, e.Collection, e.Project, e.Name = attrs.Verb, attrs.Component, attrs.Collection, attrs.Project, attrs.Name
	})
	switch a.decide(ctx, attrs) {
	case Allow:
		return nil
	case Hide:
		return notFound
	}
	p, _ := PrincipalFrom(ctx)
	where := "at cluster level"
	if attrs.Project != "" {
		where = "in project " + attrs.Project
	}
	return Errorf(http.StatusForbidden, api.CodeForbidden, "%s is not allowed %s %s; ask an administrator for a role that grants it",
		p.Name, attrs.Permission(), where)
}

func (a *API) decide(ctx context.Context, attrs Attributes) Decision {
	if a.opts.Authorizer == nil {
		return Allow
	}
	p, ok := PrincipalFrom(ctx)
	if !ok || p.Superuser {
		return Allow
	}
	return a.opts.Authorizer.Authorize(ctx, p, attrs)
}

// visibleProjects says which projects a cross-project list (or the list of
// projects) may show: all (nil, true) when the principal holds the
// permission at cluster level, else the sorted projects where it does.
func (a *API) visibleProjects(ctx context.Context, attrs Attributes) ([]string, bool) {
	attrs.Project = ""
	if a.decide(ctx, attrs) == Allow {
		return nil, true
	}
	p, _ := PrincipalFrom(ctx)
	return a.opts.Authorizer.Projects(ctx, p, attrs), false
}

// TokenAuthenticator accepts one static bearer token (the node's bootstrap
// admin token) and names its holder "bootstrap:admin", a superuser.
type TokenAuthenticator struct {
	Token string
}

// Authenticate implements Authenticator in constant time.
func (t TokenAuthenticator) Authenticate(r *http.Request) (Principal, error) {
	tok := BearerToken(r)
	if tok == "" {
		return Principal{}, ErrNoToken()
	}
	if !t.Matches(tok) {
		return Principal{}, ErrBadToken()
	}
	return Principal{Name: BootstrapPrincipal, Superuser: true}, nil
}

// Matches reports in constant time whether tok is the bootstrap token.
func (t TokenAuthenticator) Matches(tok string) bool {
	return t.Token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1
}

// ErrBadToken is the 401 for a bearer token that is not valid here.
func ErrBadToken() *Error {
	return Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "the bearer token is not valid for this cluster")
}
