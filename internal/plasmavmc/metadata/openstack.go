package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// openstackVersions is the /openstack listing. cloud-init picks the newest
// version it knows from this list (falling back to "latest") and reads
// every file under it; the documents here are the same under each.
var openstackVersions = []string{
	"2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
	"2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27", "latest",
}

// OpenStack is the content of OpenStack's metadata documents (and of a
// config drive's openstack/latest/). UserData is nil when there is none.
type OpenStack struct {
	MetaData    []byte // meta_data.json
	NetworkData []byte // network_data.json
	VendorData  []byte // vendor_data.json
	VendorData2 []byte // vendor_data2.json
	UserData    []byte // user_data
}

type osMetaData struct {
	UUID             string            `json:"uuid"`
	Name             string            `json:"name"`
	Hostname         string            `json:"hostname"`
	LaunchIndex      int               `json:"launch_index"`
	AvailabilityZone string            `json:"availability_zone"`
	ProjectID        string            `json:"project_id,omitempty"`
	PublicKeys       map[string]string `json:"public_keys,omitempty"`
	Keys             []osKey           `json:"keys,omitempty"`
	Meta             map[string]string `json:"meta"`
}

type osKey struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
}

type osNetworkData struct {
	Links    []osLink    `json:"links"`
	Networks []osNetwork `json:"networks"`
	Services []osService `json:"services"`
}

type osLink struct {
	ID         string `json:"id"`
	VifID      string `json:"vif_id,omitempty"`
	Type       string `json:"type"`
	MTU        int    `json:"mtu,omitempty"`
	EthernetMA string `json:"ethernet_mac_address"`
}

type osNetwork struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	Link      string      `json:"link"`
	IPAddress string      `json:"ip_address,omitempty"`
	Netmask   string      `json:"netmask,omitempty"`
	Routes    []osRoute   `json:"routes,omitempty"`
	NetworkID string      `json:"network_id,omitempty"`
	Services  []osService `json:"services,omitempty"`
	// DNSSearch is not in Nova's schema; cloud-init copies it into the
	// subnet it renders (it is one of the keys it keeps), other readers
	// ignore it.
	DNSSearch []string `json:"dns_search,omitempty"`
}

type osRoute struct {
	Network string `json:"network"`
	Netmask string `json:"netmask"`
	Gateway string `json:"gateway"`
}

type osService struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// RenderOpenStack renders in's OpenStack documents.
//
// meta_data.json has what cloud-init reads (uuid, which it requires and
// uses as instance-id; hostname; public_keys) plus name, keys,
// availability_zone, project_id and launch_index as Nova writes them.
//
// network_data.json describes each NIC as a "phy" link named by its MAC
// and each static address as an "ipv4"/"ipv6" network with Nova's
// dotted/colon netmask and its routes (the gateway as the route to
// 0.0.0.0/0.0.0.0); a NIC without addresses gets "ipv4_dhcp". DNS servers
// appear per network and in the top-level services, where cloud-init reads
// them. Note that cloud-init turns off router advertisements on a link
// that has a static "ipv6" network.
//
// vendor_data.json wraps vendor-data as {"cloud-init": "..."}, the key
// cloud-init takes it from; vendor_data2.json is {}.
func RenderOpenStack(in *Instance) (OpenStack, error) {
	c, err := in.normalized()
	if err != nil {
		return OpenStack{}, err
	}
	md := osMetaData{
		UUID:             c.UUID,
		Name:             c.Name,
		Hostname:         c.Hostname,
		AvailabilityZone: c.AvailabilityZone,
		ProjectID:        c.Project,
		Meta:             map[string]string{},
	}
	if len(c.SSHKeys) > 0 {
		md.PublicKeys = map[string]string{}
		for _, k := range c.SSHKeys {
			md.PublicKeys[k.Name] = k.Key
			md.Keys = append(md.Keys, osKey{Name: k.Name, Type: "ssh", Data: k.Key})
		}
	}
	out := OpenStack{UserData: c.UserData}
	if out.MetaData, err = marshalJSON(md); err != nil {
		return OpenStack{}, err
	}
	if out.NetworkData, err = marshalJSON(osNetwork0(c)); err != nil {
		return OpenStack{}, err
	}
	vd := map[string]string{}
	if c.VendorData != nil {
		vd["cloud-init"] = string(c.VendorData)
	}
	if out.VendorData, err = marshalJSON(vd); err != nil {
		return OpenStack{}, err
	}
	out.VendorData2 = []byte("{}\n")
	return out, nil
}

