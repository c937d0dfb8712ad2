package ra

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/ultracloud/ultracloud/internal/prismnet/dnsname"
)

// ErrConfig is wrapped by every error New and Set return for a
// configuration they refuse; the message names the field.
var ErrConfig = errors.New("ra: invalid config")

// Config is what the sender announces on its interface; the agent derives
// it from the network's IPv6 subnets.
type Config struct {
	// Prefixes are the network's IPv6 subnets, each a /64 (SLAAC needs
	// 64-bit interface identifiers), announced on-link and autonomous.
	// Empty sends no advertisements at all.
	Prefixes []netip.Prefix
	// MTU is announced in the MTU option; 0 sends none. 1280..65535.
	MTU int
	// DNS servers (RDNSS, RFC 8106); may be empty.
	DNS []netip.Addr
	// DomainSearch is the DNS search list (DNSSL); may be empty.
	DomainSearch []string
}

// maxRA is the largest advertisement sent: it must fit the IPv6 minimum
// MTU (1280) less the IPv6 header, so no link drops it.
const maxRA = 1280 - 40

func (c Config) validate() error {
	seen := map[netip.Prefix]bool{}
	for _, p := range c.Prefixes {
		if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
			return fmt.Errorf("%w: prefix %s is not an IPv6 prefix", ErrConfig, p)
		}
		if p.Bits() != 64 {
			return fmt.Errorf("%w: prefix %s is not a /64 (SLAAC needs /64)", ErrConfig, p)
		}
		if p.Masked() != p {
			return fmt.Errorf("%w: prefix %s has bits set past /64 (want %s)", ErrConfig, p, p.Masked())
		}
		if p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() {
			return fmt.Errorf("%w: prefix %s is link-local or multicast", ErrConfig, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: prefix %s appears twice", ErrConfig, p)
		}
		seen[p] = true
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > math.MaxUint16) {
		return fmt.Errorf("%w: MTU %d is outside 1280..65535 (the IPv6 minimum is 1280)", ErrConfig, c.MTU)
	}
	for _, d := range c.DNS {
		if !d.Is6() || d.Is4In6() || d.IsMulticast() || d.IsUnspecified() {
			return fmt.Errorf("%w: DNS server %s is not an IPv6 unicast address", ErrConfig, d)
		}
	}
	for _, d := range c.DomainSearch {
		if err := dnsname.Check(d); err != nil {
			return fmt.Errorf("%w: search domain %q: %v", ErrConfig, d, err)
		}
	}
	return nil
}

func (c Config) clone() Config {
	c.Prefixes = slices.Clone(c.Prefixes)
	c.DNS = slices.Clone(c.DNS)
	c.DomainSearch = slices.Clone(c.DomainSearch)
	return c
}

// lifetimes are the timers an advertisement carries.
type lifetimes struct {
	valid, preferred, dns time.Duration
}

// build is the advertisement for cfg, pure so it is tested without
// sockets. deprecated holds prefixes removed from the configuration and
// when their last announced valid lifetime runs out: they are announced
// with a preferred lifetime of 0, so clients stop using their addresses
// for new connections, until then (RFC 4862 5.5.3 does not let a valid
// lifetime be cut short by an unauthenticated RA, so this is as fast as a
// prefix can be withdrawn).
func build(cfg Config, deprecated map[netip.Prefix]time.Time, now time.Time, mac net.HardwareAddr, lt lifetimes) *ndp.RouterAdvertisement {
	m := &ndp.RouterAdvertisement{
		// Not a router: no client takes a default route from us.
		RouterLifetime: 0,
	}
	if len(mac) == 6 {
		m.Options = append(m.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	if cfg.MTU != 0 {
		m.Options = append(m.Options, ndp.NewMTU(uint32(cfg.MTU)))
	}
	for _, p := range cfg.Prefixes {
		m.Options = append(m.Options, &ndp.PrefixInformation{
			PrefixLength:                   uint8(p.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: true,
			ValidLifetime:                  lt.valid,
			PreferredLifetime:              lt.preferred,
			Prefix:                         p.Addr(),
		})
	}
	old := make([]netip.Prefix, 0, len(deprecated))
	for p := range deprecated {
		old = append(old, p)
	}
	slices.SortFunc(old, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range old {
		left := deprecated[p].Sub(now).Truncate(time.Second)
		if left <= 0 {
			continue
		}
		m.Options = append(m.Options, &ndp.PrefixInformation{
			PrefixLength:                   uint8(p.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: true,
			ValidLifetime:                  left,
			PreferredLifetime:              0,
			Prefix:                         p.Addr(),
		})
	}
	if len(cfg.DNS) > 0 {
		m.Options = append(m.Options, &ndp.RecursiveDNSServer{Lifetime: lt.dns, Servers: slices.Clone(cfg.DNS)})
	}
	if len(cfg.DomainSearch) > 0 {
		names := make([]string, len(cfg.DomainSearch))
		for i, d := range cfg.DomainSearch {
			names[i] = strings.TrimSuffix(d, ".")
		}
		m.Options = append(m.Options, &ndp.DNSSearchList{Lifetime: lt.dns, DomainNames: names})
	}
	return m
}
