//go:build linux

package dataplane

import (
	"context"
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Observed is what our objects in the kernel look like, for `ultracloud
// port describe` and for debugging a port.
type Observed struct {
	// Ports found in the kernel (by the port ID in the device alias).
	Ports []ObservedPort
	// Networks found (by bridge).
	Networks []ObservedNetwork
	// Chains is the number of per-port chains in the inet and bridge tables.
	Chains int
}

// ObservedPort is one port device.
type ObservedPort struct {
	ID     string
	Device string
	// Bridge the device is enslaved to ("" = none).
	Bridge string
	Up     bool
	MTU    int
	// AntiSpoof, Ingress and Egress name the port's chains ("" = none);
	// they are set for ports this Host applied since it started.
	AntiSpoof, Ingress, Egress string
}

// ObservedNetwork is one network bridge and its VXLAN device.
type ObservedNetwork struct {
	ID    string
	VNI   int
	MTU   int
	Ports int
	// RemoteMACs is the number of static FDB entries (remote ports).
	RemoteMACs int
	// Neighbours is the number of static neighbour entries.
	Neighbours int
}

// Observe reads our devices, FDB/neighbour entries and chains.
func (h *Host) Observe(ctx context.Context) (Observed, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var o Observed
	if h.closed {
		return o, ErrClosed
	}
	links, err := listLinks(h.nl)
	if err != nil {
		return o, err
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	nets := map[string]*ObservedNetwork{}
	for _, l := range links {
		kind, key, ok := parseDevName(l.Attrs().Name)
		if !ok {
			continue
		}
		switch kind {
		case kindBridge:
			n := nets[key]
			if n == nil {
				n = &ObservedNetwork{ID: key}
				nets[key] = n
			}
			n.MTU = l.Attrs().MTU
		case kindVxlan:
			n := nets[key]
			if n == nil {
				n = &ObservedNetwork{ID: key}
				nets[key] = n
			}
			if vx, ok := l.(*netlink.Vxlan); ok {
				n.VNI = vx.VxlanId
			}
			if fdb, err := h.nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE); err == nil {
				for _, e := range fdb {
					if e.Flags&unix.NTF_SELF != 0 && e.IP != nil {
						n.RemoteMACs++
					}
				}
			}
			for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
				if ns, err := h.nl.NeighList(l.Attrs().Index, fam); err == nil {
					for _, e := range ns {
						if e.State&unix.NUD_PERMANENT != 0 {
							n.Neighbours++
						}
					}
				}
			}
		case kindTap, kindVeth:
			id, ok := parsePortAlias(l.Attrs().Alias)
			if !ok {
				id = ""
			}
			p := ObservedPort{ID: id, Device: l.Attrs().Name, Bridge: byIndex[l.Attrs().MasterIndex],
				Up: l.Attrs().Flags&net.FlagUp != 0, MTU: l.Attrs().MTU}
			if fp := h.pols[id]; fp != nil {
				p.AntiSpoof, p.Ingress, p.Egress = fp.spoof, fp.in, fp.eg
			}
			o.Ports = append(o.Ports, p)
			if _, nkey, ok := parseDevName(p.Bridge); ok {
				if n := nets[nkey]; n != nil {
					n.Ports++
				} else {
					nets[nkey] = &ObservedNetwork{ID: nkey, Ports: 1}
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return o, err
		}
	}
	cur, err := loadFW(h.nft)
	if err != nil {
		return o, fmt.Errorf("dataplane: observe: %w", err)
	}
	for name := range cur.bchains {
		if _, _, _, ok := parseChainName(name); ok {
			o.Chains++
		}
	}
	for name := range cur.ichains {
		if k, _, _, ok := parseChainName(name); ok && k != 'z' {
			o.Chains++
		}
	}
	for _, n := range nets {
		o.Networks = append(o.Networks, *n)
	}
	sort.Slice(o.Networks, func(i, j int) bool { return o.Networks[i].ID < o.Networks[j].ID })
	sort.Slice(o.Ports, func(i, j int) bool { return o.Ports[i].Device < o.Ports[j].Device })
	return o, nil
}
