package prismnet

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

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
	for _, reg := range []func(*apiserver.API) error{k.networks, k.subnets, k.ports, k.groups, k.hosts, k.externalNetworks, k.routers, k.floatingIPs} {
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

// shortID is a stable 8-character identifier for host device names
// (router namespaces, external bridges): [a-z2-7], from a hash of key.
func shortID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:8]
}

func (k *kinds) externalNetworks(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus]{
		Kind: prismnetv1.ExternalNetworkKind, Collection: prismnetv1.ExternalNetworkCollection, Singular: "externalnetwork",
		ShortNames: []string{"extnet"}, Scope: api.ScopeCluster,
		Columns: []api.Column{{Name: "CIDR", Path: "spec.cidr"}, {Name: "GATEWAY", Path: "spec.gateway"},
			{Name: "INTERFACE", Path: "spec.interface"}, {Name: "HOSTS", Path: "spec.hosts"}},
		ValidateSpec: validateExternalNetwork,
		ValidateUpdate: func(old, new *prismnetv1.ExternalNetworkSpec) error {
			if old.CIDR != new.CIDR || old.Gateway != new.Gateway || fmt.Sprint(old.AllocationPools) != fmt.Sprint(new.AllocationPools) {
				return fieldErr("cidr", "cidr, gateway and allocationPools are immutable; hosts and interface may change")
			}
			return nil
		},
		InitialStatus: func(*prismnetv1.ExternalNetworkSpec) *prismnetv1.ExternalNetworkStatus {
			return &prismnetv1.ExternalNetworkStatus{}
		},
		OnCreate: func(_ context.Context, c *apiserver.Creation[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus]) error {
			c.Status.ID = shortID("extnet/" + c.Name)
			return nil
		},
		OnStatusUpdate: keepStatus[prismnetv1.ExternalNetworkStatus],
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus]) error {
			n := d.Object.Metadata.Name
			d.Require = append(d.Require, emptyRange(dir(extAddrPrefix, n),
				inUse("external network %q still has router gateways or floating IPs; delete them first", n)))
			return nil
		},
	})
}

// externalShape parses an external network's addressing.
func externalShape(s *prismnetv1.ExternalNetworkSpec) (subnetShape, error) {
	sub := prismnetv1.SubnetSpec{CIDR: s.CIDR, Gateway: s.Gateway, AllocationPools: s.AllocationPools}
	if sub.Gateway == "" {
		sub.Gateway = "none"
	}
	sh, err := shapeOf(&sub)
	if err != nil {
		return sh, err
	}
	sh.service = netip.Addr{} // external networks have no DHCP
	if len(s.AllocationPools) == 0 {
		first, last := usableRange(sh.cidr)
		sh.pools = []pool{{first, last}}
	}
	return sh, nil
}

func validateExternalNetwork(s *prismnetv1.ExternalNetworkSpec) error {
	sh, err := externalShape(s)
	if err != nil {
		return err
	}
	if !sh.cidr.Addr().Is4() {
		return fieldErr("cidr", "%s: external networks are IPv4 (NAT)", s.CIDR)
	}
	s.CIDR = sh.cidr.String()
	if sh.gateway.IsValid() {
		s.Gateway = sh.gateway.String()
	}
	if !validIfName(s.Interface, 15) {
		return fieldErr("interface", "%q is not an interface name (the host device leading to the external network)", s.Interface)
	}
	if len(s.Hosts) == 0 {
		return fieldErr("hosts", "name at least one host that has interface %s", s.Interface)
	}
	for i, h := range s.Hosts {
		if err := apiserver.ValidateName(fmt.Sprintf("hosts[%d]", i), h); err != nil {
			return err
		}
	}
	return nil
}

// allocExternal picks a free address of an external network for owner and
// adds the ops and preconditions that claim it.
func (k *kinds) allocExternal(ctx context.Context, ext string, owner string, ops *[]storage.Op, req *[]apiserver.Precondition) (netip.Addr, netip.Prefix, error) {
	spec, _, _, err := getObject[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus](ctx, k.store,
		prismnetv1.ExternalNetworkCollection, "", ext, "external network")
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	sh, err := externalShape(spec)
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("prismnet: stored external network %s: %w", ext, err)
	}
	used, err := usedAddrs(ctx, k.store, dir(extAddrPrefix, ext))
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	addr, ok := pickFree(sh.pools, used, sh.reserved())
	if !ok {
		return netip.Addr{}, netip.Prefix{}, apiserver.Errorf(http.StatusConflict, prismnetv1.CodePoolExhausted,
			"external network %q (%s) has no free address left", ext, sh.cidr)
	}
	ak := key(extAddrPrefix, ext, addr.String())
	*ops = append(*ops, put(ak, owner))
	*req = append(*req, exists(prismnetv1.ExternalNetworkCollection, "", ext, "external network"),
		free(ak, true, apiserver.Errorf(http.StatusConflict, prismnetv1.CodeAddressInUse, "address %s of external network %q is taken", addr, ext)))
	return addr, sh.cidr, nil
}

