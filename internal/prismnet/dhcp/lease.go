package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/ultracloud/ultracloud/internal/prismnet/dnsname"
)

// ErrInvalidLease is wrapped by every error SetLeases and NewTable return for
// a lease they refuse; the message names the port's MAC and the field.
var ErrInvalidLease = errors.New("dhcp: invalid lease")

// Lease is what one port (one MAC) gets: the control plane computes it from
// the port, its subnet and the network; the server only reads it.
type Lease struct {
	// MAC is the port's Ethernet address, the only key the server matches
	// requests on (chaddr; the client identifier option is not used).
	MAC net.HardwareAddr
	// Addr is the port's IPv4 address with its subnet's prefix length, e.g.
	// 10.0.0.5/24. The server never offers any other address to this MAC.
	Addr netip.Prefix
	// Router is the subnet's gateway (option 3); the zero Addr means the
	// subnet has none and no router option is sent.
	Router netip.Addr
	// DNS servers (option 6), in order of preference; may be empty.
	DNS []netip.Addr
	// DomainSearch is the DNS search list (option 119); may be empty.
	DomainSearch []string
	// MTU is the interface MTU (option 26), the network's MTU after the
	// VXLAN overhead; 0 sends no MTU option.
	MTU int
	// Routes are classless static routes (option 121). The agent always
	// puts 169.254.169.254/32 via the service address here. When Routes is
	// not empty and Router is set, the server adds 0.0.0.0/0 via Router
	// itself, because RFC 3442 clients ignore option 3 when option 121 is
	// present.
	Routes []Route
	// Hostname (option 12); empty sends none.
	Hostname string
	// Duration is the lease time (option 51); renewal (T1) is at half of
	// it and rebinding (T2) at seven eighths. At least one second.
	Duration time.Duration
}

// Route is one classless static route.
type Route struct {
	// Dest is the destination network, e.g. 169.254.169.254/32; the bits
	// past the prefix length must be zero.
	Dest netip.Prefix
	// Via is the next hop; the zero Addr sends 0.0.0.0, which clients
	// take as "on-link".
	Via netip.Addr
}

// optionBudget is how many bytes of per-lease options fit in a reply: a
// client that sends no maximum-message-size option accepts 576-byte IP
// datagrams (RFC 2131), which leaves 576 - 20 (IP) - 8 (UDP) - 240 (BOOTP
// header and magic cookie) = 308 bytes of options, less 28 for the options
// every reply carries (message type, server identifier, lease, T1, T2, end).
const optionBudget = 308 - 28

// Table is an immutable set of leases, indexed by MAC, with each lease's
// options encoded once when the table is built.
type Table struct {
	byMAC map[[6]byte]*entry
}

type entry struct {
	ip  netip.Addr
	dur time.Duration
	// opts are the lease's own options, already in wire form (so a caller
	// reusing its slices after SetLeases changes nothing), copied into
	// every OFFER, ACK and INFORM reply. The lease times are not among
	// them: an INFORM reply must not carry them.
	opts dhcpv4.Options
}

// NewTable validates leases and builds a table from them. Two leases for
// the same MAC, or for the same address, are refused: both mean the control
// plane handed over an inconsistent view.
func NewTable(leases []Lease) (*Table, error) {
	t := &Table{byMAC: make(map[[6]byte]*entry, len(leases))}
	byIP := make(map[netip.Addr]string, len(leases))
	for i := range leases {
		l := leases[i]
		e, err := newEntry(l)
		if err != nil {
			return nil, err
		}
		key := [6]byte(l.MAC)
		if _, dup := t.byMAC[key]; dup {
			return nil, fmt.Errorf("%w: MAC %s appears twice", ErrInvalidLease, l.MAC)
		}
		if other, dup := byIP[e.ip]; dup {
			return nil, fmt.Errorf("%w: MAC %s: address %s is already the lease of %s", ErrInvalidLease, l.MAC, e.ip, other)
		}
		t.byMAC[key] = e
		byIP[e.ip] = l.MAC.String()
	}
	return t, nil
}

// Len is the number of leases in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.byMAC)
}

// lookup returns the entry for mac, or nil; a nil table has no entries.
func (t *Table) lookup(mac net.HardwareAddr) *entry {
	if t == nil || len(mac) != 6 {
		return nil
	}
	return t.byMAC[[6]byte(mac)]
}

