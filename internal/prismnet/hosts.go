package prismnet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apicache"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/controller"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// HostsControllerName is the unit, system principal and election of the
// controller that computes every host's NetworkHost.
const HostsControllerName = "prismnet-hosts"

// hostsController pushes to every host what it needs beyond its own ports:
// it follows ports, networks, security groups and NetworkHosts, computes
// each host's NetworkHostSpec (the remote ports of the networks present
// on it, with the underlay address of their host, and the members of the
// security groups its ports refer to) and writes those that changed. It
// is level-based: every computation starts from the whole cached state,
// so restarts and missed events do no harm. With coordination it runs on
// one node at a time (two would write the same specs, and a lagging one
// would write stale ones until it caught up).
type hostsController struct {
	component.Readiness
	log      *slog.Logger
	endpoint func(context.Context) (string, error)
	tokens   client.TokenSource
	elector  coord.Elector // nil: run without election
	identity string
	leading  atomic.Bool
	// writes counts NetworkHost writes (for tests and status).
	writes atomic.Int64
}

func (h *hostsController) Name() string { return HostsControllerName }

// Report says whether this instance leads.
func (h *hostsController) Report(context.Context) component.Report {
	mode := "standalone"
	if h.elector != nil {
		mode = "singleton"
	}
	return component.Report{Details: map[string]string{"mode": mode, "leader": fmt.Sprint(h.leading.Load()),
		"writes": fmt.Sprint(h.writes.Load())}}
}

// Run computes and writes until ctx ends; with an elector only while this
// instance leads.
func (h *hostsController) Run(ctx context.Context) error {
	h.MarkReady() // a standby is healthy
	if h.elector == nil {
		h.leading.Store(true)
		h.term(ctx)
		return nil
	}
	for ctx.Err() == nil {
		lead, err := h.elector.Campaign(ctx, h.identity)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			h.log.Warn("prismnet-hosts: campaign failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		h.leading.Store(true)
		h.log.Info("prismnet-hosts: leading")
		h.term(lead.Context())
		h.leading.Store(false)
		_ = lead.Resign(context.WithoutCancel(ctx))
	}
	return nil
}

// term runs one leadership term (or the whole life without election).
func (h *hostsController) term(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base, err := h.endpoint(ctx)
	if err != nil {
		return
	}
	cl, err := client.New(client.Config{Endpoint: base, TokenSource: h.tokens})
	if err != nil {
		h.log.Error("prismnet-hosts: API client", "err", err)
		return
	}
	c := apicache.New(h.log, prismnetv1.PortCollection, prismnetv1.NetworkCollection, prismnetv1.SubnetCollection,
		prismnetv1.SecurityGroupCollection, prismnetv1.HostCollection, prismnetv1.RouterCollection,
		prismnetv1.FloatingIPCollection, prismnetv1.ExternalNetworkCollection)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, cl) }()
	defer func() { cancel(); <-done }()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Changed():
		case <-retry.C:
		}
		if !c.Synced() {
			continue
		}
		if err := h.sync(ctx, cl, c); err != nil {
			if ctx.Err() != nil {
				return
			}
			h.log.Warn("prismnet-hosts: writing host state failed; retrying", "err", err, "retry", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// sync writes every NetworkHost whose computed spec differs from the
// stored one (creating missing ones). A conflict means the cache is
// behind: the change that caused it arrives next and triggers another
// sync.
func (h *hostsController) sync(ctx context.Context, cl *client.Client, c *apicache.Cache) error {
	want, fips := computeHosts(c)
	res := cl.Resources(prismnetv1.HostCollection, "")
	var errs []error
	for k, st := range fips {
		o := c.Get(prismnetv1.FloatingIPCollection, k.Project, k.Name)
		if o == nil {
			continue
		}
		_, cur, err := apicache.DecodeCached[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus](c, o)
		if err != nil || (cur.Router == st.Router && cur.InternalIP == st.InternalIP) {
			continue
		}
		cur.Router, cur.InternalIP = st.Router, st.InternalIP
		raw, _ := json.Marshal(cur)
		upd := *o
		upd.Status = raw
		if _, err := cl.Resources(prismnetv1.FloatingIPCollection, k.Project).UpdateStatus(ctx, &upd); err != nil &&
			!client.IsConflict(err) && !client.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("floating IP %s/%s: %w", k.Project, k.Name, err))
		}
	}
	for host, spec := range want {
		raw, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		cur := c.Get(prismnetv1.HostCollection, "", host)
		if cur == nil {
			_, err = res.Create(ctx, &api.Object{Metadata: api.ObjectMeta{Name: host}, Spec: raw})
			if client.IsAlreadyExists(err) {
				err = nil // the watch brings it
			}
		} else {
			if sameSpec(cur.Spec, raw) {
				continue
			}
			o := *cur
			o.Spec = raw
			_, err = res.Update(ctx, &o)
		}
		if err != nil && !client.IsConflict(err) {
			errs = append(errs, fmt.Errorf("networkhost %s: %w", host, err))
			continue
		}
		h.writes.Add(1)
	}
	return errors.Join(errs...)
}