func osNetwork0(c *Instance) osNetworkData {
	nd := osNetworkData{Links: []osLink{}, Networks: []osNetwork{}, Services: []osService{}}
	seenDNS := map[netip.Addr]bool{}
	nid := 0
	for i, n := range c.NICs {
		linkID := "nic" + strconv.Itoa(i)
		nd.Links = append(nd.Links, osLink{ID: linkID, VifID: n.ID, Type: "phy", MTU: n.MTU, EthernetMA: n.MAC})
		var svcs []osService
		for _, d := range n.DNS {
			svcs = append(svcs, osService{Type: "dns", Address: d.String()})
			if !seenDNS[d] {
				seenDNS[d] = true
				nd.Services = append(nd.Services, osService{Type: "dns", Address: d.String()})
			}
		}
		if len(n.Addresses) == 0 {
			nd.Networks = append(nd.Networks, osNetwork{
				ID: "network" + strconv.Itoa(nid), Type: "ipv4_dhcp", Link: linkID,
				NetworkID: n.Network, Services: svcs, DNSSearch: n.SearchDomains,
			})
			nid++
			continue
		}
		for _, a := range n.Addresses {
			v4 := a.Addr().Is4()
			nw := osNetwork{
				ID: "network" + strconv.Itoa(nid), Link: linkID, Type: "ipv6",
				IPAddress: a.Addr().String(), Netmask: netmask(a.Bits(), v4),
				NetworkID: n.Network, Services: svcs, DNSSearch: n.SearchDomains,
			}
			if v4 {
				nw.Type = "ipv4"
			}
			// Each route goes with the address whose prefix reaches its
			// router (an IPv6 link-local router: the first IPv6 address).
			gw := n.Gateway6
			if v4 {
				gw = n.Gateway4
			}
			if gw.IsValid() && anchor(n.Addresses, gw) == a {
				nw.Routes = append(nw.Routes, osRoute{Network: zeroAddr(v4), Netmask: netmask(0, v4), Gateway: gw.String()})
			}
			for _, r := range n.Routes {
				if anchor(n.Addresses, r.Via) == a {
					nw.Routes = append(nw.Routes, osRoute{Network: r.To.Addr().String(), Netmask: netmask(r.To.Bits(), v4), Gateway: r.Via.String()})
				}
			}
			nd.Networks = append(nd.Networks, nw)
			nid++
		}
	}
	return nd
}

// anchor is the first address whose prefix holds router, or for an IPv6
// link-local router the first IPv6 address; the zero Prefix if none.
func anchor(ps []netip.Prefix, router netip.Addr) netip.Prefix {
	for _, p := range ps {
		if p.Addr().Is4() != router.Is4() {
			continue
		}
		if p.Masked().Contains(router) || router.IsLinkLocalUnicast() {
			return p
		}
	}
	return netip.Prefix{}
}

func zeroAddr(v4 bool) string {
	if v4 {
		return "0.0.0.0"
	}
	return "::"
}

// netmask writes a prefix length the way Nova does: dotted quad for IPv4,
// an IPv6 address for IPv6 (ffff:ffff:ffff:ffff::).
func netmask(bits int, v4 bool) string {
	if v4 {
		return net.IP(net.CIDRMask(bits, 32)).String()
	}
	a, _ := netip.AddrFromSlice(net.CIDRMask(bits, 128))
	return a.String()
}

func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("metadata: encode json: %w", err)
	}
	return b.Bytes(), nil
}
