//go:build linux

package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ultracloud/ultracloud/internal/prismnet/netns"
	"github.com/ultracloud/ultracloud/internal/prismnet/netns/netnstest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// The real-client tests: the server runs in one namespace, busybox's
// udhcpc (Debian busybox-static) in the other, and a script applies what
// the client got with busybox's own ip applet. The test reads the result
// back from the client namespace with netlink.

const busybox = "/usr/bin/busybox"

// clientScript is udhcpc's event script: it logs every event with what the
// client received, and applies address, MTU and routes on bound/renew.
const clientScript = `#!/usr/bin/busybox sh
BB=/usr/bin/busybox
echo "event=$1 ip=$ip mask=$mask router=$router dns=$dns search=$search domain=$domain mtu=$mtu staticroutes=$staticroutes hostname=$hostname lease=$lease serverid=$serverid" >> "$EVENTS"
case "$1" in
deconfig|nak|leasefail)
	$BB ip -4 addr flush dev "$interface"
	;;
bound|renew)
	$BB ip -4 addr flush dev "$interface"
	$BB ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && $BB ip link set dev "$interface" mtu "$mtu"
	if [ -n "$staticroutes" ]; then
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			$BB ip route add "$1" via "$2" dev "$interface"
			shift 2
		done
	elif [ -n "$router" ]; then
		$BB ip route add default via "$router" dev "$interface"
	fi
	;;
esac
exit 0
`

type dhcpEnv struct {
	p      *netnstest.Pair
	srv    *Server
	logs   *netnstest.Logs
	dir    string
	events string
}

