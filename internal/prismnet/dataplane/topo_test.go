//go:build linux

package dataplane_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
	"github.com/ultracloud/ultracloud/internal/prismnet/netns/netnstest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// A test topology: "host" namespaces joined by veths to a bridge in a
// "switch" namespace (underlay 10.99.0.0/24), each running one Host, and
// workload namespaces attached through Veth ports. Everything lives under
// a per-test directory and is removed at the end, also on failure.

type topo struct {
	t     testing.TB
	dir   string
	sw    string
	hosts []*thost
	mu    sync.Mutex
	extra []string // more namespaces to delete
}

type thost struct {
	name     string
	ns       string
	nsDir    string
	underlay netip.Addr
	h        *dataplane.Host
}

func newTopo(t testing.TB, nhosts int) *topo {
	t.Helper()
	// Root: the test creates network namespaces, veths, bridges and
	// nftables tables.
	netnstest.RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	tp := &topo{t: t, dir: "/run/ucdp-" + hex.EncodeToString(b[:])}
	t.Cleanup(tp.cleanup)
	tp.sw = tp.newNs("switch")
	sh := netnstest.Handle(t, tp.sw)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", TxQLen: -1}}
	must(t, sh.LinkAdd(br))
	must(t, sh.LinkSetUp(br))
	for i := 0; i < nhosts; i++ {
		name := fmt.Sprintf("h%d", i+1)
		hp := tp.newNs(name)
		hh := netnstest.Handle(t, hp)
		fd, err := os.Open(hp)
		must(t, err)
		la := netlink.NewLinkAttrs()
		la.Name = "sw-" + name
		la.MasterIndex = 0
		v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(fd.Fd()))}
		must(t, sh.LinkAdd(v))
		fd.Close()
		l, err := sh.LinkByName(la.Name)
		must(t, err)
		must(t, sh.LinkSetMaster(l, br))
		must(t, sh.LinkSetUp(l))
		e, err := hh.LinkByName("eth0")
		must(t, err)
		ul := netip.MustParseAddr(fmt.Sprintf("10.99.0.%d", i+1))
		must(t, hh.AddrAdd(e, &netlink.Addr{IPNet: &net.IPNet{IP: ul.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
		must(t, hh.LinkSetUp(e))
		lo, _ := hh.LinkByName("lo")
		must(t, hh.LinkSetUp(lo))
		th := &thost{name: name, ns: hp, nsDir: filepath.Join(tp.dir, name+"-ns"), underlay: ul}
		th.h = tp.newHost(th)
		tp.hosts = append(tp.hosts, th)
	}
	return tp
}

func (tp *topo) newHost(th *thost) *dataplane.Host {
	h, err := dataplane.New(dataplane.Options{Netns: th.ns, NamespaceDir: th.nsDir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(tp.t, err)
	return h
}

// restart closes a host's Host and opens a new one on the same kernel
// state, as an agent restart does.
func (tp *topo) restart(th *thost) {
	must(tp.t, th.h.Close())
	th.h = tp.newHost(th)
}

func (tp *topo) newNs(name string) string {
	tp.t.Helper()
	p := filepath.Join(tp.dir, name)
	must(tp.t, netns.Create(p))
	tp.mu.Lock()
	tp.extra = append(tp.extra, p)
	tp.mu.Unlock()
	return p
}

func (tp *topo) cleanup() {
	for _, th := range tp.hosts {
		_ = th.h.Close()
		names, _ := netns.List(th.nsDir, "uc")
		for _, n := range names {
			_ = netns.Delete(filepath.Join(th.nsDir, n))
		}
	}
	for i := len(tp.extra) - 1; i >= 0; i-- {
		_ = netns.Delete(tp.extra[i])
	}
	_ = os.RemoveAll(tp.dir)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// workload makes a namespace for a port; the port's veth peer lands there.
func (tp *topo) workload(name string) string { return tp.newNs("w-" + name) }

// configure gives the workload's eth0 its addresses (DHCP's job in
// production) and optionally a default route.
func (tp *topo) configure(ws string, addrs []netip.Prefix, gw netip.Addr) {
	tp.t.Helper()
	h := netnstest.Handle(tp.t, ws)
	e, err := h.LinkByName("eth0")
	must(tp.t, err)
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(e, a); err != nil && !errors.Is(err, unix.EEXIST) {
			tp.t.Fatal(err)
		}
	}
	lo, _ := h.LinkByName("lo")
	must(tp.t, h.LinkSetUp(lo))
	if gw.IsValid() {
		must(tp.t, h.RouteReplace(&netlink.Route{LinkIndex: e.Attrs().Index, Gw: gw.AsSlice()}))
	}
}

// run runs a command inside a namespace.
func run(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns, "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// ping sends one echo request with a short timeout; nil means a reply came.
func ping(ns string, dst netip.Addr, extra ...string) error {
	args := append([]string{"ping", "-n", "-c", "1", "-W", "1"}, extra...)
	out, err := run(ns, append(args, dst.String())...)
	if err != nil {
		return fmt.Errorf("ping %s: %v: %s", dst, err, strings.TrimSpace(out))
	}
	return nil
}

// reachable waits until ns can ping dst.
func reachable(t testing.TB, ns string, dst netip.Addr) {
	t.Helper()
	testkit.EventuallyErr(t, 10*time.Second, fmt.Sprintf("%s to reach %s", filepath.Base(ns), dst), func() error {
		return ping(ns, dst)
	})
}

// unreachable asserts that three pings get no answer.
func unreachable(t testing.TB, ns string, dst netip.Addr, extra ...string) {
	t.Helper()
	for range 3 {
		if err := ping(ns, dst, extra...); err == nil {
			t.Fatalf("%s reached %s, want it blocked", filepath.Base(ns), dst)
		}
	}
}

// listen opens a TCP echo server inside ns.
func listen(t testing.TB, ns string, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	must(t, netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}))
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				go func() { <-ctx.Done(); c.Close() }()
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return ln
}

// dial connects from inside ns.
func dial(ns string, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// echoOnce connects from ns to addr and echoes one line, or fails the test.
func echoOnce(t testing.TB, ns, addr, msg string) {
	t.Helper()
	c, err := dial(ns, addr, 5*time.Second)
	must(t, err)
	defer c.Close()
	must(t, echo(c, bufio.NewReader(c), msg, 3*time.Second))
}

// refused fails the test if ns can connect to addr within 2s; what says
// why it must not.
func refused(t testing.TB, ns, addr, what string) {
	t.Helper()
	if c, err := dial(ns, addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("%s connected to %s (%s), want it filtered", filepath.Base(ns), addr, what)
	}
}

// echo sends a line and waits for it to come back.
func echo(c net.Conn, r *bufio.Reader, msg string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != msg {
		return fmt.Errorf("echo: got %q, want %q", line, msg)
	}
	return nil
}

// stream keeps a TCP echo exchange going every 10ms until stopped, and
// records the first failure.
type stream struct {
	c      net.Conn
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	err    error
	rounds int
}

func startStream(t testing.TB, ns, addr string) *stream {
	t.Helper()
	c, err := dial(ns, addr, 3*time.Second)
	must(t, err)
	s := &stream{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		r := bufio.NewReader(c)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := echo(c, r, fmt.Sprintf("msg %d", i), 2*time.Second); err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			s.mu.Lock()
			s.rounds++
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.end() })
	return s
}

func (s *stream) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.rounds }

func (s *stream) failed() error { s.mu.Lock(); defer s.mu.Unlock(); return s.err }

// end stops the stream and returns its first failure.
func (s *stream) end() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.c.Close()
	return s.failed()
}

// advance waits until the stream made n more rounds.
func (s *stream) advance(t testing.TB, n int) {
	t.Helper()
	start := s.count()
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("the stream to make %d more rounds", n), func() bool {
		if err := s.failed(); err != nil {
			t.Fatalf("stream broke: %v", err)
		}
		return s.count() >= start+n
	})
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, ip(x))
	}
	return out
}

var doIn = netns.Do
