//go:build linux

package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/pkg/client"
)

// Name is the host's (and node's) name.
func (h *Host) Name() string { return h.name }

// Namespace is the host's network namespace; enter it with
// `ip netns exec <Namespace> bash`.
func (h *Host) Namespace() string { return h.ns }

// Addr is the host's underlay address.
func (h *Host) Addr() netip.Addr { return h.addrs[0] }

// AddrOn returns the host's address on the named network.
func (h *Host) AddrOn(network string) (netip.Addr, bool) {
	for j, n := range h.c.plan.networks {
		if n.name == network && h.addrs[j].IsValid() {
			return h.addrs[j], true
		}
	}
	return netip.Addr{}, false
}

// allAddrs returns the host's addresses on every network it is on.
func (h *Host) allAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range h.addrs {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// interfaces returns the host's network interfaces (eth<j> for network j).
func (h *Host) interfaces() []string {
	var out []string
	for j, a := range h.addrs {
		if a.IsValid() {
			out = append(out, fmt.Sprintf("eth%d", j))
		}
	}
	return out
}

// APIAddr is where the host's API listens.
func (h *Host) APIAddr() netip.AddrPort {
	return netip.AddrPortFrom(h.Addr(), uint16(h.c.plan.apiPort))
}

// URL is the host's API base URL, e.g. http://10.99.0.11:7700. It is
// reachable only from inside the run's namespaces (see Cluster.HTTPClient).
func (h *Host) URL() string { return "http://" + h.APIAddr().String() }

// ChainfireURL is the host's chainfire client URL (https on its underlay
// address) when it is a Spec.Chainfire member, else "".
func (h *Host) ChainfireURL() string {
	if h.c.plan.chainfire == nil {
		return ""
	}
	return h.c.plan.chainfireURL(h.name, h.c.plan.chainfire.clientPort)
}

// ChainfireEndpoint is ChainfireURL without the scheme (host:port), as
// clientv3 endpoints are given, or "" when the host is not a member.
func (h *Host) ChainfireEndpoint() string {
	return strings.TrimPrefix(h.ChainfireURL(), "https://")
}

// Dir is the host's directory: node.yaml, data/ and server.log.
func (h *Host) Dir() string { return h.dir }

// DataDir is the node's dataDir.
func (h *Host) DataDir() string { return h.dataDir }

// ConfigPath is the node's node.yaml.
func (h *Host) ConfigPath() string { return h.configPath }

// LogPath is the file the server's stdout and stderr are appended to.
func (h *Host) LogPath() string { return h.logPath }

// JoinTokenPath is where a worker (HostSpec.ControlPlane) reads its join
// token: write it there (mode 0600) before starting the host.
func (h *Host) JoinTokenPath() string { return joinTokenPath(h.dataDir) }

// TokenPath is the admin token file the server creates on first start.
func (h *Host) TokenPath() string { return h.dataDir + "/admin-token" }

// Token reads the admin bearer token. It changes after Wipe.
func (h *Host) Token() (string, error) {
	b, err := os.ReadFile(h.TokenPath())
	if err != nil {
		return "", fmt.Errorf("harness: %s: reading admin token (is the node started?): %w", h.name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Client returns an SDK client for the host's API, authenticated with the
// admin token and connecting from the switch namespace.
func (h *Host) Client() (*client.Client, error) {
	tok, err := h.Token()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{Endpoint: h.URL(), Token: tok, HTTPClient: h.c.observer, UserAgent: "ultracloud-harness"})
	if err != nil {
		return nil, fmt.Errorf("harness: %s: %w", h.name, err)
	}
	return c, nil
}

// HTTPClient returns a client whose connections start inside this host's
// namespace, so requests to other hosts cross the network (and its faults)
// as the node's own traffic would.
func (h *Host) HTTPClient() *http.Client { return h.http }

// Dial opens a connection from inside this host's namespace. address must
// be IP:port.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return h.c.dialers.dial(ctx, h.ns, network, address)
}

// Command returns a command that runs name inside the host's namespace
// (through `ip netns exec`), for callers that want to wire it themselves.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

// Exec runs name inside the host's namespace and returns its combined
// output; a failure includes the output. Processes it leaves behind are
// killed when the cluster closes.
func (h *Host) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := inNS(ctx, h.ns, "", name, args...)
	if err != nil {
		return out, fmt.Errorf("harness: %s: %w", h.name, err)
	}
	return out, nil
}

// State returns the server process's state.
func (h *Host) State() ProcState {
	h.mu.Lock()
	p := h.proc
	h.mu.Unlock()
	return p.state()
}

// PID is the server's process ID (0 if never started).
func (h *Host) PID() int { return h.State().PID }

// Start starts the server with the host's config and data. It does not wait
// for readiness (see WaitReady).
func (h *Host) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("harness: %s: start: %w", h.name, err)
	}
	h.mu.Lock()
	if h.c.closing.Load() {
		h.mu.Unlock()
		return fmt.Errorf("harness: %s: start: the cluster is closed", h.name)
	}
	if s := h.proc.state(); s.Alive() {
		h.mu.Unlock()
		return fmt.Errorf("harness: %s: start: already %s", h.name, s)
	}
	h.starts++
	p, err := launch(launchOptions{
		ns:       h.ns,
		binary:   h.c.opts.Binary,
		config:   h.configPath,
		logPath:  h.logPath,
		detached: h.c.opts.Detached,
		label:    fmt.Sprintf("%s start #%d", h.name, h.starts),
	}, &h.c.procs)
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("harness: %s: %w", h.name, err)
	}
	h.proc = p
	h.mu.Unlock()
	h.c.logf("harness: %s started (pid %d)", h.name, p.pid)
	return h.c.saveState()
}

