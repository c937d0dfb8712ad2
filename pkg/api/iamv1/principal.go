package iamv1

import (
	"errors"
	"strings"
)

// Principal kinds as they appear in principal names ("user:alice").
const (
	PrincipalUser           = "user"
	PrincipalServiceAccount = "serviceaccount"
	// PrincipalSystem names built-in in-process principals (controllers);
	// they are never stored and cannot be bound.
	PrincipalSystem = "system"
	// PrincipalBootstrap is the break-glass admin token's holder.
	PrincipalBootstrap = "bootstrap"
	// PrincipalNode names a node enrolled with a NodeCredential
	// ("node:NAME"); it holds the built-in node role and cannot be bound.
	PrincipalNode = "node"
)

// ErrBadPrincipal is returned by ParsePrincipal for malformed names.
var ErrBadPrincipal = errors.New(`iamv1: a principal is "user:NAME" or "serviceaccount:PROJECT/NAME"`)

// UserPrincipal returns the principal name of user name.
func UserPrincipal(name string) string { return PrincipalUser + ":" + name }

// NodePrincipal returns the principal name of node name.
func NodePrincipal(name string) string { return PrincipalNode + ":" + name }

// ServiceAccountPrincipal returns the principal name of a service account.
func ServiceAccountPrincipal(project, name string) string {
	return PrincipalServiceAccount + ":" + project + "/" + name
}

// ParsedPrincipal is a principal name split into parts.
type ParsedPrincipal struct {
	Kind    string // user or serviceaccount
	Project string // service accounts only
	Name    string
}

// ParsePrincipal splits a bindable principal name ("user:NAME" or
// "serviceaccount:PROJECT/NAME"). It checks the shape only; names must
// still be validated as DNS labels by the caller.
func ParsePrincipal(s string) (ParsedPrincipal, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return ParsedPrincipal{}, ErrBadPrincipal
	}
	switch kind {
	case PrincipalUser:
		if strings.Contains(rest, "/") {
			return ParsedPrincipal{}, ErrBadPrincipal
		}
		return ParsedPrincipal{Kind: kind, Name: rest}, nil
	case PrincipalServiceAccount:
		project, name, ok := strings.Cut(rest, "/")
		if !ok || project == "" || name == "" || strings.Contains(name, "/") {
			return ParsedPrincipal{}, ErrBadPrincipal
		}
		return ParsedPrincipal{Kind: kind, Project: project, Name: name}, nil
	}
	return ParsedPrincipal{}, ErrBadPrincipal
}

// String formats p back into a principal name.
func (p ParsedPrincipal) String() string {
	if p.Kind == PrincipalServiceAccount {
		return ServiceAccountPrincipal(p.Project, p.Name)
	}
	return p.Kind + ":" + p.Name
}
