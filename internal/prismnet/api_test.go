package prismnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node/nodetest"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// env is an in-process node (the real wiring) with projects alpha and
// bravo.
type env struct {
	t   *testing.T
	n   *nodetest.Node
	ctx context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, n: n, ctx: ctx}
	for _, p := range []string{"alpha", "bravo"} {
		if _, err := e.create("projects", "", p, struct{}{}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) create(coll, project, name string, spec any) (*api.Object, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.n.Admin.Resources(coll, project).Create(e.ctx, &api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: raw})
}

func (e *env) mustCreate(coll, project, name string, spec any) *api.Object {
	e.t.Helper()
	o, err := e.create(coll, project, name, spec)
	if err != nil {
		e.t.Fatalf("creating %s %s/%s: %v", coll, project, name, err)
	}
	return o
}

func (e *env) delete(coll, project, name string) error {
	_, err := e.n.Admin.Resources(coll, project).Delete(e.ctx, name, 0)
	return err
}

func status[T any](t *testing.T, o *api.Object) T {
	t.Helper()
	var s T
	if err := json.Unmarshal(o.Status, &s); err != nil {
		t.Fatalf("status of %s: %v", o.Metadata.Name, err)
	}
	return s
}

// wantProblem checks err is a problem with the HTTP status and code.
func wantProblem(t *testing.T, what string, err error, httpStatus int, code string) {
	t.Helper()
	p, ok := client.ProblemOf(err)
	if !ok || p.Status != httpStatus || (code != "" && p.Code != code) {
		t.Fatalf("%s: got %v, want HTTP %d %s", what, err, httpStatus, code)
	}
}

