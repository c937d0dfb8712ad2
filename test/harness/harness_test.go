//go:build linux

package harness_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/test/harness"
)

// These tests run real clusters: they need root (see harness.Require) and
// take a few seconds each, so they run in parallel.

const wait = 20 * time.Second

// blocked asserts that from cannot reach to: the probe must time out, as a
// dropped packet does, rather than be refused.
func blocked(ctx context.Context, t *testing.T, c *harness.Cluster, from, to *harness.Host) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	err := c.Reachable(pctx, from, to)
	if err == nil {
		t.Errorf("%s reached %s; want it blocked", from.Name(), to.Name())
		return
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("%s -> %s failed, but not by timing out as a dropped packet would: %v", from.Name(), to.Name(), err)
	}
}

// reachable waits until from reaches to.
func reachable(ctx context.Context, t *testing.T, c *harness.Cluster, from, to *harness.Host) {
	t.Helper()
	err := harness.WaitFor(ctx, 5*time.Second, from.Name()+" to reach "+to.Name(), func(ctx context.Context) (bool, string) {
		if err := c.Reachable(ctx, from, to); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Error(err)
	}
}

// each runs f for every ordered pair concurrently, so that blocked probes
// time out together.
func each(pairs [][2]*harness.Host, f func(from, to *harness.Host)) {
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Go(func() { f(p[0], p[1]) })
	}
	wg.Wait()
}

func createProject(ctx context.Context, t *testing.T, h *harness.Host, name string) {
	t.Helper()
	cl, err := h.Client()
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Resources("projects", "").Create(ctx, &api.Object{
		Kind: "Project", Metadata: api.ObjectMeta{Name: name}, Spec: json.RawMessage(`{}`),
	})
	if err != nil {
		t.Fatalf("creating project %s on %s: %v", name, h.Name(), err)
	}
}

func hasProject(ctx context.Context, t *testing.T, h *harness.Host, name string) bool {
	t.Helper()
	cl, err := h.Client()
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Resources("projects", "").Get(ctx, name)
	if client.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatalf("getting project %s on %s: %v", name, h.Name(), err)
	}
	return true
}

