//go:build linux

package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestDeviceNamesFitIFNAMSIZAndParseBack(t *testing.T) {
	for _, id := range []string{"a1", "abcdefghijk", "Port-With-UUID-0b4e9c1e-1111-2222-3333-444455556666", ""} {
		for _, kind := range []DeviceKind{Tap, Veth} {
			name := portDev(&Port{ID: id, Device: kind})
			if len(name) > maxIfName {
				t.Fatalf("%q: %d characters", name, len(name))
			}
			if _, key, ok := parseDevName(name); !ok || key != portKey(id) {
				t.Fatalf("%q does not parse back (key %q)", name, key)
			}
		}
	}
	if name := legDev("r12345678", "n12345678"); len(name) > maxIfName {
		t.Fatalf("%q too long", name)
	}
	for _, foreign := range []string{"eth0", "br0", "ucb", "ucz-abc", "ucb-ABC", "docker0", "ucb-1234567890123"} {
		if _, _, ok := parseDevName(foreign); ok {
			t.Fatalf("%q parsed as ours", foreign)
		}
	}
}

func TestLinkLocalIsEUI64OfTheMAC(t *testing.T) {
	m, _ := net.ParseMAC("02:00:00:01:00:01")
	if got, want := linkLocal(m), netip.MustParseAddr("fe80::ff:fe01:1"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestChainNamesParseBackAndCarryTheContentSignature(t *testing.T) {
	a, b := chainName('i', "a1", "v1;x"), chainName('i', "a1", "v1;y")
	if a == b {
		t.Fatal("different content, same name")
	}
	k, key, _, ok := parseChainName(a)
	if !ok || k != 'i' || key != "a1" {
		t.Fatalf("parse %q: %c %q %v", a, k, key, ok)
	}
	for _, bad := range []string{"", "fwd1", "pre1", "i-a1", "i--abcdefghij", "q-a1-abcdefghij", "i-A1-abcdefghij", "i-a1-abcdefghi1"} {
		if _, _, _, ok := parseChainName(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

func TestPolicyAllowsWhatTheRulesSay(t *testing.T) {
	pol := compilePolicy([]SecurityGroup{{ID: "g", Rules: []Rule{
		{Direction: Ingress, Protocol: "tcp", PortMin: 80, PortMax: 80},
		{Direction: Ingress, Protocol: "tcp", PortMin: 80, PortMax: 80}, // duplicate
		{Direction: Ingress, Protocol: "udp", PortMin: 1000, PortMax: 2000, RemoteCIDR: netip.MustParsePrefix("10.0.0.0/8")},
		{Direction: Ingress, Family: IPv6, Protocol: "icmpv6", RemoteGroup: "peers"},
	}}})
	if len(pol.ingress) != 3 || !pol.egressAll {
		t.Fatalf("policy: %+v", pol)
	}
	groups := map[string]map[netip.Addr]bool{"peers": {netip.MustParseAddr("fd00::1"): true}}
	cases := []struct {
		f    flowKey
		want bool
	}{
		{flowKey{netip.MustParseAddr("192.0.2.1"), 6, 80}, true},
		{flowKey{netip.MustParseAddr("192.0.2.1"), 6, 81}, false},
		{flowKey{netip.MustParseAddr("10.1.2.3"), 17, 1500}, true},
		{flowKey{netip.MustParseAddr("192.0.2.1"), 17, 1500}, false},
		{flowKey{netip.MustParseAddr("fd00::1"), 58, 0}, true},
		{flowKey{netip.MustParseAddr("fd00::2"), 58, 0}, false},
	}
	for _, c := range cases {
		if got := allows(pol.ingress, c.f, groups); got != c.want {
			t.Errorf("%+v: got %v, want %v", c.f, got, c.want)
		}
	}
}

func FuzzParseDevName(f *testing.F) {
	for _, s := range []string{"ucb-neta", "uct-a1", "ucr-abcdefghijk", "eth0", "uc-", "ucb-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, key, ok := parseDevName(s)
		if !ok {
			return
		}
		if len(s) > maxIfName || devName(kind, key) != s || key == "" {
			t.Fatalf("%q parsed to %c %q", s, kind, key)
		}
	})
}

func FuzzParseChainName(f *testing.F) {
	for _, s := range []string{chainName('a', "a1", "x"), chainName('e', "abcdefghijk", "y"), "z-abcdefghij", "fwd1", "i--"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, key, sig, ok := parseChainName(s)
		if !ok {
			return
		}
		rebuilt := string(kind) + "-" + sig
		if kind != 'z' {
			rebuilt = string(kind) + "-" + key + "-" + sig
		}
		if rebuilt != s || len(sig) != sigLen {
			t.Fatalf("%q parsed to %c %q %q", s, kind, key, sig)
		}
	})
}

func FuzzParsePortAlias(f *testing.F) {
	f.Add(portAlias("a1"))
	f.Add("ultracloud port ")
	f.Add("something else")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parsePortAlias(s)
		if !ok {
			return
		}
		if portAlias(id) != s || id == "" || strings.ContainsAny(id, "\x00\n") {
			t.Fatalf("%q parsed to %q", s, id)
		}
	})
}
