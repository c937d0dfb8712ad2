package prismnet

import (
	"cmp"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
	"github.com/ultracloud/ultracloud/internal/prismnet/dhcp"
	"github.com/ultracloud/ultracloud/internal/prismnet/metadata"
	"github.com/ultracloud/ultracloud/internal/runtime/apicache"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// metadataAddr is where workloads reach the metadata service (through
// their network's service namespace on their host).
var metadataAddr = netip.MustParseAddr("169.254.169.254")

// leaseTime is how long a DHCP lease lasts; clients renew at half of it.
const leaseTime = time.Hour

// hostView is the desired state of one host: the kernel state the
// dataplane converges to, and what each network's DHCP server and RA
// sender announce.
type hostView struct {
	state dataplane.State
	// ports maps a dataplane port ID to its API object, for status writes.
	ports map[string]*api.Object
	// services are the networks' addressing services, by network ID.
	services map[string]serviceView
}

// serviceView is what one network's service namespace announces.
type serviceView struct {
	dhcpServerID netip.Addr // the first IPv4 subnet's service address (invalid: no DHCP)
	leases       []dhcp.Lease
	ra           []netip.Prefix // IPv6 subnets announced for SLAAC
	mtu          int
	dns          []netip.Addr
	// instances are the host's ports on the network by address, for the
	// metadata proxy.
	instances map[netip.Addr]metadata.Instance
}

// serviceMAC is a network's service-namespace MAC: the same on every host,
// derived from the VNI, in a locally administered range ports never get
// (ports are fa:..., this is fe:00:00:<vni>).
func serviceMAC(vni uint32) net.HardwareAddr {
	return net.HardwareAddr{0xfe, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni)}
}

// portID is the dataplane ID of a port: its project and name.
func portID(o *api.Object) string { return o.Metadata.Project + "/" + o.Metadata.Name }

