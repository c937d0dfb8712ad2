package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// missing skips, or fails when the test command runs the tests (CI or
// ULTRACLOUD_TEST_COMMAND set: there the prerequisite must exist).
func missing(t testing.TB, what, fix string) {
	t.Helper()
	if os.Getenv("CI") != "" || os.Getenv("ULTRACLOUD_TEST_COMMAND") != "" {
		t.Fatalf("%s is missing, and the test command provides it: %s", what, fix)
	}
	t.Skipf("%s is missing: %s", what, fix)
}

// GuestKernel returns Debian's cloud kernel and its modules directory for
// guests: from ULTRACLOUD_GUEST_KERNEL and ULTRACLOUD_GUEST_MODULES (the
// test command unpacks them into its cache, see scripts/lib.sh
// guest_assets), else an installed /boot/vmlinuz-*-cloud-amd64.
func GuestKernel(t testing.TB) (kernel, modules string) {
	t.Helper()
	kernel, modules = os.Getenv("ULTRACLOUD_GUEST_KERNEL"), os.Getenv("ULTRACLOUD_GUEST_MODULES")
	if kernel == "" {
		if ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64"); len(ks) > 0 {
			kernel = ks[0]
			modules = filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"))
		}
	}
	if _, err := os.Stat(kernel); kernel == "" || err != nil {
		missing(t, "Debian's cloud kernel", "run ./scripts/test.sh (which unpacks it), or set ULTRACLOUD_GUEST_KERNEL and ULTRACLOUD_GUEST_MODULES")
	}
	return kernel, modules
}

// CloudInitPythonPath returns the PYTHONPATH under which Debian's
// cloud-init modules import (ULTRACLOUD_CLOUDINIT_PYTHONPATH, unpacked by
// the test command; "" when cloud-init is installed normally).
func CloudInitPythonPath(t testing.TB) string {
	t.Helper()
	pp := os.Getenv("ULTRACLOUD_CLOUDINIT_PYTHONPATH")
	cmd := exec.Command("/usr/bin/python3", "-c", "import cloudinit.version")
	if pp != "" {
		cmd.Env = append(os.Environ(), "PYTHONPATH="+pp)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		missing(t, "cloud-init's Python modules", "run ./scripts/test.sh (which unpacks them), or set ULTRACLOUD_CLOUDINIT_PYTHONPATH ("+strings.TrimSpace(string(out))+")")
	}
	return pp
}
