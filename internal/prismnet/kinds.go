package prismnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
)

// kinds registers prismnet's kinds. Every cross-object rule (a subnet
// inside its network, an address handed out once, a network deleted only
// without ports) is checked in the hooks and enforced by preconditions of
// the one transaction that writes the object, so concurrent requests on
// any API node cannot break it.
type kinds struct {
	store      storage.Store
	defaultMTU int
}

func (k *kinds) register(a *apiserver.API) error {
	for _, reg := range []func(*apiserver.API) error{k.networks, k.subnets, k.ports, k.groups, k.hosts} {
		if err := reg(a); err != nil {
			return err
		}
	}
	return nil
}

// keepStatus makes a status entirely server-owned: a status write keeps
// what is stored.
func keepStatus[T any](old, new *T) error {
	*new = *old
	return nil
}

func (k *kinds) networks(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]{
		Kind: prismnetv1.NetworkKind, Collection: prismnetv1.NetworkCollection, Singular: "network", ShortNames: []string{"net"},
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "CIDR", Path: "spec.cidr"}, {Name: "IPV6", Path: "spec.ipv6Prefixes"},
			{Name: "VNI", Path: "status.vni"}, {Name: "MTU", Path: "status.mtu"}},
		ValidateSpec: validateNetwork,
		ValidateUpdate: func(old, new *prismnetv1.NetworkSpec) error {
			if old.CIDR != new.CIDR || fmt.Sprint(old.IPv6Prefixes) != fmt.Sprint(new.IPv6Prefixes) || old.MTU != new.MTU {
				return fieldErr("cidr", "cidr, ipv6Prefixes and mtu are immutable; only the description changes")
			}
			return nil
		},
		OnCreate: func(_ context.Context, c *apiserver.Creation[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]) error {
			vni, err := randomVNI()
			if err != nil {
				return err
			}
			c.Status.VNI = vni
			c.Status.ID = fmt.Sprintf("%06x", vni)
			c.Status.MTU = c.Spec.MTU
			if c.Status.MTU == 0 {
				c.Status.MTU = k.defaultMTU
			}
			vk := key(vniPrefix, strconv.FormatUint(uint64(vni), 10))
			c.Ops = append(c.Ops, put(vk, c.Project+"/"+c.Name))
			c.Require = append(c.Require, projectExists(c.Project),
				free(vk, true, apiserver.Errorf(http.StatusServiceUnavailable, api.CodeConflict, "no free VNI found; retry")))
			return nil
		},
		OnStatusUpdate: keepStatus[prismnetv1.NetworkStatus],
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus]) error {
			p, n := d.Object.Metadata.Project, d.Object.Metadata.Name
			d.Require = append(d.Require,
				emptyRange(dir(netPortPrefix, p, n), inUse("network %q still has ports; delete them first (ultracloud port list --network %s)", n, n)),
				emptyRange(dir(netSubnetPrefix, p, n), inUse("network %q still has subnets; delete them first (ultracloud subnet list)", n)))
			d.Ops = append(d.Ops, del(key(vniPrefix, strconv.FormatUint(uint64(d.Status.VNI), 10))))
			return nil
		},
	})
}

// getObject reads a resource's spec and status.
func getObject[S, T any](ctx context.Context, st storage.Store, coll, project, name, singular string) (*S, *T, int64, error) {
	kv, err := st.Get(ctx, apiserver.ObjectKey(coll, project, name))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, 0, notFound(singular, project, name)
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("prismnet: reading %s %s/%s: %w", singular, project, name, err)
	}
	var o struct {
		Spec   S `json:"spec"`
		Status T `json:"status"`
	}
	if err := json.Unmarshal(kv.Value, &o); err != nil {
		return nil, nil, 0, fmt.Errorf("prismnet: decoding %s %s/%s: %w", singular, project, name, err)
	}
	return &o.Spec, &o.Status, kv.ModRevision, nil
}

