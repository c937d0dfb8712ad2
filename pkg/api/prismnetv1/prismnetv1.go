// Package prismnetv1 holds the wire types of prismnet's resources (version
// 1), shared by the prismnet component, its host agent and SDK users:
// networks, subnets, ports, security groups, routers, floating IPs,
// external networks, and the per-host network state the control plane
// computes for each host agent.
//
// Addresses and prefixes travel as strings in their canonical text form
// ("10.0.0.0/24", "fd00::1"); the server validates and normalizes them.
// It holds no behaviour beyond encoding and must never import internal/.
package prismnetv1

import "time"

// Kinds and collections.
const (
	NetworkKind               = "Network"
	NetworkCollection         = "networks"
	SubnetKind                = "Subnet"
	SubnetCollection          = "subnets"
	PortKind                  = "Port"
	PortCollection            = "ports"
	SecurityGroupKind         = "SecurityGroup"
	SecurityGroupCollection   = "securitygroups"
	RouterKind                = "Router"
	RouterCollection          = "routers"
	FloatingIPKind            = "FloatingIP"
	FloatingIPCollection      = "floatingips"
	ExternalNetworkKind       = "ExternalNetwork"
	ExternalNetworkCollection = "externalnetworks"
	HostKind                  = "NetworkHost"
	HostCollection            = "networkhosts"
)

// Error codes of prismnet's problem documents (beyond pkg/api's).
const (
	// CodePoolExhausted: a subnet or external network has no free address
	// left in its allocation pools (409).
	CodePoolExhausted = "pool_exhausted"
	// CodeInUse: the object is still used (a network with ports, a subnet
	// with addresses, a security group that ports use) (409).
	CodeInUse = "in_use"
	// CodeAddressInUse: a requested fixed address is taken (409).
	CodeAddressInUse = "address_in_use"
)

// NetworkSpec is a tenant network: one layer-2 segment (one VXLAN VNI)
// spanning every host that has a port on it, with an IPv4 range its
// subnets are cut from and optional IPv6 /64s.
type NetworkSpec struct {
	// CIDR is the network's IPv4 range (a prefix of length 8 to 29);
	// every IPv4 subnet lies inside it.
	CIDR string `json:"cidr"`
	// IPv6Prefixes are the network's IPv6 /64s (at most 8); every IPv6
	// subnet is one of them.
	IPv6Prefixes []string `json:"ipv6Prefixes,omitempty"`
	// MTU of the workloads' interfaces (0: the host default, 1450: the
	// underlay's 1500 minus the VXLAN overhead). 576 to 9000.
	MTU int `json:"mtu,omitempty"`
	// Description says what the network is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
}

// NetworkStatus is server-owned state of a network.
type NetworkStatus struct {
	// VNI is the VXLAN network identifier, unique in the cluster, assigned
	// at creation.
	VNI uint32 `json:"vni,omitempty"`
	// MTU is the effective MTU announced to workloads.
	MTU int `json:"mtu,omitempty"`
	// ID is the short identifier host devices are named after.
	ID string `json:"id,omitempty"`
}

// AllocationPool is an inclusive address range IPAM hands out from.
type AllocationPool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// HostRoute is a route announced to workloads by DHCP.
type HostRoute struct {
	Destination string `json:"destination"`
	Nexthop     string `json:"nexthop"`
}

// SubnetSpec is an address range of a network, with what DHCP announces.
type SubnetSpec struct {
	// Network names the subnet's network in the same project (immutable).
	Network string `json:"network"`
	// CIDR is the subnet's range (immutable): IPv4 inside the network's
	// CIDR, not overlapping another subnet of the network; or one of the
	// network's IPv6 /64s.
	CIDR string `json:"cidr"`
	// Gateway is the router address on the subnet (default: the first
	// address; "none" for a subnet without a router). It is never handed
	// out to ports.
	Gateway string `json:"gateway,omitempty"`
	// DNSServers announced by DHCP (at most 4).
	DNSServers []string `json:"dnsServers,omitempty"`
	// AllocationPools IPAM allocates from (default: the whole subnet but
	// the network, broadcast, gateway and service addresses). Immutable.
	AllocationPools []AllocationPool `json:"allocationPools,omitempty"`
	// HostRoutes announced by DHCP (at most 16).
	HostRoutes []HostRoute `json:"hostRoutes,omitempty"`
}

// SubnetStatus is server-owned state of a subnet.
type SubnetStatus struct {
	// ServiceAddress is the subnet's address of the DHCP server and the
	// metadata proxy on every host (IPv4: the last address before the
	// broadcast address; IPv6: none, RA uses link-local addresses).
	ServiceAddress string `json:"serviceAddress,omitempty"`
	// Gateway is the effective gateway ("" for none).
	Gateway string `json:"gateway,omitempty"`
}

// FixedIP is an address of a port: requested (subnet, optionally the
// address) in the spec, allocated in the status.
type FixedIP struct {
	Subnet string `json:"subnet"`
	IP     string `json:"ip,omitempty"`
}

