//go:build linux

package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A router is a namespace ucr-<id> with one veth leg per attached network
// (qr-<net> inside, holding the gateway addresses of its subnets, the
// host end ucr-<hash> in the network's bridge) and, with an external
// gateway, a leg qg into the external network's bridge (host end
// ucg-<id>) holding the gateway address and the floating IPs, with the
// default route. IPv4 NAT happens in table ip ultracloud inside the
// namespace: DNAT of each floating IP in prerouting; in postrouting SNAT
// of each floating IP's internal address to it, then SNAT of the attached
// IPv4 subnets to the gateway address.

func (a *applier) ensureRouter(r *Router, bridges, extBridges map[string]netlink.Link, nets map[string]*Network) error {
	name := devName(kindRouter, r.ID)
	ns, err := a.ensureNamespace(name)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() { ns.Close() })
	path := a.h.nsPath(name)

	byNet := map[string][]RouterInterface{}
	var netIDs []string
	for _, ifc := range r.Interfaces {
		if _, ok := byNet[ifc.Network]; !ok {
			netIDs = append(netIDs, ifc.Network)
		}
		byNet[ifc.Network] = append(byNet[ifc.Network], ifc)
	}
	var rh *netlink.Handle
	for _, id := range netIDs {
		br := bridges[id]
		if br == nil {
			return fmt.Errorf("network %s is not in place", id)
		}
		ifcs := byNet[id]
		var addrs []netip.Prefix
		for _, ifc := range ifcs {
			addrs = append(addrs, netip.PrefixFrom(ifc.Gateway, ifc.Subnet.Bits()))
		}
		_, ph, err := a.ensureVeth(vethSpec{host: legDev(r.ID, id), master: br, mtu: nets[id].mtu(), peerNs: ns,
			peerName: legInner(id), peerMAC: ifcs[0].MAC, peerAddrs: addrs}, true)
		if err != nil {
			return err
		}
		rh = ph
	}
	if r.External != nil {
		br := extBridges[r.External.ExternalNetwork]
		if br == nil {
			return fmt.Errorf("external network %s is not in place", r.External.ExternalNetwork)
		}
		addrs := []netip.Prefix{r.External.Address}
		for _, f := range r.FloatingIPs {
			addrs = append(addrs, netip.PrefixFrom(f.External, 32))
		}
		_, ph, err := a.ensureVeth(vethSpec{host: devName(kindGateway, r.ID), master: br, mtu: 1500, peerNs: ns,
			peerName: gwInner, peerMAC: r.External.MAC, peerAddrs: addrs}, true)
		if err != nil {
			return err
		}
		rh = ph
		if r.External.Gateway.IsValid() {
			if err := a.ensureDefaultRoute(ph, r.External.Gateway); err != nil {
				return err
			}
		}
	}
	if rh == nil {
		nh, err := a.nsHandle(ns)
		if err != nil {
			return err
		}
		rh = nh
	}
	if err := a.loUp(rh); err != nil {
		return err
	}
	if err := writeSysctl(path, "/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := writeSysctl(path, "/proc/sys/net/ipv6/conf/all/forwarding", "1"); err != nil {
		return err
	}
	return a.ensureRouterNAT(r, int(ns))
}

func (a *applier) ensureDefaultRoute(h *netlink.Handle, gw netip.Addr) error {
	qg, err := h.LinkByName(gwInner)
	if err != nil {
		return fmt.Errorf("dataplane: %s: %w", gwInner, err)
	}
	routes, err := h.RouteList(qg, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("dataplane: routes: %w", err)
	}
	for _, rt := range routes {
		if (rt.Dst == nil || rt.Dst.IP.IsUnspecified()) && rt.Gw.Equal(net.IP(gw.AsSlice())) {
			return nil
		}
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: qg.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
		return fmt.Errorf("dataplane: default route via %s: %w", gw, err)
	}
	a.changes++
	return nil
}

var rtable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}

// ensureRouterNAT replaces the NAT chains when their content changed. The
// chain names carry a signature of the content, so an unchanged router is
// one chain listing; a change is one transaction that adds the new chains
// and deletes the old ones (existing translations live in conntrack and
// survive it).
func (a *applier) ensureRouterNAT(r *Router, nsFd int) error {
	var pre, post [][]expr.Any
	var sig strings.Builder
	sig.WriteString("v1;")
	if r.External != nil {
		gwAddr := r.External.Address.Addr()
		fips := slices.Clone(r.FloatingIPs)
		slices.SortFunc(fips, func(x, y FloatingIP) int { return x.External.Compare(y.External) })
		for _, f := range fips {
			fmt.Fprintf(&sig, "fip %s %s;", f.External, f.Internal)
			pre = append(pre, join(matchAddr(offIP4Dst, f.External), natTo(expr.NATTypeDestNAT, f.Internal)))
			post = append(post, join([]expr.Any{ldMeta(expr.MetaKeyOIFNAME), cmp(expr.CmpOpEq, ifname(gwInner))},
				matchAddr(offIP4Src, f.Internal), natTo(expr.NATTypeSourceNAT, f.External)))
		}
		if r.External.SNAT {
			var subnets []netip.Prefix
			for _, ifc := range r.Interfaces {
				if ifc.Subnet.Addr().Is4() {
					subnets = append(subnets, ifc.Subnet.Masked())
				}
			}
			slices.SortFunc(subnets, func(x, y netip.Prefix) int { return strings.Compare(x.String(), y.String()) })
			for _, sn := range slices.Compact(subnets) {
				fmt.Fprintf(&sig, "snat %s %s;", sn, gwAddr)
				post = append(post, join([]expr.Any{ldMeta(expr.MetaKeyOIFNAME), cmp(expr.CmpOpEq, ifname(gwInner))},
					matchPrefix(offIP4Src, sn), natTo(expr.NATTypeSourceNAT, gwAddr)))
			}
		}
	}
	s := hashKey(sig.String(), sigLen)
	preName, postName := "pre-"+s, "post-"+s

	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("dataplane: nftables in router namespace: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("dataplane: router nftables: list chains: %w", err)
	}
	have := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == tableName {
			have[ch.Name] = true
		}
	}
	if have[preName] && have[postName] && len(have) == 2 {
		return nil
	}
	c.AddTable(rtable)
	if !have[preName] {
		ch := c.AddChain(&nftables.Chain{Name: preName, Table: rtable, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		for _, e := range pre {
			c.AddRule(&nftables.Rule{Table: rtable, Chain: ch, Exprs: e})
		}
	}
	if !have[postName] {
		ch := c.AddChain(&nftables.Chain{Name: postName, Table: rtable, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
		for _, e := range post {
			c.AddRule(&nftables.Rule{Table: rtable, Chain: ch, Exprs: e})
		}
	}
	for name := range have {
		if name != preName && name != postName {
			c.DelChain(&nftables.Chain{Name: name, Table: rtable})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("dataplane: router nftables transaction: %w", err)
	}
	a.changes++
	return nil
}

func natTo(t expr.NATType, to netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: to.AsSlice()},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegAddrMax: reg1},
	}
}
