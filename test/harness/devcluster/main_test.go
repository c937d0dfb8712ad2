//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/test/harness"
)

func runCLI(args ...string) (int, string) {
	var out strings.Builder
	code := run(args, &out, &out)
	return code, out.String()
}

// TestUpStatusDown drives the CLI the way a person does. The servers it
// starts are detached, as `up` makes them, and `down` must remove them.
func TestUpStatusDown(t *testing.T) {
	harness.Require(t)
	name := fmt.Sprintf("clitest%d", os.Getpid())
	dir := filepath.Join(t.TempDir(), "cluster")
	bin := harness.Binary(t)
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(harness.StateDir, name+".json")); err == nil {
			runCLI("down", "--name", name)
		}
	})

	code, out := runCLI("up", "--name", name, "--hosts", "2", "--binary", bin, "--dir", dir, "--external", "10.98.0.0/24")
	if code != 0 {
		t.Fatalf("up: exit %d\n%s", code, out)
	}
	c, err := harness.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	h1 := c.Hosts()[0]
	for _, want := range []string{h1.URL(), h1.TokenPath(), "ip netns exec " + h1.Namespace() + " bash", "external address: 10.98.0.11"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q:\n%s", want, out)
		}
	}
	if code, out := runCLI("up", "--name", name, "--binary", bin, "--dir", dir); code == 0 || !strings.Contains(out, "exists already") {
		t.Errorf("second up: exit %d\n%s", code, out)
	}

	code, out = runCLI("status", "--name", name)
	if code != 0 || strings.Count(out, "readyz: ready") != 2 {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	// Faults through the adopted cluster show up in status.
	if err := c.Hosts()[1].Stop(); err != nil {
		t.Fatal(err)
	}
	code, out = runCLI("status", "--name", name)
	if code != 1 || !strings.Contains(out, "stopped (pid") {
		t.Errorf("status with host2 stopped: exit %d\n%s", code, out)
	}

	code, out = runCLI("down", "--name", name)
	if code != 0 {
		t.Fatalf("down: exit %d\n%s", code, out)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left after down: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir after down: %v", err)
	}
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(out), c.Prefix()) {
		t.Errorf("namespaces left:\n%s", out)
	}
	if code, out := runCLI("status", "--name", name); code != 1 || !strings.Contains(out, "no cluster named") {
		t.Errorf("status after down: exit %d\n%s", code, out)
	}
}
