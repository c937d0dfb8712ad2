package prismnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
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
	c := newCache(h.log, prismnetv1.PortCollection, prismnetv1.NetworkCollection,
		prismnetv1.SecurityGroupCollection, prismnetv1.HostCollection)
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
func (h *hostsController) sync(ctx context.Context, cl *client.Client, c *cache) error {
	want := computeHosts(c)
	res := cl.Resources(prismnetv1.HostCollection, "")
	var errs []error
	for host, spec := range want {
		raw, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		cur := c.get(prismnetv1.HostCollection, "", host)
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

// computeHosts derives every host's NetworkHostSpec from the cache. Hosts
// are those with a bound port or an existing NetworkHost.
func computeHosts(c *cache) map[string]prismnetv1.NetworkHostSpec {
	vnis := map[string]uint32{} // "project/network" -> VNI
	for _, o := range c.list(prismnetv1.NetworkCollection) {
		if _, st, err := decodeAs[prismnetv1.NetworkSpec, prismnetv1.NetworkStatus](o); err == nil {
			vnis[objKey(o)] = st.VNI
		}
	}
	underlay := map[string]string{}
	want := map[string]prismnetv1.NetworkHostSpec{}
	for _, o := range c.list(prismnetv1.HostCollection) {
		want[o.Metadata.Name] = prismnetv1.NetworkHostSpec{}
		if _, st, err := decodeAs[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus](o); err == nil && st.Underlay != "" {
			underlay[o.Metadata.Name] = st.Underlay
		}
	}
	var ports []portView
	onHost := map[string]map[string]bool{}   // host -> "project/network" present
	groupsOf := map[string]map[string]bool{} // host -> "project/group" its ports use or refer to
	members := map[string][]string{}         // "project/group" -> member addresses
	for _, o := range c.list(prismnetv1.PortCollection) {
		spec, st, err := decodeAs[prismnetv1.PortSpec, prismnetv1.PortStatus](o)
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
	// Groups named by the rules of a host's groups count too.
	rulesRefer := map[string][]string{} // "project/group" -> "project/remoteGroup"
	for _, o := range c.list(prismnetv1.SecurityGroupCollection) {
		spec, _, err := decodeAs[prismnetv1.SecurityGroupSpec, prismnetv1.SecurityGroupStatus](o)
		if err != nil {
			continue
		}
		for _, r := range spec.Rules {
			if r.RemoteGroup != "" {
				rulesRefer[objKey(o)] = append(rulesRefer[objKey(o)], o.Metadata.Project+"/"+r.RemoteGroup)
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
		want[host] = spec
	}
	return want
}
