package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireRoot skips a test that needs network namespaces when not root,
// unless CI is set (CI runs as root, so there it fails instead, as the
// multi-host harness does). With root, missing tools fail the test with the
// command that installs them.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatal("dhcp: this test needs root (network namespaces), and CI is set, so it must not be skipped")
		}
		t.Skip("dhcp: skipping: needs root for network namespaces (sudo -E go test ...); with CI set this is a failure")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("dhcp: %s not found: install it with `apt-get install -y busybox-static`", tool)
		}
	}
}

// inNS runs fn on an OS thread switched into ns and waits for it. A socket
// fn opens, or a process it starts, stays in ns. If the thread cannot be
// switched back it stays locked, so the runtime discards it.
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

// pair is two fresh network namespaces joined by a veth: srv0 in srv, cli0
// in cli. The namespaces are unnamed: they vanish when the test closes its
// handles and its processes in them exit, so nothing is left on the host.
type pair struct {
	srv, cli   netns.NsHandle
	hSrv, hCli *netlink.Handle
}

func newPair(t *testing.T, cliMAC net.HardwareAddr) *pair {
	t.Helper()
	var p pair
	mk := func() (netns.NsHandle, error) {
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
		return h, <-errc
	}
	var err1, err2 error
	p.srv, err1 = mk()
	p.cli, err2 = mk()
	if err1 != nil || err2 != nil {
		t.Fatalf("new netns: %v %v", err1, err2)
	}
	t.Cleanup(func() { p.srv.Close(); p.cli.Close() })
	var err3 error
	if p.hSrv, err1 = netlink.NewHandleAt(p.srv); err1 == nil {
		p.hCli, err3 = netlink.NewHandleAt(p.cli)
	}
	if err1 != nil || err3 != nil {
		t.Fatalf("netlink handles: %v %v", err1, err3)
	}
	t.Cleanup(func() { p.hSrv.Close(); p.hCli.Close() })

	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "srv0", MTU: 1500},
		PeerName:         "cli0",
		PeerHardwareAddr: cliMAC,
		PeerNamespace:    netlink.NsFd(int(p.cli)),
	}
	if err := p.hSrv.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
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
	return &p
}

func (p *pair) addAddr(t *testing.T, h *netlink.Handle, ifname, cidr string) {
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
		t.Fatalf("add %s to %s: %v", cidr, ifname, err)
	}
}

// syncBuffer collects log output from the server's goroutine for the test.
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
