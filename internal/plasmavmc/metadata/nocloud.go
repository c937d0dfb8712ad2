package metadata

import (
	"bytes"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// NoCloud is the content of a NoCloud seed: the files of a `cidata` volume.
// NetworkConfig is nil for an instance without NICs, VendorData and
// UserData are nil when the instance has none (the seed then carries an
// empty user-data file, which NoCloud requires to exist).
type NoCloud struct {
	MetaData      []byte
	UserData      []byte
	NetworkConfig []byte
	VendorData    []byte
}

// RenderNoCloud renders in's NoCloud seed.
//
// meta-data carries instance-id, local-hostname, public-keys,
// availability-zone and cloud-name (so `cloud-init query cloud_name` says
// where it runs). network-config is version 2, see NetworkConfigV2.
func RenderNoCloud(in *Instance) (NoCloud, error) {
	c, err := in.normalized()
	if err != nil {
		return NoCloud{}, err
	}
	keys := make([]*yaml.Node, 0, len(c.SSHKeys))
	for _, k := range c.SSHKeys {
		keys = append(keys, str(k.Key))
	}
	md := mapping(
		"instance-id", str(c.ID),
		"local-hostname", str(c.Hostname),
		"availability-zone", str(c.AvailabilityZone),
		"cloud-name", str("ultracloud"),
	)
	if len(keys) > 0 {
		md = appendPairs(md, "public-keys", seq(keys...))
	}
	out := NoCloud{UserData: c.UserData, VendorData: c.VendorData}
	if out.MetaData, err = marshalYAML(md); err != nil {
		return NoCloud{}, err
	}
	if len(c.NICs) > 0 {
		if out.NetworkConfig, err = networkConfigV2(c); err != nil {
			return NoCloud{}, err
		}
	}
	return out, nil
}

// networkConfigV2 renders cloud-init's network config version 2 (netplan's
// schema), one ethernets entry per NIC matched by MAC.
//
// Why version 2 and not version 1: v2 matches a device by MAC without
// naming it, so the guest keeps its own interface names (cloud-init 22.4
// looks the name up by MAC when there is no set-name); it is what netplan
// consumes natively, so Ubuntu guests take it unchanged; and it is the
// format cloud-init's own datasources (Ec2 among them) produce. v1 needs a
// device name per entry, which is the guest's to choose, not ours.
//
// The IPv4 default route is a route to 0.0.0.0/0 (netplan deprecates
// gateway4; "to: default" is not used because cloud-init 22.4 parses "to"
// as a network). The IPv6 one is gateway6: cloud-init 22.4 normalizes v2
// routes twice and the second pass loses the /0 of ::/0 (its prefix 0 is
// dropped as falsy and IPv6 defaults to /64), so a route to ::/0 would
// render as a route to ::/64; gateway6 becomes the subnet's gateway and
// renders as a plain default route. (TestCloudInit... shows both.)
// A NIC without static addresses gets dhcp4: true.
func networkConfigV2(c *Instance) ([]byte, error) {
	eths := mapping()
	for i, n := range c.NICs {
		e := mapping("match", mapping("macaddress", str(n.MAC)))
		if n.MTU != 0 {
			e = appendPairs(e, "mtu", integer(n.MTU))
		}
		if len(n.Addresses) == 0 {
			e = appendPairs(e, "dhcp4", boolean(true))
		} else {
			addrs := make([]*yaml.Node, 0, len(n.Addresses))
			for _, a := range n.Addresses {
				addrs = append(addrs, str(a.String()))
			}
			e = appendPairs(e, "addresses", seq(addrs...))
		}
		var routes []*yaml.Node
		if n.Gateway4.IsValid() {
			routes = append(routes, mapping("to", str("0.0.0.0/0"), "via", str(n.Gateway4.String())))
		}
		if n.Gateway6.IsValid() {
			e = appendPairs(e, "gateway6", str(n.Gateway6.String()))
		}
		for _, r := range n.Routes {
			routes = append(routes, mapping("to", str(r.To.String()), "via", str(r.Via.String())))
		}
		if len(routes) > 0 {
			e = appendPairs(e, "routes", seq(routes...))
		}
		if len(n.DNS) > 0 || len(n.SearchDomains) > 0 {
			ns := mapping()
			if len(n.DNS) > 0 {
				var d []*yaml.Node
				for _, a := range n.DNS {
					d = append(d, str(a.String()))
				}
				ns = appendPairs(ns, "addresses", seq(d...))
			}
			if len(n.SearchDomains) > 0 {
				var d []*yaml.Node
				for _, s := range n.SearchDomains {
					d = append(d, str(s))
				}
				ns = appendPairs(ns, "search", seq(d...))
			}
			e = appendPairs(e, "nameservers", ns)
		}
		// The key is only a label for the entry (set-name is absent, so
		// the guest's interface keeps its name).
		eths = appendPairs(eths, "nic"+strconv.Itoa(i), e)
	}
	return marshalYAML(mapping("version", integer(2), "ethernets", eths))
}

// The YAML is built as nodes so that every string is quoted: the parser on
// the other side is PyYAML, a YAML 1.1 parser, which would read an
// all-digit MAC such as 52:54:00:12:34:56 as a base-60 integer and "no" as
// false. Quoting everything sidesteps YAML 1.1's implicit types.

func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func integer(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func seq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: items}
}

// mapping builds a mapping from alternating key, value arguments; keys are
// strings, values *yaml.Node.
func mapping(kv ...any) *yaml.Node {
	return appendPairs(&yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, kv...)
}

func appendPairs(m *yaml.Node, kv ...any) *yaml.Node {
	for i := 0; i+1 < len(kv); i += 2 {
		k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[i].(string)}
		m.Content = append(m.Content, k, kv[i+1].(*yaml.Node))
	}
	return m
}

func marshalYAML(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("metadata: encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("metadata: encode yaml: %w", err)
	}
	return b.Bytes(), nil
}
