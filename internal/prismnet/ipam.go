package prismnet

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/netip"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// pool is an inclusive address range.
type pool struct{ start, end netip.Addr }

func (p pool) contains(a netip.Addr) bool {
	return a.Compare(p.start) >= 0 && a.Compare(p.end) <= 0
}

// lastAddr returns the last address of p (the broadcast address of IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// usableRange returns the first and last address IPAM may hand out in p:
// IPv4 skips the network and broadcast addresses, IPv6 the subnet-router
// anycast address.
func usableRange(p netip.Prefix) (netip.Addr, netip.Addr) {
	first := p.Masked().Addr().Next()
	last := lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// serviceAddr is the DHCP and metadata address of an IPv4 subnet: the last
// usable address.
func serviceAddr(p netip.Prefix) netip.Addr {
	_, last := usableRange(p)
	return last
}

// eui64 returns the SLAAC address a workload with mac forms in prefix
// (modified EUI-64, RFC 4291 appendix A), which is what the kernel and
// busybox guests do by default.
func eui64(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	b := prefix.Masked().Addr().As16()
	b[8] = mac[0] ^ 0x02
	b[9], b[10], b[11], b[12] = mac[1], mac[2], 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// candidates bounds how many free addresses a pick chooses among. Picking
// at random among several spreads concurrent creates over different
// addresses, so they rarely collide (a collision is retried).
const candidates = 64

// pickFree returns a free address of pools (none of used, none of
// reserved), chosen at random among the first free ones, or false when the
// pools are full.
func pickFree(pools []pool, used map[netip.Addr]bool, reserved []netip.Addr) (netip.Addr, bool) {
	isReserved := func(a netip.Addr) bool {
		for _, r := range reserved {
			if r == a {
				return true
			}
		}
		return false
	}
	var found []netip.Addr
	for _, p := range pools {
		for a := p.start; a.IsValid() && a.Compare(p.end) <= 0 && len(found) < candidates; a = a.Next() {
			if !used[a] && !isReserved(a) {
				found = append(found, a)
			}
		}
		if len(found) == candidates {
			break
		}
	}
	if len(found) == 0 {
		return netip.Addr{}, false
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(found))))
	if err != nil {
		return found[0], true
	}
	return found[n.Int64()], true
}

// usedAddrs reads the allocated addresses under prefix.
func usedAddrs(ctx context.Context, st storage.Store, prefix []byte) (map[netip.Addr]bool, error) {
	kvs, _, err := st.Range(ctx, prefix, storage.PrefixEnd(prefix), 0)
	if err != nil {
		return nil, fmt.Errorf("prismnet: reading allocated addresses: %w", err)
	}
	used := make(map[netip.Addr]bool, len(kvs))
	for _, kv := range kvs {
		if a, err := netip.ParseAddr(string(kv.Key[len(prefix):])); err == nil {
			used[a] = true
		}
	}
	return used, nil
}

// randomMAC returns a locally administered unicast MAC with UltraCloud's
// first octet (0xfa: local, unicast).
func randomMAC() (net.HardwareAddr, error) {
	m := make(net.HardwareAddr, 6)
	if _, err := rand.Read(m[1:]); err != nil {
		return nil, fmt.Errorf("prismnet: generating a MAC: %w", err)
	}
	m[0] = 0xfa
	return m, nil
}

// randomVNI returns a VXLAN network identifier in [1, 2^24-2].
func randomVNI() (uint32, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<24-2))
	if err != nil {
		return 0, fmt.Errorf("prismnet: choosing a VNI: %w", err)
	}
	return uint32(n.Int64()) + 1, nil
}