// startServer builds the namespace pair and runs a server in srv on
// 10.20.0.2/24, until the test ends. With root, a missing busybox or
// udhcpc applet fails the test with the package that provides it.
func startServer(t *testing.T, leases ...Lease) *dhcpEnv {
	t.Helper()
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath(busybox); err != nil {
		t.Fatalf("dhcp: %s not found: install it with `apt-get install -y busybox-static`", busybox)
	}
	if out, err := exec.Command(busybox, "udhcpc", "--help").CombinedOutput(); !strings.Contains(string(out), "udhcpc") {
		t.Fatalf("busybox has no udhcpc applet (%v): install Debian's busybox-static", err)
	}
	p := netnstest.NewPair(t, portMAC)
	p.Up(t)
	netnstest.AddAddr(t, p.HSrv, "srv0", "10.20.0.2/24")
	logs := &netnstest.Logs{}
	srv, err := New(Config{
		ServerID: serviceAddr,
		Open: func() (net.PacketConn, error) {
			var c net.PacketConn
			err := netns.Do(p.Srv, func() (err error) { c, err = Listen("srv0"); return err })
			return c, err
		},
		Logger: logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetLeases(leases); err != nil {
		t.Fatal(err)
	}
	netnstest.Serve(t, "server", logs, srv.Run)
	testkit.Eventually(t, 5*time.Second, "the server to start", func() bool {
		return strings.Contains(logs.String(), "dhcp server started")
	})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "script"), []byte(clientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	return &dhcpEnv{p: p, srv: srv, logs: logs, dir: dir, events: filepath.Join(dir, "events")}
}

// client is a running udhcpc; exited yields its Wait result once.
type client struct {
	cmd    *exec.Cmd
	exited chan error
}

// udhcpc starts the client in the client namespace; the test kills it and
// waits for it at the end.
func (e *dhcpEnv) udhcpc(t *testing.T, args ...string) *client {
	t.Helper()
	cmd := exec.Command(busybox, append([]string{"udhcpc", "-f", "-i", "cli0", "-s", filepath.Join(e.dir, "script"),
		"-O", "mtu", "-O", "staticroutes", "-O", "search", "-O", "hostname"}, args...)...)
	cmd.Env = append(os.Environ(), "EVENTS="+e.events)
	out := &netnstest.Logs{}
	cmd.Stdout, cmd.Stderr = out, out
	// Started from a thread inside the client namespace, the child is in it.
	if err := netns.Do(e.p.Cli, cmd.Start); err != nil {
		t.Fatalf("start udhcpc: %v", err)
	}
	c := &client{cmd: cmd, exited: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Go(func() { c.exited <- cmd.Wait() })
	t.Cleanup(func() {
		cmd.Process.Kill()
		wg.Wait()
		if t.Failed() {
			t.Logf("udhcpc output:\n%s", out.String())
		}
	})
	return c
}

func (e *dhcpEnv) eventLines() []string {
	b, _ := os.ReadFile(e.events)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// cli0 is the client's end of the veth, as it is now.
func (e *dhcpEnv) cli0(t *testing.T) netlink.Link {
	t.Helper()
	l, err := e.p.HCli.LinkByName("cli0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clientAddrs lists cli0's IPv4 addresses.
func (e *dhcpEnv) clientAddrs(t *testing.T) []string {
	t.Helper()
	addrs, err := e.p.HCli.AddrList(e.cli0(t), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

func (e *dhcpEnv) clientRoutes(t *testing.T) []string {
	t.Helper()
	rs, err := e.p.HCli.RouteList(e.cli0(t), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Gw == nil {
			continue // the connected route of the address
		}
		dst := "0.0.0.0/0"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		out = append(out, dst+" via "+r.Gw.String())
	}
	slices.Sort(out)
	return out
}

func TestUdhcpcGetsAddressRouterDNSMTUAndRoutes(t *testing.T) {
	e := startServer(t, testLease())
	e.udhcpc(t, "-t", "5", "-T", "1")

	testkit.Eventually(t, 15*time.Second, "udhcpc to bind 10.20.0.50/24", func() bool {
		return slices.Contains(e.clientAddrs(t), "10.20.0.50/24")
	})
	// The script sets the MTU right after the address: wait for it too.
	testkit.Eventually(t, 5*time.Second, "the client MTU 1450 from option 26", func() bool {
		return e.cli0(t).Attrs().MTU == 1450
	})
	testkit.Eventually(t, 5*time.Second, "the script to add the routes", func() bool {
		return len(e.clientRoutes(t)) == 3
	})
	want := []string{"0.0.0.0/0 via 10.20.0.1", "10.30.0.0/16 via 10.20.0.1", "169.254.169.254/32 via 10.20.0.2"}
	if got := e.clientRoutes(t); !slices.Equal(got, want) {
		t.Errorf("client routes = %v, want %v", got, want)
	}
	var bound string
	for _, line := range e.eventLines() {
		if strings.HasPrefix(line, "event=bound ") {
			bound = line
		}
	}
	for _, want := range []string{
		"ip=10.20.0.50 ", "mask=24 ", "router=10.20.0.1 ", "dns=10.20.0.3 10.20.0.4 ",
		"search=tenant.internal svc.tenant.internal ", "mtu=1450 ", "hostname=vm-1 ", "lease=3600 ", "serverid=10.20.0.2",
	} {
		if !strings.Contains(bound, want) {
			t.Errorf("bound event lacks %q: %q", want, bound)
		}
	}
}

func TestUdhcpcForAMACOutsideTheTableGetsNothing(t *testing.T) {
	other := testLease()
	other.MAC = otherMAC
	e := startServer(t, other)
	start := time.Now()
	c := e.udhcpc(t, "-n", "-q", "-t", "2", "-T", "1", "-A", "1")
	select {
	case err := <-c.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("udhcpc without a lease exited with %v, want a failure exit", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("udhcpc did not give up within 20s")
	}
	t.Logf("udhcpc gave up after %s", time.Since(start).Round(time.Millisecond))
	if addrs := e.clientAddrs(t); len(addrs) != 0 {
		t.Errorf("client has addresses %v", addrs)
	}
	for _, line := range e.eventLines() {
		if strings.HasPrefix(line, "event=bound") {
			t.Errorf("client bound: %s", line)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "outcome=unknown_mac") {
		t.Errorf("server did not log the unknown MAC:\n%s", logs)
	}
	if strings.Contains(logs, "outcome=offer") {
		t.Errorf("server offered to a MAC outside the table:\n%s", logs)
	}
}

func TestRenewingClientGetsANakThenTheNewAddress(t *testing.T) {
	e := startServer(t, testLease())
	cmd := e.udhcpc(t, "-t", "5", "-T", "1").cmd
	testkit.Eventually(t, 15*time.Second, "udhcpc to bind 10.20.0.50/24", func() bool {
		return slices.Contains(e.clientAddrs(t), "10.20.0.50/24")
	})

	// A renewal of the address the table still holds is ACKed, unicast
	// to the client's address.
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "udhcpc to renew 10.20.0.50", func() bool {
		return slices.ContainsFunc(e.eventLines(), func(l string) bool { return strings.HasPrefix(l, "event=renew ip=10.20.0.50 ") }) &&
			strings.Contains(e.logs.String(), "outcome=ack why=\"renewing or rebinding\"")
	})

	moved := testLease()
	moved.Addr = netip.MustParsePrefix("10.20.0.60/24")
	if err := e.srv.SetLeases([]Lease{moved}); err != nil {
		t.Fatal(err)
	}
	// SIGUSR1 makes udhcpc renew now: a unicast REQUEST with ciaddr
	// 10.20.0.50, which the server must refuse.
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyErr(t, 20*time.Second, "udhcpc to move to 10.20.0.60/24", func() error {
		if got := e.clientAddrs(t); !slices.Equal(got, []string{"10.20.0.60/24"}) {
			return fmt.Errorf("client addresses %v", got)
		}
		return nil
	})
	var events []string
	for _, line := range e.eventLines() {
		events = append(events, strings.Fields(line)[0])
	}
	if i := slices.Index(events, "event=nak"); i < 0 || !slices.Contains(events[i:], "event=bound") {
		t.Errorf("client events %v: want a nak followed by a new bound", events)
	}
	if !strings.Contains(e.logs.String(), "outcome=nak why=\"renewing or rebinding\"") {
		t.Errorf("server log has no NAK for the renewal:\n%s", e.logs.String())
	}
}
