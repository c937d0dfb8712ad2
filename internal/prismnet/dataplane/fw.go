//go:build linux

package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The firewall lives in two tables named tableName, one of the bridge
// family (anti-spoofing, on frames entering from a port) and one of the
// inet family (security groups, with conntrack; bridged IP traffic gets
// there because the network bridges have nf_call_iptables on).
//
// Every per-port chain carries a signature of its content in its name
// (a-<port>-<sig> anti-spoofing, i-<port>-<sig> ingress, e-<port>-<sig>
// egress). A changed port gets a new chain and its map entries point to
// it in the same transaction that deletes the old chain, so a change is
// atomic and small, and listing the chain names (one dump) tells Apply
// what is in the kernel without reading any rule back.
const tableName = "ultracloud"

// Base chain names carry a version: a future layout adds new base chains
// and deletes these in one transaction.
const (
	bridgeBase = "pre1"
	inetBase   = "fwd1"
)

// Map names in the inet table: iifname . saddr -> egress chain,
// oifname . daddr -> ingress chain; in the bridge table iifname ->
// anti-spoofing chain.
const (
	mapEg4   = "eg4"
	mapEg6   = "eg6"
	mapIn4   = "in4"
	mapIn6   = "in6"
	mapPorts = "ports"
)

const sigLen = 10

func groupSet(gid string, v6 bool) string {
	if v6 {
		return "g6-" + hashKey(gid, 12)
	}
	return "g4-" + hashKey(gid, 12)
}

// parseChainName splits a per-port or zone chain name written by this
// package: kind is 'a', 'i', 'e' (per port; key is the port key) or 'z'
// (the zone chain; key empty).
func parseChainName(name string) (kind byte, key, sig string, ok bool) {
	if len(name) < 3 || name[1] != '-' {
		return 0, "", "", false
	}
	kind = name[0]
	rest := name[2:]
	switch kind {
	case 'a', 'i', 'e':
		i := strings.LastIndexByte(rest, '-')
		if i < 1 {
			return 0, "", "", false
		}
		key, sig = rest[:i], rest[i+1:]
		if !portKeyRE.MatchString(key) {
			return 0, "", "", false
		}
	case 'z':
		sig = rest
	default:
		return 0, "", "", false
	}
	if len(sig) != sigLen {
		return 0, "", "", false
	}
	for i := 0; i < len(sig); i++ {
		c := sig[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return 0, "", "", false
		}
	}
	return kind, key, sig, true
}

func chainName(kind byte, key, content string) string {
	return string(kind) + "-" + key + "-" + hashKey(content, sigLen)
}

// fwPort is the desired firewall of one port.
type fwPort struct {
	id     string
	dev    string
	bridge string
	addrs  []netip.Addr // fixed IPs and the EUI-64 link-local address
	pol    policy
	zone   uint16
	spoof  string // anti-spoofing chain
	in, eg string // ingress, egress chain ("" = none: egress allowed)
	port   *Port
}

// fwDesired is the firewall Apply wants.
type fwDesired struct {
	ports   map[string]*fwPort // by port ID
	bchains map[string][]expr.Any
	ichains map[string][][]expr.Any
	bmap    map[string]string            // ifname -> anti-spoofing chain
	maps    map[string]map[string]string // inet map -> key -> chain
	sets    map[string]map[string]bool   // group set -> elements
	zones   []zone
	zchain  string
}

type zone struct {
	bridge string
	id     uint16
}

// zoneOf gives each network its own conntrack zone, so that two networks
// with the same addresses on one host never share a connection entry.
// Zones come from the VNI: two VNIs 65,535 apart share a zone (documented).
func zoneOf(vni uint32) uint16 {
	z := uint16(vni % 65535)
	if z == 0 {
		z = 65535
	}
	return z
}

// fwCurrent is what the kernel holds (our tables only).
type fwCurrent struct {
	btable, itable bool
	bchains        map[string]bool
	ichains        map[string]bool
	bmap           map[string]string
	maps           map[string]map[string]string
	sets           map[string]map[string]bool
}

func newFwCurrent() *fwCurrent {
	c := &fwCurrent{bchains: map[string]bool{}, ichains: map[string]bool{}, bmap: map[string]string{},
		maps: map[string]map[string]string{}, sets: map[string]map[string]bool{}}
	for _, m := range []string{mapEg4, mapEg6, mapIn4, mapIn6} {
		c.maps[m] = map[string]string{}
	}
	return c
}

