//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Sentinel errors; every error this package returns wraps one of them or
// an error of the kernel interface it called.
var (
	// ErrInvalidState: the State handed to Apply is inconsistent; the
	// message names the offending field.
	ErrInvalidState = errors.New("dataplane: invalid state")
	// ErrClosed: the Host was closed.
	ErrClosed = errors.New("dataplane: host closed")
)

// Options configure a Host.
type Options struct {
	// Netns is the path of the network namespace the Host acts in ("" =
	// the namespace of the calling process, the host's root namespace in
	// production; tests pass a simulated host's namespace).
	Netns string
	// NamespaceDir is the directory where the Host pins the namespaces it
	// creates (service and router namespaces). Default /run/netns, where
	// `ip netns` finds them. Two Hosts sharing one kernel (tests) need
	// different directories.
	NamespaceDir string
	// Logger receives the Host's logs (default: slog.Default()).
	Logger *slog.Logger
	// UnderlayDevice optionally names the device VXLAN packets leave by
	// (IFLA_VXLAN_LINK); "" lets the kernel route to the remote VTEP.
	UnderlayDevice string
	// ResyncInterval is how long Apply trusts its record of the devices
	// and FDB/neighbour entries it made before dumping them from the
	// kernel again (default 30s). nftables chains are listed on every
	// Apply whose firewall failed; an Apply after any error rescans.
	ResyncInterval time.Duration
}

// State is the complete desired network state of one host. Apply makes the
// kernel match it; whatever of ours is not in it is removed.
type State struct {
	// Underlay is this host's VTEP address, already configured on an
	// underlay device. Required when Networks is not empty.
	Underlay netip.Addr
	// Networks present on this host (those with a local port or router).
	Networks []Network
	// Ports bound to this host.
	Ports []Port
	// Remotes are the ports (and router interfaces) of the same networks
	// bound to other hosts: each gets a static FDB entry and static
	// neighbour entries on the network's VXLAN device, nothing else crosses
	// hosts (no flooding), so anything a local workload must reach on
	// another host has to be listed here.
	Remotes []RemotePort
	// Groups maps a security group ID to the addresses of all its member
	// ports (on every host): the remote-group rules match these.
	Groups map[string][]netip.Addr
	// Routers whose gateway runs on this host.
	Routers []Router
	// Externals are the external networks reachable from this host.
	Externals []ExternalNetwork
}

// Network is one tenant network as seen on this host.
type Network struct {
	// ID is a short stable identifier, [a-z0-9]{1,8}; device names derive
	// from it (ucb-<id> bridge, ucx-<id> vxlan, ucs-<id> service).
	ID string
	// VNI is the VXLAN network identifier (1..16777215), the same on every
	// host.
	VNI uint32
	// MTU of every device of the network (bridge, vxlan, ports, legs):
	// the underlay MTU minus 50 bytes of VXLAN overhead. 0 means 1450.
	MTU int
	// Subnets of the network; each subnet's ServiceAddr goes on the
	// service namespace.
	Subnets []Subnet
	// ServiceMAC is the MAC of the service namespace's interface (the same
	// on every host, so a workload's neighbour cache stays valid).
	ServiceMAC net.HardwareAddr
}

// Subnet is one IPv4 or IPv6 subnet of a network.
type Subnet struct {
	// CIDR of the subnet.
	CIDR netip.Prefix
	// Gateway is the router's address in the subnet (may be invalid: no
	// router).
	Gateway netip.Addr
	// ServiceAddr is the address of the DHCP/RA/metadata service in the
	// subnet, the same on every host (invalid: none).
	ServiceAddr netip.Addr
}

// DeviceKind says what kind of device a port is.
type DeviceKind int

const (
	// Tap is a persistent single-queue tap (IFF_TAP|IFF_NO_PI) that QEMU
	// opens by name; the Host creates it, the VM attaches later.
	Tap DeviceKind = iota
	// Veth is a veth pair whose peer is moved into PeerNamespace (a
	// container or, in tests, a workload namespace).
	Veth
)

// Port is a port bound to this host.
type Port struct {
	// ID identifies the port; the device is uct-<x> (tap) or ucv-<x>
	// (veth) where x is the ID if it is [a-z0-9]{1,11}, else a hash of it.
	ID string
	// Network is the ID of the port's network.
	Network string
	// MAC of the port (the workload's interface).
	MAC net.HardwareAddr
	// IPs are the port's fixed addresses.
	IPs []netip.Addr
	// Device is Tap or Veth.
	Device DeviceKind
	// PeerNamespace is the path of the namespace the veth peer goes into
	// (Veth only).
	PeerNamespace string
	// PeerName is the peer's name inside PeerNamespace (Veth only;
	// default eth0). Its MAC and MTU are set and it is brought up; no
	// address is configured (DHCP/SLAAC do that).
	PeerName string
	// PortSecurity turns on anti-spoofing and security groups.
	PortSecurity bool
	// SecurityGroups of the port (only with PortSecurity).
	SecurityGroups []SecurityGroup
}