func TestHostsReachEachOther(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{
		Name:     "reach",
		HostList: []harness.HostSpec{{Name: "host1", Roles: []string{"iam"}}, {Name: "host2"}, {Name: "host3"}},
		Networks: []harness.NetworkSpec{{Name: "external", Subnet: "10.98.0.0/24", Hosts: []string{"host1", "host2"}}},
	})
	ctx := t.Context()
	hosts := c.Hosts()
	var pairs [][2]*harness.Host
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				pairs = append(pairs, [2]*harness.Host{a, b})
			}
		}
	}
	each(pairs, func(a, b *harness.Host) {
		if err := c.Reachable(ctx, a, b); err != nil {
			t.Error(err)
		}
	})

	// The same through Exec and a tool outside Go: bash's /dev/tcp.
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && cat <&3`, h2.Addr(), h2.APIAddr().Port())
	out, err := h1.Exec(ctx, "timeout", "5", "bash", "-c", script)
	if err != nil || !strings.Contains(string(out), "200 OK") {
		t.Errorf("bash /dev/tcp from host1 to host2: %v\n%s", err, out)
	}

	// Each host's namespace has its addresses and nothing routes outside.
	out, err = h1.Exec(ctx, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	ext1, _ := h1.AddrOn("external")
	for _, want := range []string{h1.Addr().String() + "/24", ext1.String() + "/24"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("host1 addresses lack %s:\n%s", want, out)
		}
	}
	if out, err := h1.Exec(ctx, "ip", "route", "show", "default"); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("host1 has a default route (%v): %s", err, out)
	}
	if _, ok := h3.AddrOn("external"); ok {
		t.Error("host3 is on the external network but was not listed")
	}

	// The external network carries traffic: nothing listens there, so a
	// refused connection proves the packet arrived.
	ext2, _ := h2.AddrOn("external")
	_, err = h1.Dial(ctx, "tcp", netip.AddrPortFrom(ext2, 7700).String())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial host2's external address from host1: %v, want connection refused", err)
	}

	// The SDK works against every host through the switch namespace.
	createProject(ctx, t, h1, "p1")
	if !hasProject(ctx, t, h1, "p1") {
		t.Error("project p1 missing on host1")
	}
	if hasProject(ctx, t, h2, "p1") {
		t.Error("host2 has host1's project; nodes are standalone today")
	}
	code, body, err := h1.Get(ctx, "/v1/status")
	if err != nil || code != 200 {
		t.Errorf("GET /v1/status: %d %s %v", code, body, err)
	}
}

func TestPartitionSymmetricAndHeal(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "partition", Hosts: 3})
	ctx := t.Context()
	h := c.Hosts()
	if err := c.Partition([]*harness.Host{h[0]}, []*harness.Host{h[1], h[2]}); err != nil {
		t.Fatal(err)
	}
	each([][2]*harness.Host{{h[0], h[1]}, {h[1], h[0]}, {h[0], h[2]}, {h[2], h[0]}}, func(a, b *harness.Host) {
		blocked(ctx, t, c, a, b)
	})
	// The majority side still talks, and the switch still reaches everyone.
	reachable(ctx, t, c, h[1], h[2])
	reachable(ctx, t, c, h[2], h[1])
	if err := c.WaitReady(ctx, wait); err != nil {
		t.Error(err)
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	each([][2]*harness.Host{{h[0], h[1]}, {h[1], h[0]}, {h[0], h[2]}, {h[2], h[0]}}, func(a, b *harness.Host) {
		reachable(ctx, t, c, a, b)
	})
}

func TestPartitionOneWay(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "oneway", Hosts: 2})
	ctx := t.Context()
	h1, h2 := c.Hosts()[0], c.Hosts()[1]
	if err := c.PartitionOneWay([]*harness.Host{h1}, []*harness.Host{h2}); err != nil {
		t.Fatal(err)
	}
	blocked(ctx, t, c, h1, h2)
	reachable(ctx, t, c, h2, h1)
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	reachable(ctx, t, c, h1, h2)
	reachable(ctx, t, c, h2, h1)
}

func TestKillRestartWipe(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "kill", Hosts: 2})
	ctx := t.Context()
	h1, h2 := c.Hosts()[0], c.Hosts()[1]
	createProject(ctx, t, h1, "survivor")
	pid := h1.PID()

	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	if s := h1.State(); s.Phase != harness.PhaseExited || s.Exit != "signal: killed" {
		t.Errorf("after Kill: state %s, want exited by signal: killed", s)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, _, err := h1.Get(pctx, "/healthz")
	cancel()
	// Refused, or reset if the SYN raced the dying listener; never a timeout.
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("GET /healthz on a killed host: %v, want connection refused", err)
	}
	if err := h1.WaitHealthy(ctx, time.Second); err == nil || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("WaitHealthy on a killed host = %v; want a quick failure naming the exit", err)
	}
	if err := h2.WaitReady(ctx, wait); err != nil {
		t.Errorf("host2 suffered from host1's death: %v", err)
	}
	if err := h1.Kill(); !errors.Is(err, harness.ErrNotRunning) {
		t.Errorf("Kill of a dead host: %v, want ErrNotRunning", err)
	}

	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, wait); err != nil {
		t.Fatal(err)
	}
	if h1.PID() == pid {
		t.Error("restart kept the old PID")
	}
	if !hasProject(ctx, t, h1, "survivor") {
		t.Error("project lost across kill and restart")
	}

	// A graceful restart keeps the data too.
	if err := h1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, wait); err != nil {
		t.Fatal(err)
	}
	if !hasProject(ctx, t, h1, "survivor") {
		t.Error("project lost across graceful restart")
	}

	// Wipe refuses a live server, then makes a brand-new node.
	if err := h1.Wipe(); err == nil {
		t.Error("Wipe of a running host succeeded")
	}
	oldToken, _ := h1.Token()
	if err := h1.Terminate(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if s := h1.State(); s.Exit != "exit status 0" {
		t.Errorf("graceful stop ended with %s, want exit status 0", s)
	}
	if err := h1.Wipe(); err != nil {
		t.Fatal(err)
	}
	if err := h1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, wait); err != nil {
		t.Fatal(err)
	}
	if tok, _ := h1.Token(); tok == oldToken {
		t.Error("wiped node kept its admin token")
	}
	if hasProject(ctx, t, h1, "survivor") {
		t.Error("project survived Wipe")
	}
}

func TestStopContinue(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "stop", Hosts: 1})
	ctx := t.Context()
	h := c.Hosts()[0]
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if s := h.State(); s.Phase != harness.PhaseStopped || !s.Alive() {
		t.Errorf("after Stop: %s", s)
	}
	// A frozen server accepts TCP (the kernel does) but never answers.
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, _, err := h.Get(pctx, "/healthz")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GET /healthz on a stopped host: %v, want a timeout", err)
	}
	if err := h.WaitHealthy(ctx, 300*time.Millisecond); !errors.Is(err, harness.ErrTimeout) || !strings.Contains(err.Error(), "stopped (pid") {
		t.Errorf("WaitHealthy on a stopped host = %v; want a timeout that shows the stopped process", err)
	}
	if err := h.Continue(); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitHealthy(ctx, wait); err != nil {
		t.Fatal(err)
	}
	if s := h.State(); s.Phase != harness.PhaseRunning {
		t.Errorf("after Continue: %s", s)
	}
}

func TestLossAndLatency(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "loss", Hosts: 2})
	ctx := t.Context()
	h1, h2 := c.Hosts()[0], c.Hosts()[1]

	if err := c.Loss(h1, 30); err != nil {
		t.Fatal(err)
	}
	out, err := h1.Exec(ctx, "nft", "list", "table", "inet", "uch_harness")
	if err != nil || !strings.Contains(string(out), "numgen random mod 100 < 30 drop") {
		t.Errorf("30%% loss rule not in host1's table (%v):\n%s", err, out)
	}
	if err := c.Loss(h1, 100); err != nil {
		t.Fatal(err)
	}
	blocked(ctx, t, c, h2, h1)
	if err := c.Loss(h1, 0); err != nil {
		t.Fatal(err)
	}
	reachable(ctx, t, c, h2, h1)
	if err := c.Loss(h1, 101); err == nil {
		t.Error("Loss 101% accepted")
	}

	err = c.Latency(h1, 100*time.Millisecond)
	switch {
	case errors.Is(err, harness.ErrNoNetem):
		if !strings.HasPrefix(err.Error(), "harness: latency needs the sch_netem qdisc, which this kernel lacks") {
			t.Errorf("ErrNoNetem message: %v", err)
		}
		t.Logf("no netem here, as expected on this kernel: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		start := time.Now()
		reachable(ctx, t, c, h2, h1)
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("round trip %s with 100ms latency added", d)
		}
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	reachable(ctx, t, c, h2, h1)
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Spec{Name: "close", Hosts: 2, Networks: []harness.NetworkSpec{{Name: "external", Subnet: "10.98.0.0/24"}}})
	ctx := t.Context()
	h := c.Hosts()
	// Something besides the servers runs in a host namespace, and a fault
	// is active: Close must take care of both.
	sleeper := h[0].Command(ctx, "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Partition(h[:1], h[1:]); err != nil {
		t.Fatal(err)
	}
	pids := []int{h[0].PID(), h[1].PID(), sleeper.Process.Pid}
	prefix := c.Prefix()

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = sleeper.Wait() // killed by Close; reap it
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || strings.Contains(string(out), prefix) {
		t.Errorf("ip netns list after Close (%v):\n%s", err, out)
	}
	out, err = exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil || strings.Contains(string(out), prefix) || regexp.MustCompile(`\bh\d+n\d+\b`).Match(out) {
		t.Errorf("ip link after Close (%v):\n%s", err, out)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Close (kill 0: %v)", pid, err)
		}
	}
	// No process anywhere still runs with this run's config files.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), c.WorkDir()) {
			t.Errorf("%s still runs: %q", p, b)
		}
	}
	if _, err := os.Stat(c.StatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file %s after Close: %v", c.StatePath(), err)
	}
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("Leftovers after Close: %v", left)
	}
}

// helperEnv marks a copy of this test binary started by runHelper.
const helperEnv = "UCH_HARNESS_HELPER"

// TestHelperCluster is not a test on its own: runHelper starts this test
// binary again to run it, as a test process that then crashes or is
// interrupted while it owns a cluster.
func TestHelperCluster(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestCrashedRunIsSwept and TestInterruptClosesCluster")
	}
	c := harness.Start(t, harness.Spec{Name: "helper", Hosts: 2})
	fmt.Printf("HELPER-READY %s %s %d %d\n", c.Prefix(), c.WorkDir(), c.Hosts()[0].PID(), c.Hosts()[1].PID())
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	<-timer.C
	t.Fatal("helper: nobody killed or interrupted me within a minute")
}

type helper struct {
	cmd     *exec.Cmd
	prefix  string
	workDir string
	pids    []int
	out     strings.Builder // stdout, then stderr once the helper is reaped
	stderr  strings.Builder // written by exec's copying goroutine until Wait
	rest    io.Reader
}

// runHelper runs TestHelperCluster in a child test process and returns once
// its cluster is ready.
func runHelper(t *testing.T) *helper {
	t.Helper()
	harness.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	h := &helper{cmd: exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperCluster$", "-test.v", "-test.count=1")}
	h.cmd.Env = append(os.Environ(), helperEnv+"=1", harness.BinaryEnv+"="+harness.Binary(t))
	h.cmd.Stderr = &h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// If the helper hangs, ctx kills it and the scan ends at EOF.
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		h.out.WriteString(line + "\n")
		if f, ok := strings.CutPrefix(line, "HELPER-READY "); ok {
			var p1, p2 int
			if _, err := fmt.Sscanf(f, "%s %s %d %d", &h.prefix, &h.workDir, &p1, &p2); err != nil {
				t.Fatalf("helper said %q: %v", line, err)
			}
			h.pids = []int{p1, p2}
			h.rest = stdout
			t.Cleanup(func() { os.RemoveAll(filepath.Dir(h.workDir)) })
			return h
		}
	}
	_ = h.cmd.Wait()
	t.Fatalf("helper never got its cluster ready:\n%s%s", h.out.String(), h.stderr.String())
	return nil
}

// wait reaps the helper after a signal and returns how it ended.
func (h *helper) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	b, _ := io.ReadAll(h.rest)
	h.out.Write(b)
	_ = h.cmd.Wait()
	h.out.WriteString(h.stderr.String())
	return h.cmd.ProcessState
}

func namespacesWith(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}

// Not parallel on purpose: parallel tests' Start sweeps too, and this test
// wants to see its own Sweep find the crashed run.
func TestCrashedRunIsSwept(t *testing.T) {
	h := runHelper(t)
	// Other test packages running at the same time sweep in their Start;
	// hold the sweep lock so that the crashed run is left for ours.
	lock, err := harness.LockSweeps(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.wait(t)
	// The servers die with their owner (they get SIGKILL when it dies) ...
	for _, pid := range h.pids {
		err := harness.WaitFor(t.Context(), 10*time.Second, fmt.Sprintf("server pid %d to die with its owner", pid), func(context.Context) (bool, string) {
			err := syscall.Kill(pid, 0)
			return errors.Is(err, syscall.ESRCH), fmt.Sprintf("kill 0: %v", err)
		})
		if err != nil {
			t.Error(err)
		}
	}
	// ... but the namespaces stay until someone sweeps.
	if got := namespacesWith(t, h.prefix); len(got) != 3 {
		t.Fatalf("after the crash: namespaces %v, want the switch and 2 hosts", got)
	}
	rep, err := lock.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	lock.Unlock()
	t.Logf("sweep: %s", rep)
	if len(rep.Namespaces) < 3 || len(rep.Runs) < 1 {
		t.Errorf("Sweep removed %s; want the crashed run's state file and 3 namespaces", rep)
	}
	if got := namespacesWith(t, h.prefix); len(got) != 0 {
		t.Errorf("after Sweep: namespaces %v left", got)
	}
	again, err := harness.Sweep(t.Context())
	if err != nil || !again.Empty() {
		t.Errorf("second Sweep: %s, %v; want nothing to do", again, err)
	}
}

// Not parallel: see TestCrashedRunIsSwept.
func TestInterruptClosesCluster(t *testing.T) {
	h := runHelper(t)
	if err := h.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	ps := h.wait(t)
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("helper ended with %s, want death by SIGINT after cleanup\n%s", ps, h.out.String())
	}
	if !strings.Contains(h.out.String(), "closing 1 cluster(s)") {
		t.Errorf("helper did not report closing its cluster:\n%s", h.out.String())
	}
	if got := namespacesWith(t, h.prefix); len(got) != 0 {
		t.Errorf("after SIGINT: namespaces %v left", got)
	}
	for _, pid := range h.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("server pid %d survived the interrupt (kill 0: %v)", pid, err)
		}
	}
}