func mapKey(ifn string, a netip.Addr) string { return string(ifname(ifn)) + string(a.AsSlice()) }

// buildFW computes the desired firewall for the ports that are ready for
// it (their device exists).
func buildFW(s *State, nets map[string]*Network, ports []*Port) *fwDesired {
	d := &fwDesired{ports: map[string]*fwPort{}, bchains: map[string][]expr.Any{}, ichains: map[string][][]expr.Any{},
		bmap: map[string]string{}, maps: map[string]map[string]string{}, sets: map[string]map[string]bool{}}
	for _, m := range []string{mapEg4, mapEg6, mapIn4, mapIn6} {
		d.maps[m] = map[string]string{}
	}
	var zc strings.Builder
	for _, n := range s.Networks {
		z := zone{bridge: devName(kindBridge, n.ID), id: zoneOf(n.VNI)}
		d.zones = append(d.zones, z)
	}
	slices.SortFunc(d.zones, func(a, b zone) int { return strings.Compare(a.bridge, b.bridge) })
	for _, z := range d.zones {
		fmt.Fprintf(&zc, "%s=%d;", z.bridge, z.id)
	}
	d.zchain = "z-" + hashKey("v1;"+zc.String(), sigLen)

	usedGroups := map[string]bool{}
	for _, p := range ports {
		if !p.PortSecurity {
			continue
		}
		key := portKey(p.ID)
		fp := &fwPort{id: p.ID, dev: portDev(p), bridge: devName(kindBridge, p.Network), port: p,
			zone: zoneOf(nets[p.Network].VNI)}
		fp.addrs = append(fp.addrs, p.IPs...)
		if ll := linkLocal(p.MAC); !slices.Contains(fp.addrs, ll) {
			fp.addrs = append(fp.addrs, ll)
		}
		slices.SortFunc(fp.addrs, netip.Addr.Compare)
		fp.addrs = slices.Compact(fp.addrs)
		fp.pol = compilePolicy(p.SecurityGroups)

		// Anti-spoofing.
		var sc strings.Builder
		fmt.Fprintf(&sc, "v1;%s;", p.MAC)
		for _, a := range fp.addrs {
			sc.WriteString(a.String() + ";")
		}
		fp.spoof = chainName('a', key, sc.String())
		d.bchains[fp.spoof] = nil // rules compiled on demand
		d.bmap[fp.dev] = fp.spoof

		// Security groups.
		var ic strings.Builder
		ic.WriteString("v1;")
		for _, r := range fp.pol.ingress {
			ic.WriteString(r.String() + ";")
		}
		fp.in = chainName('i', key, ic.String())
		if !fp.pol.egressAll {
			var ec strings.Builder
			ec.WriteString("v1;")
			for _, r := range fp.pol.egress {
				ec.WriteString(r.String() + ";")
			}
			fp.eg = chainName('e', key, ec.String())
		}
		for _, g := range fp.pol.groupsOf() {
			usedGroups[g] = true
		}
		for _, a := range fp.addrs {
			in, eg := mapIn4, mapEg4
			if a.Is6() {
				in, eg = mapIn6, mapEg6
			}
			d.maps[in][mapKey(fp.bridge, a)] = fp.in
			if fp.eg != "" {
				d.maps[eg][mapKey(fp.bridge, a)] = fp.eg
			}
		}
		d.ichains[fp.in] = nil
		if fp.eg != "" {
			d.ichains[fp.eg] = nil
		}
		d.ports[p.ID] = fp
	}
	for g := range usedGroups {
		s4, s6 := map[string]bool{}, map[string]bool{}
		for _, a := range s.Groups[g] {
			a = a.Unmap()
			if a.Is6() {
				s6[string(a.AsSlice())] = true
			} else {
				s4[string(a.AsSlice())] = true
			}
		}
		d.sets[groupSet(g, false)] = s4
		d.sets[groupSet(g, true)] = s6
	}
	return d
}

