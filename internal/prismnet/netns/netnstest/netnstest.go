//go:build linux

// Package netnstest is what the tests of prismnet's namespace-bound parts
// (the DHCP server, the RA sender, the dataplane) share: the rule for
// skipping without root, named namespaces removed when the test ends,
// netlink handles inside them, a pair of namespaces joined by a veth, and
// a service run in the background until the test ends with its log shown
// when the test fails.
//
// It is for tests only: production code never imports it. It builds on
// package netns (Create, Delete, Open) and does nothing to the root
// namespace but pin namespace files below the test's own directories.
package netnstest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
)

// RequireRoot skips a test that needs network namespaces when not root,
// unless CI is set (to anything but 0 or false): CI runs as root, so there
// a missing root is a failure, not a silent skip (docs/testing.md).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
		t.Fatal("netnstest: this test needs root (network namespaces), and CI is set, so it must not be skipped")
	}
	t.Skip("netnstest: skipping: needs root for network namespaces (sudo -E go test ...); with CI set this is a failure")
}

// Create makes an empty namespace pinned at path and deletes it when the
// test ends (after the cleanups registered later, such as processes and
// handles inside it). It returns path.
func Create(t testing.TB, path string) string {
	t.Helper()
	if err := netns.Create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			t.Errorf("netnstest: %v", err)
		}
	})
	return path
}

// Handle returns a netlink handle working inside the namespace at path,
// closed when the test ends.
func Handle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netnstest: netlink handle in %s: %v", path, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Pair is two namespaces joined by a veth: srv0 in Srv, cli0 in Cli.
type Pair struct {
	Srv, Cli   string          // the namespaces' paths, for netns.Do
	HSrv, HCli *netlink.Handle // netlink inside Srv and Cli
}

// NewPair makes the two namespaces in a directory of the test's own and
// the veth between them, with cli0's MAC set to cliMAC (nil: the kernel
// picks one). Every link is left down, so a test can set sysctls before
// addresses appear; Up brings them up. Everything is removed when the test
// ends.
func NewPair(t testing.TB, cliMAC net.HardwareAddr) *Pair {
	t.Helper()
	dir := t.TempDir()
	p := &Pair{Srv: Create(t, filepath.Join(dir, "srv")), Cli: Create(t, filepath.Join(dir, "cli"))}
	p.HSrv, p.HCli = Handle(t, p.Srv), Handle(t, p.Cli)
	cli, err := netns.Open(p.Cli)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "srv0", MTU: 1500},
		PeerName:         "cli0",
		PeerHardwareAddr: cliMAC,
		PeerNamespace:    netlink.NsFd(int(cli)),
	}
	if err := p.HSrv.LinkAdd(veth); err != nil {
		t.Fatalf("netnstest: add veth: %v", err)
	}
	return p
}

// Up brings lo and the veth's end up in both namespaces.
func (p *Pair) Up(t testing.TB) {
	t.Helper()
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{p.HSrv, "lo"}, {p.HSrv, "srv0"}, {p.HCli, "lo"}, {p.HCli, "cli0"}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatalf("netnstest: set %s up: %v", x.name, err)
		}
	}
}

// AddAddr adds cidr (e.g. "10.20.0.2/24") to the interface ifname that h
// sees.
func AddAddr(t testing.TB, h *netlink.Handle, ifname, cidr string) {
	t.Helper()
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("netnstest: add %s to %s: %v", cidr, ifname, err)
	}
}

// Logs collects what a service under test logs from its goroutines, for
// the test to read at any time.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger is a text logger at debug level writing to l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Serve runs run in the background until the test ends. Then it cancels
// run's context and waits for it; an error from run fails the test, and if
// the test failed, what logs holds is logged under "<what> log:".
func Serve(t testing.TB, what string, logs *Logs, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("%s: Run: %v", what, runErr)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", what, logs.String())
		}
	})
}
