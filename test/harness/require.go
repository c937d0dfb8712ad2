//go:build linux

package harness

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// CI reports whether the environment variable CI is set (to anything but
// "", "0" or "false"), as CI systems do.
func CI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// Require checks what multi-host tests need: root (for namespaces and
// nftables) and the ip, nft and tc tools. Without root it skips the test
// with the reason, unless CI is set: CI runs as root and must run these
// tests, so there a missing requirement fails the test loudly. A missing
// tool fails the test in any case, with the command that installs it.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if CI() {
			t.Fatalf("harness: multi-host tests need root (network namespaces, nftables), and CI is set, so they must not be skipped: run CI as root")
		}
		t.Skipf("harness: skipping: multi-host tests need root for network namespaces and nftables; run as root (e.g. sudo -E go test ./test/harness/...). With CI set this is a failure instead.")
	}
	for _, tool := range []struct{ bin, pkg string }{{"ip", "iproute2"}, {"tc", "iproute2"}, {"nft", "nftables"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Fatalf("harness: %s not found: install it with `apt-get install -y %s` (scripts/test.sh does this)", tool.bin, tool.pkg)
		}
	}
}
