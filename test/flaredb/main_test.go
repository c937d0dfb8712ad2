//go:build linux

// Package flaredb_test runs flaredb as a 3-member cluster across three
// network-namespace hosts of the multi-host harness (Spec.FlareDB) and
// checks the guarantees of issue 5 under faults: linearizability of get,
// put and compare-and-swap (checked with porcupine), durability of every
// acknowledged write across SIGKILL, and watches that deliver every change
// exactly once and in order across leader changes.
//
// The flaredb Go client dials by itself, and the test process lives in the
// root namespace, which has no route to the hosts. So the client side of
// each test (the "worker") is this test binary again, started by the test
// inside the harness's switch namespace (Cluster.SwitchCommand) with
// FLAREDB_TEST_WORKER naming its input; TestMain runs the worker instead
// of the tests. The test process injects the faults, the worker records
// what the clients saw and writes it to a JSON file the test then checks.
// The worker reaches every member like a client machine on the same
// network: partitions between members do not cut it off from any of them.
//
// The tests need root, like every harness test (harness.Require: skipped on
// a laptop without root, a failure with CI set).
package flaredb_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/test/harness"
)

// workerEnv names the worker's input file in the worker's environment.
const workerEnv = "FLAREDB_TEST_WORKER"

func TestMain(m *testing.M) {
	if path := os.Getenv(workerEnv); path != "" {
		os.Exit(workerMain(path))
	}
	os.Exit(m.Run())
}

// Raft timings of the test clusters: shorter than flaredb's defaults so a
// killed leader is replaced within about a second.
const (
	heartbeatTimeout   = 500 * time.Millisecond
	electionTimeout    = 500 * time.Millisecond
	leaderLeaseTimeout = 250 * time.Millisecond
)

// startCluster starts three hosts forming one flaredb cluster and waits
// for it to elect a leader. The hosts run only the flaredb role: the tests
// are about flaredb, and other roles would only share the two CPUs (and,
// for iam, bring their own multi-node start-up behaviour into the picture).
func startCluster(t *testing.T) *harness.Cluster {
	t.Helper()
	var hosts []harness.HostSpec
	for i := 1; i <= 3; i++ {
		hosts = append(hosts, harness.HostSpec{Name: fmt.Sprintf("host%d", i), Roles: []string{"flaredb"}})
	}
	c := harness.Start(t, harness.Spec{
		HostList: hosts,
		LogLevel: "warn",
		FlareDB: &harness.FlareDBSpec{
			Members:            []string{"host1", "host2", "host3"},
			HeartbeatTimeout:   heartbeatTimeout,
			ElectionTimeout:    electionTimeout,
			LeaderLeaseTimeout: leaderLeaseTimeout,
		},
	})
	if _, err := c.WaitFlareDBLeader(t.Context(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// workerInput tells a worker what to do.
type workerInput struct {
	Kind      string   `json:"kind"` // "lin", "crash" or "watch"
	Endpoints []string `json:"endpoints"`
	ClusterID string   `json:"clusterID"`
	// CAFile, CertFile and KeyFile are the client's TLS files (the cluster
	// CA and a client certificate the harness issued from it).
	CAFile   string        `json:"caFile"`
	CertFile string        `json:"certFile"`
	KeyFile  string        `json:"keyFile"`
	Duration time.Duration `json:"duration"`
	Clients  int           `json:"clients"`
	Keys     int           `json:"keys"`
	// Stale makes the linearizability workload's reads stale (served by
	// the member without confirming leadership): the checker must then
	// find violations under partitions.
	Stale  bool   `json:"stale"`
	Output string `json:"output"`
}

// worker is a running worker process.
type worker struct {
	t      *testing.T
	in     workerInput
	logDir string
	ready  chan struct{}
	done   chan error
	start  time.Time // when the worker said it was ready
}

// startWorker starts a worker in the switch namespace and waits until it
// says its clients are ready.
func startWorker(t *testing.T, c *harness.Cluster, in workerInput) *worker {
	t.Helper()
	dir := t.TempDir()
	in.ClusterID = c.FlareDBClusterID()
	in.CAFile, in.CertFile, in.KeyFile = c.FlareDBTLSFiles()
	if in.Endpoints == nil {
		in.Endpoints = c.FlareDBEndpoints()
	}
	in.Output = filepath.Join(dir, "output.json")
	inPath := filepath.Join(dir, "input.json")
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "worker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.SwitchCommand(t.Context(), self, "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"="+inPath)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &worker{t: t, in: in, logDir: dir, ready: make(chan struct{}), done: make(chan error, 1)}
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				once.Do(func() { close(w.ready) })
			}
		}
		err := cmd.Wait()
		logf.Close()
		w.done <- err
	}()
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case <-w.ready:
		w.start = time.Now()
	case err := <-w.done:
		t.Fatalf("worker exited before it was ready: %v\n%s", err, w.logTail())
	case <-time.After(30 * time.Second):
		t.Fatalf("worker not ready after 30s\n%s", w.logTail())
	}
	t.Logf("worker %s ready: %d clients for %s against %v", in.Kind, in.Clients, in.Duration, in.Endpoints)
	return w
}

// logTail is the end of the worker's stderr.
func (w *worker) logTail() string {
	b, _ := os.ReadFile(filepath.Join(w.logDir, "worker.log"))
	s := string(b)
	if len(s) > 8000 {
		s = "..." + s[len(s)-8000:]
	}
	return "--- worker log\n" + s
}

// since is the time since the worker became ready.
func (w *worker) since() time.Duration { return time.Since(w.start).Round(10 * time.Millisecond) }