// namespacePath resolves a port's binding namespace: a name is one of
// `ip netns`'s (/run/netns), an absolute path is taken as it is.
func namespacePath(ns string) string {
	if filepath.IsAbs(ns) {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}

// computeHostView derives the desired state of host from the agent's
// cache: the ports bound to it, their networks, subnets and security
// groups, and its NetworkHost (remote ports and group members).
func computeHostView(c *apicache.Cache, host string, underlay netip.Addr) hostView {
	v := hostView{ports: map[string]*api.Object{}, services: map[string]serviceView{}}
	v.state.Underlay = underlay
	v.state.Groups = map[string][]netip.Addr{}

	type netInfo struct {
		id   string
		spec prismnetv1.NetworkSpec
		st   prismnetv1.NetworkStatus
	}
	nets := map[string]*netInfo{} // "project/network"
	for _, o := range c.List(prismnetv1.NetworkCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus](c, o)
		if err == nil && st.VNI != 0 {
			nets[apicache.Key(o)] = &netInfo{id: st.ID, spec: spec, st: st}
		}
	}
	type subnetInfo struct {
		name    string
		spec    prismnetv1.SubnetSpec
		cidr    netip.Prefix
		gateway netip.Addr
		service netip.Addr
	}
	subnets := map[string][]subnetInfo{} // "project/network" -> subnets
	subnetByName := map[string]subnetInfo{}
	for _, o := range c.List(prismnetv1.SubnetCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](c, o)
		if err != nil {
			continue
		}
		cidr, err := netip.ParsePrefix(spec.CIDR)
		if err != nil {
			continue
		}
		si := subnetInfo{name: o.Metadata.Name, spec: spec, cidr: cidr}
		si.gateway, _ = netip.ParseAddr(st.Gateway)
		si.service, _ = netip.ParseAddr(st.ServiceAddress)
		k := o.Metadata.Project + "/" + spec.Network
		subnets[k] = append(subnets[k], si)
		subnetByName[apicache.Key(o)] = si
	}
	groups := map[string]dataplane.SecurityGroup{} // "project/group"
	for _, o := range c.List(prismnetv1.SecurityGroupCollection) {
		spec, _, err := apicache.DecodeCached[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus](c, o)
		if err != nil {
			continue
		}
		g := dataplane.SecurityGroup{ID: apicache.Key(o)}
		for _, r := range spec.Rules {
			g.Rules = append(g.Rules, dataplaneRule(o.Metadata.Project, r))
		}
		// Ports that share a group admit each other (the default the
		// docs promise), as rules from the group's own members.
		for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
			g.Rules = append(g.Rules, dataplane.Rule{Direction: dataplane.Ingress, Family: fam, RemoteGroup: g.ID})
		}
		groups[apicache.Key(o)] = g
	}

	present := map[string]bool{} // "project/network" with a local port
	for _, o := range c.List(prismnetv1.PortCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.PortSpec, prismnetv1.PortStatus](c, o)
		if err != nil || spec.Binding.Host != host {
			continue
		}
		nk := o.Metadata.Project + "/" + spec.Network
		ni := nets[nk]
		mac, err := net.ParseMAC(st.MAC)
		if ni == nil || err != nil {
			continue // not allocated yet; the next change brings it
		}
		present[nk] = true
		p := dataplane.Port{ID: portID(o), Network: ni.id, MAC: mac,
			PortSecurity: spec.PortSecurity == nil || *spec.PortSecurity}
		if spec.Binding.Device == prismnetv1.DeviceVeth {
			p.Device = dataplane.Veth
			p.PeerNamespace = namespacePath(spec.Binding.Namespace)
			p.PeerName = spec.Binding.Interface
		}
		for _, f := range st.FixedIPs {
			if a, err := netip.ParseAddr(f.IP); err == nil {
				p.IPs = append(p.IPs, a)
			}
		}
		for _, g := range spec.SecurityGroups {
			if sg, ok := groups[o.Metadata.Project+"/"+g]; ok {
				p.SecurityGroups = append(p.SecurityGroups, sg)
			} else {
				p.SecurityGroups = append(p.SecurityGroups, dataplane.SecurityGroup{ID: o.Metadata.Project + "/" + g})
			}
		}
		v.state.Ports = append(v.state.Ports, p)
		v.ports[p.ID] = o

		// The port's DHCP lease: its first IPv4 address; and its identity
		// for the metadata proxy.
		sv := v.services[ni.id]
		if sv.instances == nil {
			sv.instances = map[netip.Addr]metadata.Instance{}
		}
		inst := metadata.Instance{Project: o.Metadata.Project, Port: o.Metadata.Name, MAC: mac.String()}
		if spec.Owner != nil {
			inst.OwnerKind, inst.OwnerName = spec.Owner.Kind, spec.Owner.Name
		}
		for _, a := range p.IPs {
			inst.Addr = a
			sv.instances[a] = inst
		}
		for _, f := range st.FixedIPs {
			si, ok := subnetByName[o.Metadata.Project+"/"+f.Subnet]
			a, err := netip.ParseAddr(f.IP)
			if !ok || err != nil || !a.Is4() || !si.service.IsValid() {
				continue
			}
			l := dhcp.Lease{MAC: mac, Addr: netip.PrefixFrom(a, si.cidr.Bits()), Router: si.gateway, MTU: ni.st.MTU,
				Duration: leaseTime, Hostname: o.Metadata.Name,
				Routes: []dhcp.Route{{Dest: netip.PrefixFrom(metadataAddr, 32), Via: si.service}}}
			for _, d := range si.spec.DNSServers {
				if da, err := netip.ParseAddr(d); err == nil {
					l.DNS = append(l.DNS, da)
				}
			}
			for _, hr := range si.spec.HostRoutes {
				dst, err1 := netip.ParsePrefix(hr.Destination)
				via, err2 := netip.ParseAddr(hr.Nexthop)
				if err1 == nil && err2 == nil && dst.Addr().Is4() {
					l.Routes = append(l.Routes, dhcp.Route{Dest: dst, Via: via})
				}
			}
			sv.leases = append(sv.leases, l)
			break
		}
		v.services[ni.id] = sv
	}

	// Routers placed here bring their networks (and external networks)
	// even without a local port.
	var hostSpec prismnetv1.NetworkHostSpec
	if o := c.Get(prismnetv1.HostCollection, "", host); o != nil {
		hostSpec, _, _ = apicache.DecodeCached[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus](c, o)
	}
	externals := map[string]dataplane.ExternalNetwork{}
	for _, hr := range hostSpec.Routers {
		r := dataplane.Router{ID: hr.ID}
		for _, ifc := range hr.Interfaces {
			ni := nets[ifc.Network]
			cidr, err1 := netip.ParsePrefix(ifc.CIDR)
			gw, err2 := netip.ParseAddr(ifc.Gateway)
			mac, err3 := net.ParseMAC(ifc.MAC)
			if ni == nil || err1 != nil || err2 != nil || err3 != nil {
				continue
			}
			present[ifc.Network] = true
			r.Interfaces = append(r.Interfaces, dataplane.RouterInterface{Network: ni.id, Subnet: cidr, Gateway: gw, MAC: mac})
		}
		if g := hr.External; g != nil {
			addr, err1 := netip.ParsePrefix(g.Address)
			if err1 == nil {
				gw, _ := netip.ParseAddr(g.Gateway)
				r.External = &dataplane.RouterGateway{ExternalNetwork: g.ID, Address: addr, Gateway: gw, SNAT: g.SNAT}
				externals[g.ID] = dataplane.ExternalNetwork{ID: g.ID, Interface: g.Interface, CIDR: addr.Masked()}
				for _, f := range hr.FloatingIPs {
					ext, err1 := netip.ParseAddr(f.External)
					in, err2 := netip.ParseAddr(f.Internal)
					if err1 == nil && err2 == nil {
						r.FloatingIPs = append(r.FloatingIPs, dataplane.FloatingIP{External: ext, Internal: in})
					}
				}
			}
		}
		v.state.Routers = append(v.state.Routers, r)
	}
	for _, e := range externals {
		v.state.Externals = append(v.state.Externals, e)
	}
	slices.SortFunc(v.state.Externals, func(a, b dataplane.ExternalNetwork) int { return strings.Compare(a.ID, b.ID) })

	for nk := range present {
		ni := nets[nk]
		n := dataplane.Network{ID: ni.id, VNI: ni.st.VNI, MTU: ni.st.MTU, ServiceMAC: serviceMAC(ni.st.VNI)}
		sv := v.services[ni.id]
		sv.mtu = ni.st.MTU
		for _, si := range subnets[nk] {
			n.Subnets = append(n.Subnets, dataplane.Subnet{CIDR: si.cidr, Gateway: si.gateway, ServiceAddr: si.service})
			switch {
			case si.cidr.Addr().Is6():
				sv.ra = append(sv.ra, si.cidr)
			case !sv.dhcpServerID.IsValid() && si.service.IsValid():
				sv.dhcpServerID = si.service
			}
		}
		slices.SortFunc(n.Subnets, func(a, b dataplane.Subnet) int { return a.CIDR.Addr().Compare(b.CIDR.Addr()) })
		v.state.Networks = append(v.state.Networks, n)
		v.services[ni.id] = sv
	}
	slices.SortFunc(v.state.Networks, func(a, b dataplane.Network) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(v.state.Ports, func(a, b dataplane.Port) int { return strings.Compare(a.ID, b.ID) })

	// Remote ports and group members come from the host's NetworkHost.
	for _, r := range hostSpec.Remotes {
		ni := nets[r.Network]
		mac, err1 := net.ParseMAC(r.MAC)
		vtep, err2 := netip.ParseAddr(r.VTEP)
		if ni == nil || !present[r.Network] || err1 != nil || err2 != nil {
			continue
		}
		rp := dataplane.RemotePort{Network: ni.id, MAC: mac, VTEP: vtep}
		for _, s := range r.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				rp.IPs = append(rp.IPs, a)
			}
		}
		v.state.Remotes = append(v.state.Remotes, rp)
	}
	for _, g := range hostSpec.Groups {
		var ips []netip.Addr
		for _, s := range g.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				ips = append(ips, a)
			}
		}
		v.state.Groups[g.Group] = ips
	}
	for id, sv := range v.services {
		slices.SortFunc(sv.leases, func(a, b dhcp.Lease) int { return cmp.Compare(a.MAC.String(), b.MAC.String()) })
		v.services[id] = sv
	}
	return v
}

// dataplaneRule translates an API rule; remote groups become
// "project/group" like the State's Groups.
func dataplaneRule(project string, r prismnetv1.SecurityGroupRule) dataplane.Rule {
	out := dataplane.Rule{Direction: dataplane.Ingress, Family: dataplane.IPv4, Protocol: r.Protocol,
		PortMin: uint16(r.PortMin), PortMax: uint16(r.PortMax)}
	if r.Direction == prismnetv1.Egress {
		out.Direction = dataplane.Egress
	}
	if r.Ethertype == "IPv6" {
		out.Family = dataplane.IPv6
	}
	if p, err := netip.ParsePrefix(r.RemoteCIDR); err == nil {
		out.RemoteCIDR = p
	}
	if r.RemoteGroup != "" {
		out.RemoteGroup = project + "/" + r.RemoteGroup
	}
	return out
}
