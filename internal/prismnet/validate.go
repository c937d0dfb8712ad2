package prismnet

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// Limits of list fields, so one object stays small.
const (
	maxIPv6Prefixes = 8
	maxDNSServers   = 4
	maxHostRoutes   = 16
	maxPools        = 16
	maxFixedIPs     = 8
	maxGroups       = 16
	maxRules        = 256
	maxDescription  = 1024
	defaultMTU      = 1450 // 1500 minus the VXLAN overhead over IPv4
)

func fieldErr(field, format string, args ...any) error {
	return apiserver.FieldError(field, format, args...)
}

// parsePrefix parses a canonical prefix: "10.0.0.0/24", not "10.0.0.1/24".
func parsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fieldErr(field, "%q is not a CIDR prefix such as 10.0.0.0/24", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fieldErr(field, "%q has host bits set; did you mean %s?", s, p.Masked())
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return netip.Prefix{}, fieldErr(field, "%q: use plain IPv4 or IPv6 notation", s)
	}
	return p, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, fieldErr(field, "%q is not an IP address", s)
	}
	return a, nil
}

func checkDescription(field, s string) error {
	if len(s) > maxDescription {
		return fieldErr(field, "is %d characters long; at most %d", len(s), maxDescription)
	}
	return nil
}

func validateNetwork(s *prismnetv1.NetworkSpec) error {
	p, err := parsePrefix("cidr", s.CIDR)
	if err != nil {
		return err
	}
	if !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 29 {
		return fieldErr("cidr", "%s: a network's CIDR is an IPv4 prefix of length 8 to 29", s.CIDR)
	}
	if len(s.IPv6Prefixes) > maxIPv6Prefixes {
		return fieldErr("ipv6Prefixes", "at most %d prefixes, got %d", maxIPv6Prefixes, len(s.IPv6Prefixes))
	}
	seen := map[netip.Prefix]bool{}
	for i, v := range s.IPv6Prefixes {
		f := fmt.Sprintf("ipv6Prefixes[%d]", i)
		q, err := parsePrefix(f, v)
		if err != nil {
			return err
		}
		if !q.Addr().Is6() || q.Bits() != 64 {
			return fieldErr(f, "%s: IPv6 prefixes are /64s (SLAAC needs 64 host bits)", v)
		}
		if seen[q] {
			return fieldErr(f, "%s is listed twice", v)
		}
		seen[q] = true
		s.IPv6Prefixes[i] = q.String()
	}
	if s.MTU != 0 && (s.MTU < 576 || s.MTU > 9000) {
		return fieldErr("mtu", "%d is outside 576 to 9000 (0: the default %d)", s.MTU, defaultMTU)
	}
	s.CIDR = p.String()
	return checkDescription("description", s.Description)
}

// subnetShape is a subnet's parsed, defaulted addressing.
type subnetShape struct {
	cidr    netip.Prefix
	gateway netip.Addr // invalid: no gateway
	service netip.Addr // invalid: none (IPv6)
	pools   []pool
}

