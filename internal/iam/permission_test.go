package iam

import (
	"context"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

func TestParsePattern(t *testing.T) {
	good := []string{"iam.projects.get", "*.*.*", "!iam.*.*", "compute.vms.*", "a1.b-2.c", "*.widgets.list"}
	for _, s := range good {
		p, err := ParsePattern(s)
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if p.String() != s {
			t.Errorf("%q round-trips to %q", s, p.String())
		}
	}
	bad := []string{"", "a", "a.b", "a.b.c.d", "A.b.c", "a.b.C", "a..c", ".a.b", "a.b.", "a*.b.c", "**.b.c", "!!a.b.c",
		"1a.b.c", "-a.b.c", "a.b.c ", " a.b.c", "a.b.c\x00", "a.b.ç", strings.Repeat("a", 64) + ".b.c", strings.Repeat("a.", 150) + "a"}
	for _, s := range bad {
		if _, err := ParsePattern(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if _, err := ParsePermission("iam.*.get"); err == nil {
		t.Error("a pattern accepted as a permission")
	}
}

func TestRules(t *testing.T) {
	r, err := ParseRules([]string{"*.*.*", "!iam.*.*", "iam.projects.get", "!*.*.delete"})
	if err != nil {
		t.Fatal(err)
	}
	for perm, want := range map[string]bool{
		"test.widgets.get":     true,
		"test.widgets.delete":  false,
		"iam.users.get":        false,
		"iam.projects.get":     true,
		"iam.projects.delete":  false,
		"iam.projects.update":  false,
		"compute.vms.create":   true,
		"compute.vms.updatest": true,
	} {
		p, err := ParsePermission(perm)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Allows(p.Component, p.Collection, p.Verb); got != want {
			t.Errorf("%s: %v, want %v", perm, got, want)
		}
	}
	if (Rules{}).Allows("a", "b", "c") {
		t.Error("empty rules allow")
	}
}

// TestBuiltinRoles pins what the built-in roles grant.
func TestBuiltinRoles(t *testing.T) {
	roles := map[string]Rules{}
	for name, pats := range BuiltinRoles() {
		r, err := ParseRules(pats)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		roles[name] = r
	}
	cases := []struct {
		role, perm string
		want       bool
	}{
		{"admin", "iam.rolebindings.create", true},
		{"admin", "anything.at.all", true},
		{"member", "test.widgets.create", true},
		{"member", "iam.rolebindings.create", false},
		{"member", "iam.accesskeys.create", false},
		{"member", "iam.serviceaccounts.list", true},
		{"member", "iam.audit.list", false},
		{"viewer", "test.widgets.get", true},
		{"viewer", "test.widgets.watch", true},
		{"viewer", "test.widgets.create", false},
		{"viewer", "test.widgets.updatestatus", false},
		{"viewer", "iam.audit.list", false},
	}
	for _, c := range cases {
		p, _ := ParsePermission(c.perm)
		if got := roles[c.role].Allows(p.Component, p.Collection, p.Verb); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.role, c.perm, got, c.want)
		}
	}
}

// TestDecisions exercises the decision table without HTTP: allow, 403 for
// a visible project, 404 for an invisible one, cluster level never hidden,
// and the cache dropped when the policy changes.
func TestDecisions(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "alpha", iamv1.ProjectSpec{})
	e.bind("a", "viewer", "user:alice", "alpha")
	pol := e.iam.Policy()
	ctx := context.Background()
	alice := apiserver.Principal{Name: "user:alice"}
	at := func(verb, project string) apiserver.Attributes {
		return apiserver.Attributes{Component: "test", Collection: "widgets", Verb: verb, Project: project}
	}
	for _, c := range []struct {
		attrs apiserver.Attributes
		want  apiserver.Decision
	}{
		{at("get", "alpha"), apiserver.Allow},
		{at("delete", "alpha"), apiserver.Deny},
		{at("get", "bravo"), apiserver.Hide},
		{at("get", ""), apiserver.Deny},
	} {
		for range 2 { // computed, then cached
			if got := pol.Authorize(ctx, alice, c.attrs); got != c.want {
				t.Errorf("%+v: %v, want %v", c.attrs, got, c.want)
			}
		}
	}
	if got := pol.Projects(ctx, alice, at("list", "")); len(got) != 1 || got[0] != "alpha" {
		t.Errorf("projects %v", got)
	}
	e.bind("a2", "admin", "user:alice", "alpha")
	if got := pol.Authorize(ctx, alice, at("delete", "alpha")); got != apiserver.Allow {
		t.Errorf("after a new binding: %v (stale cache?)", got)
	}
	if _, err := e.admin.Resources(iamv1.RoleBindingCollection, "alpha").Delete(ctx, "a2", 0); err != nil {
		t.Fatal(err)
	}
	if got := pol.Authorize(ctx, alice, at("delete", "alpha")); got != apiserver.Deny {
		t.Errorf("after the binding was deleted: %v (stale cache?)", got)
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"iam.projects.get", "*.*.*", "!iam.*.*", "a.b", "a.b.c.d", "A.b.c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("%q round-trips to %q", s, p.String())
		}
		for _, part := range p.Parts {
			if part != "*" && checkPart(part) != nil {
				t.Fatalf("%q: bad part %q accepted", s, part)
			}
		}
		r := Rules{p}
		_ = r.Allows("a", "b", "c")
	})
}
