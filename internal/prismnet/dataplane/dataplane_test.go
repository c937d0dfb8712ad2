//go:build linux

package dataplane_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// world is the cluster-wide desired state the tests start from; stateFor
// cuts one host's State out of it, as the lead's agent loop will.
type world struct {
	networks  []dataplane.Network
	ports     map[string][]dataplane.Port // host -> ports
	hostOf    map[string]string           // port ID -> host
	groups    map[string][]netip.Addr
	routers   map[string][]dataplane.Router
	externals map[string][]dataplane.ExternalNetwork
}

// newWorld is a world of networks without ports, groups or routers.
func newWorld(networks ...dataplane.Network) *world {
	return &world{networks: networks, ports: map[string][]dataplane.Port{}, hostOf: map[string]string{},
		groups: map[string][]netip.Addr{}, routers: map[string][]dataplane.Router{},
		externals: map[string][]dataplane.ExternalNetwork{}}
}

func (w *world) addPort(host string, p dataplane.Port) {
	w.ports[host] = append(w.ports[host], p)
	w.hostOf[p.ID] = host
}

func (w *world) removePort(id string) {
	h := w.hostOf[id]
	var keep []dataplane.Port
	for _, p := range w.ports[h] {
		if p.ID != id {
			keep = append(keep, p)
		}
	}
	w.ports[h] = keep
	delete(w.hostOf, id)
}

func (w *world) setGroups(id string, sgs []dataplane.SecurityGroup) {
	h := w.hostOf[id]
	for i := range w.ports[h] {
		if w.ports[h][i].ID == id {
			w.ports[h][i].SecurityGroups = sgs
		}
	}
}

func (w *world) stateFor(tp *topo, th *thost) dataplane.State {
	s := dataplane.State{Underlay: th.underlay, Networks: w.networks, Ports: w.ports[th.name], Groups: w.groups,
		Routers: w.routers[th.name], Externals: w.externals[th.name]}
	for _, other := range tp.hosts {
		if other == th {
			continue
		}
		for _, p := range w.ports[other.name] {
			s.Remotes = append(s.Remotes, dataplane.RemotePort{Network: p.Network, MAC: p.MAC, IPs: p.IPs, VTEP: other.underlay})
		}
	}
	return s
}

// applyAll applies the world on every host and fails on any error.
func (w *world) applyAll(t testing.TB, tp *topo) []dataplane.Report {
	t.Helper()
	var reps []dataplane.Report
	for _, th := range tp.hosts {
		rep, err := th.h.Apply(context.Background(), w.stateFor(tp, th))
		if err != nil {
			t.Fatalf("apply on %s: %v (report %+v)", th.name, err, rep)
		}
		reps = append(reps, rep)
	}
	return reps
}

// applyAndAddress applies the world on every host, then gives every veth
// port's workload namespace the port's addresses (DHCP's job in
// production), without a default route.
func (w *world) applyAndAddress(t testing.TB, tp *topo) []dataplane.Report {
	t.Helper()
	reps := w.applyAll(t, tp)
	for _, th := range tp.hosts {
		for _, p := range w.ports[th.name] {
			if p.Device == dataplane.Veth {
				tp.configure(p.PeerNamespace, prefixes(p), netip.Addr{})
			}
		}
	}
	return reps
}

// wantNoChanges applies state on every host and fails if an Apply
// changed anything: Apply of a state already in place is a no-op.
func wantNoChanges(t testing.TB, tp *topo, when string, state func(th *thost) dataplane.State) {
	t.Helper()
	for _, th := range tp.hosts {
		rep, err := th.h.Apply(context.Background(), state(th))
		if err != nil {
			t.Fatalf("%s: apply on %s: %v (report %+v)", when, th.name, err, rep)
		}
		if rep.Changes != 0 {
			t.Fatalf("%s: apply on %s made %d changes, want 0", when, th.name, rep.Changes)
		}
	}
}

// stateOf is the world's state for each host, for wantNoChanges.
func (w *world) stateOf(tp *topo) func(th *thost) dataplane.State {
	return func(th *thost) dataplane.State { return w.stateFor(tp, th) }
}

var (
	netA = dataplane.Network{ID: "neta", VNI: 100, MTU: 1450, ServiceMAC: mac("02:00:00:00:aa:01"),
		Subnets: []dataplane.Subnet{{CIDR: pfx("10.1.0.0/24"), Gateway: ip("10.1.0.1"), ServiceAddr: ip("10.1.0.2")},
			{CIDR: pfx("fd00:a::/64"), ServiceAddr: ip("fd00:a::2")}}}
	netB = dataplane.Network{ID: "netb", VNI: 200, MTU: 1450, ServiceMAC: mac("02:00:00:00:bb:01"),
		Subnets: []dataplane.Subnet{{CIDR: pfx("10.1.0.0/24"), ServiceAddr: ip("10.1.0.2")}}}
)

