// Package nodeproc builds the real ultracloud binary and runs it as a child
// process for end-to-end tests and benchmarks: `ultracloud up` nodes on free
// loopback ports with their data, home and client config in directories the
// caller owns, and one-shot CLI invocations against them.
//
// It owns child processes only: every process it starts is waited for by the
// value that started it, and every wait polls a condition with a deadline
// and says what it waited for. It must not import internal/ packages (it
// drives the binary from outside, as a user would) and holds no global
// state.
package nodeproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// MainPackage is the import path of the binary under test.
const MainPackage = "github.com/ultracloud/ultracloud/cmd/ultracloud"

// Binary is a freshly built ultracloud executable in a temporary directory.
type Binary struct {
	// Path is the executable.
	Path string
	dir  string
}

// Build compiles MainPackage into a new temporary directory. The caller
// must Close the Binary to remove it. The build runs in the current working
// directory, which must be inside the module (go test runs tests in their
// package directory, so it is).
func Build(ctx context.Context) (*Binary, error) {
	goTool, err := findGo()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ultracloud-bin-*")
	if err != nil {
		return nil, fmt.Errorf("nodeproc: creating build directory: %w", err)
	}
	path := filepath.Join(dir, "ultracloud")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", path, MainPackage)
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nodeproc: go build %s: %w\n%s", MainPackage, err, out)
	}
	return &Binary{Path: path, dir: dir}, nil
}

// findGo locates the go command: on PATH, else beside the running
// toolchain's GOROOT, else the default install location.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	var candidates []string
	if root := os.Getenv("GOROOT"); root != "" {
		candidates = append(candidates, filepath.Join(root, "bin", "go"))
	}
	candidates = append(candidates, "/usr/local/go/bin/go")
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("nodeproc: the go command is not on PATH nor in %v (GOOS=%s)", candidates, runtime.GOOS)
}

// Close removes the binary and its directory.
func (b *Binary) Close() error {
	if err := os.RemoveAll(b.dir); err != nil {
		return fmt.Errorf("nodeproc: removing %s: %w", b.dir, err)
	}
	return nil
}

// Home is an isolated user environment: HOME and XDG directories under one
// root, so the client config `ultracloud up` writes never touches the real
// user's files. Every command nodeproc runs uses a Home's environment.
type Home struct {
	// Root holds home/, config/ and data/.
	Root string
	// Extra are further environment variables ("KEY=value") for every
	// command, e.g. ULTRACLOUD_ENDPOINT.
	Extra []string
}

// NewHome creates the directories of a Home under root (typically
// t.TempDir()).
func NewHome(root string) (Home, error) {
	h := Home{Root: root}
	for _, d := range []string{h.HomeDir(), h.ConfigDir(), h.DataHome()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return h, fmt.Errorf("nodeproc: creating %s: %w", d, err)
		}
	}
	return h, nil
}

// HomeDir is $HOME.
func (h Home) HomeDir() string { return filepath.Join(h.Root, "home") }

// ConfigDir is $XDG_CONFIG_HOME.
func (h Home) ConfigDir() string { return filepath.Join(h.Root, "config") }

// DataHome is $XDG_DATA_HOME.
func (h Home) DataHome() string { return filepath.Join(h.Root, "data") }

// ClientConfigPath is where `ultracloud up` writes, and the CLI reads, the
// client config.
func (h Home) ClientConfigPath() string {
	return filepath.Join(h.ConfigDir(), "ultracloud", "config.yaml")
}

// Environ is the process environment for commands in this Home: the
// current environment without HOME, XDG_* and ULTRACLOUD_* variables (so a
// developer's settings cannot leak into a test), plus this Home's
// directories and Extra.
func (h Home) Environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "XDG_") || strings.HasPrefix(k, "ULTRACLOUD_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+h.HomeDir(), "XDG_CONFIG_HOME="+h.ConfigDir(), "XDG_DATA_HOME="+h.DataHome())
	return append(env, h.Extra...)
}

// Result is the outcome of a finished command.
type Result struct {
	Args     []string
	Stdout   string
	Stderr   string
	ExitCode int
}

// String summarises the result for test failure messages.
func (r Result) String() string {
	return fmt.Sprintf("ultracloud %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.ExitCode, r.Stdout, r.Stderr)
}

// Run runs the binary with args in home's environment, feeding stdin (may
// be nil), and waits for it to exit. A non-zero exit is reported in the
// Result, not as an error; the error is for failures to run at all,
// including ctx ending first.
func (b *Binary) Run(ctx context.Context, home Home, stdin []byte, args ...string) (Result, error) {
	res := Result{Args: args}
	cmd := exec.CommandContext(ctx, b.Path, args...)
	cmd.Env = home.Environ()
	cmd.Dir = home.Root
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("nodeproc: ultracloud %s: %w (stderr: %s)", strings.Join(args, " "), ctx.Err(), res.Stderr)
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
		return res, nil
	case err != nil:
		return res, fmt.Errorf("nodeproc: ultracloud %s: %w", strings.Join(args, " "), err)
	}
	return res, nil
}

