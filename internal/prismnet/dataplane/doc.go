// Package dataplane is prismnet's host dataplane: it converges the Linux
// kernel of one host (a network namespace) to the desired network state of
// that host, given as a plain State value, with netlink and nftables only
// (no ip, nft, brctl, sysctl or dnsmasq processes).
//
// Per network on a host: a bridge ucb-<net>; a VXLAN device ucx-<net>
// (VNI, local = underlay address, UDP 4789, no learning, ARP/ND proxy)
// with a static FDB entry (MAC -> VTEP) and static neighbour entries for
// every remote port and no all-zeros entry, so nothing is flooded to
// other hosts; a service namespace ucs-<net> joined by a veth, holding the
// subnets' service addresses and 169.254.169.254 for the DHCP, RA and
// metadata servers (which live elsewhere and open their sockets there with
// netns.Do). Per port: a persistent tap uct-<port> or a veth ucv-<port>
// whose peer is moved into the workload's namespace. Per router: a
// namespace ucr-<router> with legs into the networks and the external
// network's bridge uce-<ext>, doing SNAT and floating IP DNAT.
//
// Firewall: table bridge ultracloud does anti-spoofing on frames entering
// from a port (its MAC; its IPs, 0.0.0.0 for DHCP, :: for DAD; ARP with
// its MAC and IPs; no DHCP server or RA from ports). Table inet ultracloud
// does stateful security groups on bridged IP traffic (the bridges have
// nf_call_iptables on; the kernel has no bridge-family conntrack): ct
// zones per network, then established/related accept, invalid drop, new
// TCP without SYN drop, then maps (bridge . source) -> the port's egress
// chain and (bridge . destination) -> its ingress chain. Ingress default
// deny; egress default allow until a group has an egress rule.
//
// Apply reconciles: it reads our objects (names with our prefixes only),
// creates, changes and deletes the difference and garbage-collects what
// the State no longer has; nothing unchanged is recreated. Per-port chain
// names carry a signature of their content, so a changed port is one
// small atomic nftables transaction. Removing a rule closes the
// connections it admitted (conntrack entries the new rules would not
// admit are deleted).
//
// This package must not reach the API or decide what the State is: the
// agent loop computes the State from API objects and calls Apply.
package dataplane