func (h *Host) signal(sig syscall.Signal) error {
	h.mu.Lock()
	p := h.proc
	h.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: %s was never started", ErrNotRunning, h.name)
	}
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("harness: %s: %w", h.name, err)
	}
	return nil
}

func (h *Host) waitPhase(ctx context.Context, timeout time.Duration, what string, ok func(ProcState) bool) error {
	return WaitFor(ctx, timeout, h.name+" "+what, func(context.Context) (bool, string) {
		s := h.State()
		return ok(s), s.String()
	})
}

// Kill sends SIGKILL and waits for the process to be gone. Data stays.
func (h *Host) Kill() error {
	if err := h.signal(syscall.SIGKILL); err != nil {
		return err
	}
	return h.waitPhase(context.Background(), 10*time.Second, "to exit after SIGKILL", func(s ProcState) bool { return !s.Alive() })
}

// Stop freezes the server with SIGSTOP: it keeps its sockets and memory but
// answers nothing. Continue resumes it.
func (h *Host) Stop() error {
	if err := h.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	return h.waitPhase(context.Background(), 5*time.Second, "to stop after SIGSTOP", func(s ProcState) bool { return s.Phase == PhaseStopped })
}

// Continue resumes a server frozen by Stop (SIGCONT).
func (h *Host) Continue() error {
	if err := h.signal(syscall.SIGCONT); err != nil {
		return err
	}
	return h.waitPhase(context.Background(), 5*time.Second, "to run after SIGCONT", func(s ProcState) bool { return s.Phase == PhaseRunning })
}

// Terminate asks the server to shut down (SIGTERM, plus SIGCONT in case it
// is stopped) and waits up to grace, then kills it. A process that is not
// running is not an error.
func (h *Host) Terminate(ctx context.Context, grace time.Duration) error {
	if !h.State().Alive() {
		return nil
	}
	if err := h.signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, ErrNotRunning) {
			return nil
		}
		return err
	}
	_ = h.signal(syscall.SIGCONT)
	err := h.waitPhase(ctx, grace, "to exit after SIGTERM", func(s ProcState) bool { return !s.Alive() })
	if err == nil {
		return nil
	}
	h.c.logf("harness: %s did not stop within %s; killing it", h.name, grace)
	if kerr := h.Kill(); kerr != nil && !errors.Is(kerr, ErrNotRunning) {
		return errors.Join(err, kerr)
	}
	return nil
}