// SecurityGroup is a set of rules; a port's allowed traffic is the union
// of its groups' rules.
type SecurityGroup struct {
	ID    string
	Rules []Rule
}

// Direction of a rule, seen from the port.
type Direction int

const (
	// Ingress: traffic to the port. Default deny.
	Ingress Direction = iota
	// Egress: traffic from the port. Allowed by default when none of the
	// port's groups has an egress rule; once one has, egress is a
	// whitelist too.
	Egress
)

// Family of a rule.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

// Rule allows one kind of traffic.
type Rule struct {
	Direction Direction
	Family    Family
	// Protocol is "", "tcp", "udp", "icmp", "icmpv6" or an IP protocol
	// number ("" = any). For icmp/icmpv6 the port range is ignored.
	Protocol string
	// PortMin..PortMax is the destination port range (tcp/udp; 0 = any).
	PortMin, PortMax uint16
	// RemoteCIDR restricts the other end (invalid = any).
	RemoteCIDR netip.Prefix
	// RemoteGroup restricts the other end to the members of a group
	// (State.Groups); it wins over RemoteCIDR when both are set.
	RemoteGroup string
}

// RemotePort is a port (or a router interface) on another host.
type RemotePort struct {
	Network string
	MAC     net.HardwareAddr
	IPs     []netip.Addr
	// VTEP is the underlay address of the host it is bound to.
	VTEP netip.Addr
}

// Router is a router whose gateway runs on this host.
type Router struct {
	// ID is a short stable identifier, [a-z0-9]{1,8} (namespace ucr-<id>).
	ID         string
	Interfaces []RouterInterface
	External   *RouterGateway
	// FloatingIPs need External.
	FloatingIPs []FloatingIP
}

// RouterInterface attaches a router to a subnet of a network.
type RouterInterface struct {
	Network string
	// Subnet is the subnet's CIDR; Gateway (in it) goes on the leg.
	Subnet  netip.Prefix
	Gateway netip.Addr
	MAC     net.HardwareAddr
}

// RouterGateway is a router's leg into an external network.
type RouterGateway struct {
	ExternalNetwork string
	// Address with prefix length, on the external leg.
	Address netip.Prefix
	// Gateway is the default route's next hop.
	Gateway netip.Addr
	// SNAT masquerades the attached IPv4 subnets behind Address.
	SNAT bool
	// MAC of the external leg (nil: kernel-chosen).
	MAC net.HardwareAddr
}

// FloatingIP maps an external address to a port's internal address.
type FloatingIP struct {
	External netip.Addr
	Internal netip.Addr
}

// ExternalNetwork is an external network reachable on this host.
type ExternalNetwork struct {
	// ID is a short stable identifier, [a-z0-9]{1,8} (bridge uce-<id>).
	ID string
	// Interface is the host device leading to the external network; the
	// Host enslaves it to the external bridge (and never deletes it).
	Interface string
	CIDR      netip.Prefix
}

// Report says what an Apply did.
type Report struct {
	// Ports has one entry per port of the State.
	Ports map[string]PortResult
	// Errors are the failures that are not one port's (a network, a
	// router, the firewall).
	Errors []error
	// Changes counts kernel objects created, changed or removed.
	Changes int
}

// PortResult is the outcome for one port.
type PortResult struct {
	// Ready: device, anti-spoofing and security groups are in place.
	Ready bool
	// Err is the last error for the port ("" when Ready).
	Err string
}

var shortID = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidState, fmt.Sprintf(format, args...))
}