func (e *env) count(coll, project string) int {
	e.t.Helper()
	l, err := e.n.Admin.Resources(coll, project).List(e.ctx, client.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(l.Items)
}

// TestNetworkSubnetPortLifecycle: a port gets a MAC and an address from
// its network's subnet (IPv4 from the pool, IPv6 by EUI-64), and deletes
// are refused with 409 in_use while something still depends on the
// object, changing nothing.
func TestNetworkSubnetPortLifecycle(t *testing.T) {
	e := newEnv(t)
	net := e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.10.0.0/16", IPv6Prefixes: []string{"fd00:10::/64"}})
	ns := status[prismnetv1.NetworkStatus](t, net)
	if ns.VNI == 0 || ns.MTU != 1450 || ns.ID == "" {
		t.Fatalf("network status %+v", ns)
	}
	sub := e.mustCreate("subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.10.1.0/24", DNSServers: []string{"10.10.1.53"}})
	ss := status[prismnetv1.SubnetStatus](t, sub)
	if ss.Gateway != "10.10.1.1" || ss.ServiceAddress != "10.10.1.254" {
		t.Fatalf("subnet status %+v", ss)
	}
	e.mustCreate("subnets", "alpha", "sub6", prismnetv1.SubnetSpec{Network: "net1", CIDR: "fd00:10::/64"})
	e.mustCreate("securitygroups", "alpha", "web", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
		{Direction: "ingress", Protocol: "tcp", PortMin: 80}}})
	port := e.mustCreate("ports", "alpha", "p1", prismnetv1.PortSpec{Network: "net1", SecurityGroups: []string{"web"},
		Binding: prismnetv1.PortBinding{Host: "w1"}})
	ps := status[prismnetv1.PortStatus](t, port)
	if ps.MAC == "" || len(ps.FixedIPs) != 2 || ps.Phase != prismnetv1.PortPending {
		t.Fatalf("port status %+v", ps)
	}
	for _, f := range ps.FixedIPs {
		a := netip.MustParseAddr(f.IP)
		switch f.Subnet {
		case "sub1":
			if !netip.MustParsePrefix("10.10.1.0/24").Contains(a) || a.String() == "10.10.1.1" || a.String() == "10.10.1.254" {
				t.Errorf("IPv4 address %s", a)
			}
		case "sub6":
			if !netip.MustParsePrefix("fd00:10::/64").Contains(a) || a.As16()[11] != 0xff || a.As16()[12] != 0xfe {
				t.Errorf("IPv6 address %s is not the EUI-64 of %s", a, ps.MAC)
			}
		}
	}
	// A status write (as the agent does) cannot change the allocations.
	port.Status = json.RawMessage(`{"phase":"Ready","host":"w1","mac":"fa:00:00:00:00:01","fixedIPs":[]}`)
	upd, err := e.n.Admin.Resources("ports", "alpha").UpdateStatus(e.ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	if got := status[prismnetv1.PortStatus](t, upd); got.MAC != ps.MAC || len(got.FixedIPs) != 2 || got.Phase != "Ready" {
		t.Fatalf("status after the agent's write: %+v", got)
	}

	// Moving the port to another host makes its status Pending again.
	cur, err := e.n.Admin.Resources("ports", "alpha").Get(e.ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec = json.RawMessage(`{"network":"net1","securityGroups":["web"],"binding":{"host":"w2"}}`)
	moved, err := e.n.Admin.Resources("ports", "alpha").Update(e.ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	if got := status[prismnetv1.PortStatus](t, moved); got.Phase != prismnetv1.PortPending || got.MAC != ps.MAC {
		t.Fatalf("status after rebinding: %+v, want Pending with the same MAC", got)
	}

	wantProblem(t, "deleting a network with ports", e.delete("networks", "alpha", "net1"), 409, prismnetv1.CodeInUse)
	wantProblem(t, "deleting a subnet with addresses", e.delete("subnets", "alpha", "sub1"), 409, prismnetv1.CodeInUse)
	wantProblem(t, "deleting a group in use", e.delete("securitygroups", "alpha", "web"), 409, prismnetv1.CodeInUse)
	if e.count("networks", "alpha") != 1 || e.count("subnets", "alpha") != 2 || e.count("securitygroups", "alpha") != 1 {
		t.Fatal("a refused delete deleted something")
	}
	if err := e.delete("ports", "alpha", "p1"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, "deleting a network with subnets", e.delete("networks", "alpha", "net1"), 409, prismnetv1.CodeInUse)
	for _, s := range []string{"sub1", "sub6"} {
		if err := e.delete("subnets", "alpha", s); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.delete("securitygroups", "alpha", "web"); err != nil {
		t.Fatal(err)
	}
	if err := e.delete("networks", "alpha", "net1"); err != nil {
		t.Fatal(err)
	}
	// The VNI and names are free again.
	e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.10.0.0/16"})
}

// TestBadInputIsRefusedAndCreatesNothing: every invalid request is a 4xx
// problem naming the problem, and nothing is created.
func TestBadInputIsRefusedAndCreatesNothing(t *testing.T) {
	e := newEnv(t)
	e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.20.0.0/16"})
	e.mustCreate("subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.20.1.0/24"})
	e.mustCreate("subnets", "alpha", "tiny", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.20.2.0/29",
		AllocationPools: []prismnetv1.AllocationPool{{Start: "10.20.2.2", End: "10.20.2.3"}}})
	e.mustCreate("networks", "bravo", "theirs", prismnetv1.NetworkSpec{CIDR: "10.30.0.0/16"})
	cases := []struct {
		what, coll, project, name string
		spec                      any
		status                    int
		code                      string
	}{
		{"not a CIDR", "networks", "alpha", "n2", prismnetv1.NetworkSpec{CIDR: "10.0.0.300/16"}, 400, api.CodeInvalidField},
		{"host bits set", "networks", "alpha", "n2", prismnetv1.NetworkSpec{CIDR: "10.0.0.1/16"}, 400, api.CodeInvalidField},
		{"IPv6 network CIDR", "networks", "alpha", "n2", prismnetv1.NetworkSpec{CIDR: "fd00::/48"}, 400, api.CodeInvalidField},
		{"IPv6 prefix not /64", "networks", "alpha", "n2", prismnetv1.NetworkSpec{CIDR: "10.0.0.0/16", IPv6Prefixes: []string{"fd00::/56"}}, 400, api.CodeInvalidField},
		{"subnet outside its network", "subnets", "alpha", "s2", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.99.0.0/24"}, 400, api.CodeInvalidField},
		{"overlapping subnet", "subnets", "alpha", "s2", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.20.1.128/25"}, 409, api.CodeConflict},
		{"gateway outside the subnet", "subnets", "alpha", "s2", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.20.3.0/24", Gateway: "10.20.4.1"}, 400, api.CodeInvalidField},
		{"pool containing the gateway", "subnets", "alpha", "s2", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.20.3.0/24",
			AllocationPools: []prismnetv1.AllocationPool{{Start: "10.20.3.1", End: "10.20.3.9"}}}, 400, api.CodeInvalidField},
		{"subnet of a missing network", "subnets", "alpha", "s2", prismnetv1.SubnetSpec{Network: "nope", CIDR: "10.20.3.0/24"}, 404, api.CodeNotFound},
		{"port on another project's network", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "theirs"}, 400, api.CodeInvalidField},
		{"port with a taken address", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "net1",
			FixedIPs: []prismnetv1.FixedIP{{Subnet: "sub1", IP: "10.20.1.10"}}}, 409, prismnetv1.CodeAddressInUse},
		{"port with the gateway address", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "net1",
			FixedIPs: []prismnetv1.FixedIP{{Subnet: "sub1", IP: "10.20.1.1"}}}, 400, api.CodeInvalidField},
		{"port with a missing group", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "net1", SecurityGroups: []string{"nope"}}, 404, api.CodeNotFound},
		{"port with a multicast MAC", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "net1", MAC: "01:00:5e:00:00:01"}, 400, api.CodeInvalidField},
		{"veth port without a namespace", "ports", "alpha", "p2", prismnetv1.PortSpec{Network: "net1",
			Binding: prismnetv1.PortBinding{Host: "w1", Device: "veth"}}, 400, api.CodeInvalidField},
		{"rule with a port range on icmp", "securitygroups", "alpha", "g2", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
			{Direction: "ingress", Protocol: "icmp", PortMin: 22}}}, 400, api.CodeInvalidField},
		{"rule with an IPv6 CIDR for IPv4", "securitygroups", "alpha", "g2", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
			{Direction: "ingress", RemoteCIDR: "fd00::/8"}}}, 400, api.CodeInvalidField},
		{"rule with a bad direction", "securitygroups", "alpha", "g2", prismnetv1.SecurityGroupSpec{Rules: []prismnetv1.SecurityGroupRule{
			{Direction: "inbound"}}}, 400, api.CodeInvalidField},
		{"network in a missing project", "networks", "nowhere", "n2", prismnetv1.NetworkSpec{CIDR: "10.0.0.0/16"}, 404, api.CodeNotFound},
	}
	e.mustCreate("ports", "alpha", "holder", prismnetv1.PortSpec{Network: "net1", FixedIPs: []prismnetv1.FixedIP{{Subnet: "sub1", IP: "10.20.1.10"}}})
	e.mustCreate("externalnetworks", "", "public", prismnetv1.ExternalNetworkSpec{CIDR: "192.0.2.0/24", Gateway: "192.0.2.1",
		Interface: "eth1", Hosts: []string{"w1"}})
	e.mustCreate("subnets", "bravo", "theirsub", prismnetv1.SubnetSpec{Network: "theirs", CIDR: "10.30.1.0/24"})
	e.mustCreate("ports", "bravo", "theirport", prismnetv1.PortSpec{Network: "theirs"})
	e.mustCreate("routers", "alpha", "r1", prismnetv1.RouterSpec{Interfaces: []prismnetv1.RouterInterface{{Subnet: "sub1"}}})
	cases = append(cases, []struct {
		what, coll, project, name string
		spec                      any
		status                    int
		code                      string
	}{
		{"external network without hosts", "externalnetworks", "", "x2", prismnetv1.ExternalNetworkSpec{CIDR: "198.51.100.0/24", Interface: "eth1"}, 400, api.CodeInvalidField},
		{"external network with a bad interface", "externalnetworks", "", "x2", prismnetv1.ExternalNetworkSpec{CIDR: "198.51.100.0/24", Interface: "eth1; rm", Hosts: []string{"w1"}}, 400, api.CodeInvalidField},
		{"router on another project's subnet", "routers", "alpha", "r2", prismnetv1.RouterSpec{Interfaces: []prismnetv1.RouterInterface{{Subnet: "theirsub"}}}, 400, api.CodeInvalidField},
		{"second router on a subnet", "routers", "alpha", "r2", prismnetv1.RouterSpec{Interfaces: []prismnetv1.RouterInterface{{Subnet: "sub1"}}}, 409, prismnetv1.CodeInUse},
		{"router to a missing external network", "routers", "alpha", "r2", prismnetv1.RouterSpec{ExternalGateway: &prismnetv1.RouterGateway{ExternalNetwork: "nope"}}, 400, api.CodeInvalidField},
		{"floating IP for another project's port", "floatingips", "alpha", "f1", prismnetv1.FloatingIPSpec{ExternalNetwork: "public", Port: "theirport"}, 400, api.CodeInvalidField},
		{"floating IP of a missing external network", "floatingips", "alpha", "f1", prismnetv1.FloatingIPSpec{ExternalNetwork: "nope"}, 404, api.CodeNotFound},
	}...)
	for _, c := range cases {
		_, err := e.create(c.coll, c.project, c.name, c.spec)
		wantProblem(t, c.what, err, c.status, c.code)
	}
	// The tiny subnet's pool holds two addresses: the third port is refused.
	for i := range 2 {
		e.mustCreate("ports", "alpha", fmt.Sprintf("t%d", i), prismnetv1.PortSpec{Network: "net1", FixedIPs: []prismnetv1.FixedIP{{Subnet: "tiny"}}})
	}
	_, err := e.create("ports", "alpha", "t2", prismnetv1.PortSpec{Network: "net1", FixedIPs: []prismnetv1.FixedIP{{Subnet: "tiny"}}})
	wantProblem(t, "exhausted pool", err, 409, prismnetv1.CodePoolExhausted)
	if n := e.count("networks", "alpha"); n != 1 {
		t.Errorf("%d networks in alpha, want 1", n)
	}
	if n := e.count("subnets", "alpha"); n != 2 {
		t.Errorf("%d subnets in alpha, want 2", n)
	}
	if n := e.count("ports", "alpha"); n != 3 {
		t.Errorf("%d ports in alpha, want 3 (holder, t0, t1)", n)
	}
	if n := e.count("securitygroups", "alpha"); n != 0 {
		t.Errorf("%d security groups in alpha, want 0", n)
	}
	if n, m, x := e.count("routers", "alpha"), e.count("floatingips", "alpha"), e.count("externalnetworks", ""); n != 1 || m != 0 || x != 1 {
		t.Errorf("%d routers, %d floating IPs, %d external networks; want 1, 0, 1", n, m, x)
	}
}

