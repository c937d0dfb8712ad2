package prismnet

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// The flag parsers check syntax only and name the flag, what they want
// and an example; whether a value makes sense (inside the network, free,
// not reserved) is the server's to say.

func parseCIDR(flag, s string) (string, error) {
	if _, err := netip.ParsePrefix(s); err != nil {
		return "", fmt.Errorf("%s: %q is not a CIDR prefix such as 10.0.0.0/16 or fd00:1::/64", flag, s)
	}
	return s, nil
}

func parseAddr(flag, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s: %q is not an IP address such as 10.0.0.1 or fd00::1", flag, s)
	}
	return a, nil
}

func parseAddrs(flag string, ss []string) ([]string, error) {
	var out []string
	for _, s := range ss {
		a, err := parseAddr(flag, s)
		if err != nil {
			return nil, err
		}
		out = append(out, a.String())
	}
	return out, nil
}

// parseGateway accepts an address or "none".
func parseGateway(flag, s string) (string, error) {
	if s == "" || s == "none" {
		return s, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("%s: %q is neither an IP address such as 10.0.0.1 nor none (a subnet without a router)", flag, s)
	}
	return a.String(), nil
}

// parsePools parses START-END ranges.
func parsePools(flag string, ss []string) ([]prismnetv1.AllocationPool, error) {
	var out []prismnetv1.AllocationPool
	for _, s := range ss {
		start, end, ok := strings.Cut(s, "-")
		if !ok {
			return nil, fmt.Errorf("%s: want START-END, e.g. 10.0.0.10-10.0.0.99 (got %q)", flag, s)
		}
		a, errA := netip.ParseAddr(start)
		b, errB := netip.ParseAddr(end)
		if errA != nil || errB != nil || a.Zone() != "" || b.Zone() != "" {
			return nil, fmt.Errorf("%s: want START-END of two IP addresses, e.g. 10.0.0.10-10.0.0.99 (got %q)", flag, s)
		}
		if a.Is4() != b.Is4() {
			return nil, fmt.Errorf("%s: %q mixes IPv4 and IPv6", flag, s)
		}
		if a.Compare(b) > 0 {
			return nil, fmt.Errorf("%s: %q starts after it ends", flag, s)
		}
		out = append(out, prismnetv1.AllocationPool{Start: a.String(), End: b.String()})
	}
	return out, nil
}

// parseRoutes parses DEST=NEXTHOP host routes.
func parseRoutes(flag string, ss []string) ([]prismnetv1.HostRoute, error) {
	var out []prismnetv1.HostRoute
	for _, s := range ss {
		dest, hop, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%s: want DEST=NEXTHOP, e.g. 10.1.0.0/16=10.0.0.1 (got %q)", flag, s)
		}
		if _, err := netip.ParsePrefix(dest); err != nil {
			return nil, fmt.Errorf("%s: %q: the destination %q is not a CIDR prefix such as 10.1.0.0/16", flag, s, dest)
		}
		h, err := netip.ParseAddr(hop)
		if err != nil || h.Zone() != "" {
			return nil, fmt.Errorf("%s: %q: the next hop %q is not an IP address such as 10.0.0.1", flag, s, hop)
		}
		out = append(out, prismnetv1.HostRoute{Destination: dest, Nexthop: h.String()})
	}
	return out, nil
}

// parseFixedIPs parses SUBNET[=ADDR] requests.
func parseFixedIPs(flag string, ss []string) ([]prismnetv1.FixedIP, error) {
	var out []prismnetv1.FixedIP
	for _, s := range ss {
		sub, addr, hasAddr := strings.Cut(s, "=")
		if sub == "" {
			return nil, fmt.Errorf("%s: want SUBNET or SUBNET=ADDRESS, e.g. web or web=10.0.0.20 (got %q)", flag, s)
		}
		f := prismnetv1.FixedIP{Subnet: sub}
		if hasAddr {
			a, err := netip.ParseAddr(addr)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s: %q: %q is not an IP address (want SUBNET=ADDRESS, e.g. web=10.0.0.20)", flag, s, addr)
			}
			f.IP = a.String()
		}
		out = append(out, f)
	}
	return out, nil
}

// parseOwner parses KIND/NAME.
func parseOwner(flag, s string) (*prismnetv1.PortOwner, error) {
	k, n, ok := strings.Cut(s, "/")
	if !ok || k == "" || n == "" || strings.Contains(n, "/") {
		return nil, fmt.Errorf("%s: want KIND/NAME, e.g. VM/web-1 (got %q)", flag, s)
	}
	return &prismnetv1.PortOwner{Kind: k, Name: n}, nil
}

func parseMAC(flag, s string) (string, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return "", fmt.Errorf("%s: %q is not a MAC address such as fa:16:3e:00:00:01", flag, s)
	}
	return m.String(), nil
}

func parseDevice(flag, s string) (string, error) {
	switch s {
	case "", prismnetv1.DeviceTap, prismnetv1.DeviceVeth:
		return s, nil
	}
	return "", fmt.Errorf("%s: %q: use tap (a VM's device) or veth (a pair into a namespace)", flag, s)
}

func parseDirection(flag, s string) (string, error) {
	switch strings.ToLower(s) {
	case prismnetv1.Ingress:
		return prismnetv1.Ingress, nil
	case prismnetv1.Egress:
		return prismnetv1.Egress, nil
	case "":
		return "", fmt.Errorf("%s is required: ingress or egress", flag)
	}
	return "", fmt.Errorf("%s: %q: use ingress or egress", flag, s)
}

func parseEthertype(flag, s string) (string, error) {
	switch strings.ToLower(s) {
	case "":
		return "", nil
	case "ipv4", "4":
		return "IPv4", nil
	case "ipv6", "6":
		return "IPv6", nil
	}
	return "", fmt.Errorf("%s: %q: use IPv4 or IPv6", flag, s)
}

func parseProtocol(flag, s string) (string, error) {
	p := strings.ToLower(s)
	switch p {
	case "", "any":
		return "", nil
	case "tcp", "udp", "icmp", "icmpv6":
		return p, nil
	}
	if n, err := strconv.Atoi(p); err == nil && n >= 0 && n <= 255 {
		return p, nil
	}
	return "", fmt.Errorf("%s: %q: use tcp, udp, icmp, icmpv6, an IP protocol number 0-255, or any", flag, s)
}

// parsePortRange parses PORT or MIN-MAX; "" is every port.
func parsePortRange(flag, s string) (first, last int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	bad := fmt.Errorf("%s: want PORT or MIN-MAX within 1-65535, e.g. 22 or 8000-8080 (got %q)", flag, s)
	lo, hi, isRange := strings.Cut(s, "-")
	if first, err = strconv.Atoi(lo); err != nil || first < 1 || first > 65535 {
		return 0, 0, bad
	}
	last = first
	if isRange {
		if last, err = strconv.Atoi(hi); err != nil || last < first || last > 65535 {
			return 0, 0, bad
		}
	}
	return first, last, nil
}

// parseMTU accepts 0 (the default) or 576 to 9000.
func parseMTU(flag string, n int) (int, error) {
	if n != 0 && (n < 576 || n > 9000) {
		return 0, fmt.Errorf("%s: %d is outside 576 to 9000 (leave it out for the default)", flag, n)
	}
	return n, nil
}
