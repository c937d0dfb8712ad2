//go:build linux

package ra

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
	"github.com/ultracloud/ultracloud/internal/prismnet/netns/netnstest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// The SLAAC tests: the sender runs in one namespace, and in the other the
// kernel itself does SLAAC from what it hears. The test reads the result
// back from the client namespace with netlink and /proc/sys.

type raEnv struct {
	p    *netnstest.Pair
	s    *Sender
	logs *netnstest.Logs
}

// startSLAAC builds the pair with the client's accept_ra set to acceptRA,
// and runs a sender on srv0 announcing cfg, with an interval long enough
// that no periodic advertisement falls inside the test.
func startSLAAC(t *testing.T, acceptRA string, cfg Config) *raEnv {
	t.Helper()
	netnstest.RequireRoot(t)
	p := netnstest.NewPair(t, nil)
	// No duplicate address detection: addresses are usable at once, so
	// the test does not wait for it (the dataplane decides this in
	// production, not the sender).
	sysctl(t, p.Srv, "srv0", "accept_dad", "0")
	sysctl(t, p.Cli, "cli0", "accept_dad", "0")
	sysctl(t, p.Cli, "cli0", "accept_ra", acceptRA)
	sysctl(t, p.Cli, "cli0", "autoconf", "1")
	p.Up(t)

	logs := &netnstest.Logs{}
	s, err := New(Options{
		Interval: time.Hour,
		Open: func() (Conn, net.HardwareAddr, error) {
			var c Conn
			var mac net.HardwareAddr
			err := netns.Do(p.Srv, func() (err error) { c, mac, err = Listen("srv0"); return err })
			return c, mac, err
		},
		Logger: logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	netnstest.Serve(t, "sender", logs, s.Run)
	return &raEnv{p: p, s: s, logs: logs}
}

// sysctl writes /proc/sys/net/ipv6/conf/<ifname>/<key> inside the
// namespace at ns (/proc/sys/net read from a thread is its namespace's).
func sysctl(t *testing.T, ns, ifname, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys/net/ipv6/conf", ifname, key)
	if err := netns.Do(ns, func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s: %v", path, value, err)
	}
}

// readSysctl reads /proc/sys/net/ipv6/conf/<ifname>/<key> inside the
// namespace at ns.
func readSysctl(t *testing.T, ns, ifname, key string) string {
	t.Helper()
	var b []byte
	path := filepath.Join("/proc/sys/net/ipv6/conf", ifname, key)
	if err := netns.Do(ns, func() (err error) { b, err = os.ReadFile(path); return err }); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

// clientAddr returns cli0's address in prefix, if it has one.
func (e *raEnv) clientAddr(t *testing.T, prefix netip.Prefix) (netlink.Addr, bool) {
	t.Helper()
	l, err := e.p.HCli.LinkByName("cli0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := e.p.HCli.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		if prefix.Contains(ip) {
			return a, true
		}
	}
	return netlink.Addr{}, false
}

func (e *raEnv) waitAddr(t *testing.T, prefix netip.Prefix, within time.Duration) netlink.Addr {
	t.Helper()
	var got netlink.Addr
	testkit.Eventually(t, within, "cli0 to get a SLAAC address in "+prefix.String(), func() bool {
		var ok bool
		got, ok = e.clientAddr(t, prefix)
		return ok
	})
	return got
}

func TestKernelGetsSLAACAddressAndMTUAndNoDefaultRoute(t *testing.T) {
	e := startSLAAC(t, "1", testConfig())

	a := e.waitAddr(t, prefixA, 15*time.Second)
	if ones, _ := a.Mask.Size(); ones != 64 {
		t.Errorf("SLAAC address %s, want a /64", a.IPNet)
	}
	if mtu := readSysctl(t, e.p.Cli, "cli0", "mtu"); mtu != "1400" {
		t.Errorf("cli0 IPv6 MTU = %s, want 1400 from the MTU option", mtu)
	}
	routes, err := e.p.HCli.RouteList(nil, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			t.Errorf("client has a default route %s: the service namespace must not be a router", r)
		}
	}

	// A change is announced at once: with a one-hour interval, only the
	// advertisement Set triggers can bring the new prefix.
	cfg := testConfig()
	cfg.Prefixes = []netip.Prefix{prefixA, prefixB}
	if err := e.s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	e.waitAddr(t, prefixB, 10*time.Second)

	// Withdrawing a prefix deprecates the client's address in it.
	cfg.Prefixes = []netip.Prefix{prefixB}
	if err := e.s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 10*time.Second, "the address in "+prefixA.String()+" to be deprecated", func() error {
		a, ok := e.clientAddr(t, prefixA)
		if !ok {
			return fmt.Errorf("address gone")
		}
		if a.Flags&unix.IFA_F_DEPRECATED == 0 {
			return fmt.Errorf("address %s flags %#x, preferred lifetime %d", a.IPNet, a.Flags, a.PreferedLft)
		}
		return nil
	})
	if b, _ := e.clientAddr(t, prefixB); b.Flags&unix.IFA_F_DEPRECATED != 0 {
		t.Errorf("the kept prefix's address %s is deprecated too", b.IPNet)
	}
}

func TestKernelRouterSolicitationGetsAnAnswer(t *testing.T) {
	// The client ignores the start advertisement (accept_ra 0) ...
	e := startSLAAC(t, "0", testConfig())
	testkit.Eventually(t, 15*time.Second, "the start advertisement", func() bool {
		return strings.Contains(e.logs.String(), "reason=start")
	})
	if _, ok := e.clientAddr(t, prefixA); ok {
		t.Fatal("client configured an address with accept_ra 0")
	}
	// ... then turns SLAAC on and restarts IPv6 on cli0, which makes the
	// kernel send Router Solicitations; with a one-hour interval only an
	// answer to them can configure it.
	sysctl(t, e.p.Cli, "cli0", "accept_ra", "1")
	sysctl(t, e.p.Cli, "cli0", "disable_ipv6", "1")
	sysctl(t, e.p.Cli, "cli0", "disable_ipv6", "0")
	e.waitAddr(t, prefixA, 15*time.Second)
	if !strings.Contains(e.logs.String(), "reason=solicited") {
		t.Errorf("no solicited advertisement in the log:\n%s", e.logs.String())
	}
}
