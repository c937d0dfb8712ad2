package iamv1

import "testing"

func TestParsePrincipal(t *testing.T) {
	for s, want := range map[string]ParsedPrincipal{
		"user:alice":             {Kind: "user", Name: "alice"},
		"serviceaccount:p/ci":    {Kind: "serviceaccount", Project: "p", Name: "ci"},
		"serviceaccount:a-b/c-d": {Kind: "serviceaccount", Project: "a-b", Name: "c-d"},
	} {
		got, err := ParsePrincipal(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("%q: %+v %v", s, got, err)
		}
	}
	for _, s := range []string{"", "alice", "user:", "user:a/b", "serviceaccount:ci", "serviceaccount:/ci", "serviceaccount:p/", "serviceaccount:p/a/b", "system:x", "bootstrap:admin"} {
		if _, err := ParsePrincipal(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzParsePrincipal(f *testing.F) {
	for _, s := range []string{"user:alice", "serviceaccount:p/ci", "user:", "serviceaccount:a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrincipal(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("%q round-trips to %q", s, p.String())
		}
	})
}