// PortOwner names what uses a port.
type PortOwner struct {
	// Kind is the owner's kind, e.g. "VM" or "Router".
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Device kinds of a port binding.
const (
	DeviceTap  = "tap"  // a tap device a VM's QEMU opens by name
	DeviceVeth = "veth" // a veth pair, the peer in a network namespace
)

// PortBinding says where a port is plugged in.
type PortBinding struct {
	// Host is the node the port is bound to ("" while unbound); its
	// prismnet-agent plugs it in.
	Host string `json:"host,omitempty"`
	// Device is tap (default) or veth.
	Device string `json:"device,omitempty"`
	// Namespace (veth only) is the network namespace on the host the peer
	// end goes into, as a workload container's.
	Namespace string `json:"namespace,omitempty"`
	// Interface (veth only) is the peer's name inside Namespace (default
	// eth0).
	Interface string `json:"interface,omitempty"`
}

// PortSpec is a workload's attachment to a network.
type PortSpec struct {
	// Network names the port's network in the same project (immutable).
	Network string `json:"network"`
	// FixedIPs request addresses (default: one from every subnet of the
	// network). Immutable.
	FixedIPs []FixedIP `json:"fixedIPs,omitempty"`
	// MAC is the port's MAC address (default: generated). Immutable.
	MAC string `json:"mac,omitempty"`
	// SecurityGroups of the same project that apply to the port.
	SecurityGroups []string `json:"securityGroups,omitempty"`
	// PortSecurity enables anti-spoofing and security groups (default true).
	PortSecurity *bool `json:"portSecurity,omitempty"`
	// Owner is what uses the port (informational).
	Owner *PortOwner `json:"owner,omitempty"`
	// Binding is where the port is plugged in.
	Binding PortBinding `json:"binding,omitempty"`
}

// Port phases.
const (
	PortPending = "Pending" // not bound to a host, or the agent has not acted yet
	PortReady   = "Ready"   // plugged in and programmed on its host
	PortError   = "Error"   // the agent failed; see LastError
)

// PortStatus is the state of a port: its allocations (server-owned) and
// what its host's agent reports.
type PortStatus struct {
	// MAC is the port's MAC address.
	MAC string `json:"mac,omitempty"`
	// FixedIPs are the allocated addresses.
	FixedIPs []FixedIP `json:"fixedIPs,omitempty"`
	// Phase is Pending, Ready or Error.
	Phase string `json:"phase,omitempty"`
	// Host is the host whose agent reported this status.
	Host string `json:"host,omitempty"`
	// Device is the host device of the port (tap or veth name).
	Device string `json:"device,omitempty"`
	// LastError is the agent's last failure on this port ("" if none).
	LastError string `json:"lastError,omitempty"`
	// ObservedAt is when the agent last reported.
	ObservedAt *time.Time `json:"observedAt,omitempty"`
}

// Directions of a security group rule.
const (
	Ingress = "ingress"
	Egress  = "egress"
)

// SecurityGroupRule allows one kind of traffic. Ethertype is IPv4 or IPv6;
// Protocol is tcp, udp, icmp, icmpv6, an IP protocol number, or empty for
// any; PortMin/PortMax bound tcp and udp destination ports (0: all); at
// most one of RemoteCIDR and RemoteGroup says whom the rule admits (none:
// anyone).
type SecurityGroupRule struct {
	Direction   string `json:"direction"`
	Ethertype   string `json:"ethertype,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	PortMin     int    `json:"portMin,omitempty"`
	PortMax     int    `json:"portMax,omitempty"`
	RemoteCIDR  string `json:"remoteCIDR,omitempty"`
	RemoteGroup string `json:"remoteGroup,omitempty"`
}

// SecurityGroupSpec is a set of allow rules. A port with port security
// denies ingress and allows egress by default, and admits traffic from
// ports that share one of its groups; rules add what else is allowed.
type SecurityGroupSpec struct {
	Description string              `json:"description,omitempty"`
	Rules       []SecurityGroupRule `json:"rules,omitempty"`
}

// SecurityGroupStatus is empty today.
type SecurityGroupStatus struct{}

// RouterInterface attaches a subnet to a router.
type RouterInterface struct {
	// Subnet names a subnet of the same project; the router takes its
	// gateway address.
	Subnet string `json:"subnet"`
}

// RouterGateway connects a router to an external network.
type RouterGateway struct {
	// ExternalNetwork names the external network.
	ExternalNetwork string `json:"externalNetwork"`
	// SNAT lets the attached subnets reach the external network through
	// the router's external address (default true).
	SNAT *bool `json:"snat,omitempty"`
}

// RouterSpec routes between subnets and to an external network.
type RouterSpec struct {
	Interfaces      []RouterInterface `json:"interfaces,omitempty"`
	ExternalGateway *RouterGateway    `json:"externalGateway,omitempty"`
}

// RouterStatus is server-owned state of a router.
type RouterStatus struct {
	// Host runs the router's namespace (chosen among the external
	// network's hosts).
	Host string `json:"host,omitempty"`
	// ExternalIP is the router's address on the external network.
	ExternalIP string `json:"externalIP,omitempty"`
	// ID is the short identifier host devices are named after.
	ID string `json:"id,omitempty"`
}

// FloatingIPSpec is an external address that reaches a port by DNAT.
type FloatingIPSpec struct {
	// ExternalNetwork names the external network the address comes from
	// (immutable).
	ExternalNetwork string `json:"externalNetwork"`
	// Port names the associated port of the same project ("": none). Its
	// network must be attached to a router with a gateway on the same
	// external network.
	Port string `json:"port,omitempty"`
	// FixedIP picks which IPv4 address of the port (default: its first).
	FixedIP string `json:"fixedIP,omitempty"`
}

// FloatingIPStatus is server-owned state of a floating IP.
type FloatingIPStatus struct {
	// Address is the allocated external address.
	Address string `json:"address,omitempty"`
	// Router is the router doing the translation ("" while unassociated).
	Router string `json:"router,omitempty"`
	// InternalIP is the port address it translates to.
	InternalIP string `json:"internalIP,omitempty"`
}

// ExternalNetworkSpec is a network outside the cloud (an uplink, a
// provider VLAN) that routers reach from the hosts listed.
type ExternalNetworkSpec struct {
	// CIDR is the external network's IPv4 range.
	CIDR string `json:"cidr"`
	// Gateway is the external network's upstream router (optional).
	Gateway string `json:"gateway,omitempty"`
	// AllocationPools routers' gateway addresses and floating IPs are
	// allocated from (default: the CIDR but its network, broadcast and
	// gateway addresses).
	AllocationPools []AllocationPool `json:"allocationPools,omitempty"`
	// Interface is the host device that leads to the external network
	// (a NIC, a VLAN device, or a veth to a namespace).
	Interface string `json:"interface"`
	// Hosts that have Interface; routers with a gateway on this network
	// run on one of them. At least one.
	Hosts []string `json:"hosts"`
}

// ExternalNetworkStatus is server-owned state of an external network.
type ExternalNetworkStatus struct {
	// ID is the short identifier host devices are named after.
	ID string `json:"id,omitempty"`
}

// NetworkHostSpec is the share of the network state one host needs beyond
// its own ports, computed by the control plane (the prismnet-hosts
// controller) and read by that host's agent: remote ports of the networks
// present on the host (for FDB and neighbour entries), the members of the
// security groups its ports' rules refer to, and the routers it runs.
type NetworkHostSpec struct {
	Remotes []RemotePort   `json:"remotes,omitempty"`
	Groups  []GroupMembers `json:"groups,omitempty"`
	Routers []HostRouter   `json:"routers,omitempty"`
}

// RemotePort is a port of a network present on the host, bound to another
// host.
type RemotePort struct {
	// Network is "project/network".
	Network string   `json:"network"`
	VNI     uint32   `json:"vni"`
	MAC     string   `json:"mac"`
	IPs     []string `json:"ips,omitempty"`
	// VTEP is the underlay address of the port's host.
	VTEP string `json:"vtep"`
}

// GroupMembers lists the addresses of every port in a security group.
type GroupMembers struct {
	// Group is "project/group".
	Group string   `json:"group"`
	IPs   []string `json:"ips,omitempty"`
}

// HostRouter is a router whose namespace runs on the host.
type HostRouter struct {
	// Router is "project/router".
	Router     string                `json:"router"`
	ID         string                `json:"id"`
	Interfaces []HostRouterInterface `json:"interfaces,omitempty"`
	// External is the gateway leg (nil without a gateway).
	External    *HostRouterGateway `json:"external,omitempty"`
	FloatingIPs []HostFloatingIP   `json:"floatingIPs,omitempty"`
}

// HostRouterInterface is a router's leg on a subnet.
type HostRouterInterface struct {
	Network string `json:"network"` // "project/network"
	VNI     uint32 `json:"vni"`
	CIDR    string `json:"cidr"`
	Gateway string `json:"gateway"`
	MAC     string `json:"mac"`
}

// HostRouterGateway is a router's leg on an external network.
type HostRouterGateway struct {
	ExternalNetwork string `json:"externalNetwork"`
	ID              string `json:"id"`
	Interface       string `json:"interface"`
	// Address is the router's external address with the prefix length.
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
	SNAT    bool   `json:"snat"`
}

// HostFloatingIP is one DNAT/SNAT pair of a router.
type HostFloatingIP struct {
	External string `json:"external"`
	Internal string `json:"internal"`
}

// NetworkHostStatus is what a host's agent reports.
type NetworkHostStatus struct {
	// Underlay is the host's VXLAN tunnel endpoint address.
	Underlay string `json:"underlay,omitempty"`
	// Ready says the last reconcile applied everything.
	Ready bool `json:"ready,omitempty"`
	// LastError is the last reconcile failure ("" if none).
	LastError string `json:"lastError,omitempty"`
	// Ports is how many ports are plugged in on the host.
	Ports int `json:"ports,omitempty"`
	// ObservedAt is when the agent last reported.
	ObservedAt *time.Time `json:"observedAt,omitempty"`
}
