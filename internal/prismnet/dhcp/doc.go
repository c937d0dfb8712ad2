// Package dhcp is prismnet's DHCPv4 server: one per tenant network on each
// host, running inside that network's service namespace and answering the
// ports bound on that host.
//
// It owns the lease table the agent hands it (SetLeases, replaced
// atomically at any time), the DHCP conversation (DISCOVER, REQUEST in every
// client state, INFORM, RELEASE, DECLINE) and the options it sends: subnet
// mask, router, DNS servers, domain search, interface MTU (option 26),
// classless static routes (option 121, RFC 3442), hostname and lease times.
// The decision for one request is a pure function, Decide, so it is tested
// and fuzzed without sockets.
//
// What it must not do: allocate addresses (IPAM in the control plane owns
// them; a RELEASE or DECLINE never frees or moves an address), answer a MAC
// that is not in its table, configure interfaces, addresses or routes (the
// dataplane does that), or switch network namespaces (the agent opens the
// socket inside the namespace and hands over an opener).
package dhcp