func sameSpec(a, b json.RawMessage) bool {
	var x, y prismnetv1.NetworkHostSpec
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ra, _ := json.Marshal(x)
	rb, _ := json.Marshal(y)
	return string(ra) == string(rb)
}

// portView is what the computation needs of one port.
type portView struct {
	project, name, network, host, mac string
	ips                               []string
	groups                            []string
}

// routerLegMAC is the MAC of a router's leg on a subnet: stable, and in a
// locally administered range (f6:...) that ports (fa:...) and service
// namespaces (fe:...) never use.
func routerLegMAC(routerID, subnet string) string {
	sum := sha256.Sum256([]byte(routerID + "/" + subnet))
	return net.HardwareAddr{0xf6, sum[0], sum[1], sum[2], sum[3], sum[4]}.String()
}

// computeHosts derives every host's NetworkHostSpec from the cache, and
// the router and internal address every associated floating IP resolves
// to. Hosts are those with a bound port, a router, or an existing
// NetworkHost.
func computeHosts(c *apicache.Cache) (map[string]prismnetv1.NetworkHostSpec, map[controller.Key]prismnetv1.FloatingIPStatus) {
	vnis := map[string]uint32{} // "project/network" -> VNI
	for _, o := range c.List(prismnetv1.NetworkCollection) {
		if _, st, err := apicache.DecodeCached[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus](c, o); err == nil {
			vnis[apicache.Key(o)] = st.VNI
		}
	}
	underlay := map[string]string{}
	want := map[string]prismnetv1.NetworkHostSpec{}
	for _, o := range c.List(prismnetv1.HostCollection) {
		want[o.Metadata.Name] = prismnetv1.NetworkHostSpec{}
		if _, st, err := apicache.DecodeCached[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus](c, o); err == nil && st.Underlay != "" {
			underlay[o.Metadata.Name] = st.Underlay
		}
	}
	var ports []portView
	onHost := map[string]map[string]bool{}   // host -> "project/network" present
	groupsOf := map[string]map[string]bool{} // host -> "project/group" its ports use or refer to
	members := map[string][]string{}         // "project/group" -> member addresses
	for _, o := range c.List(prismnetv1.PortCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.PortSpec, prismnetv1.PortStatus](c, o)
		if err != nil {
			continue
		}
		p := portView{project: o.Metadata.Project, name: o.Metadata.Name, network: o.Metadata.Project + "/" + spec.Network,
			host: spec.Binding.Host, mac: st.MAC, groups: spec.SecurityGroups}
		for _, f := range st.FixedIPs {
			p.ips = append(p.ips, f.IP)
		}
		slices.Sort(p.ips)
		for _, g := range p.groups {
			members[p.project+"/"+g] = append(members[p.project+"/"+g], p.ips...)
		}
		ports = append(ports, p)
		if p.host == "" {
			continue
		}
		if _, ok := want[p.host]; !ok {
			want[p.host] = prismnetv1.NetworkHostSpec{}
		}
		if onHost[p.host] == nil {
			onHost[p.host], groupsOf[p.host] = map[string]bool{}, map[string]bool{}
		}
		onHost[p.host][p.network] = true
		for _, g := range p.groups {
			groupsOf[p.host][p.project+"/"+g] = true
		}
	}
	routersOn, fipStatus := computeRouters(c, vnis, &ports, want, onHost, groupsOf)
	// Groups named by the rules of a host's groups count too.
	rulesRefer := map[string][]string{} // "project/group" -> "project/remoteGroup"
	for _, o := range c.List(prismnetv1.SecurityGroupCollection) {
		spec, _, err := apicache.DecodeCached[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus](c, o)
		if err != nil {
			continue
		}
		for _, r := range spec.Rules {
			if r.RemoteGroup != "" {
				rulesRefer[apicache.Key(o)] = append(rulesRefer[apicache.Key(o)], o.Metadata.Project+"/"+r.RemoteGroup)
			}
		}
	}
	for host := range want {
		spec := prismnetv1.NetworkHostSpec{}
		for _, p := range ports {
			if p.host == "" || p.host == host || !onHost[host][p.network] || p.mac == "" {
				continue
			}
			vtep, ok := underlay[p.host]
			if !ok {
				continue // its host has not reported an underlay address yet
			}
			spec.Remotes = append(spec.Remotes, prismnetv1.RemotePort{Network: p.network, VNI: vnis[p.network],
				MAC: p.mac, IPs: p.ips, VTEP: vtep})
		}
		slices.SortFunc(spec.Remotes, func(a, b prismnetv1.RemotePort) int {
			return strings.Compare(a.Network+" "+a.MAC, b.Network+" "+b.MAC)
		})
		groups := map[string]bool{}
		for g := range groupsOf[host] {
			groups[g] = true
			for _, ref := range rulesRefer[g] {
				groups[ref] = true
			}
		}
		for _, g := range slices.Sorted(maps.Keys(groups)) {
			ips := slices.Clone(members[g])
			slices.SortFunc(ips, func(a, b string) int {
				x, _ := netip.ParseAddr(a)
				y, _ := netip.ParseAddr(b)
				return x.Compare(y)
			})
			spec.Groups = append(spec.Groups, prismnetv1.GroupMembers{Group: g, IPs: slices.Compact(ips)})
		}
		spec.Routers = routersOn[host]
		want[host] = spec
	}
	return want, fipStatus
}

