package pebblestore

import (
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestConformance runs the shared storage.Store suite (the one flaredb must
// also pass) against the embedded store.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) storage.Store {
			s, err := Open(t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}
