package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadFile: arbitrary node.yaml content loads or fails with an error,
// never panics, and whatever loads either validates or names a field.
func FuzzLoadFile(f *testing.F) {
	for _, s := range []string{
		"node: n1\ndataDir: /tmp/x\n", "api:\n  listen: 127.0.0.1:1\n", "roles: [a]\n", "shutdownGrace: 3s\n",
		"storage: {retainRevisions: 5000}\n", "bogus: 1\n", "node: [1, 2]\n", "", "---\n---\n", "shutdownGrace: forever\n",
		"section: {listen: 1.2.3.4:5, nested: {flag: yes}}\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "node.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := testConfig{Core: DefaultCore()}
		if err := LoadFile(&c, p); err != nil {
			return
		}
		c.Section.Derive(&c.Core)
		_ = c.Core.Validate([]string{"a"})
		_ = c.Section.Validate()
	})
}
