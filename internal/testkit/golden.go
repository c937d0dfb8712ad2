package testkit

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// updateFlag is the name of the flag that makes Golden rewrite its files.
const updateFlag = "update"

// registerMu serializes RegisterUpdateFlag's look-up-then-define, so two
// package-level registrations cannot both define the flag.
var registerMu sync.Mutex

// RegisterUpdateFlag defines -update on flag.CommandLine unless a flag of
// that name exists already, and returns true. A test package that uses
// Golden calls it once from a package-level variable, so the flag exists
// before the test binary parses its arguments:
//
//	var _ = testkit.RegisterUpdateFlag()
//
// Why not at testkit's own import: registering there would give -update to
// every binary that links testkit, and a package that defines its own
// -update (flag.Bool("update", ...)) would then panic with "flag redefined".
// Registering on request, after a look-up, lets any number of packages in
// one binary ask for it, and lets an existing boolean -update stand.
func RegisterUpdateFlag() bool {
	registerMu.Lock()
	defer registerMu.Unlock()
	if f := flag.Lookup(updateFlag); f != nil {
		if _, ok := f.Value.(flag.Getter).Get().(bool); !ok {
			panic(fmt.Sprintf("testkit: a flag -%s exists and is not a boolean", updateFlag))
		}
		return true
	}
	flag.Bool(updateFlag, false, "rewrite golden files in testdata/ with the output the tests produce")
	return true
}

// updating reports whether -update was given; ok is false when no test
// package registered the flag.
func updating() (on, ok bool) {
	f := flag.Lookup(updateFlag)
	if f == nil {
		return false, false
	}
	on, ok = f.Value.(flag.Getter).Get().(bool)
	return on, ok
}

// Golden compares got with testdata/<name>.golden (relative to the test's
// package directory). With -update it writes got to the file instead. A
// difference fails t with both versions; a missing file fails t saying how
// to create it. The test package must call RegisterUpdateFlag.
func Golden(t testing.TB, name string, got []byte) {
	t.Helper()
	on, ok := updating()
	if !ok {
		t.Fatalf("testkit: Golden(%q): -update is not registered; add `var _ = testkit.RegisterUpdateFlag()` to the test package", name)
	}
	path := filepath.Join("testdata", name+".golden")
	if on {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("testkit: %v", err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("testkit: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("testkit: %v (run go test -run '%s' -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("testkit: %s differs from the output (run go test -run '%s' -update if the change is intended)\n--- got\n%s--- want\n%s", path, t.Name(), got, want)
	}
}
