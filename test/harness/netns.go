//go:build linux

package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// NamePrefix starts every namespace the harness creates. A run's prefix is
// NamePrefix + 8 hex digits + "-".
const NamePrefix = "uch-"

// switchSuffix ends the switch namespace's name (P + "-net"); host names
// cannot start with '-', so it never collides with a host namespace.
const switchSuffix = "-net"

// netnsInode returns the inode of namespace ns, which identifies it in
// /proc/<pid>/ns/net links.
func netnsInode(ns string) (uint64, error) {
	fi, err := os.Stat(filepath.Join(netnsDir, ns))
	if err != nil {
		return 0, fmt.Errorf("harness: namespace %s: %w", ns, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("harness: namespace %s: no inode", ns)
	}
	return st.Ino, nil
}

// listNamespaces returns the names of the named network namespaces.
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("harness: listing namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// pidsInNetns returns the processes whose network namespace has the given
// inode. Zombies have no namespace links and are not listed.
func pidsInNetns(inode uint64) []int {
	want := fmt.Sprintf("net:[%d]", inode)
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		// This process never counts: only its dial threads ever enter a
		// harness namespace, for the length of a socket call.
		if err != nil || pid == os.Getpid() {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeNamespace kills every process inside namespace ns, waits for them
// to go, and deletes the namespace (which destroys its links). A namespace
// that does not exist is not an error.
func removeNamespace(ctx context.Context, ns string) error {
	inode, err := netnsInode(ns)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	if pids := pidsInNetns(inode); len(pids) > 0 {
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("harness: killing pid %d in %s: %w", pid, ns, err))
			}
		}
		err := WaitFor(ctx, 10*time.Second, "processes in namespace "+ns+" to exit", func(context.Context) (bool, string) {
			left := pidsInNetns(inode)
			return len(left) == 0, fmt.Sprintf("still running: %v", left)
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ip(ctx, "netns", "delete", ns); err != nil {
		if _, statErr := os.Stat(filepath.Join(netnsDir, ns)); !errors.Is(statErr, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dialIn opens a connection from inside namespace ns. address must be an IP
// literal and port: the harness never resolves names.
//
// A socket belongs to the namespace of the thread that created it, for
// good. So a dedicated goroutine locks its OS thread, switches it into ns,
// and switches it back as soon as the socket exists (in the dialer's
// Control hook, before connect): the thread spends no longer than a socket
// call in the foreign namespace, whatever connect then waits for. If
// switching back fails, the goroutine ends still locked and the runtime
// destroys the thread instead of reusing it in the wrong namespace.
func dialIn(ctx context.Context, ns, network, address string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("harness: dial %s in %s: want an IP:port: %w", address, ns, err)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	// This goroutine always sends exactly once and ends; the caller waits
	// for it below, so it is owned by this call.
	go func() {
		runtime.LockOSThread()
		conn, restored, err := dialLocked(ctx, ns, network, address)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// dialLocked runs on a locked thread. restored reports whether the thread is
// back in its original namespace.
func dialLocked(ctx context.Context, ns, network, address string) (conn net.Conn, restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("harness: dial %s in %s: opening own namespace: %w", address, ns, err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return nil, true, fmt.Errorf("harness: dial %s in %s: %w", address, ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("harness: dial %s in %s: setns: %w", address, ns, err)
	}
	var restoreErr error
	restore := func() {
		if !restored && restoreErr == nil {
			if restoreErr = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); restoreErr == nil {
				restored = true
			}
		}
	}
	d := net.Dialer{Control: func(string, string, syscall.RawConn) error {
		// The socket exists and keeps namespace ns; connect does not need
		// the thread there.
		restore()
		return restoreErr
	}}
	conn, err = d.DialContext(ctx, network, address)
	restore() // if the dial failed before creating a socket
	if restoreErr != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, false, fmt.Errorf("harness: dial %s in %s: switching back: %w", address, ns, restoreErr)
	}
	if err != nil {
		return nil, true, fmt.Errorf("harness: dial %s from %s: %w", address, ns, err)
	}
	return conn, true, nil
}

// dialTimeout bounds every connection attempt the harness makes. Go's HTTP
// transport lets a dial outlive the request that started it, and a SYN into
// a partition would otherwise retry for minutes.
const dialTimeout = 5 * time.Second

// dialers tracks the connection attempts of one cluster so that Close can
// cancel them and wait for them: they are the cluster's goroutines even
// when an HTTP transport started them.
type dialers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	life   context.Context
	cancel context.CancelFunc
}

func newDialers() *dialers {
	d := &dialers{}
	d.life, d.cancel = context.WithCancel(context.Background())
	return d
}

// dial dials from namespace ns, bounded by dialTimeout and by the cluster's
// life.
func (d *dialers) dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("harness: dial %s from %s: cluster closed", address, ns)
	}
	d.wg.Add(1)
	d.mu.Unlock()
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	stop := context.AfterFunc(d.life, cancel)
	defer stop()
	return dialIn(ctx, ns, network, address)
}

// close cancels every attempt in flight, refuses new ones and waits.
func (d *dialers) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// httpClient returns an HTTP client whose connections are opened inside
// namespace ns. Keep-alives are off so every request opens a fresh
// connection: after a partition or a restart, a pooled connection would
// answer for a network state that no longer exists.
func (d *dialers) httpClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.dial(ctx, ns, network, addr)
			},
			DisableKeepAlives:     true,
			ResponseHeaderTimeout: timeout,
		},
	}
}

// isHarnessNamespace reports whether name is a harness namespace and returns
// its run ID.
func isHarnessNamespace(name string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok || len(rest) < 10 || rest[8] != '-' {
		return "", false
	}
	id = rest[:8]
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return "", false
		}
	}
	return id, true
}