// SyncBuffer is a bytes.Buffer safe for one writer (a child's output) and
// concurrent readers (the test polling it).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Lines returns the complete lines written so far.
func (s *SyncBuffer) Lines() []string {
	text := s.String()
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	} else {
		return nil
	}
	return strings.Split(text, "\n")
}

// Proc is a long-running child process (a node, or a CLI watch) whose exit
// is collected by the one goroutine it owns. Stop, Kill or Wait must be
// called before the test ends; each waits for that goroutine.
type Proc struct {
	Args   []string
	cmd    *exec.Cmd
	stdout *SyncBuffer
	stderr *SyncBuffer
	exited chan struct{}
	err    error // cmd.Wait's result; valid after exited is closed
}

// Start starts the binary with args in home's environment without waiting
// for it to finish.
func (b *Binary) Start(home Home, args ...string) (*Proc, error) {
	p := &Proc{Args: args, stdout: &SyncBuffer{}, stderr: &SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(b.Path, args...)
	p.cmd.Env = home.Environ()
	p.cmd.Dir = home.Root
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("nodeproc: starting ultracloud %s: %w", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdout is everything the process printed on stdout so far.
func (p *Proc) Stdout() *SyncBuffer { return p.stdout }

// Stderr is everything the process printed on stderr so far.
func (p *Proc) Stderr() *SyncBuffer { return p.stderr }

// Exited is closed when the process has exited and its output is complete.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitCode is the exit status after Exited; -1 if a signal ended it.
func (p *Proc) ExitCode() int {
	<-p.exited
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig unless the process has already exited.
func (p *Proc) Signal(sig os.Signal) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("nodeproc: signal %v to pid %d: %w", sig, p.Pid(), err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit code.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.ExitCode(), nil
	case <-t.C:
		return 0, fmt.Errorf("nodeproc: ultracloud %s (pid %d) did not exit within %s", strings.Join(p.Args, " "), p.Pid(), timeout)
	}
}

// Stop sends SIGTERM and waits up to grace for the exit code. If the
// process is still running after grace it is killed and an error returned.
func (p *Proc) Stop(grace time.Duration) (int, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	code, err := p.Wait(grace)
	if err != nil {
		_ = p.Kill()
		return code, fmt.Errorf("after SIGTERM: %w", err)
	}
	return code, nil
}

// Kill sends SIGKILL and waits for the process to be gone. It is safe to
// call on an exited process (and so serves as a cleanup).
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if _, err := p.Wait(30 * time.Second); err != nil {
		return fmt.Errorf("after SIGKILL: %w", err)
	}
	return nil
}

// WaitFor polls cond every 10ms until it returns true, fails, the deadline
// passes or ctx ends. what names the condition in the timeout error.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	return WaitEvery(ctx, 10*time.Millisecond, timeout, what, cond)
}

// WaitEvery is WaitFor with a polling interval, for conditions that are
// expensive to check.
func WaitEvery(ctx context.Context, interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: gave up after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitForLine waits until the process has printed a stdout line containing
// substr, and fails early if the process exits first.
func (p *Proc) WaitForLine(ctx context.Context, timeout time.Duration, substr string) error {
	return WaitFor(ctx, timeout, fmt.Sprintf("a stdout line of `ultracloud %s` containing %q", strings.Join(p.Args, " "), substr), func() (bool, error) {
		if strings.Contains(p.stdout.String(), substr) {
			return true, nil
		}
		select {
		case <-p.exited:
			if strings.Contains(p.stdout.String(), substr) {
				return true, nil
			}
			return false, fmt.Errorf("process exited with code %d; stderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
		default:
			return false, nil
		}
	})
}

// NodeOptions configure an `ultracloud up` node.
type NodeOptions struct {
	// Home is the user environment (required).
	Home Home
	// DataDir is --data-dir (required); reuse it to restart on the same data.
	DataDir string
	// LogLevel is --log-level when set.
	LogLevel string
	// ShutdownGrace is --shutdown-grace when non-zero.
	ShutdownGrace time.Duration
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// ReadyTimeout bounds the wait for the node to be ready (default 30s).
	ReadyTimeout time.Duration
	// PickPort returns the port to try next (default FreePort).
	PickPort func() (int, error)
}

// Node is a running `ultracloud up`.
type Node struct {
	*Proc
	// URL is the API base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Token is the admin bearer token from DataDir/admin-token.
	Token string
	// AdminPassword is the first admin user's password, which the node
	// prints once when it creates that user ("" on later starts).
	AdminPassword string
	// Opts are the options it was started with.
	Opts NodeOptions
}

// readyLine is the last line `ultracloud up` prints once it is ready and has
// written the client config (the "is ready." line comes before the config
// is written, so it is not enough for a CLI call to work).
const readyLine = "Try: ultracloud status"

// StartNode runs `ultracloud up` on a free loopback port and waits until it
// is ready and its client config is written. The port is found by listening
// on port 0 and closing; if another process takes it in between, the node
// fails with "address already in use" and StartNode tries another port.
func (b *Binary) StartNode(ctx context.Context, o NodeOptions) (*Node, error) {
	if o.DataDir == "" || o.Home.Root == "" {
		return nil, errors.New("nodeproc: NodeOptions.Home and DataDir are required")
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.PickPort == nil {
		o.PickPort = FreePort
	}
	const attempts = 5
	var lastErr error
	for range attempts {
		port, err := o.PickPort()
		if err != nil {
			return nil, err
		}
		// Every other listener the node's components declare (chainfire's
		// client and peer URLs, flaredb's Raft and API addresses) gets a
		// free port too, so nodes of tests running in parallel never
		// collide on the defaults.
		args := []string{"up", "--data-dir", o.DataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port)}
		for _, f := range node.Flags() {
			if f.Listener == "" || f.Name == "listen" {
				continue
			}
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			args = append(args, "--"+f.Name, fmt.Sprintf(f.Listener, p))
		}
		if o.LogLevel != "" {
			args = append(args, "--log-level", o.LogLevel)
		}
		if o.ShutdownGrace != 0 {
			args = append(args, "--shutdown-grace", o.ShutdownGrace.String())
		}
		args = append(args, o.ExtraArgs...)
		p, err := b.Start(o.Home, args...)
		if err != nil {
			return nil, err
		}
		err = waitReady(ctx, p, o.ReadyTimeout)
		if err == nil {
			n := &Node{Proc: p, Opts: o}
			if err := n.readEndpoint(); err != nil {
				return nil, errors.Join(err, p.Kill())
			}
			return n, nil
		}
		_ = p.Kill()
		if !strings.Contains(p.Stderr().String(), "address already in use") {
			return nil, fmt.Errorf("nodeproc: starting node: %w", err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("nodeproc: starting node: every one of %d free ports was taken before the node bound it: %w", attempts, lastErr)
}

// rollbackLine is logged when a node stops components it had started,
// which before readiness means the start failed.
const rollbackLine = "msg=\"component stopping\""

// waitReady waits for p to print readyLine. A node whose start fails may
// not exit by itself (a component failing before the HTTP listener binds
// leaves `up` blocked until a signal), so a rollback logged before
// readiness counts as a failed start: the node is then sent SIGTERM so that
// it prints the reason, which the returned error includes.
func waitReady(ctx context.Context, p *Proc, timeout time.Duration) error {
	what := fmt.Sprintf("`ultracloud %s` to print %q", strings.Join(p.Args, " "), readyLine)
	err := WaitFor(ctx, timeout, what, func() (bool, error) {
		if strings.Contains(p.Stdout().String(), readyLine) {
			return true, nil
		}
		select {
		case <-p.Exited():
			return false, fmt.Errorf("the node exited with code %d", p.ExitCode())
		default:
		}
		if strings.Contains(p.Stderr().String(), rollbackLine) {
			return false, errors.New("the node rolled back its start")
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	if _, werr := p.Stop(10 * time.Second); werr != nil {
		err = errors.Join(err, werr)
	}
	return fmt.Errorf("%w; stderr:\n%s", err, p.Stderr().String())
}

// readEndpoint takes the API URL from the node's banner and the token from
// its token file.
func (n *Node) readEndpoint() error {
	sc := bufio.NewScanner(strings.NewReader(n.Stdout().String()))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "API:"); ok {
			n.URL = strings.TrimSpace(rest)
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "Admin user:"); ok {
			if _, pw, ok := strings.Cut(rest, "password "); ok {
				n.AdminPassword = strings.TrimSpace(pw)
			}
		}
	}
	if n.URL == "" {
		return fmt.Errorf("nodeproc: node printed no API: line; stdout:\n%s", n.Stdout().String())
	}
	b, err := os.ReadFile(n.TokenPath())
	if err != nil {
		return fmt.Errorf("nodeproc: reading admin token: %w", err)
	}
	n.Token = strings.TrimSpace(string(b))
	if n.Token == "" {
		return fmt.Errorf("nodeproc: admin token file %s is empty", n.TokenPath())
	}
	return nil
}

// TokenPath is the admin token file in the node's data directory.
func (n *Node) TokenPath() string { return filepath.Join(n.Opts.DataDir, "admin-token") }

// KeyPath is iam's at-rest encryption key file in the node's data
// directory.
func (n *Node) KeyPath() string { return filepath.Join(n.Opts.DataDir, "iam-encryption-key") }

// Addr is the API's host:port.
func (n *Node) Addr() string { return strings.TrimPrefix(n.URL, "http://") }

// FreePort returns a loopback TCP port that was free a moment ago (see
// testkit.FreePort for how ports are chosen and which races remain).
func FreePort() (int, error) {
	port, err := testkit.FreePortErr()
	if err != nil {
		return 0, fmt.Errorf("nodeproc: finding a free port: %w", err)
	}
	return port, nil
}
