package controller

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFileCheckpoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "widgets.checkpoint")
	cp := FileCheckpoint(path)
	if rev, ok, err := cp.Load(); err != nil || ok || rev != 0 {
		t.Fatalf("Load of a missing file = %d %v %v, want nothing", rev, ok, err)
	}
	for _, rev := range []int64{7, 0, 123456789} {
		if err := cp.Save(rev); err != nil {
			t.Fatal(err)
		}
		got, ok, err := cp.Load()
		if err != nil || !ok || got != rev {
			t.Fatalf("Load after Save(%d) = %d %v %v", rev, got, ok, err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint mode %v, want 0600", st.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want only the checkpoint (temp files left behind?)", len(entries))
	}
	if err := cp.Save(-1); err == nil {
		t.Fatal("Save(-1) succeeded")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cp.Load(); err == nil {
		t.Fatal("Load of a corrupt checkpoint succeeded")
	}
}