// reserved returns the addresses never handed out to ports.
func (sh subnetShape) reserved() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{sh.gateway, sh.service} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// shapeOf parses and checks a subnet's addresses (without reference to its
// network) and fills in the defaults.
func shapeOf(s *prismnetv1.SubnetSpec) (subnetShape, error) {
	var sh subnetShape
	p, err := parsePrefix("cidr", s.CIDR)
	if err != nil {
		return sh, err
	}
	if p.Addr().Is4() && p.Bits() > 29 {
		return sh, fieldErr("cidr", "%s is too small: IPv4 subnets are /29 or larger", s.CIDR)
	}
	if p.Addr().Is6() && p.Bits() != 64 {
		return sh, fieldErr("cidr", "%s: IPv6 subnets are /64s", s.CIDR)
	}
	sh.cidr = p
	s.CIDR = p.String()
	first, last := usableRange(p)
	switch s.Gateway {
	case "none":
	case "":
		sh.gateway = first
	default:
		g, err := parseAddr("gateway", s.Gateway)
		if err != nil {
			return sh, err
		}
		if !p.Contains(g) || g.Compare(first) < 0 || g.Compare(last) > 0 {
			return sh, fieldErr("gateway", "%s is not a usable address of %s (%s to %s)", g, p, first, last)
		}
		sh.gateway = g
	}
	if sh.gateway.IsValid() {
		s.Gateway = sh.gateway.String()
	}
	if p.Addr().Is4() {
		sh.service = serviceAddr(p)
		if sh.service == sh.gateway {
			return sh, fieldErr("gateway", "%s is the subnet's service address (DHCP, metadata); pick another", sh.gateway)
		}
	}
	if len(s.AllocationPools) > maxPools {
		return sh, fieldErr("allocationPools", "at most %d pools, got %d", maxPools, len(s.AllocationPools))
	}
	for i, ap := range s.AllocationPools {
		f := fmt.Sprintf("allocationPools[%d]", i)
		a, err := parseAddr(f+".start", ap.Start)
		if err != nil {
			return sh, err
		}
		b, err := parseAddr(f+".end", ap.End)
		if err != nil {
			return sh, err
		}
		if !p.Contains(a) || !p.Contains(b) || a.Compare(first) < 0 || b.Compare(last) > 0 {
			return sh, fieldErr(f, "%s-%s is not inside the usable addresses of %s (%s to %s)", a, b, p, first, last)
		}
		if a.Compare(b) > 0 {
			return sh, fieldErr(f, "start %s is after end %s", a, b)
		}
		np := pool{a, b}
		for _, r := range sh.reserved() {
			if np.contains(r) {
				return sh, fieldErr(f, "%s-%s contains the reserved address %s (gateway or service address)", a, b, r)
			}
		}
		for j, q := range sh.pools {
			if np.contains(q.start) || q.contains(np.start) {
				return sh, fieldErr(f, "overlaps allocationPools[%d]", j)
			}
		}
		sh.pools = append(sh.pools, np)
		s.AllocationPools[i] = prismnetv1.AllocationPool{Start: a.String(), End: b.String()}
	}
	if len(sh.pools) == 0 {
		sh.pools = []pool{{first, last}}
	}
	return sh, nil
}

func validateSubnet(s *prismnetv1.SubnetSpec) error {
	if s.Network == "" {
		return fieldErr("network", "names the subnet's network and is required")
	}
	if err := apiserver.ValidateName("network", s.Network); err != nil {
		return err
	}
	sh, err := shapeOf(s)
	if err != nil {
		return err
	}
	if len(s.DNSServers) > maxDNSServers {
		return fieldErr("dnsServers", "at most %d servers, got %d", maxDNSServers, len(s.DNSServers))
	}
	for i, d := range s.DNSServers {
		a, err := parseAddr(fmt.Sprintf("dnsServers[%d]", i), d)
		if err != nil {
			return err
		}
		s.DNSServers[i] = a.String()
	}
	if len(s.HostRoutes) > maxHostRoutes {
		return fieldErr("hostRoutes", "at most %d routes, got %d", maxHostRoutes, len(s.HostRoutes))
	}
	for i, r := range s.HostRoutes {
		f := fmt.Sprintf("hostRoutes[%d]", i)
		d, err := parsePrefix(f+".destination", r.Destination)
		if err != nil {
			return err
		}
		n, err := parseAddr(f+".nexthop", r.Nexthop)
		if err != nil {
			return err
		}
		if d.Addr().Is4() != sh.cidr.Addr().Is4() || !sh.cidr.Contains(n) {
			return fieldErr(f, "nexthop %s must be an address of the subnet %s, of the same family as %s", n, sh.cidr, d)
		}
		s.HostRoutes[i] = prismnetv1.HostRoute{Destination: d.String(), Nexthop: n.String()}
	}
	return nil
}

