//go:build linux

package harness

import (
	"context"
	"testing"
)

// Start is the test entry point: it checks the requirements (see Require;
// without root it skips), sweeps leftovers of crashed runs, builds the
// binary once per test process (see Binary), creates the cluster spec
// describes in a t.TempDir, and waits until every host is ready. Cleanup
// closes the cluster; if the test failed it first logs a Report: process
// states, active faults and each host's log tail. SIGINT or SIGTERM closes
// the cluster before the process dies. Setup failures fail the test.
func Start(t testing.TB, spec Spec) *Cluster {
	t.Helper()
	Require(t)
	ctx := context.Background()
	if rep, err := Sweep(ctx); err != nil {
		t.Logf("harness: sweeping leftovers: %v", err)
	} else if !rep.Empty() {
		t.Logf("harness: swept leftovers of crashed runs: %s", rep)
	}
	bin := Binary(t)
	c, err := Create(ctx, spec, Options{
		Binary:           bin,
		WorkDir:          t.TempDir(),
		CloseOnInterrupt: true,
	})
	if err != nil {
		t.Fatalf("harness: starting cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness: test failed; cluster state:\n%s", c.Report(40))
		}
		if err := c.Close(); err != nil {
			t.Errorf("harness: %v", err)
		}
		if left := c.Leftovers(); len(left) > 0 {
			t.Errorf("harness: cluster %s left behind after Close: %v", c.Prefix(), left)
		}
	})
	return c
}