// validate checks what Apply cannot recover from per port. Per-port
// problems are reported per port by Apply instead.
func (s *State) validate() error {
	nets := map[string]bool{}
	vnis := map[uint32]string{}
	for i, n := range s.Networks {
		if !shortID.MatchString(n.ID) {
			return invalid("networks[%d].id %q: want [a-z0-9]{1,8}", i, n.ID)
		}
		if nets[n.ID] {
			return invalid("networks[%d].id %q: duplicate", i, n.ID)
		}
		nets[n.ID] = true
		if n.VNI == 0 || n.VNI > 1<<24-1 {
			return invalid("networks[%d].vni %d: want 1..16777215", i, n.VNI)
		}
		if other, ok := vnis[n.VNI]; ok {
			return invalid("networks[%d].vni %d: also used by network %s", i, n.VNI, other)
		}
		vnis[n.VNI] = n.ID
		if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65000) {
			return invalid("networks[%d].mtu %d: want 576..65000", i, n.MTU)
		}
		for j, sn := range n.Subnets {
			if !sn.CIDR.IsValid() {
				return invalid("networks[%d].subnets[%d].cidr: missing", i, j)
			}
			if sn.ServiceAddr.IsValid() && !sn.CIDR.Contains(sn.ServiceAddr) {
				return invalid("networks[%d].subnets[%d].serviceAddr %s: outside %s", i, j, sn.ServiceAddr, sn.CIDR)
			}
		}
	}
	if len(s.Networks) > 0 && !s.Underlay.IsValid() {
		return invalid("underlay: missing")
	}
	for i, r := range s.Remotes {
		if !nets[r.Network] {
			return invalid("remotes[%d].network %q: not in networks", i, r.Network)
		}
		if len(r.MAC) != 6 {
			return invalid("remotes[%d].mac: want 6 bytes", i)
		}
		if !r.VTEP.IsValid() {
			return invalid("remotes[%d].vtep: missing", i)
		}
	}
	exts := map[string]bool{}
	for i, e := range s.Externals {
		if !shortID.MatchString(e.ID) {
			return invalid("externals[%d].id %q: want [a-z0-9]{1,8}", i, e.ID)
		}
		if e.Interface == "" {
			return invalid("externals[%d].interface: missing", i)
		}
		exts[e.ID] = true
	}
	routers := map[string]bool{}
	for i, r := range s.Routers {
		if !shortID.MatchString(r.ID) {
			return invalid("routers[%d].id %q: want [a-z0-9]{1,8}", i, r.ID)
		}
		if routers[r.ID] {
			return invalid("routers[%d].id %q: duplicate", i, r.ID)
		}
		routers[r.ID] = true
		for j, ifc := range r.Interfaces {
			if !nets[ifc.Network] {
				return invalid("routers[%d].interfaces[%d].network %q: not in networks", i, j, ifc.Network)
			}
			if !ifc.Subnet.Contains(ifc.Gateway) {
				return invalid("routers[%d].interfaces[%d].gateway %s: outside %s", i, j, ifc.Gateway, ifc.Subnet)
			}
		}
		if r.External != nil {
			if !exts[r.External.ExternalNetwork] {
				return invalid("routers[%d].external.externalNetwork %q: not in externals", i, r.External.ExternalNetwork)
			}
			if !r.External.Address.IsValid() || !r.External.Address.Addr().Is4() {
				return invalid("routers[%d].external.address: want an IPv4 prefix", i)
			}
		} else if len(r.FloatingIPs) > 0 {
			return invalid("routers[%d].floatingIPs: need an external gateway", i)
		}
		for j, f := range r.FloatingIPs {
			if !f.External.Is4() || !f.Internal.Is4() {
				return invalid("routers[%d].floatingIPs[%d]: want IPv4 addresses", i, j)
			}
		}
	}
	return nil
}

// validatePort checks one port; a bad port fails alone.
func validatePort(p *Port, nets map[string]*Network) error {
	if p.ID == "" {
		return invalid("port id: missing")
	}
	if _, ok := nets[p.Network]; !ok {
		return invalid("port %s: network %q not in networks", p.ID, p.Network)
	}
	if len(p.MAC) != 6 || p.MAC[0]&1 == 1 {
		return invalid("port %s: mac %v: want a unicast 6-byte MAC", p.ID, p.MAC)
	}
	switch p.Device {
	case Tap:
	case Veth:
		if p.PeerNamespace == "" {
			return invalid("port %s: veth needs peerNamespace", p.ID)
		}
	default:
		return invalid("port %s: device kind %d unknown", p.ID, p.Device)
	}
	for _, sg := range p.SecurityGroups {
		for i, r := range sg.Rules {
			if _, err := protoNumber(r.Protocol); err != nil {
				return invalid("port %s: group %s rule %d: %v", p.ID, sg.ID, i, err)
			}
			if r.PortMax != 0 && r.PortMax < r.PortMin {
				return invalid("port %s: group %s rule %d: portMax %d < portMin %d", p.ID, sg.ID, i, r.PortMax, r.PortMin)
			}
		}
	}
	return nil
}

// protoNumber maps a rule's protocol to an IP protocol number (0 = any).
func protoNumber(p string) (uint8, error) {
	switch p {
	case "":
		return 0, nil
	case "tcp":
		return 6, nil
	case "udp":
		return 17, nil
	case "icmp":
		return 1, nil
	case "icmpv6":
		return 58, nil
	}
	n, err := strconv.ParseUint(p, 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("protocol %q: want tcp, udp, icmp, icmpv6 or 1..255", p)
	}
	return uint8(n), nil
}

func (n *Network) mtu() int {
	if n.MTU == 0 {
		return 1450
	}
	return n.MTU
}
