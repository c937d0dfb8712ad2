//go:build linux

package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateDir holds one JSON state file per run. It is fixed (not an option)
// so that every run and every Sweep agree on it: Sweep treats a harness
// namespace without a state file here as an orphan.
const StateDir = "/run/ultracloud-harness"

const stateVersion = 1

// stateFile is what a run records about itself. It is written before any
// namespace exists and rewritten whenever a server (re)starts.
type stateFile struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	ID      string `json:"id"`
	Prefix  string `json:"prefix"`
	// Owner is the PID of the process that owns the run and OwnerStart its
	// start time; Owner 0 means detached (kept until `devcluster down`).
	Owner         int         `json:"owner"`
	OwnerStart    uint64      `json:"ownerStart,omitempty"`
	Created       time.Time   `json:"created"`
	Binary        string      `json:"binary"`
	WorkDir       string      `json:"workDir"`
	RemoveWorkDir bool        `json:"removeWorkDir"`
	SwitchNS      string      `json:"switchNamespace"`
	Spec          Spec        `json:"spec"`
	Hosts         []hostState `json:"hosts"`
}

type hostState struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Address   string `json:"address"`
	URL       string `json:"url"`
	Dir       string `json:"dir"`
	TokenFile string `json:"tokenFile"`
	Log       string `json:"log"`
	PID       int    `json:"pid,omitempty"`
	PIDStart  uint64 `json:"pidStart,omitempty"`
}

// createState writes the state file for the first time; it fails with an
// error wrapping fs.ErrExist if the file exists (a detached cluster of the
// same name).
func (c *Cluster) createState() error {
	b, err := c.encodeState()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return fmt.Errorf("harness: state dir: %w", err)
	}
	f, err := os.OpenFile(c.statePath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("harness: creating state file: %w", err)
	}
	_, werr := f.Write(b)
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(c.statePath)
		return fmt.Errorf("harness: writing state: %w", err)
	}
	return nil
}

// saveState rewrites the state file atomically.
func (c *Cluster) saveState() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	b, err := c.encodeState()
	if err != nil {
		return err
	}
	tmp := c.statePath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("harness: writing state: %w", err)
	}
	if err := os.Rename(tmp, c.statePath); err != nil {
		return fmt.Errorf("harness: writing state: %w", err)
	}
	return nil
}

func (c *Cluster) encodeState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := stateFile{
		Version: stateVersion, Name: c.plan.name, ID: c.id, Prefix: c.prefix,
		Owner: c.owner, OwnerStart: c.ownerStart, Created: c.created,
		Binary: c.opts.Binary, WorkDir: c.workDir, RemoveWorkDir: c.removeWorkDir,
		SwitchNS: c.switchNS, Spec: c.spec,
	}
	for _, h := range c.hosts {
		hs := hostState{Name: h.name, Namespace: h.ns, Address: h.Addr().String(), URL: h.URL(),
			Dir: h.dir, TokenFile: h.TokenPath(), Log: h.logPath}
		h.mu.Lock()
		if h.proc != nil {
			hs.PID, hs.PIDStart = h.proc.pid, h.proc.start
		}
		h.mu.Unlock()
		st.Hosts = append(st.Hosts, hs)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("harness: encoding state: %w", err)
	}
	return append(b, '\n'), nil
}

func readState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("harness: reading state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("harness: state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("harness: state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	if _, ok := isHarnessNamespace(st.Prefix + "x"); !ok {
		return nil, fmt.Errorf("harness: state file %s: bad prefix %q", path, st.Prefix)
	}
	return &st, nil
}

