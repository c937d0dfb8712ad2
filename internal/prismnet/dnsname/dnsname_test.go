package dnsname

import (
	"strings"
	"testing"
)

func TestCheckAcceptsRFC1123NamesWithAnOptionalTrailingDot(t *testing.T) {
	for _, name := range []string{
		"a", "vm-1", "example.com", "example.com.", "Mixed-Case.Example", "0day.example",
		strings.Repeat("a", 63) + ".example",
		strings.Repeat(strings.Repeat("a", 62)+".", 4) + "a", // 253 characters
	} {
		if err := Check(name); err != nil {
			t.Errorf("Check(%q) = %v, want nil", name, err)
		}
	}
}

func TestCheckRefusesBadNamesSayingWhy(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"", "empty name"},
		{".", "empty name"},
		{strings.Repeat(strings.Repeat("a", 62)+".", 4) + "ab", "longer than 253 characters"},
		{"a..b", `label "" must be 1..63 characters`},
		{".a", `label "" must be 1..63 characters`},
		{strings.Repeat("a", 64) + ".example", "must be 1..63 characters"},
		{"-a.example", `label "-a" starts or ends with a hyphen`},
		{"a-.example", `label "a-" starts or ends with a hyphen`},
		{"a_b.example", `label "a_b" has '_' (letters, digits and hyphens only)`},
		{"a b", `has ' '`},
		{"bücher.example", `has 'ü'`},
	} {
		err := Check(c.name)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%q) = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
