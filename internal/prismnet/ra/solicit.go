package ra

import (
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// allNodes is where unsolicited advertisements, and answers to a
// solicitation from the unspecified address, go.
var allNodes = netip.MustParseAddr("ff02::1")

// allRouters is the group Router Solicitations are sent to; the sender
// joins it although it is not a router, to hear them.
var allRouters = netip.MustParseAddr("ff02::2")

// solicitation is the verdict on one received ICMPv6 message.
type solicitation struct {
	ok bool
	// to is where the solicited advertisement goes: the soliciting
	// host's address, or all-nodes when it has none yet.
	to netip.Addr
	// why is a constant phrase for the log.
	why string
}

// decideRS validates b, one ICMPv6 message received with hop limit
// hopLimit (-1 when the kernel did not say) from src, as a Router
// Solicitation (RFC 4861 6.1.1) and says where the answer goes. It is pure
// and fuzzed: it must never panic on any input.
func decideRS(b []byte, hopLimit int, src netip.Addr) solicitation {
	if len(b) < 8 {
		return solicitation{why: "shorter than a router solicitation"}
	}
	if ipv6.ICMPType(b[0]) != ipv6.ICMPTypeRouterSolicitation {
		return solicitation{why: "not a router solicitation"}
	}
	if b[1] != 0 {
		return solicitation{why: "ICMP code is not 0"}
	}
	// Hop limit 255 proves the sender is on this link: no router
	// forwarded it.
	if hopLimit != ndp.HopLimit {
		return solicitation{why: "hop limit is not 255"}
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return solicitation{why: "malformed router solicitation"}
	}
	rs, isRS := m.(*ndp.RouterSolicitation)
	if !isRS {
		return solicitation{why: "not a router solicitation"}
	}
	src = src.WithZone("")
	if !src.IsValid() || !src.Is6() || src.Is4In6() || src.IsMulticast() {
		return solicitation{why: "source is not an IPv6 unicast address"}
	}
	if src.IsUnspecified() {
		for _, o := range rs.Options {
			if lla, isLLA := o.(*ndp.LinkLayerAddress); isLLA && lla.Direction == ndp.Source {
				return solicitation{why: "unspecified source with a link-layer address option"}
			}
		}
		return solicitation{ok: true, to: allNodes, why: "solicited by a host without an address"}
	}
	return solicitation{ok: true, to: src, why: "solicited"}
}