// Load adopts the detached cluster named name (one made by `devcluster
// up`) from its state file, to inspect, fault or Close it. Its servers are
// not children of this process; they are watched through /proc.
func Load(name string) (*Cluster, error) {
	path := filepath.Join(StateDir, name+".json")
	st, err := readState(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("harness: no cluster named %q (no %s); start one with `devcluster up`", name, path)
	}
	if err != nil {
		return nil, err
	}
	p, err := makePlan(st.Spec)
	if err != nil {
		return nil, fmt.Errorf("harness: state file %s: %w", path, err)
	}
	c := &Cluster{
		id: st.ID, prefix: st.Prefix, plan: p, spec: st.Spec,
		opts:     Options{Binary: st.Binary, Detached: st.Owner == 0},
		switchNS: st.SwitchNS, workDir: st.WorkDir, removeWorkDir: st.RemoveWorkDir,
		statePath: path, owner: st.Owner, ownerStart: st.OwnerStart, created: st.Created,
		byName: map[string]*Host{}, faults: newFaults(), inodes: map[string]uint64{},
	}
	c.dialers = newDialers()
	c.observer = c.dialers.httpClient(c.switchNS, 10*time.Second)

	for _, ph := range p.hosts {
		i := slices.IndexFunc(st.Hosts, func(hs hostState) bool { return hs.Name == ph.name })
		if i < 0 {
			return nil, fmt.Errorf("harness: state file %s: no host %q", path, ph.name)
		}
		hs := st.Hosts[i]
		h := &Host{
			c: c, name: ph.name, index: ph.index, ns: hs.Namespace, addrs: ph.addrs,
			dir: hs.Dir, dataDir: filepath.Join(hs.Dir, "data"),
			configPath: filepath.Join(hs.Dir, "node.yaml"), logPath: hs.Log,
			proc: adopt(hs.PID, hs.PIDStart),
		}
		h.http = c.dialers.httpClient(h.ns, 10*time.Second)
		c.hosts = append(c.hosts, h)
		c.byName[h.name] = h
	}
	for _, ns := range c.Namespaces() {
		if inode, err := netnsInode(ns); err == nil {
			c.inodes[ns] = inode
		}
	}
	return c, nil
}

// SweepReport lists what Sweep removed.
type SweepReport struct {
	Runs       []string // state files of dead runs
	Namespaces []string
	Dirs       []string
}

func (r SweepReport) String() string {
	if len(r.Runs)+len(r.Namespaces)+len(r.Dirs) == 0 {
		return "nothing to sweep"
	}
	return fmt.Sprintf("runs %v, namespaces %v, dirs %v", r.Runs, r.Namespaces, r.Dirs)
}

// Empty reports whether nothing was removed.
func (r SweepReport) Empty() bool { return len(r.Runs)+len(r.Namespaces)+len(r.Dirs) == 0 }

// Sweep removes what crashed runs left behind, and nothing of a live run:
//   - runs whose state file names an owner PID that is dead (or reused, told
//     apart by its start time): their processes, namespaces, state file
//     and, if the harness made it, work directory;
//   - namespaces named uch-<id>-... with no state file at all (a run writes
//     its state file before it creates any namespace, so these are orphans);
//   - binaries that Binary built for test processes that are gone.
//
// Detached clusters (devcluster) have no owner and are left alone; take
// them down with `devcluster down`. The harness never creates links in the
// root namespace, so removing its namespaces removes all its links.
//
// Sweeps on one machine take turns (see LockSweeps).
func Sweep(ctx context.Context) (SweepReport, error) {
	l, err := LockSweeps(ctx)
	if err != nil {
		return SweepReport{}, err
	}
	defer l.Unlock()
	return l.Sweep(ctx)
}

// SweepLock is the machine-wide sweep lock, held. While one process holds
// it, every other Sweep waits: a test that crashes a run on purpose holds
// it so that the sweep it checks is its own, not one that a concurrent
// test process's Start happened to run first.
type SweepLock struct{ f *os.File }

// sweepLockPath is the flock(2) file behind SweepLock. The kernel drops the
// lock when its holder dies, so a crashed holder never blocks later sweeps.
const sweepLockPath = StateDir + "/sweep.lock"

