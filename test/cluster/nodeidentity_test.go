//go:build linux

package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/test/harness"
)

// agentRound is one line of the test agent's output (testagent.Round).
type agentRound struct {
	Round         int               `json:"round"`
	Principal     string            `json:"principal"`
	WhoAmI        int               `json:"whoami"`
	Status        int               `json:"status"`
	ListUsers     int               `json:"listUsers"`
	CreateProject int               `json:"createProject"`
	KeyRefused    bool              `json:"keyRefused"`
	Errors        map[string]string `json:"errors"`
}

// agent is a running test agent inside a host's namespace.
type agent struct {
	cmd    *exec.Cmd
	rounds chan agentRound
	done   chan error // Wait's result, once stdout is drained
	once   sync.Once
}

// buildAgent builds test/cluster/testagent once for the test.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testagent")
	out, err := exec.Command("go", "build", "-o", bin, "./testagent").CombinedOutput()
	if err != nil {
		t.Fatalf("building the test agent: %v\n%s", err, out)
	}
	return bin
}

// startAgent runs the agent binary in h's namespace, in a process group
// of its own (so a kill reaches it whatever `ip netns exec` does), and
// feeds its output lines to rounds. It is killed when the test ends.
func startAgent(t *testing.T, h *harness.Host, bin string, args ...string) *agent {
	t.Helper()
	cmd := h.Command(context.Background(), bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(h.Dir(), "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	a := &agent{cmd: cmd, rounds: make(chan agentRound, 4096), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r agentRound
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				select {
				case a.rounds <- r:
				default: // nobody reads that far behind; drop
				}
			}
		}
		close(a.rounds)
		a.done <- cmd.Wait()
		logf.Close()
	}()
	t.Cleanup(func() { a.kill(t) })
	return a
}

// kill sends SIGKILL to the agent's process group and waits for it.
func (a *agent) kill(t *testing.T) {
	a.once.Do(func() {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		for range a.rounds { // drain, so the reader reaches Wait
		}
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			t.Errorf("the test agent (pid %d) did not exit after SIGKILL", a.cmd.Process.Pid)
		}
	})
}

// next returns the agent's next round, failing after timeout or if the
// agent exits.
func (a *agent) next(t *testing.T, h *harness.Host, timeout time.Duration) agentRound {
	t.Helper()
	select {
	case r, ok := <-a.rounds:
		if !ok {
			log, _ := os.ReadFile(filepath.Join(h.Dir(), "agent.log"))
			t.Fatalf("the test agent exited\n%s", log)
		}
		return r
	case <-time.After(timeout):
		t.Fatalf("no round from the test agent within %s", timeout)
	}
	return agentRound{}
}

// expectRole reads n rounds and checks each is what the node role allows
// and refuses.
func (a *agent) expectRole(t *testing.T, h *harness.Host, n int) {
	t.Helper()
	for range n {
		r := a.next(t, h, 30*time.Second)
		if r.WhoAmI != 200 || r.Principal != "node:worker" || r.Status != 200 || r.ListUsers != 403 || r.CreateProject != 403 {
			t.Fatalf("round %+v: want whoami 200 as node:worker, status 200, list users 403, create project 403", r)
		}
	}
}

// cli runs `ultracloud ARGS` inside h's namespace against h's API with the
// break-glass token and a client config of its own.
func cli(t *testing.T, h *harness.Host, args ...string) []byte {
	t.Helper()
	tok, err := h.Token()
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(t.Context(), harness.Binary(t), append(args, "--endpoint", h.URL(), "--token", tok)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ultracloud %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestWorkerAgentActsAsItsNode: a worker host that runs no iam runs a host
// agent against a three-node control plane (chainfire, flaredb and iam on
// each). The agent enrolls with the one-time join token of a
// NodeCredential made with the CLI, acts as node:worker, may read node
// status and is refused listing users and creating projects; SIGKILLed and
// started again with the join token file gone, it works on its saved
// credential; once the NodeCredential is deleted its calls are refused.
func TestWorkerAgentActsAsItsNode(t *testing.T) {
	cp := []string{"chainfire", "flaredb", "iam"}
	c := harness.Start(t, harness.Spec{
		HostList: []harness.HostSpec{
			{Name: "host1", Roles: cp}, {Name: "host2", Roles: cp}, {Name: "host3", Roles: cp},
			// The worker runs no iam (chainfire only stands in for the
			// host agents' roles to come).
			{Name: "worker", Roles: []string{"chainfire"}},
		},
		LogLevel:  "warn",
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}},
		FlareDB:   &harness.FlareDBSpec{Members: []string{"host1", "host2", "host3"}},
	})
	bin := buildAgent(t)
	host1, host2, worker := c.Host("host1"), c.Host("host2"), c.Host("worker")

	// The operator creates the credential on the control plane and puts
	// the join token on the worker.
	var created struct {
		Status struct {
			Phase     string `json:"phase"`
			JoinToken string `json:"joinToken"`
		} `json:"status"`
	}
	out := cli(t, host1, "iam", "node-credential", "create", "worker", "--ttl", "30m", "-o", "json")
	if err := json.Unmarshal(out, &created); err != nil || created.Status.Phase != "Pending" || !strings.HasPrefix(created.Status.JoinToken, "ucj_") {
		t.Fatalf("node-credential create -o json: %v\n%s", err, out)
	}
	agentDir := filepath.Join(worker.Dir(), "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		t.Fatal(err)
	}
	joinFile := filepath.Join(agentDir, "join-token")
	if err := os.WriteFile(joinFile, []byte(created.Status.JoinToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var endpoints []string
	for _, h := range []*harness.Host{host1, host2, c.Host("host3")} {
		endpoints = append(endpoints, h.URL())
	}
	args := []string{"-node", "worker", "-data-dir", agentDir, "-endpoints", strings.Join(endpoints, ","),
		"-join-token-file", joinFile, "-rounds", "1500", "-interval", "100ms"}

	a := startAgent(t, worker, bin, args...)
	a.expectRole(t, worker, 5)
	if list := string(cli(t, host2, "iam", "node-credential", "list")); !strings.Contains(list, "worker") || !strings.Contains(list, "Enrolled") {
		t.Fatalf("node-credential list after enrollment:\n%s", list)
	}

	// SIGKILL the agent; with the join token gone it must come back on its
	// saved credential, with no human involved.
	a.kill(t)
	if err := os.Remove(joinFile); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(agentDir, "node-credential")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the saved credential: %v (mode %v), want a 0600 file", err, fi.Mode().Perm())
	}
	a = startAgent(t, worker, bin, args...)
	a.expectRole(t, worker, 5)

	// Revoke the node: its calls are refused well within the access
	// token lifetime (the iam nodes see the delete through their policy
	// mirror at once; the token exchange is refused at once).
	cli(t, host1, "iam", "node-credential", "delete", "worker")
	deleted := time.Now()
	deadline := deleted.Add(30 * time.Second)
	for {
		r := a.next(t, worker, 30*time.Second)
		if r.WhoAmI != 200 && r.Status != 200 {
			if !(r.WhoAmI == 401 || r.KeyRefused) {
				t.Fatalf("after the delete the agent got %+v, want 401 or a refused node key", r)
			}
			t.Logf("revoked %s after the delete: %+v", time.Since(deleted).Round(time.Millisecond), r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent still works %s after its credential was deleted: %+v", time.Since(deleted), r)
		}
	}
	// And it stays refused.
	for range 3 {
		if r := a.next(t, worker, 30*time.Second); r.WhoAmI == 200 || r.Status == 200 {
			t.Fatalf("a revoked agent got through: %+v", r)
		}
	}
}