// spoofRules: frames from the port may only carry its MAC and addresses;
// no DHCP server or router advertisement may come from a port.
func spoofRules(p *Port, addrs []netip.Addr) [][]expr.Any {
	drop, accept := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	mac := []byte(p.MAC)
	rs := [][]expr.Any{
		{ldEth(offEthSrc, 6), cmp(expr.CmpOpNeq, mac), drop},
		join(matchEthType(ethIPv4), matchL4(protoUDP), []expr.Any{ldTh(offThSport, 2), cmp(expr.CmpOpEq, be16(67)), drop}),
		join(matchEthType(ethIPv6), matchL4(protoICMPv6), []expr.Any{ldTh(0, 1), cmp(expr.CmpOpEq, []byte{134}), drop}),
		join(matchEthType(ethIPv6), matchL4(protoUDP), []expr.Any{ldTh(offThSport, 2), cmp(expr.CmpOpEq, be16(547)), drop}),
	}
	v4 := []netip.Addr{netip.IPv4Unspecified()}
	for _, a := range addrs {
		switch {
		case a.Is4():
			v4 = append(v4, a)
			rs = append(rs, join(matchEthType(ethIPv4), matchAddr(offIP4Src, a), []expr.Any{accept}))
		case a.Is6():
			rs = append(rs, join(matchEthType(ethIPv6), matchAddr(offIP6Src, a), []expr.Any{accept}))
		}
	}
	for _, a := range v4 {
		// ARP with the port's MAC and one of its addresses (or 0.0.0.0:
		// an address conflict probe) as sender.
		rs = append(rs, join(matchEthType(ethARP),
			[]expr.Any{ldNet(offARPSha, 6), cmp(expr.CmpOpEq, mac)},
			[]expr.Any{ldNet(offARPSpa, 4), cmp(expr.CmpOpEq, a.AsSlice())}, []expr.Any{accept}))
	}
	// A DHCP client has no address yet.
	rs = append(rs, join(matchEthType(ethIPv4), matchAddr(offIP4Src, netip.IPv4Unspecified()), matchL4(protoUDP),
		[]expr.Any{ldTh(offThDport, 2), cmp(expr.CmpOpEq, be16(67)), accept}))
	// Duplicate address detection and MLD reports come from ::.
	rs = append(rs, join(matchEthType(ethIPv6), matchAddr(offIP6Src, netip.IPv6Unspecified()), matchL4(protoICMPv6), []expr.Any{accept}))
	rs = append(rs, []expr.Any{drop})
	return rs
}

// sgRules compiles one direction of a policy. Ingress rules accept;
// egress rules return to the forward chain, where the destination's
// ingress chain (if it is a local port) still applies.
func sgRules(rules []fwRule, egress bool) [][]expr.Any {
	var rs [][]expr.Any
	ok := verdict(expr.VerdictAccept)
	off4, off6 := uint32(offIP4Src), uint32(offIP6Src)
	if egress {
		ok = verdict(expr.VerdictReturn)
		off4, off6 = offIP4Dst, offIP6Dst
	}
	for _, r := range rules {
		var e []expr.Any
		off, alen := off4, uint32(4)
		if r.v6 {
			e = matchNfproto(nfprotoIPv6)
			off, alen = off6, 16
		} else {
			e = matchNfproto(nfprotoIPv4)
		}
		if r.proto != 0 {
			e = append(e, matchL4(r.proto)...)
		}
		if r.lo != 0 || r.hi != 0 {
			e = append(e, matchPorts(r.lo, r.hi)...)
		}
		switch {
		case r.group != "":
			e = append(e, matchInSet(off, alen, groupSet(r.group, r.v6))...)
		case r.cidr.IsValid():
			e = append(e, matchPrefix(off, r.cidr)...)
		}
		rs = append(rs, append(e, ok))
	}
	return append(rs, []expr.Any{verdict(expr.VerdictDrop)})
}

