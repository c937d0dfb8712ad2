package node

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
)

// backingStore is where the node keeps its resources, with the units that
// serve it (flaredb's member) and how to close it.
type backingStore struct {
	storage.Store
	units []component.Unit
	close func() error
}

// openStore opens the configured backend: the local Pebble store, or
// flaredb (flaredb.OpenStorage builds the node's member when it runs the
// role, and a client; nothing is dialled until the first call).
func (n *Node) openStore(deps component.Deps) (*backingStore, error) {
	if n.cfg.Storage.Backend == config.BackendLocal {
		dir := filepath.Join(n.cfg.DataDir, "store")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		s, err := pebblestore.Open(dir, pebblestore.Options{Logger: n.log})
		if err != nil {
			return nil, fmt.Errorf("opening the store in %s: %w", dir, err)
		}
		return &backingStore{Store: s, close: s.Close}, nil
	}
	// A data directory that held resources in the local store before
	// flaredb became the default: say where they are instead of starting
	// silently without them.
	if old := filepath.Join(n.cfg.DataDir, "store"); dirHasFiles(old) {
		n.log.Warn("this data directory has resources in the local store, which the flaredb backend does not read; "+
			"set storage.backend: local to keep using them", "dir", old)
	}
	s, err := flaredb.OpenStorage(n.cfg.FlareDB, deps)
	if err != nil {
		return nil, err
	}
	return &backingStore{Store: s, units: s.Units(), close: s.Close}, nil
}

// Close closes the store (not the member, which stops with the group).
func (b *backingStore) Close() error { return b.close() }

func dirHasFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) > 0
}