func validateSubnetUpdate(old, new *prismnetv1.SubnetSpec) error {
	switch {
	case old.Network != new.Network:
		return fieldErr("network", "is immutable (was %q)", old.Network)
	case old.CIDR != new.CIDR:
		return fieldErr("cidr", "is immutable (was %s); create another subnet", old.CIDR)
	case old.Gateway != new.Gateway:
		return fieldErr("gateway", "is immutable (was %q)", old.Gateway)
	case fmt.Sprint(old.AllocationPools) != fmt.Sprint(new.AllocationPools):
		return fieldErr("allocationPools", "are immutable")
	}
	return nil
}

func validatePort(s *prismnetv1.PortSpec) error {
	if err := apiserver.ValidateName("network", s.Network); err != nil {
		return err
	}
	if len(s.FixedIPs) > maxFixedIPs {
		return fieldErr("fixedIPs", "at most %d addresses, got %d", maxFixedIPs, len(s.FixedIPs))
	}
	for i, f := range s.FixedIPs {
		field := fmt.Sprintf("fixedIPs[%d]", i)
		if err := apiserver.ValidateName(field+".subnet", f.Subnet); err != nil {
			return err
		}
		if f.IP != "" {
			a, err := parseAddr(field+".ip", f.IP)
			if err != nil {
				return err
			}
			s.FixedIPs[i].IP = a.String()
		}
	}
	if s.MAC != "" {
		m, err := net.ParseMAC(s.MAC)
		if err != nil || len(m) != 6 {
			return fieldErr("mac", "%q is not a MAC address such as fa:16:3e:00:00:01", s.MAC)
		}
		if m[0]&1 == 1 {
			return fieldErr("mac", "%s is a multicast address; a port needs a unicast MAC", m)
		}
		s.MAC = m.String()
	}
	if err := checkGroups("securityGroups", s.SecurityGroups); err != nil {
		return err
	}
	if s.PortSecurity == nil {
		t := true
		s.PortSecurity = &t
	}
	if s.Owner != nil && (s.Owner.Kind == "" || len(s.Owner.Kind) > 63 || apiserver.ValidateName("owner.name", s.Owner.Name) != nil) {
		return fieldErr("owner", "needs a kind (at most 63 characters) and a name that is a DNS label")
	}
	b := &s.Binding
	if b.Host != "" {
		if err := apiserver.ValidateName("binding.host", b.Host); err != nil {
			return err
		}
	}
	switch b.Device {
	case "":
		b.Device = prismnetv1.DeviceTap
	case prismnetv1.DeviceTap, prismnetv1.DeviceVeth:
	default:
		return fieldErr("binding.device", "%q: use tap or veth", b.Device)
	}
	if b.Device == prismnetv1.DeviceTap && (b.Namespace != "" || b.Interface != "") {
		return fieldErr("binding.namespace", "only veth ports go into a namespace")
	}
	if b.Device == prismnetv1.DeviceVeth {
		if b.Namespace == "" || !validIfName(b.Namespace, 64) {
			return fieldErr("binding.namespace", "%q: a veth port needs the namespace its peer goes into (letters, digits, '-', '_', '.')", b.Namespace)
		}
		if b.Interface == "" {
			b.Interface = "eth0"
		}
		if !validIfName(b.Interface, 15) {
			return fieldErr("binding.interface", "%q is not an interface name (at most 15 letters, digits, '-', '_', '.')", b.Interface)
		}
	}
	return nil
}

