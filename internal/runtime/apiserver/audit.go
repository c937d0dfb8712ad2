package apiserver

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/logging"
)

// AuditEvent is one mutating request as handed to the Auditor: who, what,
// which resource, when, and the result. It never carries bodies, so secrets
// in them (passwords, keys) cannot reach the audit log.
type AuditEvent struct {
	Time       time.Time
	Principal  string // "" when unauthenticated
	Verb       string
	Method     string
	Path       string
	Component  string
	Collection string
	Project    string
	Name       string
	Code       int
	RequestID  string
	SourceIP   string
}

// Auditor records audit events. iam's appends them to the store. Record
// must not keep ctx beyond the call.
type Auditor interface {
	Record(ctx context.Context, ev AuditEvent)
}

type auditKey struct{}

// AnnotateAudit lets a handler fill in the audit event of its request
// (e.g. the login handler names the user that was tried). It does nothing
// for requests that are not audited.
func AnnotateAudit(ctx context.Context, f func(*AuditEvent)) {
	if ev, ok := ctx.Value(auditKey{}).(*AuditEvent); ok {
		f(ev)
	}
}

// isMutating says whether a method changes state and so is audited.
func isMutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// defaultVerb is the verb of a mutating method until a handler says better.
func defaultVerb(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodDelete:
		return "delete"
	}
	return method
}

// audited wraps h so every mutating request through it is recorded with the
// Auditor after it finishes, whatever its outcome (401s included). Mount
// wraps every route it registers in it: resource routes, actions and
// declared endpoints.
func (a *API) audited(h http.Handler) http.Handler {
	if a.opts.Auditor == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isMutating(r.Method) {
			h.ServeHTTP(w, r)
			return
		}
		ev := &AuditEvent{
			Time: a.opts.Now().UTC(), Method: r.Method, Path: r.URL.Path, Verb: defaultVerb(r.Method),
			Collection: r.PathValue("collection"), Project: r.PathValue("project"), Name: r.PathValue("name"),
			RequestID: logging.RequestID(r.Context()), SourceIP: SourceIP(r),
		}
		sw := &codeWriter{ResponseWriter: w}
		defer func() {
			ev.Code = sw.code
			if ev.Code == 0 {
				ev.Code = http.StatusOK
			}
			// The request's context may already be cancelled (client gone);
			// the record must be written anyway.
			a.opts.Auditor.Record(context.WithoutCancel(r.Context()), *ev)
		}()
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), auditKey{}, ev)))
	})
}

// SourceIP is the IP address the request came from (the TCP peer; proxies
// are not trusted).
func SourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// codeWriter records the status code of a response.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
