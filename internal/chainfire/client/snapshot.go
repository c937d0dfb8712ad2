package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// SnapshotInfo describes a saved snapshot file.
type SnapshotInfo struct {
	Path string `json:"path"`
	// Revision is the newest revision in the snapshot.
	Revision int64 `json:"revision"`
	// Keys is the number of live keys.
	Keys int `json:"keys"`
	// SizeBytes is the database size.
	SizeBytes int64 `json:"sizeBytes"`
	// Version is the storage version of the member that made it.
	Version string `json:"version"`
	// Hash is a CRC-32C over the database's buckets, keys and values.
	Hash uint32 `json:"hash"`
}

// SnapshotSave streams a point-in-time snapshot of the member the client
// talks to into path: written to a temporary file in the same directory
// with mode 0600, synced, renamed into place and the directory synced, then
// opened and checked. Give the client one endpoint so it is clear which
// member's state is saved. An existing file at path is replaced only once
// the new snapshot is complete.
func SnapshotSave(ctx context.Context, c *clientv3.Client, path string) (SnapshotInfo, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".part-*")
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: creating %s: %w", ErrSnapshot, path, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	resp, err := c.SnapshotWithVersion(ctx)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: requesting snapshot from %s: %w", ErrSnapshot, strings.Join(c.Endpoints(), ","), err)
	}
	n, err := io.Copy(f, resp.Snapshot)
	resp.Snapshot.Close()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: receiving snapshot (after %d bytes): %w", ErrSnapshot, n, err)
	}
	if err := f.Sync(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: syncing %s: %w", ErrSnapshot, tmp, err)
	}
	if err := f.Close(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: closing %s: %w", ErrSnapshot, tmp, err)
	}
	st, err := snapshot.NewV3(zap.NewNop()).Status(tmp)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: the received snapshot does not check out: %w", ErrSnapshot, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	done = true
	if err := pki.SyncDir(dir); err != nil {
		return SnapshotInfo{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return SnapshotInfo{Path: path, Revision: st.Revision, Keys: st.TotalKey, SizeBytes: st.TotalSize, Version: st.Version, Hash: st.Hash}, nil
}