// forwardRules is the inet base chain: conntrack first, then the port
// maps. Only traffic bridged on our network bridges is looked at.
func forwardRules() [][]expr.Any {
	const (
		ctInvalid     = 1
		ctEstablished = 2
		ctRelated     = 4
		ctNew         = 8
	)
	return [][]expr.Any{
		{ldMeta(expr.MetaKeyIIFNAME), cmp(expr.CmpOpNeq, []byte("ucb-")), verdict(expr.VerdictReturn)},
		join(matchCtState(ctEstablished|ctRelated), []expr.Any{verdict(expr.VerdictAccept)}),
		join(matchCtState(ctInvalid), []expr.Any{verdict(expr.VerdictDrop)}),
		// A TCP connection starts with a SYN. Without this, a connection
		// whose conntrack entry Apply deleted (its rule was removed) would
		// be picked up again mid-stream (nf_conntrack_tcp_loose=1) as a
		// new connection from whichever side sends next.
		join(matchL4(protoTCP), matchCtState(ctNew), []expr.Any{
			ldTh(offTCPFlags, 1),
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
			cmp(expr.CmpOpNeq, []byte{0x02}), verdict(expr.VerdictDrop)}),
		// Neighbour discovery and router solicitation/advertisement (types
		// 133-137; anti-spoofing already dropped RAs from ports).
		join(matchL4(protoICMPv6), []expr.Any{ldTh(0, 1), &expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: []byte{133}, ToData: []byte{137}}, verdict(expr.VerdictAccept)}),
		// DHCP answers from the service namespace (ports cannot send them).
		join(matchL4(protoUDP), []expr.Any{ldTh(offThSport, 2), cmp(expr.CmpOpEq, be16(67)), ldTh(offThDport, 2), cmp(expr.CmpOpEq, be16(68)), verdict(expr.VerdictAccept)}),
		join(matchL4(protoUDP), []expr.Any{ldTh(offThSport, 2), cmp(expr.CmpOpEq, be16(547)), ldTh(offThDport, 2), cmp(expr.CmpOpEq, be16(546)), verdict(expr.VerdictAccept)}),
		concatLookup(expr.MetaKeyIIFNAME, nfprotoIPv4, offIP4Src, 4, mapEg4),
		concatLookup(expr.MetaKeyIIFNAME, nfprotoIPv6, offIP6Src, 16, mapEg6),
		concatLookup(expr.MetaKeyOIFNAME, nfprotoIPv4, offIP4Dst, 4, mapIn4),
		concatLookup(expr.MetaKeyOIFNAME, nfprotoIPv6, offIP6Dst, 16, mapIn6),
	}
}

// concatLookup: meta <ifname> . <address> vmap @m.
func concatLookup(k expr.MetaKey, nfproto uint8, off, n uint32, m string) []expr.Any {
	return join(matchNfproto(nfproto), []expr.Any{
		&expr.Meta{Key: k, Register: reg1},
		&expr.Payload{DestRegister: regConcat, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m},
	})
}

func zoneRules(zs []zone) [][]expr.Any {
	var rs [][]expr.Any
	for _, z := range zs {
		rs = append(rs, []expr.Any{
			ldMeta(expr.MetaKeyIIFNAME), cmp(expr.CmpOpEq, ifname(z.bridge)),
			&expr.Immediate{Register: reg1, Data: nativeU16(z.id)},
			&expr.Ct{Register: reg1, Key: expr.CtKeyZONE, SourceRegister: true},
		})
	}
	return rs
}

func nativeU16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

var (
	btable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyBridge}
	itable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}
)

func mapSet(name string) *nftables.Set {
	s := &nftables.Set{Table: itable, Name: name, IsMap: true, DataType: nftables.TypeVerdict, Concatenation: true}
	switch name {
	case mapEg4, mapIn4:
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	case mapEg6, mapIn6:
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
	}
	return s
}

func groupSetObj(name string) *nftables.Set {
	s := &nftables.Set{Table: itable, Name: name, KeyType: nftables.TypeIPAddr}
	if strings.HasPrefix(name, "g6-") {
		s.KeyType = nftables.TypeIP6Addr
	}
	return s
}

func bridgeMapObj() *nftables.Set {
	return &nftables.Set{Table: btable, Name: mapPorts, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
}

// elementChain is the chain a map element jumps to. The library does not
// decode verdicts it reads back, so every element carries its target chain
// as its comment too; an element without a valid one reads as "?" and is
// replaced.
func elementChain(e nftables.SetElement) string {
	if _, _, _, ok := parseChainName(e.Comment); ok {
		return e.Comment
	}
	return "?"
}

func jump(chain string) *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// loadFW reads our tables: chain names, map and set elements.
func loadFW(c *nftables.Conn) (*fwCurrent, error) {
	cur := newFwCurrent()
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("dataplane: nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != tableName {
			continue
		}
		switch t.Family {
		case nftables.TableFamilyBridge:
			cur.btable = true
		case nftables.TableFamilyINet:
			cur.itable = true
		}
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("dataplane: nftables: list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != tableName {
			continue
		}
		switch ch.Table.Family {
		case nftables.TableFamilyBridge:
			cur.bchains[ch.Name] = true
		case nftables.TableFamilyINet:
			cur.ichains[ch.Name] = true
		}
	}
	if cur.btable {
		els, err := c.GetSetElements(bridgeMapObj())
		if err == nil {
			for _, e := range els {
				cur.bmap[strings.TrimRight(string(e.Key), "\x00")] = elementChain(e)
			}
		}
	}
	if cur.itable {
		sets, err := c.GetSets(itable)
		if err != nil {
			return nil, fmt.Errorf("dataplane: nftables: list sets: %w", err)
		}
		for _, s := range sets {
			els, err := c.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("dataplane: nftables: elements of %s: %w", s.Name, err)
			}
			if m, ok := cur.maps[s.Name]; ok {
				for _, e := range els {
					m[string(e.Key)] = elementChain(e)
				}
				continue
			}
			if strings.HasPrefix(s.Name, "g4-") || strings.HasPrefix(s.Name, "g6-") {
				m := map[string]bool{}
				for _, e := range els {
					m[string(e.Key)] = true
				}
				cur.sets[s.Name] = m
			}
		}
	}
	return cur, nil
}