// allowICMP lets pings in (v4 and v6).
var allowICMP = dataplane.SecurityGroup{ID: "icmp", Rules: []dataplane.Rule{
	{Direction: dataplane.Ingress, Family: dataplane.IPv4, Protocol: "icmp"},
	{Direction: dataplane.Ingress, Family: dataplane.IPv6, Protocol: "icmpv6"},
}}

func vethPort(tp *topo, id, network, macAddr string, addrs ...string) (dataplane.Port, string) {
	ws := tp.workload(id)
	return dataplane.Port{ID: id, Network: network, MAC: mac(macAddr), IPs: ips(addrs...), Device: dataplane.Veth,
		PeerNamespace: ws, PortSecurity: true, SecurityGroups: []dataplane.SecurityGroup{allowICMP}}, ws
}

func prefixes(p dataplane.Port) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range p.IPs {
		if a.Is4() {
			out = append(out, netip.PrefixFrom(a, 24))
		} else {
			out = append(out, netip.PrefixFrom(a, 64))
		}
	}
	return out
}

func TestSameNetworkWorkloadsOnTwoHostsReachEachOtherOverVXLANAndOtherNetworksCannot(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA, netB)
	a1, ws1 := vethPort(tp, "a1", "neta", "02:00:00:01:00:01", "10.1.0.11", "fd00:a::11")
	a2, ws2 := vethPort(tp, "a2", "neta", "02:00:00:01:00:02", "10.1.0.12", "fd00:a::12")
	b1, wsb := vethPort(tp, "b1", "netb", "02:00:00:02:00:01", "10.1.0.13")
	w.addPort("h1", a1)
	w.addPort("h2", a2)
	w.addPort("h1", b1)
	for _, r := range w.applyAndAddress(t, tp) {
		for id, pr := range r.Ports {
			if !pr.Ready {
				t.Fatalf("port %s not ready: %s", id, pr.Err)
			}
		}
	}

	reachable(t, ws1, ip("10.1.0.12"))
	reachable(t, ws2, ip("10.1.0.11"))
	reachable(t, ws1, ip("fd00:a::12"))
	// The service address answers on every host, locally.
	reachable(t, ws1, ip("10.1.0.2"))
	reachable(t, ws2, ip("10.1.0.2"))
	// Network B shares the addresses but not the VNI.
	unreachable(t, wsb, ip("10.1.0.12"))
	unreachable(t, wsb, ip("10.1.0.11"))

	wantNoChanges(t, tp, "a second apply of the same state", w.stateOf(tp))
	obs, err := tp.hosts[0].h.Observe(context.Background())
	must(t, err)
	var na *dataplane.ObservedNetwork
	for i := range obs.Networks {
		if obs.Networks[i].ID == "neta" {
			na = &obs.Networks[i]
		}
	}
	if na == nil || na.VNI != 100 || na.RemoteMACs != 1 || na.Ports != 1 || na.MTU != 1450 {
		t.Fatalf("observed network neta on h1: %+v", na)
	}
}

func TestBadStateIsRefusedWithTheFieldNamed(t *testing.T) {
	tp := newTopo(t, 1)
	_, err := tp.hosts[0].h.Apply(context.Background(), dataplane.State{Underlay: tp.hosts[0].underlay,
		Networks: []dataplane.Network{{ID: "Bad_ID", VNI: 1}}})
	if !errors.Is(err, dataplane.ErrInvalidState) || !strings.Contains(err.Error(), "networks[0].id") {
		t.Fatalf("got %v, want ErrInvalidState naming networks[0].id", err)
	}
	// A bad port fails alone.
	w := newWorld(netA)
	good, _ := vethPort(tp, "good", "neta", "02:00:00:01:00:01", "10.1.0.11")
	bad := good
	bad.ID, bad.MAC = "bad", mac("01:00:00:00:00:01")
	w.addPort("h1", good)
	w.addPort("h1", bad)
	rep, err := tp.hosts[0].h.Apply(context.Background(), w.stateFor(tp, tp.hosts[0]))
	if !errors.Is(err, dataplane.ErrPartial) {
		t.Fatalf("got %v, want ErrPartial", err)
	}
	if !rep.Ports["good"].Ready || rep.Ports["bad"].Ready || !strings.Contains(rep.Ports["bad"].Err, "unicast") {
		t.Fatalf("report: %+v", rep.Ports)
	}
}

