package dhcp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	serviceAddr = netip.MustParseAddr("10.20.0.2")
	portMAC     = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x50}
	otherMAC    = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}
)

func testLease() Lease {
	return Lease{
		MAC:          portMAC,
		Addr:         netip.MustParsePrefix("10.20.0.50/24"),
		Router:       netip.MustParseAddr("10.20.0.1"),
		DNS:          []netip.Addr{netip.MustParseAddr("10.20.0.3"), netip.MustParseAddr("10.20.0.4")},
		DomainSearch: []string{"tenant.internal", "svc.tenant.internal"},
		MTU:          1450,
		Routes: []Route{
			{Dest: netip.MustParsePrefix("169.254.169.254/32"), Via: serviceAddr},
			{Dest: netip.MustParsePrefix("10.30.0.0/16"), Via: netip.MustParseAddr("10.20.0.1")},
		},
		Hostname: "vm-1",
		Duration: time.Hour,
	}
}

func mustTable(t *testing.T, leases ...Lease) *Table {
	t.Helper()
	tb, err := NewTable(leases)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiscoverGetsAnOfferWithEveryOptionOfTheLease(t *testing.T) {
	tb := mustTable(t, testLease())
	req := discover(t, portMAC, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 3})))
	d := Decide(serviceAddr, tb, req)
	if d.Outcome != OutcomeOffer || d.Reply == nil {
		t.Fatalf("outcome %s (%s), want an offer", d.Outcome, d.Why)
	}
	// Round-trip through the wire form, as the client sees it.
	r, err := dhcpv4.FromBytes(d.Reply.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	if r.MessageType() != dhcpv4.MessageTypeOffer || r.TransactionID != req.TransactionID || !bytes.Equal(r.ClientHWAddr, portMAC) {
		t.Fatalf("reply header: %s", r.Summary())
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("yiaddr", r.YourIPAddr.String(), "10.20.0.50")
	check("server id", r.ServerIdentifier().String(), "10.20.0.2")
	check("mask", net.IP(r.SubnetMask()).String(), "255.255.255.0")
	check("router", ipsString(r.Router()), "10.20.0.1")
	check("dns", ipsString(r.DNS()), "10.20.0.3,10.20.0.4")
	check("search", strings.Join(r.DomainSearch().Labels, ","), "tenant.internal,svc.tenant.internal")
	check("mtu", string(r.Options.Get(dhcpv4.OptionInterfaceMTU)), string([]byte{0x05, 0xaa}))
	check("routes", dhcpv4.Routes(r.ClasslessStaticRoute()).String(),
		"route to 169.254.169.254/32 via 10.20.0.2; route to 10.30.0.0/16 via 10.20.0.1; route to 0.0.0.0/0 via 10.20.0.1")
	check("hostname", r.HostName(), "vm-1")
	check("lease", r.IPAddressLeaseTime(0).String(), "1h0m0s")
	check("t1", r.IPAddressRenewalTime(0).String(), "30m0s")
	check("t2", r.IPAddressRebindingTime(0).String(), "52m30s")
	check("client id", string(r.Options.Get(dhcpv4.OptionClientIdentifier)), "\x01\x02\x03")
	if d.To != broadcast {
		t.Errorf("offer to a client without an address goes to %s, want %s", d.To, broadcast)
	}
	if n := len(r.ToBytes()); n > 576-28 {
		t.Errorf("reply is %d bytes, more than a 576-byte datagram holds", n)
	}
}

func ipsString(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

func TestALeaseWithoutRouterSendsNoRouterAndNoDefaultRoute(t *testing.T) {
	l := testLease()
	l.Router = netip.Addr{}
	l.Routes = []Route{{Dest: netip.MustParsePrefix("169.254.169.254/32"), Via: serviceAddr}}
	d := Decide(serviceAddr, mustTable(t, l), discover(t, portMAC))
	if d.Reply == nil {
		t.Fatalf("outcome %s, want an offer", d.Outcome)
	}
	if d.Reply.Options.Has(dhcpv4.OptionRouter) {
		t.Error("router option sent for a subnet without a gateway")
	}
	if got := dhcpv4.Routes(d.Reply.ClasslessStaticRoute()).String(); got != "route to 169.254.169.254/32 via 10.20.0.2" {
		t.Errorf("routes = %s", got)
	}
}

func TestAMACOutsideTheTableGetsNoAnswer(t *testing.T) {
	tb := mustTable(t, testLease())
	for name, req := range map[string]*dhcpv4.DHCPv4{
		"discover": discover(t, otherMAC),
		"request":  request(t, otherMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.20.0.50")))),
		"inform":   request(t, otherMAC, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.ParseIP("10.20.0.50"))),
	} {
		if d := Decide(serviceAddr, tb, req); d.Reply != nil || d.Outcome != OutcomeUnknownMAC {
			t.Errorf("%s from an unknown MAC: outcome %s, reply %v; want no answer", name, d.Outcome, d.Reply != nil)
		}
	}
	if d := Decide(serviceAddr, nil, discover(t, portMAC)); d.Reply != nil {
		t.Error("a nil table answered")
	}
}

func TestRequestInEveryClientState(t *testing.T) {
	tb := mustTable(t, testLease())
	mine, other := net.ParseIP("10.20.0.50"), net.ParseIP("10.20.0.77")
	sid := func(ip string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(ip)))
	}
	reqIP := func(ip net.IP) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)) }
	for _, c := range []struct {
		name    string
		mods    []dhcpv4.Modifier
		outcome Outcome
		to      netip.AddrPort
	}{
		{"selecting the port's address", []dhcpv4.Modifier{sid("10.20.0.2"), reqIP(mine)}, OutcomeAck, broadcast},
		{"selecting another address", []dhcpv4.Modifier{sid("10.20.0.2"), reqIP(other)}, OutcomeNak, broadcast},
		{"selecting another server", []dhcpv4.Modifier{sid("10.20.0.9"), reqIP(mine)}, OutcomeOtherSrv, netip.AddrPort{}},
		{"selecting without an address", []dhcpv4.Modifier{sid("10.20.0.2")}, OutcomeNak, broadcast},
		{"init-reboot with the port's address", []dhcpv4.Modifier{reqIP(mine)}, OutcomeAck, broadcast},
		{"init-reboot with an old address", []dhcpv4.Modifier{reqIP(other)}, OutcomeNak, broadcast},
		{"renewing the port's address", []dhcpv4.Modifier{dhcpv4.WithClientIP(mine)}, OutcomeAck, netip.MustParseAddrPort("10.20.0.50:68")},
		{"renewing an old address", []dhcpv4.Modifier{dhcpv4.WithClientIP(other)}, OutcomeNak, broadcast},
		{"rebinding (broadcast) the port's address", []dhcpv4.Modifier{dhcpv4.WithClientIP(mine), dhcpv4.WithBroadcast(true)}, OutcomeAck, netip.MustParseAddrPort("10.20.0.50:68")},
		{"naming no address", nil, OutcomeIgnored, netip.AddrPort{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(serviceAddr, tb, request(t, portMAC, c.mods...))
			if d.Outcome != c.outcome || d.To != c.to {
				t.Fatalf("outcome %s (%s) to %s, want %s to %s", d.Outcome, d.Why, d.To, c.outcome, c.to)
			}
			switch c.outcome {
			case OutcomeAck:
				if d.Reply.MessageType() != dhcpv4.MessageTypeAck || !d.Reply.YourIPAddr.Equal(mine) {
					t.Fatalf("ack: %s", d.Reply.Summary())
				}
			case OutcomeNak:
				if d.Reply.MessageType() != dhcpv4.MessageTypeNak || !d.Reply.YourIPAddr.To4().Equal(net.IPv4zero) && d.Reply.YourIPAddr != nil {
					t.Fatalf("nak: %s", d.Reply.Summary())
				}
				if d.Reply.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
					t.Fatal("a nak carries a lease time")
				}
			default:
				if d.Reply != nil {
					t.Fatalf("answered: %s", d.Reply.Summary())
				}
			}
		})
	}
}

