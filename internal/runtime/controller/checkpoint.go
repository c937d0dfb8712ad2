package controller

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// CheckpointStore keeps the revision a controller has reconciled through (see
// the package doc for the exact meaning). Implementations must be safe for
// use by one controller at a time.
type CheckpointStore interface {
	// Load returns the saved revision; ok is false when nothing was saved.
	Load() (rev int64, ok bool, err error)
	// Save durably replaces the saved revision.
	Save(rev int64) error
}

// FileCheckpointStore keeps the checkpoint in one small file holding the
// revision in decimal. Writes are atomic: a temporary file in the same
// directory is written, fsynced and renamed over the old one, and the
// directory is fsynced, so a crash leaves either the old or the new value.
type FileCheckpointStore struct {
	path string
	mu   sync.Mutex
}

var _ CheckpointStore = (*FileCheckpointStore)(nil)

// FileCheckpoint returns a checkpoint store at path (mode 0600; the
// directory is created with mode 0700 on the first Save if missing).
func FileCheckpoint(path string) *FileCheckpointStore {
	return &FileCheckpointStore{path: path}
}

// Path returns the file's path.
func (f *FileCheckpointStore) Path() string { return f.path }

// Load implements CheckpointStore.
func (f *FileCheckpointStore) Load() (int64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("controller: reading checkpoint: %w", err)
	}
	rev, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || rev < 0 {
		return 0, false, fmt.Errorf("controller: checkpoint %s holds %q, not a revision: delete it to force a full resync", f.path, truncate(string(b), 32))
	}
	return rev, true, nil
}

// Save implements CheckpointStore.
func (f *FileCheckpointStore) Save(rev int64) (err error) {
	if rev < 0 {
		return fmt.Errorf("controller: saving checkpoint: negative revision %d", rev)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	if _, err := tmp.WriteString(strconv.FormatInt(rev, 10) + "\n"); err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("controller: saving checkpoint: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("controller: saving checkpoint: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		// Make the rename durable; a failure here leaves a valid file.
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
