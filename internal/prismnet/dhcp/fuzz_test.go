package dhcp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzDecide feeds arbitrary datagrams to the request handling: it must
// never panic, never answer a MAC outside the table, and only ever hand out
// the table's address, to the broadcast address or to the port itself.
func FuzzDecide(f *testing.F) {
	lease := testLease()
	tb, err := NewTable([]Lease{lease})
	if err != nil {
		f.Fatal(err)
	}
	mine := lease.Addr.Addr()
	for _, m := range seedRequests(f) {
		f.Add(m.ToBytes())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})

	f.Fuzz(func(t *testing.T, b []byte) {
		d := DecideBytes(serviceAddr, tb, b)
		if d.Reply == nil {
			return
		}
		if !macEqual(d.Reply.ClientHWAddr, lease.MAC) {
			t.Fatalf("answered MAC %s, which is not in the table", d.Reply.ClientHWAddr)
		}
		if y := ip4(d.Reply.YourIPAddr); y.IsValid() && !y.IsUnspecified() && y != mine {
			t.Fatalf("handed out %s, not the table's %s", y, mine)
		}
		if d.To != broadcast && d.To != netip.AddrPortFrom(mine, ClientPort) {
			t.Fatalf("reply sent to %s", d.To)
		}
		if _, err := dhcpv4.FromBytes(d.Reply.ToBytes()); err != nil {
			t.Fatalf("reply does not parse back: %v", err)
		}
	})
}

func macEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }

func seedRequests(f *testing.F) []*dhcpv4.DHCPv4 {
	mk := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(portMAC)}, mods...)...)
		if err != nil {
			f.Fatal(err)
		}
		return m
	}
	mine := net.ParseIP("10.20.0.50")
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serviceAddr.AsSlice()))
	return []*dhcpv4.DHCPv4{
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover)),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), sid, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(mine))),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(mine)),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.20.0.7")))),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(mine)),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), sid, dhcpv4.WithClientIP(mine)),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline), sid),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithHwAddr(otherMAC)),
		mk(dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte("client")))),
	}
}