// LockSweeps waits for the sweep lock, polling so that ctx can end the wait.
func LockSweeps(ctx context.Context) (*SweepLock, error) {
	if err := os.MkdirAll(StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("harness: sweep lock: %w", err)
	}
	f, err := os.OpenFile(sweepLockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("harness: sweep lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &SweepLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("harness: sweep lock %s: %w", sweepLockPath, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("harness: waiting for the sweep lock %s: %w", sweepLockPath, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Unlock lets other sweeps run again. Unlocking twice is harmless.
func (l *SweepLock) Unlock() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// Sweep runs one sweep (as the package-level Sweep describes) under the
// held lock.
func (l *SweepLock) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	var errs []error
	// List namespaces before reading state files: a run writes its state
	// file before creating namespaces, so every namespace listed here has
	// a state file by the time the directory is read below, and a run
	// being created concurrently is never taken for an orphan.
	names, nsErr := listNamespaces()
	known := map[string]bool{} // run IDs with a state file that stays
	unreadable := false
	ents, err := os.ReadDir(StateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, fmt.Errorf("harness: sweep: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(StateDir, e.Name())
		st, err := readState(path)
		if err != nil {
			// Unreadable: we cannot tell which namespaces are its, so no
			// namespace counts as an orphan this time.
			errs = append(errs, fmt.Errorf("harness: sweep: skipping %s (fix or remove it): %w", path, err))
			unreadable = true
			continue
		}
		if st.Owner == 0 || pidAlive(st.Owner, st.OwnerStart) {
			known[st.ID] = true
			continue
		}
		if err := removeRun(ctx, st, &rep); err != nil {
			errs = append(errs, err)
			known[st.ID] = true
			continue
		}
		known[st.ID] = true // its namespaces are handled: gone
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("harness: sweep: %w", err))
		}
		rep.Runs = append(rep.Runs, path)
	}

	if nsErr != nil {
		errs = append(errs, nsErr)
	}
	if unreadable {
		names = nil
	}
	for _, ns := range names {
		id, ok := isHarnessNamespace(ns)
		if !ok || known[id] {
			continue
		}
		if err := removeNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Namespaces = append(rep.Namespaces, ns)
	}

	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, start, ok := parseBinDir(filepath.Base(d))
		if !ok || pidAlive(pid, start) {
			continue
		}
		if _, err := os.Lstat(d); err != nil {
			continue // a concurrent Sweep got there first
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("harness: sweep: %w", err))
			continue
		}
		rep.Dirs = append(rep.Dirs, d)
	}
	return rep, errors.Join(errs...)
}

// removeRun removes a dead run's namespaces (killing what runs inside) and
// work directory.
func removeRun(ctx context.Context, st *stateFile, rep *SweepReport) error {
	names, err := listNamespaces()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		if !strings.HasPrefix(ns, st.Prefix) {
			continue
		}
		if err := removeNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Namespaces = append(rep.Namespaces, ns)
	}
	if len(errs) == 0 && st.RemoveWorkDir && st.WorkDir != "" && strings.Contains(filepath.Base(st.WorkDir), st.Prefix) {
		if err := os.RemoveAll(st.WorkDir); err != nil {
			errs = append(errs, err)
		} else {
			rep.Dirs = append(rep.Dirs, st.WorkDir)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("harness: sweep: run %s: %w", st.Prefix, errors.Join(errs...))
	}
	return nil
}

// binDirPrefix starts the directory Binary builds into:
// uch-bin-<pid>-<starttime>.
const binDirPrefix = "uch-bin-"

func binDirName() string {
	return fmt.Sprintf("%s%d-%d", binDirPrefix, os.Getpid(), selfStart())
}

func parseBinDir(name string) (pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, binDirPrefix)
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(a)
	start, err2 := strconv.ParseUint(b, 10, 64)
	return pid, start, err1 == nil && err2 == nil && pid > 0
}
