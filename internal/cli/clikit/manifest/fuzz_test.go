package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead: any file content either parses into objects that all have
// a kind and a name, or fails with an error; it never panics.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		"kind: Project\nmetadata:\n  name: a\nspec: {}\n",
		"kind: Project\nmetadata: {name: a}\n---\nkind: Project\nmetadata: {name: b}\n",
		`{"kind":"Project","metadata":{"name":"a"},"spec":{"x":1}}`,
		"---\n---\n", "kind: [", "1: 2\n", "kind: Project\nmetadata: {name: a, bogus: 1}\n", "&a [*a]",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "in.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		objs, err := Read(p, nil)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("accepted object without kind or name: %+v", o)
			}
		}
		// stdin gives the same answer as a file.
		objs2, err := Read("-", bytes.NewReader(data))
		if err != nil || len(objs2) != len(objs) {
			t.Fatalf("stdin parse differs: %d vs %d, %v", len(objs2), len(objs), err)
		}
	})
}
