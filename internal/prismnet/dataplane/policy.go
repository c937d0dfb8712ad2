package dataplane

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// fwRule is one security group rule in the canonical form both the
// nftables compiler and the conntrack matcher use, so that the flows
// Apply closes are exactly the ones the kernel would no longer admit.
type fwRule struct {
	v6     bool
	proto  uint8 // 0 = any
	lo, hi uint16
	cidr   netip.Prefix // invalid = any
	group  string       // group ID; wins over cidr
}

func (r fwRule) String() string {
	b := make([]byte, 0, 48)
	if r.v6 {
		b = append(b, "ip6/"...)
	} else {
		b = append(b, "ip/"...)
	}
	b = strconv.AppendUint(b, uint64(r.proto), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(r.lo), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(r.hi), 10)
	if r.group != "" {
		b = append(b, "/g:"...)
		b = append(b, r.group...)
	} else if r.cidr.IsValid() {
		b = append(b, "/c:"...)
		b = r.cidr.AppendTo(b)
	}
	return string(b)
}

// policy is a port's compiled security groups.
type policy struct {
	ingress []fwRule
	egress  []fwRule
	// egressAll: no group of the port has an egress rule, so egress is
	// allowed (the "allow egress" default).
	egressAll bool
}

// compilePolicy folds a port's groups into sorted, deduplicated rules.
func compilePolicy(groups []SecurityGroup) policy {
	var pol policy
	type keyed struct {
		key string
		r   fwRule
	}
	var in, eg []keyed
	seen := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			fr := fwRule{v6: r.Family == IPv6}
			fr.proto, _ = protoNumber(r.Protocol) // validated before
			if fr.proto == protoTCP || fr.proto == protoUDP {
				fr.lo, fr.hi = r.PortMin, r.PortMax
				if fr.hi == 0 {
					fr.hi = fr.lo
				}
				if fr.lo == 0 && fr.hi == 65535 {
					fr.lo, fr.hi = 0, 0 // any port
				}
			}
			switch {
			case r.RemoteGroup != "":
				fr.group = r.RemoteGroup
			case r.RemoteCIDR.IsValid() && r.RemoteCIDR.Bits() > 0:
				fr.cidr = r.RemoteCIDR.Masked()
			}
			key := fr.String()
			if r.Direction == Egress {
				key = "e " + key
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			if r.Direction == Egress {
				eg = append(eg, keyed{key, fr})
			} else {
				in = append(in, keyed{key, fr})
			}
		}
	}
	byKey := func(a, b keyed) int { return strings.Compare(a.key, b.key) }
	slices.SortFunc(in, byKey)
	slices.SortFunc(eg, byKey)
	for _, k := range in {
		pol.ingress = append(pol.ingress, k.r)
	}
	for _, k := range eg {
		pol.egress = append(pol.egress, k.r)
	}
	pol.egressAll = len(pol.egress) == 0
	return pol
}

// groupsOf lists the groups the rules refer to.
func (p policy) groupsOf() []string {
	var out []string
	for _, r := range append(append([]fwRule(nil), p.ingress...), p.egress...) {
		if r.group != "" && !slices.Contains(out, r.group) {
			out = append(out, r.group)
		}
	}
	return out
}

// flowKey describes a connection from the port's point of view.
type flowKey struct {
	remote netip.Addr
	proto  uint8
	dport  uint16 // the destination port of the connection's first packet
}

// allows says whether rules admit a connection; groups are the current
// members.
func allows(rules []fwRule, f flowKey, groups map[string]map[netip.Addr]bool) bool {
	for _, r := range rules {
		if r.v6 != f.remote.Is6() {
			continue
		}
		if r.proto != 0 && r.proto != f.proto {
			continue
		}
		if (r.lo != 0 || r.hi != 0) && (f.dport < r.lo || f.dport > r.hi) {
			continue
		}
		if r.group != "" {
			if !groups[r.group][f.remote] {
				continue
			}
		} else if r.cidr.IsValid() && !r.cidr.Contains(f.remote) {
			continue
		}
		return true
	}
	return false
}
