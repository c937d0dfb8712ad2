package ra

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireRoot skips a test that needs network namespaces when not root,
// unless CI is set (CI runs as root, so there it fails instead, as the
// multi-host harness does).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatal("ra: this test needs root (network namespaces), and CI is set, so it must not be skipped")
		}
		t.Skip("ra: skipping: needs root for network namespaces (sudo -E go test ...); with CI set this is a failure")
	}
}

// inNS runs fn on an OS thread switched into ns and waits for it. A socket
// fn opens stays in ns, and /proc/sys/net written from it is ns's. If the
// thread cannot be switched back it stays locked, so the runtime discards
// it.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("leave netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// newNS makes an unnamed network namespace; it vanishes when the test
// closes the handle.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		h, err = netns.New() // unshares this thread into a new namespace
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// pair is two namespaces joined by a veth, srv0 in srv and cli0 in cli,
// created down so sysctls can be set before addresses appear.
type pair struct {
	srv, cli   netns.NsHandle
	hSrv, hCli *netlink.Handle
}

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{srv: newNS(t), cli: newNS(t)}
	var err error
	if p.hSrv, err = netlink.NewHandleAt(p.srv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.hSrv.Close)
	if p.hCli, err = netlink.NewHandleAt(p.cli); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.hCli.Close)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "srv0", MTU: 1500},
		PeerName:      "cli0",
		PeerNamespace: netlink.NsFd(int(p.cli)),
	}
	if err := p.hSrv.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	return p
}

func (p *pair) up(t *testing.T) {
	t.Helper()
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{p.hSrv, "lo"}, {p.hSrv, "srv0"}, {p.hCli, "lo"}, {p.hCli, "cli0"}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", x.name, err)
		}
	}
}

// sysctl writes /proc/sys/net/ipv6/conf/<ifname>/<key> inside ns.
func sysctl(t *testing.T, ns netns.NsHandle, ifname, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys/net/ipv6/conf", ifname, key)
	if err := inNS(ns, func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s: %v", path, value, err)
	}
}

// readSysctl reads /proc/sys/net/ipv6/conf/<ifname>/<key> inside ns.
func readSysctl(t *testing.T, ns netns.NsHandle, ifname, key string) string {
	t.Helper()
	var b []byte
	path := filepath.Join("/proc/sys/net/ipv6/conf", ifname, key)
	if err := inNS(ns, func() (err error) { b, err = os.ReadFile(path); return err }); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

// syncBuffer collects log output from the sender's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
