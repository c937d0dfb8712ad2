package metadata

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// EC2 API versions served. cloud-init's Ec2 datasource first asks for the
// instance-id under 2021-03-23, 2018-09-24 and 2016-09-02 and falls back to
// its minimum, 2009-04-04, when those answer 404; everything it reads
// exists in 2009-04-04's shape, so that and "latest" are the versions here.
// (cloud-init's OpenStack datasource also reads /latest/meta-data/.)
var ec2Versions = []string{"2009-04-04", "latest"}

// node is one path of a metadata tree: a leaf with content, or a directory
// whose listing names its children.
type node struct {
	leaf     []byte
	isLeaf   bool
	ctype    string
	children []child
}

type child struct {
	name string
	// line is the child's line in the parent's listing when it is not
	// the name (plus "/" for directories): EC2 lists public keys as
	// "0=NAME" and serves them under 0/.
	line string
	// hidden children are served but not listed.
	hidden bool
	n      *node
}

func leaf(s string) *node {
	return &node{leaf: []byte(s), isLeaf: true, ctype: "text/plain; charset=utf-8"}
}

func dir(children ...child) *node {
	sort.Slice(children, func(i, j int) bool { return children[i].name < children[j].name })
	return &node{children: children}
}

// listing is the body of a directory: one child per line, directories with
// a trailing slash (cloud-init's crawler descends into those), no final
// newline, as EC2 writes it.
func (n *node) listing() []byte {
	lines := make([]string, 0, len(n.children))
	for _, c := range n.children {
		switch {
		case c.hidden:
		case c.line != "":
			lines = append(lines, c.line)
		case c.n.isLeaf:
			lines = append(lines, c.name)
		default:
			lines = append(lines, c.name+"/")
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

func (n *node) child(name string) *node {
	for _, c := range n.children {
		if c.name == name {
			return c.n
		}
	}
	return nil
}

// ec2MetaData builds the meta-data/ tree. Leaves never end in a newline:
// cloud-init's leaf decoder turns any value with a newline into a list,
// which is how local-ipv4s with several addresses becomes one.
func ec2MetaData(c *Instance) *node {
	top := []child{
		{name: "ami-launch-index", n: leaf("0")},
		{name: "instance-id", n: leaf(c.ID)},
		{name: "hostname", n: leaf(c.Hostname)},
		{name: "local-hostname", n: leaf(c.Hostname)},
		{name: "placement", n: dir(child{name: "availability-zone", n: leaf(c.AvailabilityZone)})},
	}
	if c.InstanceType != "" {
		top = append(top, child{name: "instance-type", n: leaf(c.InstanceType)})
	}
	if len(c.SSHKeys) > 0 {
		var keys []child
		for i, k := range c.SSHKeys {
			idx := strconv.Itoa(i)
			keys = append(keys, child{
				name: idx,
				line: idx + "=" + k.Name,
				n:    dir(child{name: "openssh-key", n: leaf(k.Key)}),
			})
		}
		// Index order, not name order: "10" must follow "9".
		pk := &node{children: keys}
		top = append(top, child{name: "public-keys", n: pk})
	}
	if len(c.NICs) > 0 {
		primary := c.NICs[0]
		top = append(top, child{name: "mac", n: leaf(primary.MAC)})
		if v4 := family(primary.Addresses, true); len(v4) > 0 {
			top = append(top, child{name: "local-ipv4", n: leaf(v4[0].Addr().String())})
		}
		var macs []child
		for i, n := range c.NICs {
			macs = append(macs, child{name: n.MAC, n: ec2Interface(i, n)})
		}
		top = append(top, child{name: "network", n: dir(child{name: "interfaces", n: dir(child{name: "macs", n: dir(macs...)})})})
	}
	return dir(top...)
}

// ec2Interface is network/interfaces/macs/MAC/. cloud-init renders every
// NIC listed here with dhcp4 (and dhcp6 when ipv6s is present), adds the
// second and later local-ipv4s/ipv6s as static addresses with the prefix
// of subnet-ipv4-cidr-block / subnet-ipv6-cidr-block, and orders route
// metrics by device-number. vpc-id marks the instance as not "EC2
// Classic", which would make cloud-init rewrite the network config on
// every boot.
func ec2Interface(i int, n NIC) *node {
	kids := []child{
		{name: "device-number", n: leaf(strconv.Itoa(i))},
		{name: "mac", n: leaf(n.MAC)},
	}
	if n.ID != "" {
		kids = append(kids, child{name: "interface-id", n: leaf(n.ID)})
	}
	if n.Network != "" {
		kids = append(kids, child{name: "vpc-id", n: leaf(n.Network)})
	}
	if v4 := family(n.Addresses, true); len(v4) > 0 {
		kids = append(kids,
			child{name: "local-ipv4s", n: leaf(joinAddrs(v4))},
			child{name: "subnet-ipv4-cidr-block", n: leaf(v4[0].Masked().String())},
		)
	}
	if v6 := family(n.Addresses, false); len(v6) > 0 {
		// AWS names the subnet key with a plural; cloud-init 22.4 reads
		// the singular. Both are served so either reader finds it.
		kids = append(kids,
			child{name: "ipv6s", n: leaf(joinAddrs(v6))},
			child{name: "subnet-ipv6-cidr-block", n: leaf(v6[0].Masked().String())},
			child{name: "subnet-ipv6-cidr-blocks", n: leaf(v6[0].Masked().String())},
		)
	}
	return dir(kids...)
}

// ec2Version is one version's tree: meta-data/ and, when there is any,
// user-data. The api/token path is not part of the tree (it is PUT only).
func ec2Version(c *Instance) *node {
	kids := []child{{name: "meta-data", n: ec2MetaData(c)}}
	if c.UserData != nil {
		kids = append(kids, child{name: "user-data", n: &node{leaf: c.UserData, isLeaf: true, ctype: "application/octet-stream"}})
	}
	n := dir(kids...)
	// EC2 lists the version's children without slashes.
	for i := range n.children {
		n.children[i].line = n.children[i].name
	}
	return n
}

func family(ps []netip.Prefix, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			out = append(out, p)
		}
	}
	return out
}

func joinAddrs(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Addr().String()
	}
	return strings.Join(s, "\n")
}
