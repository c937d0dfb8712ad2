package pebblestore

import (
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestCrashRecovery runs storetest's crash suite: a process writing to the
// store is SIGKILLed, and every acknowledged write must survive the reopen.
func TestCrashRecovery(t *testing.T) {
	storetest.RunCrash(t, storetest.Crash{
		Prepare: func(t *testing.T) string { return t.TempDir() },
		Open: func(t testing.TB, dir string) storage.Store {
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("open %s: %v", dir, err)
			}
			return s
		},
	})
}
