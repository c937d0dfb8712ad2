package scripts

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTinyGuestBootsAndConfiguresItsNetwork: scripts/guest-images.sh
// builds the tiny guest from Debian packages, and the guest boots under
// QEMU (TCG), takes its address by DHCP (QEMU's user network stands in for
// prismnet's here) and prints its boot marker with it. Its metadata and
// user-data are the plasmavmc tests' to check, on a prismnet network.
func TestTinyGuestBootsAndConfiguresItsNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image script installs Debian packages: run as root (the test command does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./scripts/guest-images.sh")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("guest-images.sh: %v\n%s", err, out)
	}
	files := strings.Fields(string(out))
	if len(files) != 2 {
		t.Fatalf("guest-images.sh printed %q, want the kernel and the initramfs", out)
	}
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-netdev", "user,id=n", "-device", "virtio-net-pci,netdev=n,romfile=",
		"-kernel", files[0], "-initrd", files[1], "-append", "console=ttyS0 panic=-1 quiet")
	stdout, err := qemu.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = qemu.Process.Kill(); _ = qemu.Wait() }()
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		seen = append(seen, line)
		if strings.HasPrefix(line, "ULTRACLOUD-BOOT-MARKER") {
			if !strings.Contains(line, "addresses=10.0.2.15/24") {
				t.Fatalf("marker %q: want the DHCP address 10.0.2.15/24", line)
			}
			return
		}
	}
	t.Fatalf("no boot marker; console:\n%s", strings.Join(seen, "\n"))
}