func TestInformGetsConfigurationWithoutALease(t *testing.T) {
	tb := mustTable(t, testLease())
	inform := func(ip string) *dhcpv4.DHCPv4 {
		return request(t, portMAC, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.ParseIP(ip)))
	}
	d := Decide(serviceAddr, tb, inform("10.20.0.50"))
	if d.Outcome != OutcomeInform || d.Reply == nil || d.Reply.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("outcome %s, want an ack", d.Outcome)
	}
	if d.Reply.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || d.Reply.Options.Has(dhcpv4.OptionRenewTimeValue) {
		t.Error("inform reply carries lease times")
	}
	if y := d.Reply.YourIPAddr; y != nil && !y.Equal(net.IPv4zero) {
		t.Errorf("inform reply has yiaddr %s", y)
	}
	if d.To != netip.MustParseAddrPort("10.20.0.50:68") || ipsString(d.Reply.DNS()) != "10.20.0.3,10.20.0.4" {
		t.Errorf("inform reply to %s with DNS %s", d.To, ipsString(d.Reply.DNS()))
	}
	if d := Decide(serviceAddr, tb, inform("10.20.0.77")); d.Reply != nil {
		t.Error("inform from an address that is not the port's was answered")
	}
}

func TestReleaseAndDeclineAreNotedAndNotAnswered(t *testing.T) {
	tb := mustTable(t, testLease())
	for mt, want := range map[dhcpv4.MessageType]Outcome{dhcpv4.MessageTypeRelease: OutcomeRelease, dhcpv4.MessageTypeDecline: OutcomeDecline} {
		d := Decide(serviceAddr, tb, request(t, portMAC, dhcpv4.WithMessageType(mt), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serviceAddr.AsSlice()))))
		if d.Outcome != want || d.Reply != nil {
			t.Errorf("%s: outcome %s, reply %v", mt, d.Outcome, d.Reply != nil)
		}
	}
	// The address is still the port's afterwards.
	if d := Decide(serviceAddr, tb, discover(t, portMAC)); !d.Reply.YourIPAddr.Equal(net.ParseIP("10.20.0.50")) {
		t.Errorf("after release the offer is %v", d.Reply.YourIPAddr)
	}
}

