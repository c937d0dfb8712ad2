//go:build linux

package dataplane_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
)

// benchState is n tap ports with port security and two groups, spread over
// 4 networks, plus n remote ports on another host.
func benchState(th *thost, n int) dataplane.State {
	s := dataplane.State{Underlay: th.underlay, Groups: map[string][]netip.Addr{}}
	for i := 0; i < 4; i++ {
		s.Networks = append(s.Networks, dataplane.Network{ID: fmt.Sprintf("bn%d", i), VNI: uint32(1000 + i), MTU: 1450,
			ServiceMAC: net.HardwareAddr{2, 0, 0, 0, 0xee, byte(i)},
			Subnets:    []dataplane.Subnet{{CIDR: pfx(fmt.Sprintf("10.%d.0.0/16", 10+i)), ServiceAddr: ip(fmt.Sprintf("10.%d.0.2", 10+i))}}})
	}
	web := dataplane.SecurityGroup{ID: "web", Rules: []dataplane.Rule{tcpRule(80), tcpRule(443),
		{Direction: dataplane.Ingress, Family: dataplane.IPv4, Protocol: "tcp", PortMin: 22, PortMax: 22, RemoteGroup: "web"}}}
	for i := 0; i < n; i++ {
		netIdx := i % 4
		addr := netip.AddrFrom4([4]byte{10, byte(10 + netIdx), byte(i / 250), byte(10 + i%250)})
		s.Ports = append(s.Ports, dataplane.Port{ID: fmt.Sprintf("bp%d", i), Network: fmt.Sprintf("bn%d", netIdx),
			MAC: net.HardwareAddr{2, 1, 0, 0, byte(i >> 8), byte(i)}, IPs: []netip.Addr{addr}, Device: dataplane.Tap,
			PortSecurity: true, SecurityGroups: []dataplane.SecurityGroup{web, allowICMP}})
		s.Groups["web"] = append(s.Groups["web"], addr)
		raddr := netip.AddrFrom4([4]byte{10, byte(10 + netIdx), byte(100 + i/250), byte(10 + i%250)})
		s.Remotes = append(s.Remotes, dataplane.RemotePort{Network: fmt.Sprintf("bn%d", netIdx),
			MAC: net.HardwareAddr{2, 2, 0, 0, byte(i >> 8), byte(i)}, IPs: []netip.Addr{raddr}, VTEP: ip("10.99.0.2")})
	}
	return s
}

// BenchmarkApply1000PortsFromEmpty: one host, from no objects of ours to
// 1,000 ready tap ports (with anti-spoofing, security groups and 1,000
// remote ports' FDB/neighbour entries). Target: under 10 s.
func BenchmarkApply1000PortsFromEmpty(b *testing.B) {
	tp := newTopo(b, 1)
	th := tp.hosts[0]
	s := benchState(th, 1000)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if _, err := th.h.Apply(ctx, dataplane.State{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := th.h.Apply(ctx, s)
		if err != nil {
			b.Fatal(err, rep.Errors)
		}
		if len(rep.Ports) != 1000 {
			b.Fatalf("%d ports reported", len(rep.Ports))
		}
	}
}

// BenchmarkApplyOnePortChange: with 1,000 ports in place, one port's
// security groups change and the whole State is applied again. Target:
// under 50 ms.
func BenchmarkApplyOnePortChange(b *testing.B) {
	tp := newTopo(b, 1)
	th := tp.hosts[0]
	s := benchState(th, 1000)
	ctx := context.Background()
	if _, err := th.h.Apply(ctx, s); err != nil {
		b.Fatal(err)
	}
	orig := s.Ports[500].SecurityGroups
	changed := append([]dataplane.SecurityGroup{{ID: "extra", Rules: []dataplane.Rule{tcpRule(8443)}}}, orig...)
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			s.Ports[500].SecurityGroups = changed
		} else {
			s.Ports[500].SecurityGroups = orig
		}
		i++
		rep, err := th.h.Apply(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Changes == 0 {
			b.Fatal("no change applied")
		}
	}
}