// validIfName accepts interface and namespace names that are safe as file
// names and netlink names.
func validIfName(s string, max int) bool {
	if s == "" || len(s) > max || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func checkGroups(field string, groups []string) error {
	if len(groups) > maxGroups {
		return fieldErr(field, "at most %d groups, got %d", maxGroups, len(groups))
	}
	seen := map[string]bool{}
	for i, g := range groups {
		if err := apiserver.ValidateName(fmt.Sprintf("%s[%d]", field, i), g); err != nil {
			return err
		}
		if seen[g] {
			return fieldErr(fmt.Sprintf("%s[%d]", field, i), "%q is listed twice", g)
		}
		seen[g] = true
	}
	return nil
}

func validatePortUpdate(old, new *prismnetv1.PortSpec) error {
	switch {
	case old.Network != new.Network:
		return fieldErr("network", "is immutable (was %q)", old.Network)
	case fmt.Sprint(old.FixedIPs) != fmt.Sprint(new.FixedIPs):
		return fieldErr("fixedIPs", "are immutable; create another port")
	case new.MAC != "" && old.MAC != new.MAC:
		return fieldErr("mac", "is immutable (was %q)", old.MAC)
	}
	return nil
}

var protocols = map[string]bool{"tcp": true, "udp": true, "icmp": true, "icmpv6": true}

func validateGroup(s *prismnetv1.SecurityGroupSpec) error {
	if err := checkDescription("description", s.Description); err != nil {
		return err
	}
	if len(s.Rules) > maxRules {
		return fieldErr("rules", "at most %d rules, got %d", maxRules, len(s.Rules))
	}
	for i := range s.Rules {
		if err := validateRule(fmt.Sprintf("rules[%d]", i), &s.Rules[i]); err != nil {
			return err
		}
	}
	return nil
}

func validateRule(f string, r *prismnetv1.SecurityGroupRule) error {
	if r.Direction != prismnetv1.Ingress && r.Direction != prismnetv1.Egress {
		return fieldErr(f+".direction", "%q: use ingress or egress", r.Direction)
	}
	switch r.Ethertype {
	case "":
		r.Ethertype = "IPv4"
	case "IPv4", "IPv6":
	default:
		return fieldErr(f+".ethertype", "%q: use IPv4 or IPv6", r.Ethertype)
	}
	r.Protocol = strings.ToLower(r.Protocol)
	if r.Protocol != "" && !protocols[r.Protocol] {
		n, err := strconv.Atoi(r.Protocol)
		if err != nil || n < 0 || n > 255 {
			return fieldErr(f+".protocol", "%q: use tcp, udp, icmp, icmpv6, a protocol number 0-255, or leave it empty for any", r.Protocol)
		}
	}
	if (r.Protocol == "icmp" && r.Ethertype == "IPv6") || (r.Protocol == "icmpv6" && r.Ethertype == "IPv4") {
		return fieldErr(f+".protocol", "%s does not go with %s (icmp is IPv4's, icmpv6 IPv6's)", r.Protocol, r.Ethertype)
	}
	if r.PortMin != 0 || r.PortMax != 0 {
		if r.Protocol != "tcp" && r.Protocol != "udp" {
			return fieldErr(f+".portMin", "port ranges apply to tcp and udp only")
		}
		if r.PortMax == 0 {
			r.PortMax = r.PortMin
		}
		if r.PortMin < 1 || r.PortMax > 65535 || r.PortMin > r.PortMax {
			return fieldErr(f+".portMin", "%d-%d is not a port range within 1-65535", r.PortMin, r.PortMax)
		}
	}
	if r.RemoteCIDR != "" && r.RemoteGroup != "" {
		return fieldErr(f+".remoteGroup", "give remoteCIDR or remoteGroup, not both")
	}
	if r.RemoteCIDR != "" {
		p, err := parsePrefix(f+".remoteCIDR", r.RemoteCIDR)
		if err != nil {
			return err
		}
		if p.Addr().Is4() != (r.Ethertype == "IPv4") {
			return fieldErr(f+".remoteCIDR", "%s is not an %s prefix", p, r.Ethertype)
		}
		r.RemoteCIDR = p.String()
	}
	if r.RemoteGroup != "" {
		if err := apiserver.ValidateName(f+".remoteGroup", r.RemoteGroup); err != nil {
			return err
		}
	}
	return nil
}
