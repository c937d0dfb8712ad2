// Package ra sends IPv6 router advertisements for prismnet's tenant
// networks, so workloads configure themselves by SLAAC: one sender per
// service-namespace interface, announcing each IPv6 /64 subnet of the
// network (on-link, autonomous), the MTU, the interface's link-layer
// address and, when given, DNS servers (RDNSS) and a search list (DNSSL).
// It sends unsolicited advertisements at start, on every configuration
// change and at an interval, and answers Router Solicitations.
//
// The service namespace is not a router: every advertisement carries a
// router lifetime of 0, so no client installs a default route via it.
// Default routes for IPv6 come from prismnet routers, not from here.
//
// What it must not do: configure interfaces, addresses or sysctls (the
// dataplane does that), switch network namespaces (the agent opens the
// socket inside the namespace and hands over an opener), or announce
// anything that is not in the configuration it was given with Set.
package ra