func (k *kinds) subnets(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]{
		Kind: prismnetv1.SubnetKind, Collection: prismnetv1.SubnetCollection, Singular: "subnet",
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "NETWORK", Path: "spec.network"}, {Name: "CIDR", Path: "spec.cidr"},
			{Name: "GATEWAY", Path: "status.gateway"}, {Name: "SERVICE", Path: "status.serviceAddress"}},
		ValidateSpec:   validateSubnet,
		ValidateUpdate: validateSubnetUpdate,
		OnCreate: func(ctx context.Context, c *apiserver.Creation[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]) error {
			net, _, _, err := getObject[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus](ctx, k.store,
				prismnetv1.NetworkCollection, c.Project, c.Spec.Network, "network")
			if err != nil {
				return err
			}
			spec := *c.Spec
			sh, err := shapeOf(&spec)
			if err != nil {
				return err
			}
			if err := insideNetwork(net, sh.cidr); err != nil {
				return err
			}
			// The overlap check reads the network's subnets; the generation
			// key makes a concurrent subnet create on the same network
			// retry instead of both passing.
			gk := key(subnetGenPrefix, c.Project, c.Spec.Network)
			var genRev int64
			if kv, err := k.store.Get(ctx, gk); err == nil {
				genRev = kv.ModRevision
			} else if !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("prismnet: reading the subnets of %s: %w", c.Spec.Network, err)
			}
			sp := dir(netSubnetPrefix, c.Project, c.Spec.Network)
			kvs, _, err := k.store.Range(ctx, sp, storage.PrefixEnd(sp), 0)
			if err != nil {
				return fmt.Errorf("prismnet: reading the subnets of %s: %w", c.Spec.Network, err)
			}
			for _, kv := range kvs {
				other, err := netip.ParsePrefix(string(kv.Value))
				if err == nil && other.Overlaps(sh.cidr) {
					return apiserver.Errorf(http.StatusConflict, api.CodeConflict, "spec.cidr %s overlaps subnet %q (%s) of network %q",
						sh.cidr, string(kv.Key[len(sp):]), other, c.Spec.Network)
				}
			}
			if sh.gateway.IsValid() {
				c.Status.Gateway = sh.gateway.String()
			}
			if sh.service.IsValid() {
				c.Status.ServiceAddress = sh.service.String()
			}
			c.Ops = append(c.Ops, put(key(netSubnetPrefix, c.Project, c.Spec.Network, c.Name), sh.cidr.String()), put(gk, c.Name))
			c.Require = append(c.Require, exists(prismnetv1.NetworkCollection, c.Project, c.Spec.Network, "network"),
				apiserver.Precondition{Compare: storage.Compare{Key: gk, Target: storage.CompareModRevision, Revision: genRev}, Retry: true,
					Err: apiserver.Errorf(http.StatusConflict, api.CodeConflict, "the subnets of network %q are changing; retry", c.Spec.Network)})
			return nil
		},
		OnStatusUpdate: keepStatus[prismnetv1.SubnetStatus],
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus]) error {
			p, n := d.Object.Metadata.Project, d.Object.Metadata.Name
			d.Require = append(d.Require,
				emptyRange(dir(addrPrefix, p, n), inUse("subnet %q still has addresses in use; delete its ports first", n)),
				emptyRange(dir(subnetRouterPrefix, p, n), inUse("subnet %q is attached to a router; detach it first", n)))
			d.Ops = append(d.Ops, del(key(netSubnetPrefix, p, d.Spec.Network, n)))
			return nil
		},
	})
}

// insideNetwork checks that a subnet's CIDR belongs to its network.
func insideNetwork(n *prismnetv1.NetworkSpec, cidr netip.Prefix) error {
	if cidr.Addr().Is4() {
		np, err := netip.ParsePrefix(n.CIDR)
		if err != nil || !np.Contains(cidr.Addr()) || np.Bits() > cidr.Bits() {
			return fieldErr("spec.cidr", "%s is not inside the network's CIDR %s", cidr, n.CIDR)
		}
		return nil
	}
	for _, v := range n.IPv6Prefixes {
		if v == cidr.String() {
			return nil
		}
	}
	return fieldErr("spec.cidr", "%s is not one of the network's IPv6 prefixes %v", cidr, n.IPv6Prefixes)
}

