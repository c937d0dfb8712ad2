//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Removing a rule closes the connections it admitted: after the new
// chains are committed, Apply deletes every conntrack entry of an
// affected port (in its network's zone) that the port's new rules would
// not admit as a new connection. The next packet of such a connection is
// then "new" without a SYN and the forward chain drops it, from either
// side; connections still allowed keep their entries and are untouched.
// Affected ports: those whose chains changed, those whose rules name a
// group that lost members, and removed ports (all their entries go).

type zoneAddr struct {
	zone uint16
	addr netip.Addr
}

type ctPort struct {
	pol     policy
	removed bool
}

type ctFilter struct {
	ports  map[zoneAddr]*ctPort
	groups map[string]map[netip.Addr]bool
}

func ipOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter: true
// deletes the flow.
func (f *ctFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	src, dst := ipOf(fl.Forward.SrcIP), ipOf(fl.Forward.DstIP)
	proto, dport := fl.Forward.Protocol, fl.Forward.DstPort
	if p := f.ports[zoneAddr{fl.Zone, src}]; p != nil {
		// The port opened it: egress.
		if p.removed || (!p.pol.egressAll && !allows(p.pol.egress, flowKey{dst, proto, dport}, f.groups)) {
			return true
		}
	}
	if p := f.ports[zoneAddr{fl.Zone, dst}]; p != nil {
		if p.removed || !allows(p.pol.ingress, flowKey{src, proto, dport}, f.groups) {
			return true
		}
	}
	return false
}

// closeConns deletes the conntrack entries that the change from old to d
// disallows; it returns how many it deleted.
func closeConns(h *netlink.Handle, old map[string]*fwPort, oldGroups map[string]map[netip.Addr]bool,
	d *fwDesired, groups map[string]map[netip.Addr]bool) (uint, error) {
	shrunk := map[string]bool{}
	for g, members := range oldGroups {
		for a := range members {
			if !groups[g][a] {
				shrunk[g] = true
				break
			}
		}
	}
	f := &ctFilter{ports: map[zoneAddr]*ctPort{}, groups: groups}
	for id, op := range old {
		np := d.ports[id]
		z := op.zone
		if np == nil {
			for _, a := range op.addrs {
				f.ports[zoneAddr{z, a}] = &ctPort{removed: true}
			}
			continue
		}
		// Only a narrowing can disallow a connection: a rule gone (an
		// added rule changes the chain but closes nothing), an address
		// gone, a referenced group that lost members.
		affected := !equalAddrs(np.addrs, op.addrs) || lostRule(op.pol.ingress, np.pol.ingress) ||
			(!op.pol.egressAll && !np.pol.egressAll && lostRule(op.pol.egress, np.pol.egress)) ||
			(op.pol.egressAll && !np.pol.egressAll)
		for _, g := range op.pol.groupsOf() {
			affected = affected || shrunk[g]
		}
		if !affected {
			continue
		}
		if np.zone != z {
			// Moved to another network: all its old connections go.
			for _, a := range op.addrs {
				f.ports[zoneAddr{z, a}] = &ctPort{removed: true}
			}
			z = np.zone
		}
		for _, a := range np.addrs {
			f.ports[zoneAddr{z, a}] = &ctPort{pol: np.pol}
		}
		for _, a := range op.addrs {
			if _, ok := f.ports[zoneAddr{z, a}]; !ok {
				f.ports[zoneAddr{z, a}] = &ctPort{removed: true}
			}
		}
	}
	if len(f.ports) == 0 {
		return 0, nil
	}
	var total uint
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("dataplane: close connections: %w", err))
		}
	}
	return total, errors.Join(errs...)
}

func equalAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// lostRule: some rule of old is not in new.
func lostRule(old, new []fwRule) bool {
	for _, r := range old {
		if !slices.Contains(new, r) {
			return true
		}
	}
	return false
}
