package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/plasmavmc/qmp"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// These tests run real QEMU guests under TCG: Debian's cloud kernel with
// an initramfs built here from busybox-static. One guest at a time (no
// t.Parallel), each short-lived, and every QEMU is killed at cleanup.

const helperEnv = "UC_QEMU_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "launch" {
		os.Exit(helperLaunch())
	}
	os.Exit(m.Run())
}

// helperLaunch is "the agent" of the adoption test: it launches a VM from
// the spec in the environment, prints QEMU's pid and exits without
// stopping it, as an agent that is restarted or upgraded does.
func helperLaunch() int {
	var spec Spec
	if err := jsonUnmarshal(os.Getenv("UC_QEMU_TEST_SPEC"), &spec); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, err := (&Host{}).Launch(ctx, spec, os.Getenv("UC_QEMU_TEST_DIR"))
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("LAUNCHED", inst.PID())
	return 0 // no Close, no Kill: the process just ends
}

func ciSet() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false" || os.Getenv("ULTRACLOUD_TEST_COMMAND") != ""
}

// requireTools skips (or, under CI, fails) when a tool is missing.
func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("qemu: %s not found: apt-get install -y qemu-system-x86 qemu-utils busybox-static linux-image-cloud-amd64", tool)
			if ciSet() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// vmDir is a short VM directory (socket paths must fit 107 bytes).
func vmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ucq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "vm")
}

// guestKernel is Debian's cloud kernel and its module directory (from the
// test command's cache, see testkit.GuestKernel).
func guestKernel(t *testing.T) (kernel, modules string) {
	t.Helper()
	kernel, mods := testkit.GuestKernel(t)
	return kernel, filepath.Join(mods, "kernel")
}

// The guest's init: load the virtio (and power button) modules, report
// the disk and the NIC, report every change of the disk's size, open the
// ACPI power button device, print the boot marker, and power off at the
// first event from the button (there is no acpid in the guest).
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net virtio-rng button evdev; do
	insmod /lib/modules/$m.ko
