package plasmavmc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

type env struct {
	t   *testing.T
	n   *nodetest.Node
	ctx context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.PlasmaVMC.HeartbeatTTL = 3 * time.Second }})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, n: n, ctx: ctx}
	for _, p := range []string{"alpha", "bravo"} {
		e.mustCreate("projects", "", p, struct{}{})
	}
	return e
}

func (e *env) create(coll, project, name string, spec any) (*api.Object, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.n.Admin.Resources(coll, project).Create(e.ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: raw})
}

func (e *env) mustCreate(coll, project, name string, spec any) *api.Object {
	e.t.Helper()
	o, err := e.create(coll, project, name, spec)
	if err != nil {
		e.t.Fatalf("creating %s %s/%s: %v", coll, project, name, err)
	}
	return o
}

func (e *env) vm(project, name string) plasmavmcv1.VMStatus {
	e.t.Helper()
	o, err := e.n.Admin.Resources("vms", project).Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	var st plasmavmcv1.VMStatus
	_ = json.Unmarshal(o.Status, &st)
	return st
}

// register makes a worker as its agent does: the Worker object with its
// capacity, then heartbeats.
func (e *env) register(name string, vcpus, memMiB int) {
	e.t.Helper()
	e.mustCreate("workers", "", name, struct{}{})
	now := time.Now().UTC()
	raw, _ := json.Marshal(plasmavmcv1.WorkerStatus{VCPUs: vcpus, MemoryMiB: memMiB, Accel: "tcg", ObservedAt: &now})
	if _, err := e.n.Admin.Resources("workers", "").UpdateStatus(e.ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Status: raw}); err != nil {
		e.t.Fatal(err)
	}
	e.beat(name)
}

func (e *env) beat(name string) {
	e.t.Helper()
	if err := e.n.Admin.Do(e.ctx, "POST", "/v1/workers/"+name+"/heartbeat", nil, nil, nil); err != nil {
		e.t.Fatal(err)
	}
}

func wantProblem(t *testing.T, what string, err error, httpStatus int, code string) {
	t.Helper()
	p, ok := client.ProblemOf(err)
	if !ok || p.Status != httpStatus || (code != "" && p.Code != code) {
		t.Fatalf("%s: got %v, want HTTP %d %s", what, err, httpStatus, code)
	}
}

func kernelImage(e *env, project, name string) {
	e.mustCreate("images", project, name, plasmavmcv1.ImageSpec{Format: plasmavmcv1.FormatKernel, Cmdline: "console=ttyS0"})
}

func vmSpec(image string, vcpus, mem int) plasmavmcv1.VMSpec {
	return plasmavmcv1.VMSpec{VCPUs: vcpus, MemoryMiB: mem, Image: image}
}