func (k *kinds) routers(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.RouterSpec, prismnetv1.RouterStatus]{
		Kind: prismnetv1.RouterKind, Collection: prismnetv1.RouterCollection, Singular: "router",
		Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "INTERFACES", Path: "spec.interfaces"}, {Name: "EXTERNAL", Path: "spec.externalGateway.externalNetwork"},
			{Name: "EXTERNAL IP", Path: "status.externalIP"}, {Name: "HOST", Path: "status.host"}},
		ValidateSpec: validateRouter,
		ValidateUpdate: func(old, new *prismnetv1.RouterSpec) error {
			if !sameGateway(old.ExternalGateway, new.ExternalGateway) {
				return fieldErr("externalGateway", "is immutable; create another router to change it")
			}
			return nil
		},
		OnCreate: func(ctx context.Context, c *apiserver.Creation[prismnetv1.RouterSpec, prismnetv1.RouterStatus]) error {
			c.Status.ID = shortID("router/" + c.Project + "/" + c.Name + "/" + c.UID)
			c.Require = append(c.Require, projectExists(c.Project))
			for _, ifc := range c.Spec.Interfaces {
				if err := k.attachSubnet(ctx, c.Project, c.Name, ifc.Subnet, &c.Ops, &c.Require); err != nil {
					return err
				}
			}
			if g := c.Spec.ExternalGateway; g != nil {
				ext, _, _, err := getObject[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus](ctx, k.store,
					prismnetv1.ExternalNetworkCollection, "", g.ExternalNetwork, "external network")
				if err != nil {
					return fieldErr("spec.externalGateway.externalNetwork", "%v", err)
				}
				addr, cidr, err := k.allocExternal(ctx, g.ExternalNetwork, c.Project+"/router/"+c.Name, &c.Ops, &c.Require)
				if err != nil {
					return err
				}
				c.Status.ExternalIP = netip.PrefixFrom(addr, cidr.Bits()).String()
				// Placed on one of the external network's hosts, spread by name.
				c.Status.Host = ext.Hosts[int(shortID(c.Project + "/" + c.Name)[0])%len(ext.Hosts)]
			}
			return nil
		},
		OnUpdate: func(ctx context.Context, u *apiserver.Update[prismnetv1.RouterSpec, prismnetv1.RouterStatus]) error {
			p, n := u.Object.Metadata.Project, u.Object.Metadata.Name
			had := map[string]bool{}
			for _, ifc := range u.Old.Interfaces {
				had[ifc.Subnet] = true
			}
			keep := map[string]bool{}
			for _, ifc := range u.New.Interfaces {
				keep[ifc.Subnet] = true
				if !had[ifc.Subnet] {
					if err := k.attachSubnet(ctx, p, n, ifc.Subnet, &u.Ops, &u.Require); err != nil {
						return err
					}
				}
			}
			for s := range had {
				if !keep[s] {
					u.Ops = append(u.Ops, del(key(subnetRouterPrefix, p, s, n)))
				}
			}
			return nil
		},
		OnStatusUpdate: keepStatus[prismnetv1.RouterStatus],
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.RouterSpec, prismnetv1.RouterStatus]) error {
			p, n := d.Object.Metadata.Project, d.Object.Metadata.Name
			for _, ifc := range d.Spec.Interfaces {
				d.Ops = append(d.Ops, del(key(subnetRouterPrefix, p, ifc.Subnet, n)))
			}
			if g := d.Spec.ExternalGateway; g != nil && d.Status.ExternalIP != "" {
				if pf, err := netip.ParsePrefix(d.Status.ExternalIP); err == nil {
					d.Ops = append(d.Ops, del(key(extAddrPrefix, g.ExternalNetwork, pf.Addr().String())))
				}
			}
			return nil
		},
	})
}

// sameGateway compares two router gateways by value.
func sameGateway(a, b *prismnetv1.RouterGateway) bool {
	if a == nil || b == nil {
		return a == b
	}
	snat := func(g *prismnetv1.RouterGateway) bool { return g.SNAT == nil || *g.SNAT }
	return a.ExternalNetwork == b.ExternalNetwork && snat(a) == snat(b)
}

// attachSubnet claims a subnet's gateway for router: the subnet exists in
// the project, has a gateway, and no other router holds it.
func (k *kinds) attachSubnet(ctx context.Context, project, router, subnet string, ops *[]storage.Op, req *[]apiserver.Precondition) error {
	spec, _, _, err := getObject[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](ctx, k.store, prismnetv1.SubnetCollection, project, subnet, "subnet")
	if err != nil {
		return fieldErr("spec.interfaces", "%v", err)
	}
	if spec.Gateway == "" || spec.Gateway == "none" {
		return fieldErr("spec.interfaces", "subnet %q has no gateway address for a router", subnet)
	}
	*ops = append(*ops, put(key(subnetRouterPrefix, project, subnet, router), ""))
	*req = append(*req, exists(prismnetv1.SubnetCollection, project, subnet, "subnet"),
		emptyRange(dir(subnetRouterPrefix, project, subnet), apiserver.Errorf(http.StatusConflict, prismnetv1.CodeInUse,
			"subnet %q is already attached to a router (a subnet has one gateway)", subnet)))
	return nil
}

