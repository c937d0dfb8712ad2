//go:build linux

package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/internal/chainfire"
)

// Options say how Create runs a cluster.
type Options struct {
	// Binary is the ultracloud binary to run (see Binary and BuildBinary).
	Binary string
	// WorkDir holds one directory per host (node.yaml, data/, server.log).
	// If empty, Create makes a temporary directory and Close removes it.
	WorkDir string
	// Detached starts the servers in sessions of their own that outlive
	// this process, and records no owner, so Sweep leaves the run alone:
	// for `devcluster up`. The state file is then <StateDir>/<name>.json
	// and only one detached cluster of a name can exist.
	Detached bool
	// CloseOnInterrupt closes the cluster when this process gets SIGINT or
	// SIGTERM, then lets the signal take its default action. Start sets it.
	CloseOnInterrupt bool
	// NoWait returns as soon as the processes are started instead of
	// waiting for every host's /readyz.
	NoWait bool
	// ReadyTimeout bounds the wait for readiness; default 60s.
	ReadyTimeout time.Duration
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)
}

// Cluster is a running set of hosts. Its methods are safe for concurrent
// use. Close it (Start does so in t.Cleanup).
type Cluster struct {
	id       string
	prefix   string
	plan     *plan
	spec     Spec
	opts     Options
	switchNS string
	workDir  string
	// removeWorkDir: the harness made workDir and Close removes it.
	removeWorkDir bool
	statePath     string
	owner         int
	ownerStart    uint64
	created       time.Time

	hosts  []*Host
	byName map[string]*Host

	observer *http.Client
	dialers  *dialers

	mu      sync.Mutex // guards faults and inodes
	stateMu sync.Mutex // serializes state-file rewrites
	faults  *faults
	inodes  map[string]uint64 // namespace -> inode, to find processes left in it

	// procs owns the goroutines that reap child processes.
	procs sync.WaitGroup

	closing   atomic.Bool // set when Close starts; Start refuses after it
	closeOnce sync.Once
	closeErr  error
}

// Host is one host of a cluster: a network namespace with the ultracloud
// server running in it.
type Host struct {
	c     *Cluster
	name  string
	index int
	ns    string
	addrs []netip.Addr // per network of the plan; invalid if not attached

	dir        string
	dataDir    string
	configPath string
	logPath    string

	http *http.Client

	mu     sync.Mutex // guards proc and starts
	proc   *process
	starts int
}