// Restart stops the server (gracefully; see Terminate) if it is alive and
// starts it again on the same data. It does not wait for readiness.
func (h *Host) Restart(ctx context.Context) error {
	if err := h.Terminate(ctx, 10*time.Second); err != nil {
		return err
	}
	return h.Start(ctx)
}

// Wipe removes the node's data directory (and with it the admin token) and
// leaves an empty one. The server must not be alive: Kill or Terminate it
// first; Start then comes up as a brand-new node.
func (h *Host) Wipe() error {
	if s := h.State(); s.Alive() {
		return fmt.Errorf("harness: %s: wipe needs the server down (it is %s): Kill or Terminate it first", h.name, s)
	}
	if err := os.RemoveAll(h.dataDir); err != nil {
		return fmt.Errorf("harness: %s: wipe: %w", h.name, err)
	}
	if err := os.MkdirAll(h.dataDir, 0o700); err != nil {
		return fmt.Errorf("harness: %s: wipe: %w", h.name, err)
	}
	return nil
}

// WaitHealthy waits until the host's /healthz answers 200. It fails at once
// if the server process has exited, with the end of its log.
func (h *Host) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	return h.waitPath(ctx, timeout, "/healthz")
}

// WaitReady waits until the host's /readyz answers 200 (every component
// ready). It fails at once if the server process has exited.
func (h *Host) WaitReady(ctx context.Context, timeout time.Duration) error {
	return h.waitPath(ctx, timeout, "/readyz")
}

func (h *Host) waitPath(ctx context.Context, timeout time.Duration, path string) error {
	return waitFor(ctx, timeout, h.name+" "+path+" to answer 200", func(ctx context.Context) (bool, string, error) {
		return h.probe(ctx, path)
	})
}

// probe checks one health path from the switch namespace. A non-nil error
// means waiting is pointless: the process is gone.
func (h *Host) probe(ctx context.Context, path string) (ok bool, state string, err error) {
	s := h.State()
	if s.Phase == PhaseExited || s.Phase == PhaseNotStarted {
		tail, _ := h.LogTail(15)
		return false, "", fmt.Errorf("%s server is %s; end of %s:\n%s", h.name, s, h.logPath, tail)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, body, gerr := get(pctx, h.c.observer, h.URL()+path, "")
	switch {
	case gerr != nil:
		return false, fmt.Sprintf("GET %s: %v (process %s)", path, gerr, s), nil
	case status != http.StatusOK:
		return false, fmt.Sprintf("GET %s: %d %s (process %s)", path, status, body, s), nil
	}
	return true, "", nil
}

// Get sends GET path to the host's API from the switch namespace, with the
// admin token if the host has one, and returns the status and body.
func (h *Host) Get(ctx context.Context, path string) (int, string, error) {
	tok, _ := h.Token()
	return get(ctx, h.c.observer, h.URL()+path, tok)
}

// get performs one GET and returns the status and (trimmed, bounded) body.
func get(ctx context.Context, hc *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", fmt.Errorf("harness: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("harness: reading %s: %w", url, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// LogTail returns the last n lines of the host's server log.
func (h *Host) LogTail(n int) (string, error) {
	f, err := os.Open(h.logPath)
	if err != nil {
		return "", fmt.Errorf("harness: %s: %w", h.name, err)
	}
	defer f.Close()
	const window = 64 << 10
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("harness: %s: %w", h.name, err)
	}
	off := max(fi.Size()-window, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("harness: %s: reading log: %w", h.name, err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))) + "\n", nil
}