// computeRouters adds every placed router's legs to ports (so other hosts
// get them as remote ports) and its networks to its host, and returns the
// routers of each host with their floating IPs, and every associated
// floating IP's resolved status.
func computeRouters(c *apicache.Cache, vnis map[string]uint32, ports *[]portView, want map[string]prismnetv1.NetworkHostSpec,
	onHost, groupsOf map[string]map[string]bool) (map[string][]prismnetv1.HostRouter, map[controller.Key]prismnetv1.FloatingIPStatus) {
	subnets := map[string]prismnetv1.SubnetSpec{} // "project/subnet"
	gateways := map[string]string{}
	for _, o := range c.List(prismnetv1.SubnetCollection) {
		if spec, st, err := apicache.DecodeCached[prismnetv1.SubnetSpec, prismnetv1.SubnetStatus](c, o); err == nil {
			subnets[apicache.Key(o)], gateways[apicache.Key(o)] = spec, st.Gateway
		}
	}
	exts := map[string]*api.Object{}
	for _, o := range c.List(prismnetv1.ExternalNetworkCollection) {
		exts[o.Metadata.Name] = o
	}
	// Which router serves a subnet towards which external network.
	type served struct {
		router string // "project/router"
		ext    string
	}
	bySubnet := map[string]served{}
	byHost := map[string][]*prismnetv1.HostRouter{}
	index := map[string]*prismnetv1.HostRouter{} // "project/router"
	for _, o := range c.List(prismnetv1.RouterCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.RouterSpec, prismnetv1.RouterStatus](c, o)
		if err != nil || st.Host == "" || st.ID == "" {
			continue
		}
		p := o.Metadata.Project
		hr := &prismnetv1.HostRouter{Router: apicache.Key(o), ID: st.ID}
		for _, ifc := range spec.Interfaces {
			sk := p + "/" + ifc.Subnet
			sub, ok := subnets[sk]
			if !ok || gateways[sk] == "" {
				continue
			}
			nk := p + "/" + sub.Network
			mac := routerLegMAC(st.ID, ifc.Subnet)
			hr.Interfaces = append(hr.Interfaces, prismnetv1.HostRouterInterface{Network: nk, VNI: vnis[nk], CIDR: sub.CIDR,
				Gateway: gateways[sk], MAC: mac})
			*ports = append(*ports, portView{project: p, name: "router/" + o.Metadata.Name, network: nk, host: st.Host,
				mac: mac, ips: []string{gateways[sk]}})
			if onHost[st.Host] == nil {
				onHost[st.Host], groupsOf[st.Host] = map[string]bool{}, map[string]bool{}
			}
			onHost[st.Host][nk] = true
			if g := spec.ExternalGateway; g != nil {
				bySubnet[sk] = served{router: apicache.Key(o), ext: g.ExternalNetwork}
			}
		}
		if g := spec.ExternalGateway; g != nil && st.ExternalIP != "" {
			if eo := exts[g.ExternalNetwork]; eo != nil {
				es, est, err := apicache.DecodeCached[prismnetv1.ExternalNetworkSpec, prismnetv1.ExternalNetworkStatus](c, eo)
				if err == nil {
					hr.External = &prismnetv1.HostRouterGateway{ExternalNetwork: g.ExternalNetwork, ID: est.ID, Interface: es.Interface,
						Address: st.ExternalIP, Gateway: es.Gateway, SNAT: g.SNAT == nil || *g.SNAT}
				}
			}
		}
		if _, ok := want[st.Host]; !ok {
			want[st.Host] = prismnetv1.NetworkHostSpec{}
		}
		byHost[st.Host] = append(byHost[st.Host], hr)
		index[hr.Router] = hr
	}
	// Floating IPs: the router serving the port's subnet towards the
	// floating IP's external network translates it.
	portAddrs := map[string][]prismnetv1.FixedIP{}
	for _, o := range c.List(prismnetv1.PortCollection) {
		if _, st, err := apicache.DecodeCached[prismnetv1.PortSpec, prismnetv1.PortStatus](c, o); err == nil {
			portAddrs[apicache.Key(o)] = st.FixedIPs
		}
	}
	fips := map[controller.Key]prismnetv1.FloatingIPStatus{}
	for _, o := range c.List(prismnetv1.FloatingIPCollection) {
		spec, st, err := apicache.DecodeCached[prismnetv1.FloatingIPSpec, prismnetv1.FloatingIPStatus](c, o)
		if err != nil {
			continue
		}
		var res prismnetv1.FloatingIPStatus
		if spec.Port != "" && st.Address != "" {
			for _, f := range portAddrs[o.Metadata.Project+"/"+spec.Port] {
				a, err := netip.ParseAddr(f.IP)
				if err != nil || !a.Is4() || (spec.FixedIP != "" && spec.FixedIP != f.IP) {
					continue
				}
				sv, ok := bySubnet[o.Metadata.Project+"/"+f.Subnet]
				if !ok || sv.ext != spec.ExternalNetwork || index[sv.router] == nil || index[sv.router].External == nil {
					continue
				}
				hr := index[sv.router]
				hr.FloatingIPs = append(hr.FloatingIPs, prismnetv1.HostFloatingIP{External: st.Address, Internal: f.IP})
				res = prismnetv1.FloatingIPStatus{Router: strings.TrimPrefix(sv.router, o.Metadata.Project+"/"), InternalIP: f.IP}
				break
			}
		}
		fips[controller.KeyOf(o)] = res
	}
	out := map[string][]prismnetv1.HostRouter{}
	for h, rs := range byHost {
		for _, hr := range rs {
			slices.SortFunc(hr.FloatingIPs, func(a, b prismnetv1.HostFloatingIP) int { return strings.Compare(a.External, b.External) })
			out[h] = append(out[h], *hr)
		}
		slices.SortFunc(out[h], func(a, b prismnetv1.HostRouter) int { return strings.Compare(a.Router, b.Router) })
	}
	return out, fips
}