// maxBatch is how many messages one transaction carries at most. A
// single port's change is far below it and stays one atomic transaction;
// a large reconcile (1,000 new ports) is split at safe points: new chains
// before the map elements that jump to them, a map element's delete and
// add in the same transaction, old chains deleted last. The kernel
// refused (ENOENT) transactions of a few hundred thousand messages.
const maxBatch = 4000

// elemChunk is how many set elements go in one message (see planMap).
const elemChunk = 200

// addElements queues elements in messages of at most elemChunk.
func (b *batcher) addElements(s *nftables.Set, els []nftables.SetElement, del bool) {
	for len(els) > 0 {
		n := min(len(els), elemChunk)
		if del {
			_ = b.c.SetDeleteElements(s, els[:n])
		} else {
			_ = b.c.SetAddElements(s, els[:n])
		}
		b.add(1 + n/64)
		els = els[n:]
	}
}

// batcher counts queued messages and commits at safe points.
type batcher struct {
	c      *nftables.Conn
	queued int
	err    error
}

func (b *batcher) add(n int) { b.queued += n }

// safe commits what is queued if the batch is full.
func (b *batcher) safe() {
	if b.queued >= maxBatch {
		b.flush()
	}
}

func (b *batcher) flush() {
	if b.queued == 0 || b.err != nil {
		return
	}
	b.queued = 0
	if err := b.c.Flush(); err != nil {
		b.err = err
	}
}