func newEntry(l Lease) (*entry, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: MAC %s: %s", ErrInvalidLease, l.MAC, fmt.Sprintf(format, a...))
	}
	if len(l.MAC) != 6 {
		return nil, fmt.Errorf("%w: MAC %q is not a 6-byte Ethernet address", ErrInvalidLease, l.MAC)
	}
	if l.MAC[0]&1 == 1 {
		return nil, bad("a multicast MAC cannot be a port's")
	}
	ip := l.Addr.Addr()
	if !l.Addr.IsValid() || !ip.Is4() {
		return nil, bad("address %s is not an IPv4 address with a prefix length", l.Addr)
	}
	if l.Addr.Bits() < 1 || l.Addr.Bits() > 32 {
		return nil, bad("prefix length /%d is outside 1..32", l.Addr.Bits())
	}
	if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return nil, bad("address %s cannot be handed to a port", ip)
	}
	if l.Router.IsValid() {
		if !l.Router.Is4() {
			return nil, bad("router %s is not an IPv4 address", l.Router)
		}
		if !l.Addr.Masked().Contains(l.Router) {
			return nil, bad("router %s is outside the port's subnet %s", l.Router, l.Addr.Masked())
		}
		if l.Router == ip {
			return nil, bad("router %s is the port's own address", l.Router)
		}
	}
	for _, d := range l.DNS {
		if !d.Is4() {
			return nil, bad("DNS server %s is not an IPv4 address", d)
		}
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > math.MaxUint16) {
		return nil, bad("MTU %d is outside 68..65535", l.MTU)
	}
	for _, r := range l.Routes {
		if !r.Dest.IsValid() || !r.Dest.Addr().Is4() {
			return nil, bad("route destination %s is not an IPv4 prefix", r.Dest)
		}
		if r.Dest.Masked() != r.Dest {
			return nil, bad("route destination %s has bits set past /%d (want %s)", r.Dest, r.Dest.Bits(), r.Dest.Masked())
		}
		if r.Via.IsValid() && !r.Via.Is4() {
			return nil, bad("route to %s: next hop %s is not an IPv4 address", r.Dest, r.Via)
		}
	}
	if l.Hostname != "" {
		if err := dnsname.Check(l.Hostname); err != nil {
			return nil, bad("hostname %q: %v", l.Hostname, err)
		}
	}
	for _, d := range l.DomainSearch {
		if err := dnsname.Check(d); err != nil {
			return nil, bad("search domain %q: %v", d, err)
		}
	}
	if l.Duration < time.Second || l.Duration/time.Second > math.MaxUint32-1 {
		return nil, bad("lease time %s is outside 1s..%ds", l.Duration, uint32(math.MaxUint32-1))
	}

	opts := encodeOptions(l)
	size := 0
	for _, v := range opts {
		// Each 255 bytes of value cost a code and a length byte (RFC 3396).
		size += len(v) + 2*((len(v)+254)/255)
	}
	if size > optionBudget {
		return nil, bad("its options take %d bytes, more than the %d that fit in a 576-byte DHCP reply (fewer routes, DNS servers or search domains)", size, optionBudget)
	}
	return &entry{ip: ip, dur: l.Duration, opts: opts}, nil
}

// encodeOptions returns the lease's own options in wire form.
func encodeOptions(l Lease) dhcpv4.Options {
	o := dhcpv4.Options{}
	mask := net.CIDRMask(l.Addr.Bits(), 32)
	o.Update(dhcpv4.OptSubnetMask(mask))
	if l.Router.IsValid() {
		o.Update(dhcpv4.OptRouter(l.Router.AsSlice()))
	}
	if len(l.DNS) > 0 {
		ips := make([]net.IP, len(l.DNS))
		for i, d := range l.DNS {
			ips[i] = d.AsSlice()
		}
		o.Update(dhcpv4.OptDNS(ips...))
	}
	if len(l.DomainSearch) > 0 {
		o.Update(dhcpv4.OptGeneric(dhcpv4.OptionDNSDomainSearchList, encodeSearch(l.DomainSearch)))
	}
	if l.MTU != 0 {
		o.Update(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(l.MTU))))
	}
	if routes := classlessRoutes(l); len(routes) > 0 {
		o.Update(dhcpv4.OptClasslessStaticRoute(routes...))
	}
	if l.Hostname != "" {
		o.Update(dhcpv4.OptHostName(l.Hostname))
	}
	return o
}

// classlessRoutes is the lease's routes with the default route via the
// router added when the lease has both: a client that takes option 121
// ignores option 3 (RFC 3442), so without it the client would lose its
// default route.
func classlessRoutes(l Lease) []*dhcpv4.Route {
	if len(l.Routes) == 0 {
		return nil
	}
	var out []*dhcpv4.Route
	hasDefault := false
	for _, r := range l.Routes {
		if r.Dest.Bits() == 0 {
			hasDefault = true
		}
		via := net.IPv4zero.To4()
		if r.Via.IsValid() {
			via = r.Via.AsSlice()
		}
		out = append(out, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: r.Dest.Addr().AsSlice(), Mask: net.CIDRMask(r.Dest.Bits(), 32)},
			Router: via,
		})
	}
	if l.Router.IsValid() && !hasDefault {
		out = append(out, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Router: l.Router.AsSlice(),
		})
	}
	return out
}

// encodeSearch writes names as RFC 1035 labels without compression (RFC
// 3397 allows it but does not require it). The names are already checked.
func encodeSearch(names []string) []byte {
	var b []byte
	for _, n := range names {
		for _, label := range strings.Split(strings.TrimSuffix(n, "."), ".") {
			b = append(b, byte(len(label)))
			b = append(b, label...)
		}
		b = append(b, 0)
	}
	return b
}
