package iam

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadPermission is returned for malformed permissions and patterns.
var ErrBadPermission = errors.New("iam: bad permission")

// maxPatternLen bounds one permission pattern.
const maxPatternLen = 200

// Pattern is one entry of a role: `component.collection.verb` where each
// part is a lower-case name or `*`, optionally prefixed with `!` to remove
// what it matches.
type Pattern struct {
	Negate bool
	Parts  [3]string // "*" matches any value of that part
}

// ParsePattern parses a role's permission pattern.
func ParsePattern(s string) (Pattern, error) {
	var p Pattern
	if len(s) > maxPatternLen {
		return p, fmt.Errorf("%w: longer than %d characters", ErrBadPermission, maxPatternLen)
	}
	rest, neg := strings.CutPrefix(s, "!")
	p.Negate = neg
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return p, fmt.Errorf("%w: %q is not component.collection.verb (e.g. iam.projects.get, compute.*.*, !iam.*.delete)", ErrBadPermission, s)
	}
	for i, part := range parts {
		if part != "*" {
			if err := checkPart(part); err != nil {
				return p, fmt.Errorf("%w: %q part %d: %s", ErrBadPermission, s, i+1, err)
			}
		}
		p.Parts[i] = part
	}
	return p, nil
}

// checkPart accepts a lower-case name: a letter, then letters, digits or
// '-', at most 63 characters.
func checkPart(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	if len(s) > 63 {
		return errors.New("is longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9' || c == '-') && i > 0:
		default:
			return fmt.Errorf("character %q is not allowed (use lower-case letters, digits, '-', or '*' for the whole part)", c)
		}
	}
	return nil
}

// String formats p as it was written.
func (p Pattern) String() string {
	s := strings.Join(p.Parts[:], ".")
	if p.Negate {
		return "!" + s
	}
	return s
}

// Matches reports whether p's parts match the permission's parts (the
// result ignores Negate).
func (p Pattern) Matches(component, collection, verb string) bool {
	return (p.Parts[0] == "*" || p.Parts[0] == component) &&
		(p.Parts[1] == "*" || p.Parts[1] == collection) &&
		(p.Parts[2] == "*" || p.Parts[2] == verb)
}

// Permission is a concrete permission, no wildcards.
type Permission struct{ Component, Collection, Verb string }

// ParsePermission parses "component.collection.verb" without wildcards.
func ParsePermission(s string) (Permission, error) {
	p, err := ParsePattern(s)
	if err != nil {
		return Permission{}, err
	}
	if p.Negate || p.Parts[0] == "*" || p.Parts[1] == "*" || p.Parts[2] == "*" {
		return Permission{}, fmt.Errorf("%w: %q is a pattern, not a permission", ErrBadPermission, s)
	}
	return Permission{p.Parts[0], p.Parts[1], p.Parts[2]}, nil
}

func (p Permission) String() string { return p.Component + "." + p.Collection + "." + p.Verb }

// Rules is a compiled role: patterns evaluated last-match-wins.
type Rules []Pattern

// ParseRules compiles a role's patterns; the error names the index.
func ParseRules(patterns []string) (Rules, error) {
	out := make(Rules, 0, len(patterns))
	for i, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Allows reports whether the rules grant the permission: the last pattern
// that matches decides; no match denies.
func (r Rules) Allows(component, collection, verb string) bool {
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].Matches(component, collection, verb) {
			return !r[i].Negate
		}
	}
	return false
}

// builtinRoles are the roles every cluster has. They cannot be created,
// changed or deleted as Role objects.
var builtinRoles = map[string][]string{
	// admin may do everything where it is bound.
	"admin": {"*.*.*"},
	// member may use every component but not manage iam; it may read the
	// project, its service accounts and bindings.
	"member": {"*.*.*", "!iam.*.*",
		"iam.projects.get", "iam.projects.list", "iam.projects.watch",
		"iam.serviceaccounts.get", "iam.serviceaccounts.list", "iam.serviceaccounts.watch",
		"iam.rolebindings.get", "iam.rolebindings.list", "iam.rolebindings.watch",
		"iam.accesskeys.get", "iam.accesskeys.list", "iam.accesskeys.watch"},
	// viewer may read everything but the audit log.
	"viewer": {"*.*.get", "*.*.list", "*.*.watch", "!iam.audit.*"},
}

// BuiltinRoles returns the built-in roles' patterns by name.
func BuiltinRoles() map[string][]string {
	out := make(map[string][]string, len(builtinRoles))
	for k, v := range builtinRoles {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// systemGrants are the cluster-wide permissions of iam's own built-in
// system principals (in-process controllers), which are never stored.
// Other components declare theirs in component.Module.SystemGrants, which
// the node hands to Policy.SetSystemGrants.
var systemGrants = map[string][]string{
	"system:iam-projects": {"iam.projects.get", "iam.projects.list", "iam.projects.watch", "iam.projects.updatestatus"},
}

// nodeRole is the built-in role of every enrolled node (principal
// node:NAME), fixed here like systemGrants: it cannot be bound, changed or
// removed. Host agents read desired state and report what they observe,
// so a node may read (get, list, watch) and write the status of every
// collection of every component but iam, and read node status; it may
// never create, update or delete anything, and nothing of iam (users,
// projects, roles, bindings, access keys, audit, signing keys, node
// credentials) is visible to it.
//
// On node-bound kinds (apiserver.KindDef.NodeBinding) the API confines a
// node principal further, to the objects bound to its own node
// (Principal.Node, set by Authenticate).
var nodeRole = []string{
	"*.*.get", "*.*.list", "*.*.watch", "*.*.updatestatus",
	"!iam.*.*",
	"node.status.get",
}

// NodeRole returns the built-in node role's patterns.
func NodeRole() []string { return append([]string(nil), nodeRole...) }