// fwPlan commits the transactions turning cur into d; it returns the
// number of object changes. cur is updated to what the kernel holds if
// the returned error is nil.
func fwPlan(c *nftables.Conn, cur *fwCurrent, d *fwDesired) (int, error) {
	b := &batcher{c: c}
	n := 0
	if !cur.btable {
		c.AddTable(btable)
		cur.btable = true
		n++
	}
	if !cur.itable {
		c.AddTable(itable)
		cur.itable = true
		n++
	}
	// Maps and base chains.
	if !cur.bchains[bridgeBase] {
		c.AddSet(bridgeMapObj(), nil)
		ch := c.AddChain(&nftables.Chain{Name: bridgeBase, Table: btable, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200)})
		c.AddRule(&nftables.Rule{Table: btable, Chain: ch, Exprs: []expr.Any{
			ldMeta(expr.MetaKeyIIFNAME), &expr.Lookup{SourceRegister: reg1, IsDestRegSet: true, SetName: mapPorts}}})
		cur.bchains[bridgeBase] = true
		n++
	}
	if !cur.ichains[inetBase] {
		for _, m := range []string{mapEg4, mapEg6, mapIn4, mapIn6} {
			c.AddSet(mapSet(m), nil)
		}
		ch := c.AddChain(&nftables.Chain{Name: inetBase, Table: itable, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		for _, r := range forwardRules() {
			c.AddRule(&nftables.Rule{Table: itable, Chain: ch, Exprs: r})
		}
		cur.ichains[inetBase] = true
		n++
	}
	if !cur.ichains[d.zchain] {
		ch := c.AddChain(&nftables.Chain{Name: d.zchain, Table: itable, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
		for _, r := range zoneRules(d.zones) {
			c.AddRule(&nftables.Rule{Table: itable, Chain: ch, Exprs: r})
		}
		cur.ichains[d.zchain] = true
		n++
	}
	// Group sets before the chains that look them up.
	for name, want := range d.sets {
		have, ok := cur.sets[name]
		s := groupSetObj(name)
		if !ok {
			c.AddSet(s, nil)
			have = map[string]bool{}
			cur.sets[name] = have
			n++
		}
		var add, del []nftables.SetElement
		for k := range want {
			if !have[k] {
				add = append(add, nftables.SetElement{Key: []byte(k)})
				have[k] = true
			}
		}
		for k := range have {
			if !want[k] {
				del = append(del, nftables.SetElement{Key: []byte(k)})
				delete(have, k)
			}
		}
		if len(add) > 0 {
			b.addElements(s, add, false)
			n++
		}
		if len(del) > 0 {
			b.addElements(s, del, true)
			n++
		}
	}
	// New per-port chains.
	ports := make([]*fwPort, 0, len(d.ports))
	for _, fp := range d.ports {
		ports = append(ports, fp)
	}
	slices.SortFunc(ports, func(a, b *fwPort) int { return strings.Compare(a.id, b.id) })
	b.add(1)
	for _, fp := range ports {
		b.safe()
		if b.err != nil {
			return n, b.err
		}
		if !cur.bchains[fp.spoof] {
			ch := c.AddChain(&nftables.Chain{Name: fp.spoof, Table: btable})
			for _, r := range spoofRules(fp.port, fp.addrs) {
				c.AddRule(&nftables.Rule{Table: btable, Chain: ch, Exprs: r})
				b.add(1)
			}
			cur.bchains[fp.spoof] = true
			n++
		}
		if !cur.ichains[fp.in] {
			ch := c.AddChain(&nftables.Chain{Name: fp.in, Table: itable})
			for _, r := range sgRules(fp.pol.ingress, false) {
				c.AddRule(&nftables.Rule{Table: itable, Chain: ch, Exprs: r})
				b.add(1)
			}
			cur.ichains[fp.in] = true
			n++
		}
		if fp.eg != "" && !cur.ichains[fp.eg] {
			ch := c.AddChain(&nftables.Chain{Name: fp.eg, Table: itable})
			for _, r := range sgRules(fp.pol.egress, true) {
				c.AddRule(&nftables.Rule{Table: itable, Chain: ch, Exprs: r})
				b.add(1)
			}
			cur.ichains[fp.eg] = true
			n++
		}
	}
	// Map elements.
	n += planMap(b, bridgeMapObj(), cur.bmap, d.bmap, func(k string) []byte { return ifname(k) })
	for _, m := range []string{mapEg4, mapEg6, mapIn4, mapIn6} {
		n += planMap(b, mapSet(m), cur.maps[m], d.maps[m], func(k string) []byte { return []byte(k) })
	}
	// Old chains and sets, now unreferenced.
	for name := range cur.bchains {
		if name == bridgeBase {
			continue
		}
		if _, ok := d.bchains[name]; !ok {
			c.DelChain(&nftables.Chain{Name: name, Table: btable})
			delete(cur.bchains, name)
			n++
			b.add(1)
			b.safe()
		}
	}
	for name := range cur.ichains {
		if name == inetBase || name == d.zchain {
			continue
		}
		if _, ok := d.ichains[name]; !ok {
			c.DelChain(&nftables.Chain{Name: name, Table: itable})
			delete(cur.ichains, name)
			n++
			b.add(1)
			b.safe()
		}
	}
	for name := range cur.sets {
		if _, ok := d.sets[name]; !ok {
			c.DelSet(groupSetObj(name))
			delete(cur.sets, name)
			n++
			b.add(1)
		}
	}
	b.flush()
	return n, b.err
}

// planMap queues the element changes of one verdict map; a changed
// element is deleted and added again in the same transaction.
func planMap(b *batcher, s *nftables.Set, have, want map[string]string, key func(string) []byte) int {
	// One message holds its elements in one netlink attribute, whose
	// length is 16 bits: beyond ~64 KiB (about 600 elements here) it
	// overflows and the kernel rejects the batch (ENOENT).
	const chunk = elemChunk
	var add, del []nftables.SetElement
	n := 0
	commit := func() {
		b.addElements(s, del, true)
		b.addElements(s, add, false)
		n += len(add) + len(del)
		add, del = nil, nil
		b.safe()
	}
	for k, ch := range have {
		if w, ok := want[k]; !ok || w != ch {
			del = append(del, nftables.SetElement{Key: key(k)})
			delete(have, k)
			if ok {
				add = append(add, nftables.SetElement{Key: key(k), VerdictData: jump(w), Comment: w})
				have[k] = w
			}
			if len(del)+len(add) >= chunk {
				commit()
			}
		}
	}
	for k, ch := range want {
		if _, ok := have[k]; !ok {
			add = append(add, nftables.SetElement{Key: key(k), VerdictData: jump(ch), Comment: ch})
			have[k] = ch
			if len(add) >= chunk {
				commit()
			}
		}
	}
	commit()
	return n
}