done
i=0; while [ ! -e /sys/block/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "UCT-DISK vda $(cat /sys/block/vda/size)"
echo "UCT-NIC $(cat /sys/class/net/eth0/address 2>/dev/null)"
pb=
i=0; while [ -z "$pb" ] && [ $i -lt 50 ]; do
	for d in /sys/class/input/event*; do
		grep -q "Power Button" $d/device/name 2>/dev/null && pb=/dev/input/${d##*/}
	done
	[ -z "$pb" ] && sleep 0.1; i=$((i+1))
done
echo "UCT-POWERBUTTON $pb"
( last=; while true; do s=$(cat /sys/block/vda/size); if [ "$s" != "$last" ]; then echo "UCT-DISK-SIZE $s"; last=$s; fi; sleep 0.2; done ) &
# The marker comes once the power button is open, so a power-down sent
# right after it is never missed.
exec 3<$pb
echo UCT-BOOT-MARKER
dd of=/dev/null bs=64 count=1 <&3 2>/dev/null
echo UCT-POWERING-OFF
poweroff -f
while true; do sleep 60; done
`

// buildInitramfs writes a newc cpio of busybox, the modules and the init.
func buildInitramfs(t *testing.T, modules string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "lib/modules"), 0o755))
	bb, err := exec.LookPath("busybox")
	must(err)
	copyFile(t, bb, filepath.Join(root, "bin/busybox"), 0o755)
	must(os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755))
	for _, m := range []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio-rng", "button", "evdev"} {
		var found string
		_ = filepath.WalkDir(modules, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == m+".ko" {
				found = p
				return filepath.SkipAll
			}
			return nil
		})
		if found == "" {
			t.Fatalf("module %s.ko not under %s", m, modules)
		}
		copyFile(t, found, filepath.Join(root, "lib/modules", m+".ko"), 0o644)
	}
	var list bytes.Buffer
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != root {
			rel, _ := filepath.Rel(root, p)
			list.WriteString(rel + "\n")
		}
		return nil
	})
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(out)
	must(err)
	defer f.Close()
	cmd := exec.Command(bb, "cpio", "-o", "-H", "newc")
	cmd.Dir, cmd.Stdin, cmd.Stdout = root, &list, f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cpio: %v: %s", err, stderr.String())
	}
	return out
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// tinySpec is a 1-vCPU TCG guest of the cloud kernel and the initramfs.
func tinySpec(t *testing.T, name string) Spec {
	kernel, modules := guestKernel(t)
	return Spec{
		Name: name, UUID: testUUID, VCPUs: 1, MemoryMiB: 256, Accel: AccelTCG,
		Kernel: kernel, Initrd: buildInitramfs(t, modules),
		Cmdline: "console=ttyS0 panic=-1 quiet",
		RNG:     true,
	}
}

// console collects everything read from the console socket.
type console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func attachConsole(t *testing.T, inst *Instance) *console {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := inst.DialConsole(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &console{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(conn)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			c.mu.Lock()
			c.buf.Write(b[:n])
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return c
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *console) waitFor(t *testing.T, what string, count int, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("%q %d time(s) on the console", what, count), func() bool {
		return strings.Count(c.String(), what) >= count
	})
}

// killAtCleanup makes sure no QEMU of the test outlives it.
func killAtCleanup(t *testing.T, pid func() int) {
	t.Cleanup(func() {
		if p := pid(); p > 0 {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
}

func waitEvent(t *testing.T, events <-chan qmp.Event, name string, within time.Duration) qmp.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the QMP connection ended before %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", name, within)
		}
	}
}

const bootTimeout = 180 * time.Second

// TestGuestBootsRunsAndPowersOff: a tiny guest launched paused (so the
// console misses nothing), with a qcow2 overlay disk and, as root, a NIC on
// a persistent tap: the boot marker arrives through the console socket,
// the guest sees the disk and the NIC's MAC, query-status says running, a
// live block resize reaches the guest, a reset reboots it, and an ACPI
// power-down ends QEMU cleanly with the guest's SHUTDOWN.
func TestGuestBootsRunsAndPowersOff(t *testing.T) {
	requireTools(t)
	spec := tinySpec(t, "tiny-lifecycle")
	dir := vmDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := &Host{}

	base := filepath.Join(t.TempDir(), "base.raw")
	if err := os.WriteFile(base, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(t.TempDir(), "data.qcow2")
	if err := h.Overlay(ctx, base, "raw", overlay, 16<<20); err != nil {
		t.Fatal(err)
	}
	spec.Disks = []Disk{{ID: "data", Path: overlay, Format: "qcow2", Serial: "data"}}
	mac := "52:54:00:5a:11:01"
	if os.Geteuid() == 0 {
		tap := fmt.Sprintf("uct-qt%d", os.Getpid()%100000)
		if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			t.Fatalf("creating the tap %s: %v: %s", tap, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", tap).Run() })
		spec.NICs = []NIC{{ID: "net0", Tap: tap, MAC: mac}}
	} else {
		t.Log("not root: no NIC (opening a tap needs CAP_NET_ADMIN)")
	}
	spec.Paused = true

	inst, err := h.Launch(ctx, spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, func() int {
		select {
		case <-inst.Exited():
			return 0
		default:
			return inst.PID()
		}
	})
	defer inst.Close()
	events := inst.QMP().Events()

	st, err := inst.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Running || st.State != "prelaunch" {
		t.Fatalf("a paused launch is %+v, want prelaunch and not running", st)
	}
	con := attachConsole(t, inst)
	if err := inst.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "UCT-BOOT-MARKER", 1, bootTimeout)
	out := con.String()
	if !strings.Contains(out, "UCT-DISK vda 32768") {
		t.Fatalf("the guest did not see the 16 MiB overlay as vda:\n%s", out)
	}
	if spec.NICs != nil && !strings.Contains(out, "UCT-NIC "+mac) {
		t.Fatalf("the guest's eth0 does not have MAC %s:\n%s", mac, out)
	}
	if !strings.Contains(out, "UCT-POWERBUTTON /dev/input/event") {
		t.Fatalf("the guest found no ACPI power button:\n%s", out)
	}
	if st, err := inst.Status(ctx); err != nil || !st.Running || st.State != "running" {
		t.Fatalf("status after boot: %+v, %v", st, err)
	}

	if err := inst.BlockResize(ctx, "data", 32<<20); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "UCT-DISK-SIZE 65536", 1, 60*time.Second)
	if err := inst.BlockResize(ctx, "nope", 1<<20); err == nil {
		t.Fatal("resizing a disk that does not exist succeeded")
	}

	if err := inst.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "RESET", 30*time.Second)
	con.waitFor(t, "UCT-BOOT-MARKER", 2, bootTimeout)

	if err := inst.Powerdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "POWERDOWN", 30*time.Second)
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	exit, err := inst.Wait(wctx)
	if err != nil {
		t.Fatalf("waiting for the guest to power off: %v; console:\n%s", err, con)
	}
	if exit.Crashed() || exit.Shutdown == nil || !exit.Shutdown.Guest || exit.Shutdown.Reason != "guest-shutdown" ||
		!exit.StatusKnown || exit.Code != 0 || exit.Signal != 0 || exit.Killed {
		t.Fatalf("exit after ACPI power-down: %+v (%s)", exit, exit)
	}
	if !strings.Contains(con.String(), "UCT-POWERING-OFF") {
		t.Fatalf("the guest did not see the power button:\n%s", con.String())
	}
	// The scrollback holds both boots, written by QEMU itself.
	log, err := os.ReadFile(inst.Layout().ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "UCT-BOOT-MARKER"); n != 2 {
		t.Fatalf("console.log has %d boot markers, want 2", n)
	}
}

// TestARestartedAgentAdoptsTheRunningGuestAndSeesItCrash: a separate
// process (the "agent") launches a guest and exits without stopping it;
// this process adopts the VM directory, finds it running, gets its events,
// releases and adopts it again (a second restart), and when QEMU is killed
// with SIGKILL the adopted instance reports a crash.
func TestARestartedAgentAdoptsTheRunningGuestAndSeesItCrash(t *testing.T) {
	requireTools(t)
	spec := tinySpec(t, "tiny-adopt")
	dir := vmDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	specJSON, err := jsonMarshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=launch", "UC_QEMU_TEST_SPEC="+specJSON, "UC_QEMU_TEST_DIR="+dir)
	var pid int
	killAtCleanup(t, func() int { return pid })
	out, err := cmd.CombinedOutput()
	if _, scanErr := fmt.Sscanf(lastLine(out), "LAUNCHED %d", &pid); err != nil || scanErr != nil {
		t.Fatalf("the launching process: %v: %s", err, out)
	}
	// The launcher has exited; its QEMU must not have.
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("QEMU (pid %d) died with the process that launched it: %v", pid, err)
	}

	h := &Host{}
	inst, err := h.Adopt(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !inst.Adopted() || inst.PID() != pid || inst.Spec().Name != spec.Name {
		t.Fatalf("adopted pid %d (want %d), spec %q, adopted=%v", inst.PID(), pid, inst.Spec().Name, inst.Adopted())
	}
	st, err := inst.Status(ctx)
	if err != nil || !st.Running {
		t.Fatalf("adopted status %+v, %v", st, err)
	}
	// The guest booted while nobody watched: the scrollback has it.
	testkit.Eventually(t, bootTimeout, "the boot marker in console.log", func() bool {
		b, _ := os.ReadFile(inst.Layout().ConsoleLog)
		return bytes.Contains(b, []byte("UCT-BOOT-MARKER"))
	})
	// Events reach the adopter.
	events := inst.QMP().Events()
	if err := inst.QMP().Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "STOP", 30*time.Second)
	if err := inst.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "RESUME", 30*time.Second)

	// Releasing never stops QEMU; the next adopter finds it running.
	inst.Close()
	if _, err := inst.Wait(ctx); !errors.Is(err, ErrReleased) {
		t.Fatalf("Wait after Close: %v, want ErrReleased", err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("QEMU died when its instance was released: %v", err)
	}
	inst, err = h.Adopt(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if st, err := inst.Status(ctx); err != nil || !st.Running {
		t.Fatalf("status after the second adoption %+v, %v", st, err)
	}

	// A crash: QEMU is SIGKILLed behind our back.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := inst.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !exit.Crashed() || exit.Shutdown != nil || exit.StatusKnown || exit.Killed {
		t.Fatalf("exit after SIGKILL: %+v (%s), want a crash without SHUTDOWN and an unknown status", exit, exit)
	}
	if !strings.Contains(exit.String(), "crashed") {
		t.Fatalf("exit described as %q", exit)
	}
	if _, err := h.Adopt(ctx, dir); err == nil {
		t.Fatal("adopting a directory whose QEMU is gone succeeded")
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// idleSpec is a QEMU that stays paused (no guest code runs): enough for
// the process-control tests, and nearly free. Its boot disk is an empty
// raw file.
func idleSpec(t *testing.T, name string) Spec {
	disk := filepath.Join(t.TempDir(), "empty.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name: name, UUID: testUUID, VCPUs: 1, MemoryMiB: 32, Accel: AccelTCG, Paused: true,
		Disks: []Disk{{ID: "root", Path: disk, Format: "raw", Boot: true}},
	}
}

func launchIdle(t *testing.T, ctx context.Context, name string) (*Instance, string) {
	t.Helper()
	dir := vmDir(t)
	inst, err := (&Host{}).Launch(ctx, idleSpec(t, name), dir)
	if err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, func() int {
		select {
		case <-inst.Exited():
			return 0
		default:
			return inst.PID()
		}
	})
	t.Cleanup(func() { inst.Close() })
	return inst, dir
}

func TestKillQuitsQEMUCleanlyAndALiveDirectoryIsNotLaunchedTwice(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, dir := launchIdle(t, ctx, "idle-quit")
	if b, err := os.ReadFile(inst.Layout().PIDFile); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(inst.PID()) {
		t.Fatalf("pid file %q (%v), want %d", b, err, inst.PID())
	}
	if _, err := (&Host{}).Launch(ctx, idleSpec(t, "idle-quit"), dir); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("a second launch in a live directory: %v, want ErrRunning", err)
	}
	exit, err := inst.Kill(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Crashed() || exit.Killed || exit.Shutdown == nil || exit.Shutdown.Reason != "host-qmp-quit" || !exit.StatusKnown || exit.Code != 0 {
		t.Fatalf("exit after Kill: %+v (%s), want a clean quit", exit, exit)
	}
}

func TestKillFallsBackToSIGKILLWhenQEMUDoesNotAnswer(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, _ := launchIdle(t, ctx, "idle-hung")
	// A stopped process answers nothing, quit included.
	if err := syscall.Kill(inst.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	exit, err := inst.Kill(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !exit.Killed || exit.Crashed() || !exit.StatusKnown || exit.Signal != syscall.SIGKILL {
		t.Fatalf("exit: %+v (%s), want killed by SIGKILL and not a crash", exit, exit)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Kill took %s", d)
	}
}

func TestAQEMUThatCannotStartIsReportedWithItsError(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := idleSpec(t, "broken")
	spec.Disks[0].Path = "/nonexistent/disk.raw"
	_, err := (&Host{}).Launch(ctx, spec, vmDir(t))
	if err == nil {
		t.Fatal("launch with a missing disk succeeded")
	}
	if !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "/nonexistent/disk.raw") {
		t.Fatalf("err %q: want ErrExited with QEMU's message about the disk", err)
	}
}

func TestAdoptRefusesDirectoriesWithoutTheirQEMU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := &Host{}
	dir := t.TempDir()
	if _, err := h.Adopt(ctx, dir); err == nil || !strings.Contains(err.Error(), "no running QEMU") {
		t.Fatalf("empty directory: %v", err)
	}
	// A pid file naming a live process that is not this VM's QEMU (the
	// test itself), as after a reboot that reused the number.
	if err := os.WriteFile(LayoutOf(dir).PIDFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Adopt(ctx, dir); err == nil || !strings.Contains(err.Error(), "not QEMU") {
		t.Fatalf("pid file of another process: %v", err)
	}
	if err := os.WriteFile(LayoutOf(dir).PIDFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Adopt(ctx, dir); err == nil {
		t.Fatal("a garbage pid file was adopted")
	}
}

func TestOverlayIsACopyOnWriteImageOnTheBase(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &Host{}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ov := filepath.Join(dir, "vm.qcow2")
	if err := h.Overlay(ctx, base, "raw", ov, 0); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", ov).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Format        string `json:"format"`
		VirtualSize   int64  `json:"virtual-size"`
		Backing       string `json:"backing-filename"`
		BackingFormat string `json:"backing-filename-format"`
	}
	if err := jsonUnmarshal(string(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.Backing != base || info.BackingFormat != "raw" || info.VirtualSize != 4<<20 {
		t.Fatalf("overlay %+v", info)
	}
	if err := h.Overlay(ctx, base, "raw", ov, 0); err == nil {
		t.Fatal("an existing overlay was overwritten")
	}
	if err := h.Overlay(ctx, base, "", filepath.Join(dir, "x.qcow2"), 0); err == nil {
		t.Fatal("an overlay without the base's format was created")
	}
	if err := h.Overlay(ctx, filepath.Join(dir, "missing"), "raw", filepath.Join(dir, "y.qcow2"), 0); err == nil {
		t.Fatal("an overlay on a missing base was created")
	}
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestNBDDisksAttachInBothSpellings: a disk given as an NBD export on a
// Unix socket (how coronafs volumes will arrive) attaches both as
// "nbd:unix:..." and in the json: form, with the export's size.
func TestNBDDisksAttachInBothSpellings(t *testing.T) {
	requireTools(t)
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		t.Skip("qemu-nbd not found: apt-get install -y qemu-utils")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol.raw")
	if err := os.WriteFile(vol, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	nbd := exec.Command("qemu-nbd", "--socket="+sock, "--export-name=vol", "--format=raw", "--persistent", "--shared=4", vol)
	if err := nbd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nbd.Process.Kill(); _ = nbd.Wait() })
	testkit.Eventually(t, 10*time.Second, "qemu-nbd's socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})

	spec := idleSpec(t, "nbd")
	spec.Disks = append(spec.Disks,
		Disk{ID: "vol-a", Path: "nbd:unix:" + sock + ":exportname=vol", Format: "raw"},
		Disk{ID: "vol-b", Path: `json:{"file":{"driver":"nbd","server":{"type":"unix","path":"` + sock + `"},"export":"vol"}}`, Format: "raw"},
	)
	inst, err := (&Host{}).Launch(ctx, spec, vmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, func() int {
		select {
		case <-inst.Exited():
			return 0
		default:
			return inst.PID()
		}
	})
	defer inst.Close()
	var blocks []struct {
		Device   string `json:"device"`
		Inserted *struct {
			Image struct {
				VirtualSize int64 `json:"virtual-size"`
			} `json:"image"`
		} `json:"inserted"`
	}
	if err := inst.QMP().Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, b := range blocks {
		if b.Inserted != nil {
			sizes[b.Device] = b.Inserted.Image.VirtualSize
		}
	}
	for _, d := range []string{"drive-vol-a", "drive-vol-b"} {
		if sizes[d] != 3<<20 {
			t.Fatalf("%s: size %d, want %d (all: %v)", d, sizes[d], 3<<20, sizes)
		}
	}
	if _, err := inst.Kill(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestALaunchedQEMUKilledBehindOurBackIsACrashWithItsSignal(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, _ := launchIdle(t, ctx, "idle-crash")
	if err := syscall.Kill(inst.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := inst.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Our child: the status is known, and it says SIGKILL.
	if !exit.Crashed() || exit.Killed || exit.Shutdown != nil || !exit.StatusKnown || exit.Signal != syscall.SIGKILL {
		t.Fatalf("exit: %+v (%s), want a crash by SIGKILL with a known status", exit, exit)
	}
	if _, err := inst.Status(ctx); !errors.Is(err, qmp.ErrConnectionLost) {
		t.Fatalf("status of a dead QEMU: %v, want ErrConnectionLost", err)
	}
}
