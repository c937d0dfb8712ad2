//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BinaryEnv names an environment variable that, when set, is the path of a
// prebuilt ultracloud binary for Binary to use instead of building one.
const BinaryEnv = "ULTRACLOUD_BINARY"

// binaries caches one build per module root for the life of the process, so
// the tests of one test binary build the server once. It is package-level
// because it must outlive every single test; its files live in
// os.TempDir()/uch-bin-<pid>-<starttime>/, which Sweep removes once this
// process is gone.
var binaries = &buildCache{entries: map[string]*buildEntry{}}

type buildCache struct {
	mu      sync.Mutex
	entries map[string]*buildEntry
}

type buildEntry struct {
	once sync.Once
	path string
	err  error
}

func (bc *buildCache) get(root string) (string, error) {
	bc.mu.Lock()
	e := bc.entries[root]
	if e == nil {
		e = &buildEntry{}
		bc.entries[root] = e
	}
	bc.mu.Unlock()
	e.once.Do(func() {
		dir := filepath.Join(os.TempDir(), binDirName())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			e.err = fmt.Errorf("harness: %w", err)
			return
		}
		e.path = filepath.Join(dir, "ultracloud")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		e.err = BuildBinary(ctx, root, e.path)
	})
	return e.path, e.err
}

// Binary returns the path of an ultracloud binary built from this module:
// $ULTRACLOUD_BINARY if set, otherwise one `go build ./cmd/ultracloud` per
// test process, shared by every test in it.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			t.Fatalf("harness: %s=%s is not a file", BinaryEnv, p)
		}
		return p
	}
	root, err := ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	path, err := binaries.get(root)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// ModuleRoot returns the root directory of the Go module containing the
// current directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := run(ctx, "", "go", "env", "GOMOD")
	if err != nil {
		return "", fmt.Errorf("harness: finding the module (is Go on PATH?): %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("harness: not inside the ultracloud module: run from the repository")
	}
	return filepath.Dir(mod), nil
}

// BuildBinary runs `go build -o out ./cmd/ultracloud` in the module at root.
func BuildBinary(ctx context.Context, root, out string) error {
	cmd := []string{"build", "-o", out, "./cmd/ultracloud"}
	c := commandIn(ctx, root, "go", cmd...)
	if b, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("harness: go %s in %s: %w\n%s", strings.Join(cmd, " "), root, err, b)
	}
	return nil
}
