package cidata

import (
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// guestModules are the cloud kernel's modules a virtio-blk ISO mount needs,
// in load order (dependencies first).
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "virtio_blk", "cdrom", "isofs",
}

// guestInit mounts each virtio disk's ISO 9660 filesystem with the Linux
// kernel's own driver (which prefers Rock Ridge, as in a real guest) and
// prints the volume label, every file's mode, size and MD5, and the DMI
// fields cloud-init's OpenStack datasource checks, then powers off.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in MODULES; do insmod /lib/modules/$m.ko || echo "INSMOD-FAILED $m"; done
for d in vda vdb; do
  i=0
  while [ ! -b /dev/$d ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  mkdir -p /mnt/$d
  if mount -t iso9660 -o ro /dev/$d /mnt/$d; then
    echo "LABEL $d $(dd if=/dev/$d bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')"
    cd /mnt/$d
    find . -type f | sort | while read f; do
      echo "FILE $d ${f#./} $(stat -c '%a %s' "$f") $(md5sum < "$f" | cut -d' ' -f1)"
    done
    cd /
  else
    echo "MOUNT-FAILED $d"
  fi
done
echo "DMI asset=$(cat /sys/class/dmi/id/chassis_asset_tag) uuid=$(cat /sys/class/dmi/id/product_uuid)"
echo CIDATA-GUEST-DONE
poweroff -f
`

// TestLinuxMountsTheImages boots Debian's cloud kernel under QEMU with both
// images as virtio disks, the way plasmavmc attaches them, and checks that
// the kernel's iso9660 driver sees the label, the real names (Rock Ridge,
// at every depth), 0400 modes and the exact bytes. It also checks the QEMU
// flags docs/plasmavmc-metadata.md gives for the OpenStack datasource:
// -uuid and the chassis asset tag reach the guest where cloud-init reads
// them (/sys/class/dmi/id).
func TestLinuxMountsTheImages(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest")
	}
	qemu := requireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	busybox := "/bin/busybox"
	if out, err := exec.Command("file", "-L", busybox).Output(); err != nil || !strings.Contains(string(out), "statically linked") {
		t.Skip("a static /bin/busybox is needed; install it with `apt-get install -y busybox-static`")
	}
	kernel, modDir := testkit.GuestKernel(t)
	cpio := requireTool(t, "busybox", "busybox-static")

	// The initramfs: busybox, the modules, /init.
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, busybox, filepath.Join(root, "bin/busybox"), 0o755)
	for _, m := range guestModules {
		src, _ := filepath.Glob(filepath.Join(modDir, "kernel", "*", "*", m+".ko"))
		src2, _ := filepath.Glob(filepath.Join(modDir, "kernel", "*", "*", "*", m+".ko"))
		src = append(src, src2...)
		if len(src) == 0 {
			t.Skipf("module %s.ko not found under %s (compressed modules are not handled here)", m, modDir)
		}
		copyFile(t, src[0], filepath.Join(root, "lib/modules", m+".ko"), 0o644)
	}
	initScript := strings.Replace(guestInit, "MODULES", strings.Join(guestModules, " "), 1)
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	pack := exec.Command("sh", "-c", fmt.Sprintf("cd %q && find . | %q cpio -o -H newc > %q", root, cpio, initrd))
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}

	seed, drive, nocloud, configdrive := writeBoth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// TCG: /dev/kvm exists on this machine but cannot run guests.
	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-M", "q35", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-uuid", testInstance().UUID, "-smbios", "type=3,asset=OpenStack Nova",
		"-drive", "file="+seed+",if=none,id=seed,format=raw,readonly=on",
		"-device", "virtio-blk-pci,drive=seed",
		"-drive", "file="+drive+",if=none,id=drive,format=raw,readonly=on",
		"-device", "virtio-blk-pci,drive=drive",
	)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("guest ran %v", time.Since(start).Round(time.Millisecond))
	console := string(out)
	if testing.Verbose() {
		t.Logf("console:\n%s", console)
	}
	if !strings.Contains(console, "CIDATA-GUEST-DONE") {
		t.Fatalf("the guest did not finish (%v); console:\n%s", err, console)
	}
	for _, bad := range []string{"INSMOD-FAILED", "MOUNT-FAILED"} {
		if strings.Contains(console, bad) {
			t.Fatalf("guest reported %s; console:\n%s", bad, console)
		}
	}
	if want := "DMI asset=OpenStack Nova uuid=" + testInstance().UUID; !strings.Contains(console, want) {
		t.Errorf("guest lacks %q; console:\n%s", want, console)
	}
	for disk, want := range map[string]Image{"vda": nocloud, "vdb": configdrive} {
		if !strings.Contains(console, "LABEL "+disk+" "+want.Label+"\n") && !strings.Contains(console, "LABEL "+disk+" "+want.Label+"\r\n") {
			t.Errorf("%s: label %q not seen; console:\n%s", disk, want.Label, console)
		}
		got := 0
		for _, line := range strings.Split(console, "\n") {
			if strings.HasPrefix(line, "FILE "+disk+" ") {
				got++
			}
		}
		if got != len(want.Files) {
			t.Errorf("%s: the guest sees %d files, want %d; console:\n%s", disk, got, len(want.Files), console)
		}
		for _, f := range want.Files {
			line := fmt.Sprintf("FILE %s %s 400 %d %x", disk, f.Path, len(f.Data), md5.Sum(f.Data))
			if !strings.Contains(console, line) {
				t.Errorf("guest lacks %q; console:\n%s", line, console)
			}
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
