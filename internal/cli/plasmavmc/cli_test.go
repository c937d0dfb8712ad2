package plasmavmc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/cli"
	"github.com/ultracloud/ultracloud/internal/cli/clikit/clitest"
	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

var _ = testkit.RegisterUpdateFlag()

// env runs the whole CLI in-process against a node built by the real
// wiring, as a shell with ULTRACLOUD_ENDPOINT, _TOKEN and _PROJECT set.
type env struct {
	*clitest.Shell
	n *nodetest.Node
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// A long heartbeat lease: a worker registered once stays alive for
	// the whole test without a heartbeat loop.
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.PlasmaVMC.HeartbeatTTL = 5 * time.Minute }})
	return &env{Shell: clitest.NewInProject(t, 3*time.Minute, cli.Main, n.Admin, n.APIURL(), n.Token(), "demo"), n: n}
}

func (e *env) vm(name string) (plasmavmcv1.VMSpec, plasmavmcv1.VMStatus) {
	e.T.Helper()
	o, err := e.n.Admin.Resources("vms", "demo").Get(e.Ctx, name)
	if err != nil {
		e.T.Fatal(err)
	}
	return clitest.DecodeInto[plasmavmcv1.VMSpec](e.T, o.Spec), clitest.DecodeInto[plasmavmcv1.VMStatus](e.T, o.Status)
}

// setStatus changes a VM's status as its worker's agent would.
func (e *env) setStatus(name string, change func(st *plasmavmcv1.VMStatus)) {
	e.T.Helper()
	rs := e.n.Admin.Resources("vms", "demo")
	for attempt := 0; ; attempt++ {
		o, err := rs.Get(e.Ctx, name)
		if err != nil {
			e.T.Fatal(err)
		}
		st := clitest.DecodeInto[plasmavmcv1.VMStatus](e.T, o.Status)
		change(&st)
		o.Status, _ = json.Marshal(st)
		_, err = rs.UpdateStatus(e.Ctx, o)
		if client.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			e.T.Fatalf("status of vm %s: %v", name, err)
		}
		return
	}
}

// register makes a worker as its agent does: the Worker object, a
// heartbeat, its capacity.
func (e *env) register(name string, vcpus, memMiB int) {
	e.T.Helper()
	if _, err := e.n.Admin.Resources("workers", "").Create(e.Ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: json.RawMessage(`{}`)}); err != nil {
		e.T.Fatal(err)
	}
	// The heartbeat before the capacity: the scheduler counts a worker
	// once it reported, and it is then alive at once (no intermediate
	// refusal to make the events differ from run to run).
	if err := e.n.Admin.Do(e.Ctx, "POST", "/v1/workers/"+name+"/heartbeat", nil, nil, nil); err != nil {
		e.T.Fatal(err)
	}
	now := time.Now().UTC()
	raw, _ := json.Marshal(plasmavmcv1.WorkerStatus{VCPUs: vcpus, MemoryMiB: memMiB, Accel: "tcg", AccelReason: "/dev/kvm cannot run guests", ObservedAt: &now})
	if _, err := e.n.Admin.Resources("workers", "").UpdateStatus(e.Ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Status: raw}); err != nil {
		e.T.Fatal(err)
	}
}

// waitStatus waits until the VM's status satisfies cond.
func (e *env) waitStatus(name, what string, cond func(s plasmavmcv1.VMSpec, st plasmavmcv1.VMStatus) bool) {
	e.T.Helper()
	testkit.EventuallyErr(e.T, 20*time.Second, "vm "+name+" "+what, func() error {
		o, err := e.n.Admin.Resources("vms", "demo").Get(e.Ctx, name)
		if err != nil {
			return err
		}
		s, st := clitest.DecodeInto[plasmavmcv1.VMSpec](e.T, o.Spec), clitest.DecodeInto[plasmavmcv1.VMStatus](e.T, o.Status)
		if !cond(s, st) {
			return fmt.Errorf("spec %+v status %+v", s, st)
		}
		return nil
	})
}

