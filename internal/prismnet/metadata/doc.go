// Package metadata is prismnet's metadata proxy: one per tenant network on
// each host, listening on 169.254.169.254:80 inside that network's service
// namespace, so that a workload's request for its instance metadata reaches
// the metadata service together with a trustworthy statement of who asked.
//
// It owns the HTTP exchange with the workload and its safety: which methods
// and paths are accepted (GET and HEAD anywhere, PUT only for the IMDSv2
// token at /latest/api/token), which request headers go upstream (a short
// allow-list; never the workload's Authorization, Cookie, X-Forwarded-* or
// X-UltraCloud-* headers), a bounded request body, a per-source rate limit,
// bounded timeouts, and the identity headers it adds:
//
//	X-UltraCloud-Network    the network this proxy serves
//	X-UltraCloud-Source-IP  the request's source address
//	X-UltraCloud-Project    the project of the port owning that address
//	X-UltraCloud-Port       the port's name
//	X-UltraCloud-Owner      KIND/NAME of the port's owner (absent without one)
//	X-UltraCloud-MAC        the port's MAC
//
// How the identity is established: by the source address of the TCP
// connection on the tenant network alone, looked up through the Lookup
// function the agent supplies (address -> port of this network). The
// dataplane's anti-spoofing lets a port send only from its own MAC and
// addresses, and the service namespace is reachable only from the network's
// bridge on this host, so the source address names exactly one port. That
// is why every identity header a workload sends is dropped: the only claim
// that counts is the one the kernel's anti-spoofing vouches for.
//
// What it must not do: decide what the metadata says (the upstream metadata
// service, plasmavmc's, answers every path; the proxy passes paths through
// unchanged and streams the answer back as it comes), cache answers, hold
// credentials of its own (the agent's Transport authenticates the proxy to
// the upstream), switch network namespaces (the agent's Listen opener opens
// the socket inside the service namespace; upstream connections are dialled
// from the host's namespace), or configure addresses and routes (the
// dataplane puts 169.254.169.254/32 on the service interface and DHCP
// announces the route to it).
package metadata