func (k *kinds) ports(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.PortSpec, prismnetv1.PortStatus]{
		Kind: prismnetv1.PortKind, Collection: prismnetv1.PortCollection, Singular: "port",
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "NETWORK", Path: "spec.network"}, {Name: "MAC", Path: "status.mac"},
			{Name: "IPS", Path: "status.fixedIPs"}, {Name: "HOST", Path: "spec.binding.host"}, {Name: "PHASE", Path: "status.phase"}},
		ValidateSpec:   validatePort,
		ValidateUpdate: validatePortUpdate,
		NodeBinding: func(_ *api.ObjectMeta, s *prismnetv1.PortSpec, _ *prismnetv1.PortStatus) string {
			return s.Binding.Host
		},
		OnCreate: k.createPort,
		OnUpdate: func(_ context.Context, u *apiserver.Update[prismnetv1.PortSpec, prismnetv1.PortStatus]) error {
			p, n := u.Object.Metadata.Project, u.Object.Metadata.Name
			for _, g := range u.Old.SecurityGroups {
				u.Ops = append(u.Ops, del(key(groupPortPrefix, p, g, n)))
			}
			for _, g := range u.New.SecurityGroups {
				u.Ops = append(u.Ops, put(key(groupPortPrefix, p, g, n), ""))
				u.Require = append(u.Require, exists(prismnetv1.SecurityGroupCollection, p, g, "security group"))
			}
			if u.Old.Binding != u.New.Binding {
				u.Status.Phase = prismnetv1.PortPending
			}
			return nil
		},
		OnStatusUpdate: func(old, new *prismnetv1.PortStatus) error {
			new.MAC, new.FixedIPs = old.MAC, old.FixedIPs // IPAM's
			return nil
		},
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.PortSpec, prismnetv1.PortStatus]) error {
			p, n := d.Object.Metadata.Project, d.Object.Metadata.Name
			for _, f := range d.Status.FixedIPs {
				if a, err := netip.ParseAddr(f.IP); err == nil {
					d.Ops = append(d.Ops, del(addrKey(p, f.Subnet, a)))
				}
			}
			for _, g := range d.Spec.SecurityGroups {
				d.Ops = append(d.Ops, del(key(groupPortPrefix, p, g, n)))
			}
			d.Ops = append(d.Ops, del(key(netPortPrefix, p, d.Spec.Network, n)), del(key(macPrefix, p, d.Spec.Network, d.Status.MAC)))
			return nil
		},
	})
}

// createPort allocates a port's MAC and addresses. Requested addresses are
// taken if free; others are picked among the free ones of the subnet's
// pools as read now, and a retryable precondition per address makes a
// create that lost a race to a concurrent one pick again.
func (k *kinds) createPort(ctx context.Context, c *apiserver.Creation[prismnetv1.PortSpec, prismnetv1.PortStatus]) error {
	p, name, spec := c.Project, c.Name, c.Spec
	if _, _, _, err := getObject[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus](ctx, k.store, prismnetv1.NetworkCollection, p, spec.Network, "network"); err != nil {
		return fieldErr("spec.network", "%v", err)
	}
	var mac net.HardwareAddr
	userMAC := spec.MAC != ""
	if userMAC {
		mac, _ = net.ParseMAC(spec.MAC)
	} else {
		var err error
		if mac, err = randomMAC(); err != nil {
			return err
		}
	}
	c.Status.MAC = mac.String()
	c.Status.Phase = prismnetv1.PortPending
	owner := "port/" + name
	mk := key(macPrefix, p, spec.Network, mac.String())
	c.Ops = append(c.Ops, put(mk, name), put(key(netPortPrefix, p, spec.Network, name), ""))
	c.Require = append(c.Require, projectExists(p),
		exists(prismnetv1.NetworkCollection, p, spec.Network, "network"),
		free(mk, !userMAC, apiserver.Errorf(http.StatusConflict, prismnetv1.CodeAddressInUse, "MAC %s is already used on network %q", mac, spec.Network)))
	for _, g := range spec.SecurityGroups {
		c.Ops = append(c.Ops, put(key(groupPortPrefix, p, g, name), ""))
		c.Require = append(c.Require, exists(prismnetv1.SecurityGroupCollection, p, g, "security group"))
	}

	requests := spec.FixedIPs
	if len(requests) == 0 {
		sp := dir(netSubnetPrefix, p, spec.Network)
		kvs, _, err := k.store.Range(ctx, sp, storage.PrefixEnd(sp), 0)
		if err != nil {
			return fmt.Errorf("prismnet: reading the subnets of %s: %w", spec.Network, err)
		}
		for _, kv := range kvs {
			requests = append(requests, prismnetv1.FixedIP{Subnet: string(kv.Key[len(sp):])})
		}
	}
	taken := map[netip.Addr]bool{}
	for i, req := range requests {
		field := fmt.Sprintf("spec.fixedIPs[%d]", i)
		sub, _, _, err := getObject[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](ctx, k.store, prismnetv1.SubnetCollection, p, req.Subnet, "subnet")
		if err != nil {
			return fieldErr(field+".subnet", "%v", err)
		}
		if sub.Network != spec.Network {
			return fieldErr(field+".subnet", "subnet %q belongs to network %q, not %q", req.Subnet, sub.Network, spec.Network)
		}
		sh, err := shapeOf(sub)
		if err != nil {
			return fmt.Errorf("prismnet: stored subnet %s/%s: %w", p, req.Subnet, err)
		}
		var addr netip.Addr
		retry := false
		switch {
		case req.IP != "":
			addr, _ = netip.ParseAddr(req.IP)
			if !sh.cidr.Contains(addr) {
				return fieldErr(field+".ip", "%s is not in subnet %q (%s)", addr, req.Subnet, sh.cidr)
			}
			first, last := usableRange(sh.cidr)
			if addr.Compare(first) < 0 || addr.Compare(last) > 0 {
				return fieldErr(field+".ip", "%s is not a usable address of %s", addr, sh.cidr)
			}
			for _, r := range sh.reserved() {
				if r == addr {
					return fieldErr(field+".ip", "%s is reserved on subnet %q (gateway or DHCP/metadata service address)", addr, req.Subnet)
				}
			}
		case sh.cidr.Addr().Is6():
			addr = eui64(sh.cidr, mac) // what the workload forms by SLAAC
		default:
			used, err := usedAddrs(ctx, k.store, dir(addrPrefix, p, req.Subnet))
			if err != nil {
				return err
			}
			for a := range taken {
				used[a] = true
			}
			var ok bool
			if addr, ok = pickFree(sh.pools, used, sh.reserved()); !ok {
				return apiserver.Errorf(http.StatusConflict, prismnetv1.CodePoolExhausted,
					"subnet %q (%s) has no free address left in its allocation pools; delete unused ports or add a subnet", req.Subnet, sh.cidr)
			}
			retry = true
		}
		if taken[addr] {
			return fieldErr(field+".ip", "%s is requested twice", addr)
		}
		taken[addr] = true
		ak := addrKey(p, req.Subnet, addr)
		c.Status.FixedIPs = append(c.Status.FixedIPs, prismnetv1.FixedIP{Subnet: req.Subnet, IP: addr.String()})
		c.Ops = append(c.Ops, put(ak, owner))
		c.Require = append(c.Require, exists(prismnetv1.SubnetCollection, p, req.Subnet, "subnet"),
			free(ak, retry, apiserver.Errorf(http.StatusConflict, prismnetv1.CodeAddressInUse, "address %s of subnet %q is already in use", addr, req.Subnet)))
	}
	return nil
}