func TestRelayedAndNonEthernetRequestsAreIgnored(t *testing.T) {
	tb := mustTable(t, testLease())
	relayed := discover(t, portMAC, dhcpv4.WithGatewayIP(net.ParseIP("10.9.9.9")))
	if d := Decide(serviceAddr, tb, relayed); d.Reply != nil {
		t.Error("relayed discover answered")
	}
	reply := discover(t, portMAC)
	reply.OpCode = dhcpv4.OpcodeBootReply
	if d := Decide(serviceAddr, tb, reply); d.Reply != nil {
		t.Error("a BOOTREPLY was answered")
	}
	short := discover(t, portMAC[:4])
	if d := Decide(serviceAddr, tb, short); d.Reply != nil {
		t.Error("a 4-byte chaddr was answered")
	}
}

func TestNewTableRefusesBadLeasesNamingTheProblem(t *testing.T) {
	mod := func(f func(*Lease)) []Lease { l := testLease(); f(&l); return []Lease{l} }
	for _, c := range []struct {
		name   string
		leases []Lease
		want   string
	}{
		{"short MAC", mod(func(l *Lease) { l.MAC = l.MAC[:5] }), "not a 6-byte Ethernet address"},
		{"multicast MAC", mod(func(l *Lease) { l.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }), "multicast MAC"},
		{"IPv6 address", mod(func(l *Lease) { l.Addr = netip.MustParsePrefix("fd00::5/64") }), "not an IPv4 address"},
		{"no address", mod(func(l *Lease) { l.Addr = netip.Prefix{} }), "not an IPv4 address"},
		{"router outside", mod(func(l *Lease) { l.Router = netip.MustParseAddr("10.21.0.1") }), "outside the port's subnet"},
		{"router is the port", mod(func(l *Lease) { l.Router = netip.MustParseAddr("10.20.0.50") }), "port's own address"},
		{"IPv6 DNS", mod(func(l *Lease) { l.DNS = []netip.Addr{netip.MustParseAddr("fd00::53")} }), "DNS server fd00::53"},
		{"tiny MTU", mod(func(l *Lease) { l.MTU = 60 }), "MTU 60"},
		{"unmasked route", mod(func(l *Lease) { l.Routes = []Route{{Dest: netip.MustParsePrefix("10.30.0.1/16")}} }), "bits set past /16"},
		{"bad hostname", mod(func(l *Lease) { l.Hostname = "vm_1" }), "hostname \"vm_1\""},
		{"bad search", mod(func(l *Lease) { l.DomainSearch = []string{"a..b"} }), "search domain"},
		{"no lease time", mod(func(l *Lease) { l.Duration = 0 }), "lease time"},
		{"too many routes", mod(func(l *Lease) {
			for i := range 40 {
				l.Routes = append(l.Routes, Route{Dest: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 40, byte(i), 0}), 24), Via: l.Router})
			}
		}), "fit in a 576-byte DHCP reply"},
		{"same MAC twice", func() []Lease {
			a, b := testLease(), testLease()
			b.Addr = netip.MustParsePrefix("10.20.0.51/24")
			return []Lease{a, b}
		}(), "appears twice"},
		{"same address twice", func() []Lease {
			a, b := testLease(), testLease()
			b.MAC = otherMAC
			return []Lease{a, b}
		}(), "already the lease of 02:00:00:00:00:50"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewTable(c.leases)
			if !errors.Is(err, ErrInvalidLease) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalidLease naming %q", err, c.want)
			}
		})
	}
}

func TestSetLeasesKeepsTheOldTableOnError(t *testing.T) {
	s, err := New(Config{ServerID: serviceAddr, Open: func() (net.PacketConn, error) { return nil, errors.New("unused") }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLeases([]Lease{testLease()}); err != nil {
		t.Fatal(err)
	}
	bad := testLease()
	bad.Duration = 0
	if err := s.SetLeases([]Lease{bad}); err == nil {
		t.Fatal("bad lease accepted")
	}
	if d := Decide(serviceAddr, s.leases.Load(), discover(t, portMAC)); d.Outcome != OutcomeOffer {
		t.Fatalf("after a refused SetLeases: outcome %s, want the old table's offer", d.Outcome)
	}
}

func TestNewRefusesABadConfig(t *testing.T) {
	open := func() (net.PacketConn, error) { return nil, errors.New("unused") }
	for _, c := range []Config{{Open: open}, {ServerID: netip.MustParseAddr("fd00::1"), Open: open}, {ServerID: serviceAddr}} {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", c, err)
		}
	}
}