func tcpRule(port uint16) dataplane.Rule {
	return dataplane.Rule{Direction: dataplane.Ingress, Family: dataplane.IPv4, Protocol: "tcp", PortMin: port, PortMax: port}
}

func TestSecurityGroupRuleOpensOneTCPPortAndRemovingItClosesTheConnection(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA)
	srv, wss := vethPort(tp, "srv", "neta", "02:00:00:01:00:01", "10.1.0.11", "fd00:a::11")
	cli, wsc := vethPort(tp, "cli", "neta", "02:00:00:01:00:02", "10.1.0.12", "fd00:a::12")
	web := dataplane.SecurityGroup{ID: "web", Rules: []dataplane.Rule{tcpRule(8080),
		{Direction: dataplane.Ingress, Family: dataplane.IPv6, Protocol: "tcp", PortMin: 8080, PortMax: 8080}}}
	srv.SecurityGroups = []dataplane.SecurityGroup{web}
	cli.SecurityGroups = nil // default: no ingress, egress allowed
	w.addPort("h1", srv)
	w.addPort("h2", cli)
	w.applyAndAddress(t, tp)
	listen(t, wss, "10.1.0.11:8080")
	listen(t, wss, "10.1.0.11:8081")
	listen(t, wss, "[fd00:a::11]:8080")

	// Default ingress deny: no ping to either side, no TCP to 8081.
	unreachable(t, wsc, ip("10.1.0.11"))
	unreachable(t, wss, ip("10.1.0.12"))
	refused(t, wsc, "10.1.0.11:8081", "a port no rule opens")
	// The rule opens 8080, over IPv4 and IPv6.
	s := startStream(t, wsc, "10.1.0.11:8080")
	s.advance(t, 5)
	echoOnce(t, wsc, "[fd00:a::11]:8080", "v6")

	// Removing the rule closes the running connection and refuses new ones.
	w.setGroups("srv", nil)
	w.applyAll(t, tp)
	testkit.Eventually(t, 10*time.Second, "the stream to break after its rule was removed", func() bool {
		return s.failed() != nil
	})
	refused(t, wsc, "10.1.0.11:8080", "a port whose rule was removed")
}

func TestRemoteGroupRuleAdmitsMembersOnly(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA)
	db, wsd := vethPort(tp, "db", "neta", "02:00:00:01:00:01", "10.1.0.11")
	app, wsa := vethPort(tp, "app", "neta", "02:00:00:01:00:02", "10.1.0.12")
	other, wso := vethPort(tp, "other", "neta", "02:00:00:01:00:03", "10.1.0.13")
	same := dataplane.SecurityGroup{ID: "backend", Rules: []dataplane.Rule{{Direction: dataplane.Ingress,
		Family: dataplane.IPv4, Protocol: "tcp", PortMin: 5432, PortMax: 5432, RemoteGroup: "backend"}}}
	db.SecurityGroups = []dataplane.SecurityGroup{same}
	app.SecurityGroups = []dataplane.SecurityGroup{same}
	other.SecurityGroups = nil
	w.groups["backend"] = ips("10.1.0.11", "10.1.0.12")
	w.addPort("h1", db)
	w.addPort("h2", app)
	w.addPort("h2", other)
	w.applyAndAddress(t, tp)
	listen(t, wsd, "10.1.0.11:5432")
	echoOnce(t, wsa, "10.1.0.11:5432", "member")
	refused(t, wso, "10.1.0.11:5432", "a non-member of the remote group")
}

func TestSpoofedSourceAddressAndMACAreDropped(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA)
	a1, ws1 := vethPort(tp, "a1", "neta", "02:00:00:01:00:01", "10.1.0.11")
	a2, ws2 := vethPort(tp, "a2", "neta", "02:00:00:01:00:02", "10.1.0.12")
	// The target has no port security, so only the sender's filter acts.
	a2.PortSecurity = false
	w.addPort("h1", a1)
	w.addPort("h1", a2)
	w.applyAndAddress(t, tp)
	tp.configure(ws1, []netip.Prefix{pfx("10.1.0.99/24")}, netip.Addr{})
	reachable(t, ws1, ip("10.1.0.12"))
	// Another source address of the same subnet.
	unreachable(t, ws1, ip("10.1.0.12"), "-I", "10.1.0.99")
	// Another MAC.
	out, err := run(ws1, "ip", "link", "set", "eth0", "address", "02:00:00:01:00:99")
	if err != nil {
		t.Fatal(out)
	}
	_, _ = run(ws2, "ip", "neigh", "flush", "dev", "eth0")
	_, _ = run(ws1, "ip", "neigh", "flush", "dev", "eth0")
	unreachable(t, ws1, ip("10.1.0.12"))
}