// TestConcurrentPortCreatesNeverShareAnAddress: many ports created at once
// all get distinct addresses, and deleting them releases every address.
func TestConcurrentPortCreatesNeverShareAnAddress(t *testing.T) {
	e := newEnv(t)
	e.mustCreate("networks", "alpha", "net1", prismnetv1.NetworkSpec{CIDR: "10.40.0.0/16"})
	e.mustCreate("subnets", "alpha", "sub1", prismnetv1.SubnetSpec{Network: "net1", CIDR: "10.40.0.0/24"})
	const ports = 200
	var wg sync.WaitGroup
	addrs := make([]string, ports)
	errs := make([]error, ports)
	for i := range ports {
		wg.Go(func() {
			o, err := e.create("ports", "alpha", fmt.Sprintf("p%d", i), prismnetv1.PortSpec{Network: "net1"})
			if err != nil {
				errs[i] = err
				return
			}
			var s prismnetv1.PortStatus
			errs[i] = json.Unmarshal(o.Status, &s)
			if len(s.FixedIPs) == 1 {
				addrs[i] = s.FixedIPs[0].IP
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i, a := range addrs {
		if errs[i] != nil {
			t.Fatalf("port p%d: %v", i, errs[i])
		}
		if j, dup := seen[a]; dup || a == "" {
			t.Fatalf("ports p%d and p%d share address %q", i, j, a)
		}
		seen[a] = i
	}
	// Deleting releases every address: all 252 (254 usable minus the
	// gateway and the service address) can be handed out again.
	for i := range ports {
		if err := e.delete("ports", "alpha", fmt.Sprintf("p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 252 {
		e.mustCreate("ports", "alpha", fmt.Sprintf("q%d", i), prismnetv1.PortSpec{Network: "net1"})
	}
	_, err := e.create("ports", "alpha", "one-too-many", prismnetv1.PortSpec{Network: "net1"})
	wantProblem(t, "the 253rd port", err, 409, prismnetv1.CodePoolExhausted)
}