func validateRouter(s *prismnetv1.RouterSpec) error {
	if len(s.Interfaces) > maxFixedIPs*2 {
		return fieldErr("interfaces", "at most %d interfaces, got %d", maxFixedIPs*2, len(s.Interfaces))
	}
	seen := map[string]bool{}
	for i, ifc := range s.Interfaces {
		f := fmt.Sprintf("interfaces[%d].subnet", i)
		if err := apiserver.ValidateName(f, ifc.Subnet); err != nil {
			return err
		}
		if seen[ifc.Subnet] {
			return fieldErr(f, "%q is listed twice", ifc.Subnet)
		}
		seen[ifc.Subnet] = true
	}
	if g := s.ExternalGateway; g != nil {
		if err := apiserver.ValidateName("externalGateway.externalNetwork", g.ExternalNetwork); err != nil {
			return err
		}
		if g.SNAT == nil {
			t := true
			g.SNAT = &t
		}
	}
	return nil
}

func (k *kinds) floatingIPs(a *apiserver.API) error {
	return apiserver.Register(a, "prismnet", apiserver.KindDef[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]{
		Kind: prismnetv1.FloatingIPKind, Collection: prismnetv1.FloatingIPCollection, Singular: "floatingip",
		ShortNames: []string{"fip"}, Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "ADDRESS", Path: "status.address"}, {Name: "EXTERNAL", Path: "spec.externalNetwork"},
			{Name: "PORT", Path: "spec.port"}, {Name: "INTERNAL", Path: "status.internalIP"}, {Name: "ROUTER", Path: "status.router"}},
		ValidateSpec: func(s *prismnetv1.FloatingIPSpec) error {
			if err := apiserver.ValidateName("externalNetwork", s.ExternalNetwork); err != nil {
				return err
			}
			if s.Port != "" {
				if err := apiserver.ValidateName("port", s.Port); err != nil {
					return err
				}
			}
			if s.FixedIP != "" {
				a, err := parseAddr("fixedIP", s.FixedIP)
				if err != nil {
					return err
				}
				if !a.Is4() {
					return fieldErr("fixedIP", "%s: floating IPs translate to IPv4 addresses", a)
				}
				if s.Port == "" {
					return fieldErr("fixedIP", "needs port")
				}
			}
			return nil
		},
		ValidateUpdate: func(old, new *prismnetv1.FloatingIPSpec) error {
			if old.ExternalNetwork != new.ExternalNetwork {
				return fieldErr("externalNetwork", "is immutable")
			}
			return nil
		},
		OnCreate: func(ctx context.Context, c *apiserver.Creation[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]) error {
			c.Require = append(c.Require, projectExists(c.Project))
			addr, _, err := k.allocExternal(ctx, c.Spec.ExternalNetwork, c.Project+"/fip/"+c.Name, &c.Ops, &c.Require)
			if err != nil {
				return err
			}
			c.Status.Address = addr.String()
			if c.Spec.Port != "" {
				return k.associate(ctx, c.Project, c.Spec, &c.Require)
			}
			return nil
		},
		OnUpdate: func(ctx context.Context, u *apiserver.Update[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]) error {
			if u.New.Port != "" {
				return k.associate(ctx, u.Object.Metadata.Project, u.New, &u.Require)
			}
			return nil
		},
		// The hosts controller owns router and internalIP; the address is
		// IPAM's.
		OnStatusUpdate: func(old, new *prismnetv1.FloatingIPStatus) error {
			new.Address = old.Address
			return nil
		},
		OnDelete: func(_ context.Context, d *apiserver.Deletion[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus]) error {
			if d.Status.Address != "" {
				d.Ops = append(d.Ops, del(key(extAddrPrefix, d.Spec.ExternalNetwork, d.Status.Address)))
			}
			return nil
		},
	})
}

// associate checks that a floating IP's port exists in the project and has
// the IPv4 address named (or one).
func (k *kinds) associate(ctx context.Context, project string, s *prismnetv1.FloatingIPSpec, req *[]apiserver.Precondition) error {
	_, st, _, err := getObject[prismnetv1.PortSpec, prismnetv1.PortStatus](ctx, k.store, prismnetv1.PortCollection, project, s.Port, "port")
	if err != nil {
		return fieldErr("spec.port", "%v", err)
	}
	found := false
	for _, f := range st.FixedIPs {
		a, err := netip.ParseAddr(f.IP)
		if err == nil && a.Is4() && (s.FixedIP == "" || s.FixedIP == f.IP) {
			found = true
			break
		}
	}
	if !found {
		return fieldErr("spec.fixedIP", "port %q has no IPv4 address %s", s.Port, s.FixedIP)
	}
	*req = append(*req, exists(prismnetv1.PortCollection, project, s.Port, "port"))
	return nil
}