// wait waits for the worker to finish and decodes its output into out.
func (w *worker) wait(timeout time.Duration, out any) {
	w.t.Helper()
	select {
	case err := <-w.done:
		if err != nil {
			w.t.Fatalf("worker failed: %v\n%s", err, w.logTail())
		}
	case <-time.After(timeout):
		w.t.Fatalf("worker did not finish within %s\n%s", timeout, w.logTail())
	}
	b, err := os.ReadFile(w.in.Output)
	if err != nil {
		w.t.Fatalf("worker output: %v\n%s", err, w.logTail())
	}
	if err := json.Unmarshal(b, out); err != nil {
		w.t.Fatalf("worker output: %v", err)
	}
}

// nemesis injects faults into the cluster and logs them.
type nemesis struct {
	t      *testing.T
	c      *harness.Cluster
	w      *worker
	rng    *rand.Rand
	faults []string
	// down are the members the nemesis killed and has not restarted.
	down map[*harness.Host]bool
}

// checkAlive fails the test if a member the nemesis did not kill has
// exited: a member that crashes by itself (or cannot start again) is a
// finding in itself, and the rest of the run would only obscure it.
func (n *nemesis) checkAlive() {
	n.t.Helper()
	for _, h := range n.c.FlareDBMembers() {
		if n.down[h] || h.State().Alive() {
			continue
		}
		tail, _ := h.LogTail(60)
		n.t.Fatalf("nemesis %s: member %s is %s although it was not killed; end of %s:\n%s", n.w.since(), h.Name(), h.State(), h.LogPath(), tail)
	}
}

func (n *nemesis) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	n.t.Logf("nemesis %7s: %s", n.w.since(), msg)
}

func (n *nemesis) record(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	n.faults = append(n.faults, msg)
	n.logf("%s", msg)
}

// leader returns the current leader, or a random member if none is agreed
// on within a few seconds (the cluster may be mid-election).
func (n *nemesis) leader() *harness.Host {
	h, err := n.c.WaitFlareDBLeader(n.t.Context(), 5*time.Second)
	if err != nil {
		n.logf("no leader: %v", err)
		ms := n.c.FlareDBMembers()
		return ms[n.rng.IntN(len(ms))]
	}
	return h
}

// follower returns a running member other than leader.
func (n *nemesis) follower(leader *harness.Host) *harness.Host {
	var fs []*harness.Host
	for _, h := range n.c.FlareDBMembers() {
		if h != leader {
			fs = append(fs, h)
		}
	}
	return fs[n.rng.IntN(len(fs))]
}

// others returns the members other than h.
func (n *nemesis) others(h *harness.Host) []*harness.Host {
	var out []*harness.Host
	for _, m := range n.c.FlareDBMembers() {
		if m != h {
			out = append(out, m)
		}
	}
	return out
}

func (n *nemesis) check(err error) {
	n.t.Helper()
	if err != nil {
		n.t.Fatalf("nemesis: %v", err)
	}
}

// sleep waits d unless the test ends.
func (n *nemesis) sleep(d time.Duration) {
	select {
	case <-n.t.Context().Done():
	case <-time.After(d):
	}
}

func (n *nemesis) kill(h *harness.Host, role string) {
	n.checkAlive()
	n.record("SIGKILL %s (%s)", h.Name(), role)
	n.check(h.Kill())
	if n.down == nil {
		n.down = map[*harness.Host]bool{}
	}
	n.down[h] = true
}

// terminate stops h gracefully (SIGTERM): a leader hands leadership over
// first.
func (n *nemesis) terminate(h *harness.Host, role string) {
	n.checkAlive()
	n.record("SIGTERM %s (%s)", h.Name(), role)
	n.check(h.Terminate(n.t.Context(), 10*time.Second))
	if n.down == nil {
		n.down = map[*harness.Host]bool{}
	}
	n.down[h] = true
}

func (n *nemesis) restart(h *harness.Host) {
	n.logf("restart %s", h.Name())
	n.check(h.Start(n.t.Context()))
	delete(n.down, h)
}

// healAll removes every network fault and makes sure every member runs.
func (n *nemesis) healAll() {
	n.checkAlive()
	n.check(n.c.Heal())
	for _, h := range n.c.FlareDBMembers() {
		switch h.State().Phase {
		case harness.PhaseStopped:
			n.check(h.Continue())
		case harness.PhaseRunning:
		default:
			n.check(h.Start(n.t.Context()))
		}
	}
}

// waitMembersCaughtUp waits until every member runs and reports at least
// the leader's commit index, so the next fault does not hit a member that
// is still catching up (which would cost the cluster its quorum).
func waitMembersCaughtUp(t *testing.T, c *harness.Cluster, timeout time.Duration) {
	t.Helper()
	ctx := t.Context()
	err := harness.WaitFor(ctx, timeout, "every flaredb member to catch up with the leader", func(ctx context.Context) (bool, string) {
		leader, err := c.FlareDBLeader(ctx)
		if err != nil {
			return false, err.Error()
		}
		ls, err := c.FlareDBStatus(ctx, leader)
		if err != nil {
			return false, err.Error()
		}
		var lag []string
		for _, h := range c.FlareDBMembers() {
			st, err := c.FlareDBStatus(ctx, h)
			if err != nil {
				lag = append(lag, err.Error())
				continue
			}
			if st.AppliedIndex+64 < ls.CommitIndex {
				lag = append(lag, fmt.Sprintf("%s applied %d < leader commit %d", h.Name(), st.AppliedIndex, ls.CommitIndex))
			}
		}
		return len(lag) == 0, strings.Join(lag, "; ")
	})
	if err != nil {
		t.Fatal(err)
	}
}

func hostsOf(hs ...*harness.Host) []*harness.Host { return hs }

func names(hs []*harness.Host) string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name())
	}
	return strings.Join(out, "+")
}