func (k *kinds) groups(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus]{
		Kind: prismnetv1.SecurityGroupKind, Collection: prismnetv1.SecurityGroupCollection, Singular: "securitygroup",
		ShortNames: []string{"secgroup", "sg"}, Scope: api.ScopeProject,
		Columns:      []api.Column{{Name: "RULES", Path: "spec.rules"}, {Name: "DESCRIPTION", Path: "spec.description"}},
		ValidateSpec: validateGroup,
		OnCreate: func(_ context.Context, c *apiserver.Creation[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus]) error {
			c.Require = append(c.Require, projectExists(c.Project))
			return nil
		},
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus]) error {
			p, n := d.Object.Metadata.Project, d.Object.Metadata.Name
			d.Require = append(d.Require, emptyRange(dir(groupPortPrefix, p, n),
				inUse("security group %q is used by ports; remove it from them first", n)))
			return nil
		},
	})
}

// hosts registers NetworkHost: one per host with prismnet work, named
// after the node and bound to it. Its spec is written by the
// prismnet-hosts controller (what the host needs beyond its own ports),
// its status by the host's agent (underlay address, readiness).
func (k *kinds) hosts(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus]{
		Kind: prismnetv1.HostKind, Collection: prismnetv1.HostCollection, Singular: "networkhost",
		ShortNames: []string{"nethost"}, Scope: api.ScopeCluster,
		MaxBody: 4 << 20, // a host's view of a large network
		Columns: []api.Column{{Name: "UNDERLAY", Path: "status.underlay"}, {Name: "READY", Path: "status.ready"},
			{Name: "PORTS", Path: "status.ports"}, {Name: "ERROR", Path: "status.lastError"}},
		NodeBinding: func(m *api.ObjectMeta, _ *prismnetv1.NetworkHostSpec, _ *prismnetv1.NetworkHostStatus) string {
			return m.Name
		},
		ValidateStatus: func(s *prismnetv1.NetworkHostStatus) error {
			if s.Underlay != "" {
				if _, err := parseAddr("underlay", s.Underlay); err != nil {
					return err
				}
			}
			return nil
		},
	})
}
