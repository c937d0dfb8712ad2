package ra

import (
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

// FuzzRouterSolicitation feeds arbitrary ICMPv6 payloads, hop limits and
// sources to the handling of incoming solicitations: it must never panic,
// and an accepted one is answered only to its unicast source or, from the
// unspecified address, to all-nodes.
func FuzzRouterSolicitation(f *testing.F) {
	f.Add(rsBytes(f), 255, netip.MustParseAddr("fe80::1").AsSlice())
	f.Add(rsBytes(f, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srvMAC}), 255, netip.IPv6Unspecified().AsSlice())
	f.Add(rsBytes(f, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srvMAC}), 255, netip.MustParseAddr("fd00:20::5").AsSlice())
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 255, netip.MustParseAddr("fe80::1").AsSlice())
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 0}, 64, []byte{10, 0, 0, 1})

	f.Fuzz(func(t *testing.T, b []byte, hop int, src []byte) {
		from, _ := netip.AddrFromSlice(src)
		v := decideRS(b, hop, from)
		if !v.ok {
			return
		}
		if hop != 255 {
			t.Fatalf("accepted with hop limit %d", hop)
		}
		switch {
		case from.IsUnspecified() && v.to == allNodes:
		case !from.IsUnspecified() && v.to == from && !from.IsMulticast():
		default:
			t.Fatalf("solicitation from %s answered to %s", from, v.to)
		}
	})
}