// TestSchedulerPlacesByCapacityAndAntiAffinity: VMs go to the worker with
// the most free memory, never two of an anti-affinity group on one
// worker, and a VM that fits nowhere says why.
func TestSchedulerPlacesByCapacityAndAntiAffinity(t *testing.T) {
	e := newEnv(t)
	e.register("w1", 8, 4096)
	e.register("w2", 8, 8192)
	kernelImage(e, "alpha", "tiny")
	placed := func(name string) string {
		t.Helper()
		var host string
		testkit.EventuallyErr(t, 15*time.Second, "vm "+name+" placed", func() error {
			st := e.vm("alpha", name)
			if st.Phase != plasmavmcv1.PhaseScheduled || st.Host == "" || st.Generation != 1 {
				return fmt.Errorf("status %+v", st)
			}
			host = st.Host
			return nil
		})
		return host
	}
	spec := vmSpec("tiny", 2, 3072)
	spec.AntiAffinityGroup = "db"
	e.mustCreate("vms", "alpha", "db1", spec)
	if h := placed("db1"); h != "w2" {
		t.Fatalf("db1 on %s, want w2 (most free memory)", h)
	}
	e.mustCreate("vms", "alpha", "db2", spec)
	if h := placed("db2"); h != "w1" {
		t.Fatalf("db2 on %s, want w1 (anti-affinity with db1 on w2)", h)
	}
	e.mustCreate("vms", "alpha", "db3", spec)
	testkit.EventuallyErr(t, 15*time.Second, "db3 refused with a reason", func() error {
		st := e.vm("alpha", "db3")
		if st.Phase != plasmavmcv1.PhasePending || !strings.Contains(st.Message, `anti-affinity group "db"`) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// Memory: w2 has 5 GiB left, w1 1 GiB.
	e.mustCreate("vms", "alpha", "big", vmSpec("tiny", 1, 6144))
	testkit.EventuallyErr(t, 15*time.Second, "big refused with a reason", func() error {
		st := e.vm("alpha", "big")
		if want := "no worker has 6 GiB free: largest is w2 with 5 GiB"; st.Message != want {
			return fmt.Errorf("message %q, want %q", st.Message, want)
		}
		if n := len(st.Events); n == 0 || st.Events[n-1].Reason != "Unschedulable" {
			return fmt.Errorf("events %+v", st.Events)
		}
		return nil
	})
	// A VM larger than any worker is refused at once, and nothing is made.
	_, err := e.create("vms", "alpha", "huge", vmSpec("tiny", 1, 65536))
	wantProblem(t, "a VM larger than every worker", err, 409, plasmavmcv1.CodeUnschedulable)
	if !strings.Contains(err.Error(), "the largest, w2, has 8 GiB") {
		t.Errorf("refusal %v", err)
	}
}

// TestLostWorker: when a worker stops heartbeating, its VM with a local
// disk is Lost and stays on it; a kernel-image VM (no disk there) is
// placed again on a live worker at a higher generation.
func TestLostWorker(t *testing.T) {
	e := newEnv(t)
	e.register("w1", 8, 8192)
	kernelImage(e, "alpha", "tiny")
	e.mustCreate("images", "alpha", "disk", plasmavmcv1.ImageSpec{Format: plasmavmcv1.FormatQcow2})
	e.mustCreate("vms", "alpha", "stateless", vmSpec("tiny", 1, 512))
	e.mustCreate("vms", "alpha", "stateful", vmSpec("disk", 1, 512))
	for _, v := range []string{"stateless", "stateful"} {
		testkit.EventuallyErr(t, 15*time.Second, v+" on w1", func() error {
			if st := e.vm("alpha", v); st.Host != "w1" {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
	}
	// w2 joins and keeps beating; w1 stops (its 3s lease expires).
	e.register("w2", 8, 8192)
	ctx, stop := context.WithCancel(e.ctx)
	defer stop()
	go func() {
		for ctx.Err() == nil {
			_ = e.n.Admin.Do(ctx, "POST", "/v1/workers/w2/heartbeat", nil, nil, nil)
			time.Sleep(500 * time.Millisecond)
		}
	}()
	testkit.EventuallyErr(t, 20*time.Second, "stateless placed again on w2", func() error {
		st := e.vm("alpha", "stateless")
		if st.Host != "w2" || st.Generation < 2 || st.Phase != plasmavmcv1.PhaseScheduled {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	testkit.EventuallyErr(t, 20*time.Second, "stateful lost on w1", func() error {
		st := e.vm("alpha", "stateful")
		if st.Host != "w1" || st.Phase != plasmavmcv1.PhaseLost || st.Generation != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestBadVMSpecsCreateNothing: invalid specs are 4xx problems naming the
// field, and nothing is created.
func TestBadVMSpecsCreateNothing(t *testing.T) {
	e := newEnv(t)
	kernelImage(e, "alpha", "tiny")
	e.mustCreate("networks", "bravo", "theirs", prismnetv1.NetworkSpec{CIDR: "10.0.0.0/16"})
	cases := []struct {
		what   string
		spec   plasmavmcv1.VMSpec
		status int
		code   string
	}{
		{"0 vCPUs", vmSpec("tiny", 0, 512), 400, api.CodeInvalidField},
		{"too little memory", vmSpec("tiny", 1, 16), 400, api.CodeInvalidField},
		{"unknown image", vmSpec("nope", 1, 512), 404, api.CodeNotFound},
		{"another project's network", func() plasmavmcv1.VMSpec {
			s := vmSpec("tiny", 1, 512)
			s.NICs = []plasmavmcv1.NIC{{Network: "theirs"}}
			return s
		}(), 404, api.CodeNotFound},
		{"a volume that does not exist", func() plasmavmcv1.VMSpec {
			s := vmSpec("tiny", 1, 512)
			s.Volumes = []string{"vol1"}
			return s
		}(), 404, api.CodeNotFound},
		{"oversized user-data", func() plasmavmcv1.VMSpec {
			s := vmSpec("tiny", 1, 512)
			s.UserData = strings.Repeat("x", 64<<10+1)
			return s
		}(), 400, api.CodeInvalidField},
		{"a NIC with network and port", func() plasmavmcv1.VMSpec {
			s := vmSpec("tiny", 1, 512)
			s.NICs = []plasmavmcv1.NIC{{Network: "a", Port: "b"}}
			return s
		}(), 400, api.CodeInvalidField},
		{"a malformed SSH key", func() plasmavmcv1.VMSpec {
			s := vmSpec("tiny", 1, 512)
			s.SSHKeys = []string{"not a key"}
			return s
		}(), 400, api.CodeInvalidField},
	}
	for _, c := range cases {
		_, err := e.create("vms", "alpha", "v", c.spec)
		wantProblem(t, c.what, err, c.status, c.code)
	}
	if l, err := e.n.Admin.Resources("vms", "alpha").List(e.ctx, client.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Fatalf("after refused creates: %d VMs, %v", len(l.Items), err)
	}
}

// TestImageUploadAndDownload: a kernel image's two parts upload in
// chunks, the image becomes Ready with each part's size and digest, and a
// download returns the same bytes.
func TestImageUploadAndDownload(t *testing.T) {
	e := newEnv(t)
	kernelImage(e, "alpha", "tiny")
	kernel := bytes.Repeat([]byte("kernel-bytes-"), 300000) // ~3.9 MB: several chunks
	initrd := []byte("initrd")
	put := func(part string, data []byte) *api.Object {
		t.Helper()
		req, _ := http.NewRequestWithContext(e.ctx, "PUT", e.n.APIURL()+"/v1/projects/alpha/images/tiny/data?part="+part, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+e.n.Token())
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("upload %s: %d %s", part, resp.StatusCode, body)
		}
		var o api.Object
		_ = json.Unmarshal(body, &o)
		return &o
	}
	o := put("kernel", kernel)
	var st plasmavmcv1.ImageStatus
	_ = json.Unmarshal(o.Status, &st)
	if st.Phase != "Pending" {
		t.Fatalf("after the kernel only: %+v", st)
	}
	o = put("initrd", initrd)
	_ = json.Unmarshal(o.Status, &st)
	sum := sha256.Sum256(kernel)
	if st.Phase != "Ready" || st.Size != int64(len(kernel)+len(initrd)) || len(st.Parts) != 2 ||
		st.Parts[1].Name != "kernel" || st.Parts[1].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("after both parts: %+v", st)
	}
	req, _ := http.NewRequestWithContext(e.ctx, "GET", e.n.APIURL()+"/v1/projects/alpha/images/tiny/data?part=kernel", nil)
	req.Header.Set("Authorization", "Bearer "+e.n.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, kernel) || resp.Header.Get("X-Content-SHA256") != hex.EncodeToString(sum[:]) {
		t.Fatalf("download: %d bytes (want %d), sha %q", len(got), len(kernel), resp.Header.Get("X-Content-SHA256"))
	}
	// A part the format does not have is refused.
	req, _ = http.NewRequestWithContext(e.ctx, "GET", e.n.APIURL()+"/v1/projects/alpha/images/tiny/data?part=disk", nil)
	req.Header.Set("Authorization", "Bearer "+e.n.Token())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("a disk part of a kernel image: %d, want 400", resp.StatusCode)
	}
}

// TestPowerActions: stop, start and reboot change the desired state.
func TestPowerActions(t *testing.T) {
	e := newEnv(t)
	kernelImage(e, "alpha", "tiny")
	e.mustCreate("vms", "alpha", "v1", vmSpec("tiny", 1, 512))
	spec := func() plasmavmcv1.VMSpec {
		o, err := e.n.Admin.Resources("vms", "alpha").Get(e.ctx, "v1")
		if err != nil {
			t.Fatal(err)
		}
		var s plasmavmcv1.VMSpec
		_ = json.Unmarshal(o.Spec, &s)
		return s
	}
	for _, step := range []struct {
		action, power string
		reboots       int
	}{{"stop", "stopped", 0}, {"start", "running", 0}, {"reboot", "running", 1}} {
		if err := e.n.Admin.Do(e.ctx, "POST", "/v1/projects/alpha/vms/v1/"+step.action, nil, nil, nil); err != nil {
			t.Fatalf("%s: %v", step.action, err)
		}
		if s := spec(); s.Power != step.power || s.Reboots != step.reboots {
			t.Fatalf("after %s: power %q reboots %d", step.action, s.Power, s.Reboots)
		}
	}
}

// TestNICsFollowPlacement: a placed VM's NIC is a prismnet port bound to
// its worker (a tap), its address shows in the VM's status, and deleting
// the VM deletes the port.
func TestNICsFollowPlacement(t *testing.T) {
	e := newEnv(t)
	e.register("w1", 8, 8192)
	kernelImage(e, "alpha", "tiny")
	e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.60.0.0/16"})
	e.mustCreate("subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.60.1.0/24"})
	e.mustCreate("securitygroups", "alpha", "ssh", prismnetv1.SecurityGroupSpec{})
	spec := vmSpec("tiny", 1, 512)
	spec.NICs = []plasmavmcv1.NIC{{Network: "net1", SecurityGroups: []string{"ssh"}}}
	e.mustCreate("vms", "alpha", "v1", spec)
	var port prismnetv1.PortSpec
	var pst prismnetv1.PortStatus
	testkit.EventuallyErr(t, 15*time.Second, "v1's port bound to w1", func() error {
		o, err := e.n.Admin.Resources("ports", "alpha").Get(e.ctx, "v1-nic0")
		if err != nil {
			return err
		}
		_ = json.Unmarshal(o.Spec, &port)
		_ = json.Unmarshal(o.Status, &pst)
		if port.Binding.Host != "w1" || port.Binding.Device != "tap" || port.Owner == nil || port.Owner.Name != "v1" ||
			len(port.SecurityGroups) != 1 || o.Metadata.Labels["plasmavmc.ultracloud.dev/vm"] != "v1" {
			return fmt.Errorf("port %+v labels %v", port, o.Metadata.Labels)
		}
		return nil
	})
	testkit.EventuallyErr(t, 15*time.Second, "v1's address in its status", func() error {
		if st := e.vm("alpha", "v1"); len(st.Addresses) != 1 || st.Addresses[0] != pst.FixedIPs[0].IP {
			return fmt.Errorf("addresses %v, want %v", st.Addresses, pst.FixedIPs)
		}
		return nil
	})
	if _, err := e.n.Admin.Resources("vms", "alpha").Delete(e.ctx, "v1", 0); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 15*time.Second, "v1's port deleted with it", func() error {
		if _, err := e.n.Admin.Resources("ports", "alpha").Get(e.ctx, "v1-nic0"); !client.IsNotFound(err) {
			return fmt.Errorf("port still there: %v", err)
		}
		return nil
	})
}