// randomFile writes n bytes from a fixed seed (so digests are stable in
// golden files) and returns its path and SHA-256.
func randomFile(t *testing.T, name string, seed uint64, n int) (string, string) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// TestImagesByCLI: a kernel image created, then uploaded part by part with
// progress on stderr and each part's digest checked against the server's;
// a disk image created by `image upload --format`; both listed and
// described; misplaced uploads refused with the reason.
func TestImagesByCLI(t *testing.T) {
	e := newEnv(t)
	kernel, kernelSum := randomFile(t, "vmlinuz", 1, 2<<20+12345) // three chunks on the server
	initrd, initrdSum := randomFile(t, "initrd.img", 2, 300000)
	disk, diskSum := randomFile(t, "disk.raw", 3, 1<<20)

	if out := e.OK("image", "create", "tiny", "--format", "kernel", "--cmdline", "console=ttyS0 quiet", "--description", "busybox guest"); out != "image/tiny in project demo created\n" {
		t.Fatalf("image create: %q", out)
	}
	code, out, errs := e.Run("image", "upload", "tiny", "--kernel", kernel, "--initrd", initrd)
	if code != 0 {
		t.Fatalf("image upload: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"image/tiny kernel: 2.0 MiB, sha256 " + kernelSum + " (the server's digest matches)\n",
		"image/tiny initrd: 293.0 KiB, sha256 " + initrdSum + " (the server's digest matches)\n",
		"image/tiny is Ready (2.3 MiB)\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("image upload stdout does not say %q:\n%s", want, out)
		}
	}
	// Not a terminal: plain progress lines, a quarter at a time, and a
	// summary per part.
	if !regexp.MustCompile(`(?m)^kernel: [\d.]+ [KM]iB of 2.0 MiB \(\d+%\), [\d.]+ [KMG]?i?B/s$`).MatchString(errs) || !strings.Contains(errs, "kernel: 2.0 MiB sent in ") ||
		!strings.Contains(errs, "initrd: 293.0 KiB sent in ") || strings.Contains(errs, "\r") {
		t.Fatalf("image upload progress:\n%s", errs)
	}
	o, err := e.n.Admin.Resources("images", "demo").Get(e.Ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	st := clitest.DecodeInto[plasmavmcv1.ImageStatus](t, o.Status)
	if st.Phase != "Ready" || len(st.Parts) != 2 || st.Parts[0].SHA256 != initrdSum || st.Parts[1].SHA256 != kernelSum {
		t.Fatalf("the server's image status %+v", st)
	}

	// --format creates the image; JSON prints the image as uploaded.
	var img api.Object
	if err := json.Unmarshal([]byte(e.OK("image", "upload", "debian", disk, "--format", "raw", "--description", "a disk", "-o", "json")), &img); err != nil {
		t.Fatal(err)
	}
	if st := clitest.DecodeInto[plasmavmcv1.ImageStatus](t, img.Status); st.Phase != "Ready" || st.Parts[0].SHA256 != diskSum {
		t.Fatalf("upload --format raw -o json: %+v", st)
	}
	e.OK("image", "create", "half", "--format", "kernel")
	if out := e.OK("image", "upload", "half", "--kernel", kernel); !strings.HasSuffix(out, "image/half is Pending: it still needs --initrd\n") {
		t.Fatalf("a kernel without its initrd: %q", out)
	}

	e.Fails([]string{"image", "upload", "tiny", disk}, "image/tiny is a kernel image: upload --kernel FILE and --initrd FILE")
	e.Fails([]string{"image", "upload", "debian", "--kernel", kernel}, "image/debian is a raw image: upload its disk as FILE")
	e.Fails([]string{"image", "upload", "debian", disk, "--format", "qcow2"}, "image/debian exists as a raw image, not qcow2")
	e.Fails([]string{"image", "upload", "nosuch", disk}, "image/nosuch:", "not_found", "ultracloud image create nosuch --format")
	e.Fails([]string{"image", "create", "tiny", "--format", "raw"}, "image/tiny:", "HTTP 409")

	// A VM that boots tiny shows in its describe.
	e.OK("vm", "create", "web", "--image", "tiny", "--vcpus", "1", "--memory", "256")

	var all bytes.Buffer
	for _, args := range [][]string{
		{"image", "list"}, {"image", "get", "debian"}, {"image", "describe", "tiny"}, {"image", "describe", "half"},
		{"image", "describe", "debian"},
	} {
		fmt.Fprintf(&all, "$ ultracloud %s\n%s\n", strings.Join(args, " "), e.OK(args...))
	}
	testkit.Golden(t, "images", clitest.Stable(all.String()))

	if out := e.OK("image", "list", "-o", "yaml"); !strings.Contains(out, "kind: ImageList") || !strings.Contains(out, "sha256: "+kernelSum) {
		t.Fatalf("image list -o yaml:\n%s", out)
	}
	if out := e.OK("image", "delete", "half", "debian"); out != "image/half deleted\nimage/debian deleted\n" {
		t.Fatalf("image delete: %q", out)
	}
	e.Fails([]string{"image", "describe", "half"}, "image/half:", "not_found")
}

// TestVMLifecycleByCLI: a VM created with every kind of flag waits as
// Pending with the scheduler's reason while no worker lives; once a
// worker registers it is placed; --wait follows it through the phases
// the worker reports and fails with the VM's error; power actions change
// the desired state; events, tables and describe show it all.
func TestVMLifecycleByCLI(t *testing.T) {
	e := newEnv(t)
	e.OK("image", "create", "tiny", "--format", "kernel")
	dir := t.TempDir()
	ud := filepath.Join(dir, "user-data")
	if err := os.WriteFile(ud, []byte("#cloud-config\nruncmd:\n  - echo hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keys, []byte("# two keys\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1 alice@laptop\n\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob@desk\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out := e.OK("vm", "create", "web", "--image", "tiny", "--vcpus", "2", "--memory", "1.5Gi", "--user-data", ud,
		"--ssh-key", keys, "--ssh-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA2 carol", "--anti-affinity", "web")
	if out != "vm/web in project demo created\n" {
		t.Fatalf("vm create: %q", out)
	}
	s, _ := e.vm("web")
	if s.MemoryMiB != 1536 || s.VCPUs != 2 || len(s.SSHKeys) != 3 || s.SSHKeys[1] != "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob@desk" ||
		!strings.HasPrefix(s.UserData, "#cloud-config") || s.AntiAffinityGroup != "web" || s.Power != "running" {
		t.Fatalf("vm spec %+v", s)
	}
	e.waitStatus("web", "pending with the scheduler's reason", func(_ plasmavmcv1.VMSpec, st plasmavmcv1.VMStatus) bool {
		return st.Phase == plasmavmcv1.PhasePending && st.Message == "no worker is alive (0 registered)"
	})
	e.OK("vm", "create", "off", "--image", "tiny", "--vcpus", "1", "--memory", "512Mi", "--stopped")
	if s, _ := e.vm("off"); s.Power != "stopped" {
		t.Fatalf("--stopped: power %q", s.Power)
	}
	if out := e.OK("vm", "events", "web"); !regexp.MustCompile(`api\s+Created\s+VM created`).MatchString(out) ||
		!regexp.MustCompile(`scheduler\s+Unschedulable\s+no worker is alive \(0 registered\)`).MatchString(out) {
		t.Fatalf("vm events:\n%s", out)
	}
	evs := clitest.DecodeInto[struct {
		Events []plasmavmcv1.Event `json:"events"`
	}](t, json.RawMessage(e.OK("vm", "events", "web", "-o", "json")))
	if len(evs.Events) < 2 || evs.Events[0].Reason != "Created" {
		t.Fatalf("vm events -o json: %+v", evs)
	}

	// Power actions set the desired state; stopping a VM nothing runs
	// is done at once.
	if out := e.OK("vm", "stop", "web", "--wait"); out != "vm/web: stop requested\nvm/web: Pending\n" {
		t.Fatalf("vm stop --wait of an unplaced VM: %q", out)
	}
	if s, _ := e.vm("web"); s.Power != "stopped" {
		t.Fatalf("after stop: power %q", s.Power)
	}
	e.OK("vm", "start", "web", "off")
	for _, n := range []string{"web", "off"} {
		if s, _ := e.vm(n); s.Power != "running" {
			t.Fatalf("after start: %s power %q", n, s.Power)
		}
	}

	// A worker comes: both are placed.
	e.register("w1", 8, 8192)
	for _, n := range []string{"web", "off"} {
		e.waitStatus(n, "placed on w1", func(_ plasmavmcv1.VMSpec, st plasmavmcv1.VMStatus) bool {
			return st.Phase == plasmavmcv1.PhaseScheduled && st.Host == "w1" && st.Generation == 1
		})
	}
	// Its agent runs web.
	booted := time.Now().UTC().Add(-2 * time.Second)
	e.setStatus("web", func(st *plasmavmcv1.VMStatus) {
		st.Phase, st.Message, st.Accel, st.Addresses = plasmavmcv1.PhaseRunning, "", "tcg", []string{"10.0.0.5", "fd00::5"}
		st.Console, st.BootedAt = "/v1/projects/demo/vms/web/console", &booted
	})

	// --wait follows a new VM through the phases its worker reports.
	type result struct {
		code      int
		out, errs string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := e.Run("vm", "create", "api", "--image", "tiny", "--vcpus", "1", "--memory", "512Mi", "--wait", "--timeout", "60s")
		done <- result{code, out, errs}
	}()
	e.waitStatus("api", "placed", func(_ plasmavmcv1.VMSpec, st plasmavmcv1.VMStatus) bool {
		return st.Phase == plasmavmcv1.PhaseScheduled
	})
	e.setStatus("api", func(st *plasmavmcv1.VMStatus) {
		st.Phase, st.Message = plasmavmcv1.PhaseStarting, "starting QEMU (tcg)"
	})
	e.setStatus("api", func(st *plasmavmcv1.VMStatus) { st.Phase, st.Message = plasmavmcv1.PhaseRunning, "booted" })
	r := <-done
	if r.code != 0 || r.out != "vm/api in project demo created\n" {
		t.Fatalf("vm create --wait: exit %d\n%s\n%s", r.code, r.out, r.errs)
	}
	wantLines := []string{
		"vm/api: Pending after <secs>: waiting for the scheduler",
		"vm/api: Scheduled after <secs>: placed on w1",
		"vm/api: Starting after <secs>: starting QEMU (tcg)",
		"vm/api: Running after <secs>: booted",
	}
	if got := strings.TrimSpace(string(clitest.Stable(r.errs))); got != strings.Join(wantLines, "\n") {
		t.Fatalf("vm create --wait progress:\n%s\nwant:\n%s", got, strings.Join(wantLines, "\n"))
	}

	// A reboot that ends in Error fails --wait with the VM's message and
	// last error.
	go func() {
		code, out, errs := e.Run("vm", "reboot", "api", "--wait", "--timeout", "60s")
		done <- result{code, out, errs}
	}()
	e.waitStatus("api", "asked to reboot", func(s plasmavmcv1.VMSpec, _ plasmavmcv1.VMStatus) bool { return s.Reboots == 1 })
	e.setStatus("api", func(st *plasmavmcv1.VMStatus) {
		st.Phase, st.Message, st.LastError = plasmavmcv1.PhaseError, "QEMU exited", "qemu-system-x86_64 exited with status 1: boom"
	})
	r = <-done
	if r.code == 0 || !strings.Contains(r.errs, "Error: vm/api: plasmavmc: VM in Error: QEMU exited; last error: qemu-system-x86_64 exited with status 1: boom") {
		t.Fatalf("vm reboot --wait into Error: exit %d\n%s\n%s", r.code, r.out, r.errs)
	}
	// A VM in Error when the wait begins has not taken the request yet:
	// start --wait follows it until it runs.
	go func() {
		code, out, errs := e.Run("vm", "start", "api", "--wait", "--timeout", "60s")
		done <- result{code, out, errs}
	}()
	// Whether the worker's report lands before or after the action, the
	// CLI sees it: the watch starts at the action's revision.
	e.setStatus("api", func(st *plasmavmcv1.VMStatus) {
		st.Phase, st.Message, st.LastError, st.Reboots = plasmavmcv1.PhaseRunning, "booted", "", 1
	})
	r = <-done
	if r.code != 0 || r.out != "vm/api: start requested\nvm/api: Running\n" {
		t.Fatalf("vm start --wait: exit %d\n%s\n%s", r.code, r.out, r.errs)
	}

	e.register("w2", 4, 2048)
	var all bytes.Buffer
	for _, args := range [][]string{
		{"vm", "list"}, {"vm", "get", "web"}, {"vm", "describe", "web"}, {"vm", "describe", "off"},
		{"worker", "list"}, {"worker", "describe", "w1"}, {"worker", "describe", "w2"}, {"vm", "list", "-A"},
	} {
		fmt.Fprintf(&all, "$ ultracloud %s\n%s\n", strings.Join(args, " "), e.OK(args...))
	}
	testkit.Golden(t, "vms", clitest.Stable(all.String()))

	o := clitest.DecodeInto[api.Object](t, json.RawMessage(e.OK("vm", "get", "web", "-o", "json")))
	if o.Kind != plasmavmcv1.VMKind || clitest.DecodeInto[plasmavmcv1.VMStatus](t, o.Status).Host != "w1" {
		t.Fatalf("vm get -o json: %+v", o)
	}
	if out := e.OK("worker", "list", "-o", "yaml"); !strings.Contains(out, "kind: WorkerList") || !strings.Contains(out, "accel: tcg") {
		t.Fatalf("worker list -o yaml:\n%s", out)
	}

	if out := e.OK("vm", "delete", "web", "off", "api"); out != "vm/web deleted\nvm/off deleted\nvm/api deleted\n" {
		t.Fatalf("vm delete: %q", out)
	}
	if out := e.OK("vm", "list"); out != "No vms found.\n" {
		t.Fatalf("vm list after delete: %q", out)
	}
	e.Fails([]string{"vm", "describe", "web"}, "vm/web:", "not_found")
	e.Fails([]string{"vm", "start", "web"}, "vm/web:", "not_found")
}

// TestCreateWaitTimesOut: with no worker, `vm create --wait --timeout 3s`
// fails once the 3 seconds pass, naming the phase it was still in, what
// it waited for and the scheduler's reason.
func TestCreateWaitTimesOut(t *testing.T) {
	e := newEnv(t)
	e.OK("image", "create", "tiny", "--format", "kernel")
	start := time.Now()
	errs := e.Fails([]string{"vm", "create", "slow", "--image", "tiny", "--vcpus", "1", "--memory", "512Mi", "--wait", "--timeout", "3s"},
		"Error: vm/slow: still Pending after 3s (waiting for Running): no worker is alive (0 registered)")
	if el := time.Since(start); el < 3*time.Second || el > 15*time.Second {
		t.Fatalf("the wait took %s, want about 3s", el)
	}
	if !strings.Contains(errs, "vm/slow: Pending after ") {
		t.Fatalf("no progress lines:\n%s", errs)
	}
}

// TestFlagErrors: a malformed flag is named with what it wants and an
// example, before anything is sent.
func TestFlagErrors(t *testing.T) {
	// Nothing listens here: a flag error must come before any dial.
	dir := t.TempDir()
	priv := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(priv, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(junk, []byte("remember the milk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := clitest.New(t, context.Background(), cli.Main, "http://127.0.0.1:1", "t", "demo")
	vm := []string{"vm", "create", "v", "--image", "tiny", "--vcpus", "1"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(vm, "--memory", "2GB"), `--memory: "2GB" is not an amount of memory such as 512Mi, 2Gi or 1024 (MiB)`},
		{append(vm, "--memory", "lots"), `--memory: "lots" is not an amount of memory`},
		{append(vm, "--memory", "0.3Mi"), `--memory: "0.3Mi" is not a whole number of MiB`},
		{append(vm, "--memory", "0"), `--memory: "0" is outside 1 MiB`},
		{[]string{"vm", "create", "v", "--image", "tiny", "--memory", "1Gi"}, `--image, --vcpus and --memory are required`},
		{append(vm, "--memory", "1Gi", "--sg", "ssh", "--network", "web"), `--sg applies to the --network before it`},
		{append(vm, "--memory", "1Gi", "--port", "p1", "--sg", "ssh"), `--sg ssh follows --port p1: an existing port keeps its own security groups`},
		{append(vm, "--memory", "1Gi", "--ssh-key", filepath.Join(dir, "nope.pub")), `--ssh-key: "` + filepath.Join(dir, "nope.pub") + `" is neither a public key`},
		{append(vm, "--memory", "1Gi", "--ssh-key", priv), `is a private key: give the public one (` + priv + `.pub)`},
		{append(vm, "--memory", "1Gi", "--ssh-key", junk), `is not an OpenSSH public key`},
		{append(vm, "--memory", "1Gi", "--ssh-key", "ssh-ed25519"), `is neither a public key`},
		{append(vm, "--memory", "1Gi", "--user-data", filepath.Join(dir, "nope.yaml")), `--user-data: open `},
		{append(vm, "--memory", "1Gi", "--user-data", "-"), `--user-data: stdin is empty`},
		{append(vm, "--memory", "1Gi", "--disk", "-1"), `--disk: -1 is not a size in GiB`},
		{append(vm, "--memory", "1Gi", "--stopped", "--wait"), `--wait waits for the VM to run, and a --stopped VM does not start`},
		{append(vm, "--memory", "1Gi", "--timeout", "0s"), `--timeout: 0s is not a positive duration`},
		{append(vm, "--memory", "1Gi", "--wait=false", "--timeout", "1m"), `--timeout bounds --wait`},
		{append(vm, "--memory", "1Gi", "-o", "xml"), `-o "xml" is not supported`},
		{[]string{"vm", "create"}, `accepts 1 arg(s), received 0`},
		{[]string{"vm", "stop", "v", "--timeout", "-1s"}, `--timeout: -1s is not a positive duration`},
		{[]string{"vm", "list", "-o", "xml"}, `-o "xml" is not supported`},
		{[]string{"image", "create", "i", "--format", "iso"}, `--format: "iso": use kernel (a kernel and an initrd), raw or qcow2`},
		{[]string{"image", "create", "i"}, `--format is required`},
		{[]string{"image", "create", "i", "--format", "raw", "--cmdline", "quiet"}, `--cmdline is for kernel images`},
		{[]string{"image", "upload", "i"}, `nothing to upload`},
		{[]string{"image", "upload", "i", junk, "--kernel", junk}, `give a disk FILE or --kernel and --initrd, not both`},
		{[]string{"image", "upload", "i", filepath.Join(dir, "nope.raw")}, `FILE: stat `},
		{[]string{"image", "upload", "i", "--kernel", dir, "--initrd", junk}, `--kernel: ` + dir + ` is not a regular file`},
		{[]string{"image", "upload", "i", junk, "--format", "kernel"}, `image/i is a kernel image: upload --kernel FILE and --initrd FILE`},
		{[]string{"image", "upload", "i", junk, "--cmdline", "quiet"}, `--cmdline and --description describe a new image: give --format too`},
	} {
		errs := e.Fails(c.args, c.want)
		if strings.Contains(errs, "connection refused") {
			t.Errorf("ultracloud %s dialled before checking its flags: %s", strings.Join(c.args, " "), errs)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