func newID() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("harness: run id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Create builds the cluster spec describes and starts every host's server.
// It writes the run's state file before it creates anything, so a crash at
// any point leaves something Sweep can clean up; on error it removes what
// it made. Unless opts.NoWait, it returns once every host's /readyz says ok.
func Create(ctx context.Context, spec Spec, opts Options) (*Cluster, error) {
	p, err := makePlan(spec)
	if err != nil {
		return nil, err
	}
	if opts.Binary == "" {
		return nil, errors.New("harness: Options.Binary is empty: build one with BuildBinary (tests: harness.Binary(t))")
	}
	if fi, err := os.Stat(opts.Binary); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("harness: binary %s is not an executable file (build it with `go build -o %s ./cmd/ultracloud`)", opts.Binary, opts.Binary)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		id:      id,
		prefix:  NamePrefix + id + "-",
		plan:    p,
		spec:    spec,
		opts:    opts,
		created: time.Now().UTC(),
		byName:  map[string]*Host{},
		faults:  newFaults(),
		inodes:  map[string]uint64{},
	}
	c.switchNS = c.prefix + switchSuffix
	if !opts.Detached {
		c.owner, c.ownerStart = os.Getpid(), selfStart()
	}
	c.dialers = newDialers()
	c.observer = c.dialers.httpClient(c.switchNS, 10*time.Second)

	if opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", c.prefix+"*")
		if err != nil {
			return nil, fmt.Errorf("harness: work dir: %w", err)
		}
		c.workDir, c.removeWorkDir = dir, true
	} else {
		abs, err := filepath.Abs(opts.WorkDir)
		if err != nil {
			return nil, fmt.Errorf("harness: work dir %s: %w", opts.WorkDir, err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("harness: work dir: %w", err)
		}
		c.workDir = abs
	}
	for _, ph := range p.hosts {
		dir := filepath.Join(c.workDir, ph.name)
		h := &Host{
			c:          c,
			name:       ph.name,
			index:      ph.index,
			ns:         c.prefix + ph.name,
			addrs:      ph.addrs,
			dir:        dir,
			dataDir:    filepath.Join(dir, "data"),
			configPath: filepath.Join(dir, "node.yaml"),
			logPath:    filepath.Join(dir, "server.log"),
		}
		h.http = c.dialers.httpClient(h.ns, 10*time.Second)
		c.hosts = append(c.hosts, h)
		c.byName[h.name] = h
	}

	if opts.Detached {
		c.statePath = filepath.Join(StateDir, p.name+".json")
	} else {
		c.statePath = filepath.Join(StateDir, p.name+"-"+id+".json")
	}
	if err := c.createState(); err != nil {
		c.cleanupWorkDir()
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("harness: a detached cluster named %q exists (state %s): take it down first (devcluster down --name %s)", p.name, c.statePath, p.name)
		}
		return nil, err
	}
	if opts.CloseOnInterrupt {
		interrupts.add(c)
	}
	c.logf("harness: cluster %s: run %s, %d hosts, work dir %s", p.name, c.prefix, len(c.hosts), c.workDir)

	if err := c.build(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// build creates the network and starts the servers.
func (c *Cluster) build(ctx context.Context) error {
	if err := c.createNetwork(ctx); err != nil {
		return err
	}
	// An empty table in every host, so fault changes only ever replace it.
	if err := c.applyFaults(ctx); err != nil {
		return err
	}
	if cf := c.plan.chainfire; cf != nil {
		var err error
		cf.caFile, cf.caKeyFile, err = chainfire.GenerateCA(filepath.Join(c.workDir, ChainfireCADir), "harness chainfire CA "+c.plan.name)
		if err != nil {
			return fmt.Errorf("harness: chainfire CA: %w", err)
		}
	}
	if err := c.prepareFlareDB(); err != nil {
		return err
	}
	for _, h := range c.hosts {
		ph := c.plan.hosts[h.index-1]
		if err := os.MkdirAll(h.dataDir, 0o700); err != nil {
			return fmt.Errorf("harness: %s: data dir: %w", h.name, err)
		}
		cfg, err := c.plan.renderNodeConfig(ph, h.dataDir)
		if err != nil {
			return err
		}
		if err := os.WriteFile(h.configPath, cfg, 0o644); err != nil {
			return fmt.Errorf("harness: %s: writing node.yaml: %w", h.name, err)
		}
	}
	for _, h := range c.hosts {
		if c.plan.hosts[h.index-1].deferred {
			continue // the test starts it
		}
		if err := h.Start(ctx); err != nil {
			return err
		}
	}
	if c.opts.NoWait {
		return nil
	}
	return c.WaitReady(ctx, c.opts.ReadyTimeout)
}

// createNetwork makes the switch namespace with one bridge per network and
// one namespace per host with a veth into each of its networks. Every link
// is created inside the run's namespaces, never in the root namespace.
func (c *Cluster) createNetwork(ctx context.Context) error {
	var add strings.Builder
	fmt.Fprintf(&add, "netns add %s\n", c.switchNS)
	for _, h := range c.hosts {
		fmt.Fprintf(&add, "netns add %s\n", h.ns)
	}
	if _, err := run(ctx, add.String(), "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("harness: creating namespaces: %w", err)
	}
	for _, ns := range c.Namespaces() {
		inode, err := netnsInode(ns)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.inodes[ns] = inode
		c.mu.Unlock()
	}

	var sw strings.Builder
	sw.WriteString("link set lo up\n")
	for _, n := range c.plan.networks {
		fmt.Fprintf(&sw, "link add %s type bridge\n", n.bridge)
		fmt.Fprintf(&sw, "addr add %s/%d dev %s\n", n.gateway, n.prefix.Bits(), n.bridge)
		fmt.Fprintf(&sw, "link set %s up\n", n.bridge)
	}
	for _, h := range c.hosts {
		for j, n := range c.plan.networks {
			if !h.addrs[j].IsValid() {
				continue
			}
			port := fmt.Sprintf("h%dn%d", h.index, j)
			fmt.Fprintf(&sw, "link add %s type veth peer name eth%d netns %s\n", port, j, h.ns)
			fmt.Fprintf(&sw, "link set %s master %s up\n", port, n.bridge)
		}
	}
	if _, err := run(ctx, sw.String(), "ip", "-n", c.switchNS, "-batch", "-"); err != nil {
		return fmt.Errorf("harness: building switch namespace %s: %w", c.switchNS, err)
	}

	for _, h := range c.hosts {
		var b strings.Builder
		b.WriteString("link set lo up\n")
		for j, n := range c.plan.networks {
			if !h.addrs[j].IsValid() {
				continue
			}
			fmt.Fprintf(&b, "addr add %s/%d dev eth%d\n", h.addrs[j], n.prefix.Bits(), j)
			fmt.Fprintf(&b, "link set eth%d up\n", j)
		}
		if _, err := run(ctx, b.String(), "ip", "-n", h.ns, "-batch", "-"); err != nil {
			return fmt.Errorf("harness: configuring %s: %w", h.ns, err)
		}
	}
	return nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

func (c *Cluster) cleanupWorkDir() {
	if c.removeWorkDir {
		_ = os.RemoveAll(c.workDir)
	}
}

// Close stops every server (SIGTERM, SIGKILL after a short grace), removes
// the run's namespaces and with them every link, removes the state file
// and, if Create made it, the work directory. It is idempotent; concurrent
// calls wait for the first.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.teardown() })
	return c.closeErr
}

func (c *Cluster) teardown() error {
	ctx := context.Background()
	c.closing.Store(true)
	// Connection attempts in flight (an HTTP transport may still be
	// dialing for a request that gave up) end first.
	c.dialers.close()
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, h := range c.hosts {
		wg.Go(func() {
			if err := h.Terminate(ctx, 3*time.Second); err != nil && !errors.Is(err, ErrNotRunning) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Namespaces the hosts pinned under their data directories (the
	// prismnet agent's service and router namespaces) are bind mounts
	// there; detach them so the namespaces go and the directory can be
	// removed.
	if err := unmountBelow(c.workDir); err != nil {
		errs = append(errs, err)
	}
	// Deleting the namespaces kills anything left inside them (processes
	// started with Exec, say) and destroys every veth and bridge.
	for _, h := range c.hosts {
		if err := removeNamespace(ctx, h.ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeNamespace(ctx, c.switchNS); err != nil {
		errs = append(errs, err)
	}
	c.procs.Wait()
	if err := os.Remove(c.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("harness: removing state file: %w", err))
	}
	if c.removeWorkDir {
		if err := os.RemoveAll(c.workDir); err != nil {
			errs = append(errs, fmt.Errorf("harness: removing work dir: %w", err))
		}
	}
	interrupts.remove(c)
	if len(errs) > 0 {
		return fmt.Errorf("harness: closing cluster %s (%s): %w", c.plan.name, c.prefix, errors.Join(errs...))
	}
	c.logf("harness: cluster %s (%s) closed", c.plan.name, c.prefix)
	return nil
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.plan.name }

// Prefix is the run's namespace prefix, e.g. "uch-1a2b3c4d-".
func (c *Cluster) Prefix() string { return c.prefix }

// SwitchNamespace is the namespace holding the bridges; it has the .1
// address on every network and is where HTTPClient's connections start.
func (c *Cluster) SwitchNamespace() string { return c.switchNS }

// WorkDir holds the hosts' directories.
func (c *Cluster) WorkDir() string { return c.workDir }

// StatePath is the run's state file.
func (c *Cluster) StatePath() string { return c.statePath }

// Hosts returns the hosts in spec order.
func (c *Cluster) Hosts() []*Host { return append([]*Host(nil), c.hosts...) }

// Host returns the named host, or nil.
func (c *Cluster) Host(name string) *Host { return c.byName[name] }

// Namespaces returns every namespace of the run (switch first).
func (c *Cluster) Namespaces() []string {
	ns := []string{c.switchNS}
	for _, h := range c.hosts {
		ns = append(ns, h.ns)
	}
	return ns
}

// Dial opens a connection from the switch namespace, like a machine on the
// same network: partitions between hosts do not affect it.
func (c *Cluster) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return c.dialers.dial(ctx, c.switchNS, network, address)
}

// ChainfireCAFile is the PEM CA certificate of the Spec.Chainfire cluster
// (clients verify members with it), or "" without Spec.Chainfire.
func (c *Cluster) ChainfireCAFile() string {
	if c.plan.chainfire == nil {
		return ""
	}
	return filepath.Join(c.workDir, ChainfireCADir, "ca.crt")
}

// ChainfireMembers are the hosts of the Spec.Chainfire cluster, in spec
// order (nil without Spec.Chainfire).
func (c *Cluster) ChainfireMembers() []*Host {
	if c.plan.chainfire == nil {
		return nil
	}
	var hs []*Host
	for _, name := range c.plan.chainfire.members {
		hs = append(hs, c.byName[name])
	}
	return hs
}

// HTTPClient returns a client whose connections are opened inside the
// switch namespace: it reaches every host's API the way a machine on the
// same network would, without the root namespace routing to the test
// subnet. Partitions between hosts do not affect it; Loss on a host does.
// Keep-alives are off, so each request sees the network as it is now.
func (c *Cluster) HTTPClient() *http.Client { return c.observer }

// WaitReady waits until every host's /readyz answers 200, failing at once
// if a server process exits.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	return c.waitAll(ctx, timeout, "/readyz")
}

// WaitHealthy waits until every host's /healthz answers 200.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	return c.waitAll(ctx, timeout, "/healthz")
}

func (c *Cluster) waitAll(ctx context.Context, timeout time.Duration, path string) error {
	return waitFor(ctx, timeout, "every host's "+path+" to answer 200", func(ctx context.Context) (bool, string, error) {
		var waiting []string
		for _, h := range c.hosts {
			if c.plan.hosts[h.index-1].deferred && h.State().Phase == PhaseNotStarted {
				continue // never started
			}
			ok, state, err := h.probe(ctx, path)
			if err != nil {
				return false, "", err
			}
			if !ok {
				waiting = append(waiting, h.name+": "+state)
			}
		}
		return len(waiting) == 0, strings.Join(waiting, "; "), nil
	})
}

// Reachable reports whether from can reach to's API: nil if GET /healthz
// on to's underlay address, sent from inside from's namespace, answers 200
// within 2s (or ctx's deadline, if sooner).
func (c *Cluster) Reachable(ctx context.Context, from, to *Host) error {
	if err := c.checkHosts([]*Host{from, to}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, body, err := get(ctx, from.http, to.URL()+"/healthz", "")
	if err != nil {
		return fmt.Errorf("harness: %s cannot reach %s: %w", from.name, to.name, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("harness: %s reached %s but /healthz answered %d %s", from.name, to.name, status, body)
	}
	return nil
}

// Report describes the cluster for a failure message: the run, active
// faults, and per host the process state, address and the last lines of
// its log.
func (c *Cluster) Report(logLines int) string {
	var b strings.Builder
	c.mu.Lock()
	faults := c.faults.describe()
	c.mu.Unlock()
	fmt.Fprintf(&b, "cluster %s: run %s, work dir %s, faults: %s\n", c.plan.name, c.prefix, c.workDir, faults)
	for _, h := range c.hosts {
		fmt.Fprintf(&b, "--- %s (%s, %s, ns %s): last %d lines of %s\n", h.name, h.Addr(), h.State(), h.ns, logLines, h.logPath)
		tail, err := h.LogTail(logLines)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
			continue
		}
		b.WriteString(tail)
		if !strings.HasSuffix(tail, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Leftovers lists whatever of the run still exists: namespaces with its
// prefix, links in the root namespace with it in their name, processes in
// any of its namespaces (even deleted ones), live server processes and the
// state file. It is empty after a successful Close; Start's cleanup checks.
func (c *Cluster) Leftovers() []string {
	var left []string
	names, err := listNamespaces()
	if err != nil {
		left = append(left, err.Error())
	}
	for _, ns := range names {
		if strings.HasPrefix(ns, c.prefix) {
			left = append(left, "namespace "+ns)
		}
	}
	if out, err := run(context.Background(), "", "ip", "-o", "link", "show"); err != nil {
		left = append(left, err.Error())
	} else {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, c.prefix) {
				left = append(left, "root link "+strings.TrimSpace(line))
			}
		}
	}
	c.mu.Lock()
	inodes := maps.Clone(c.inodes)
	c.mu.Unlock()
	// The kernel reuses a freed namespace's inode number, so an inode that
	// now belongs to another live named namespace says nothing about us.
	others := map[uint64]bool{}
	for _, ns := range names {
		if !strings.HasPrefix(ns, c.prefix) {
			if inode, err := netnsInode(ns); err == nil {
				others[inode] = true
			}
		}
	}
	for ns, inode := range inodes {
		if others[inode] {
			continue
		}
		for _, pid := range pidsInNetns(inode) {
			left = append(left, fmt.Sprintf("process %d in namespace %s", pid, ns))
		}
	}
	for _, h := range c.hosts {
		if s := h.State(); s.Alive() {
			left = append(left, fmt.Sprintf("%s server %s", h.name, s))
		}
	}
	if _, err := os.Stat(c.statePath); err == nil {
		left = append(left, "state file "+c.statePath)
	}
	slices.Sort(left)
	return left
}

// unmountBelow lazily unmounts every mount point below dir, deepest first.
func unmountBelow(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("harness: reading mounts: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range points {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("harness: unmounting %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}