func TestApplyDuringAStreamAndAnAgentRestartKeepTheStreamAlive(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA)
	srv, wss := vethPort(tp, "srv", "neta", "02:00:00:01:00:01", "10.1.0.11")
	cli, wsc := vethPort(tp, "cli", "neta", "02:00:00:01:00:02", "10.1.0.12")
	srv.SecurityGroups = []dataplane.SecurityGroup{{ID: "web", Rules: []dataplane.Rule{tcpRule(8080)}}}
	w.addPort("h1", srv)
	w.addPort("h2", cli)
	w.applyAndAddress(t, tp)
	listen(t, wss, "10.1.0.11:8080")
	s := startStream(t, wsc, "10.1.0.11:8080")
	s.advance(t, 5)

	// Changes elsewhere (a new port on each host, another rule on srv)
	// while the stream runs.
	p3, _ := vethPort(tp, "p3", "neta", "02:00:00:01:00:03", "10.1.0.13")
	p4, _ := vethPort(tp, "p4", "neta", "02:00:00:01:00:04", "10.1.0.14")
	w.addPort("h1", p3)
	w.addPort("h2", p4)
	w.setGroups("srv", []dataplane.SecurityGroup{{ID: "web", Rules: []dataplane.Rule{tcpRule(8080), tcpRule(9090)}}})
	w.applyAll(t, tp)
	s.advance(t, 5)

	// Agent restart: new Hosts adopt the kernel state without changes.
	for _, th := range tp.hosts {
		tp.restart(th)
	}
	wantNoChanges(t, tp, "the first apply after a restart", w.stateOf(tp))
	s.advance(t, 5)
	must(t, s.end())
}

func TestRemovedPortLeavesNoDeviceChainOrRemoteEntries(t *testing.T) {
	tp := newTopo(t, 2)
	w := newWorld(netA)
	a1, _ := vethPort(tp, "a1", "neta", "02:00:00:01:00:01", "10.1.0.11")
	a2, _ := vethPort(tp, "a2", "neta", "02:00:00:01:00:02", "10.1.0.12")
	w.addPort("h1", a1)
	w.addPort("h2", a2)
	w.applyAll(t, tp)
	h1, h2 := tp.hosts[0], tp.hosts[1]
	if out, _ := run(h1.ns, "nft", "list", "table", "inet", "ultracloud"); !strings.Contains(out, "chain i-a1-") {
		t.Fatalf("no ingress chain for a1:\n%s", out)
	}
	if out, _ := run(h2.ns, "bridge", "fdb", "show", "dev", "ucx-neta"); !strings.Contains(out, "02:00:00:01:00:01 dst 10.99.0.1") {
		t.Fatalf("no fdb entry for a1 on h2:\n%s", out)
	}
	w.removePort("a1")
	w.applyAll(t, tp)
	if out, _ := run(h1.ns, "ip", "link", "show", "ucv-a1"); !strings.Contains(out, "does not exist") {
		t.Fatalf("ucv-a1 still exists: %s", out)
	}
	for _, tbl := range [][]string{{"inet", "ultracloud"}, {"bridge", "ultracloud"}} {
		out, err := run(h1.ns, "nft", "list", "table", tbl[0], tbl[1])
		if err != nil || strings.Contains(out, "-a1-") {
			t.Fatalf("table %s still has a1 (err %v):\n%s", tbl[0], err, out)
		}
	}
	if out, _ := run(h2.ns, "bridge", "fdb", "show", "dev", "ucx-neta"); strings.Contains(out, "02:00:00:01:00:01") {
		t.Fatalf("fdb entry for a1 still on h2:\n%s", out)
	}
	if out, _ := run(h2.ns, "ip", "neigh", "show", "dev", "ucx-neta"); strings.Contains(out, "10.1.0.11") {
		t.Fatalf("neighbour entry for a1 still on h2:\n%s", out)
	}
	// Removing the network too leaves nothing of ours.
	w.ports = map[string][]dataplane.Port{}
	w.networks = nil
	w.applyAll(t, tp)
	out, _ := run(h1.ns, "ip", "-o", "link")
	if strings.Contains(out, " uc") {
		t.Fatalf("links of ours left:\n%s", out)
	}
	if out, _ := run(h1.ns, "nft", "list", "tables"); strings.Contains(out, "ultracloud") {
		t.Fatalf("tables of ours left on an idle host:\n%s", out)
	}
}

func TestRouterSNATReachesTheExternalNetworkAndAFloatingIPIsReachableFromIt(t *testing.T) {
	tp := newTopo(t, 2)
	h1 := tp.hosts[0]
	// The external network: a namespace behind a veth whose host end
	// (ext0) is the ExternalNetwork's interface on h1.
	ext := tp.newNs("ext")
	out, err := run(h1.ns, "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext)
	if err != nil {
		t.Fatal(out)
	}
	tp.configure(ext, []netip.Prefix{pfx("203.0.113.1/24")}, netip.Addr{})
	if out, err := run(ext, "ip", "link", "set", "eth0", "up"); err != nil {
		t.Fatal(out)
	}

	w := newWorld(netA)
	a1, ws1 := vethPort(tp, "a1", "neta", "02:00:00:01:00:01", "10.1.0.11")
	a2, ws2 := vethPort(tp, "a2", "neta", "02:00:00:01:00:02", "10.1.0.12")
	w.addPort("h1", a1)
	w.addPort("h2", a2)
	w.externals["h1"] = []dataplane.ExternalNetwork{{ID: "pub", Interface: "ext0", CIDR: pfx("203.0.113.0/24")}}
	gwMAC := mac("02:00:00:0f:00:01")
	w.routers["h1"] = []dataplane.Router{{ID: "r1",
		Interfaces:  []dataplane.RouterInterface{{Network: "neta", Subnet: pfx("10.1.0.0/24"), Gateway: ip("10.1.0.1"), MAC: gwMAC}},
		External:    &dataplane.RouterGateway{ExternalNetwork: "pub", Address: pfx("203.0.113.10/24"), Gateway: ip("203.0.113.1"), SNAT: true},
		FloatingIPs: []dataplane.FloatingIP{{External: ip("203.0.113.20"), Internal: ip("10.1.0.11")}},
	}}
	// The router interface is remote for h2, like any port.
	states := map[string]dataplane.State{}
	for _, th := range tp.hosts {
		s := w.stateFor(tp, th)
		if th.name == "h2" {
			s.Remotes = append(s.Remotes, dataplane.RemotePort{Network: "neta", MAC: gwMAC, IPs: ips("10.1.0.1"), VTEP: h1.underlay})
		}
		states[th.name] = s
		rep, err := th.h.Apply(context.Background(), s)
		if err != nil {
			t.Fatalf("apply on %s: %v %+v", th.name, err, rep)
		}
	}
	tp.configure(ws1, prefixes(a1), ip("10.1.0.1"))
	tp.configure(ws2, prefixes(a2), ip("10.1.0.1"))

	// SNAT: the external side sees the router's gateway address.
	ln := listen(t, ext, "203.0.113.1:7000")
	_ = ln
	reachable(t, ws1, ip("203.0.113.1"))
	reachable(t, ws2, ip("203.0.113.1"))
	echoOnce(t, ws2, "203.0.113.1:7000", "via snat")
	out, _ = run(ext, "ss", "-tn", "state", "time-wait")
	out2, _ := run(ext, "ss", "-tn")
	if !strings.Contains(out+out2, "203.0.113.10") && !strings.Contains(out+out2, "203.0.113.20") {
		t.Logf("ss in ext: %s %s", out, out2)
	}
	// The floating IP reaches a1 (its group allows ICMP) from outside.
	reachable(t, ext, ip("203.0.113.20"))
	// And a1 leaves through its floating IP.
	lnAddr := "203.0.113.1:7001"
	got := make(chan string, 1)
	acceptOne(t, ext, lnAddr, got)
	c, err := dial(ws1, lnAddr, 5*time.Second)
	must(t, err)
	c.Close()
	select {
	case from := <-got:
		if from != "203.0.113.20" {
			t.Fatalf("a1 seen from %s outside, want its floating IP 203.0.113.20", from)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection arrived")
	}
	wantNoChanges(t, tp, "a second apply", func(th *thost) dataplane.State { return states[th.name] })
}

// acceptOne accepts one connection in ns and reports its source address.
func acceptOne(t *testing.T, ns, addr string, got chan<- string) {
	t.Helper()
	var ln net.Listener
	var err error
	must(t, doIn(ns, func() error { ln, err = net.Listen("tcp", addr); return err }))
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
}
