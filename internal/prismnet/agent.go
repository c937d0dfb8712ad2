package prismnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/prismnet/dataplane"
	"github.com/ultracloud/ultracloud/internal/runtime/apicache"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// AgentName is the unit and system principal of the host agent.
const AgentName = "prismnet-agent"

// AgentConfig is the prismnet-agent section of node.yaml (role
// prismnet-agent: on every worker, it programs the host's kernel for the
// ports bound to it).
type AgentConfig struct {
	// Underlay is this host's VXLAN tunnel endpoint: an address already
	// configured on the host's underlay interface, reachable from every
	// other worker (required).
	Underlay string `yaml:"underlay"`
	// UnderlayDevice optionally names the device VXLAN packets leave by
	// ("": the kernel routes to each remote endpoint).
	UnderlayDevice string `yaml:"underlayDevice"`
	// NamespaceDir is where the agent pins the network namespaces it
	// creates (per-network service namespaces, router namespaces); default
	// /run/netns, where `ip netns` finds them. Two agents on one kernel
	// (tests) need different directories.
	NamespaceDir string `yaml:"namespaceDir"`
	// ResyncInterval is how often the agent converges the kernel even when
	// nothing changed, repairing drift such as a deleted device (default
	// 30s, 1s to 1h).
	ResyncInterval time.Duration `yaml:"resyncInterval"`
}

var _ config.Section = (*AgentConfig)(nil)

// DefaultAgent returns the agent's defaults.
func DefaultAgent() AgentConfig {
	return AgentConfig{NamespaceDir: "/run/netns", ResyncInterval: 30 * time.Second}
}

// Derive has nothing to derive from the core.
func (c *AgentConfig) Derive(*config.Core) {}

// Validate checks the section.
func (c *AgentConfig) Validate() error {
	p := &config.Problems{}
	if c.Underlay == "" {
		p.Add("underlay", "is required: the address of this host that other workers reach it at for VXLAN (e.g. 10.0.0.11)")
	} else if a, err := netip.ParseAddr(c.Underlay); err != nil || !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
		p.Add("underlay", "%q is not an IP address", c.Underlay)
	}
	if c.NamespaceDir == "" || c.NamespaceDir[0] != '/' {
		p.Add("namespaceDir", "%q must be an absolute directory", c.NamespaceDir)
	}
	if c.ResyncInterval < time.Second || c.ResyncInterval > time.Hour {
		p.Add("resyncInterval", "%s is outside 1s to 1h", c.ResyncInterval)
	}
	return p.Err()
}

// BuildAgent builds the host agent of a node.
func BuildAgent(cfg AgentConfig, deps component.Deps) (component.Module, error) {
	under, err := netip.ParseAddr(cfg.Underlay)
	if err != nil {
		return component.Module{}, fmt.Errorf("prismnet-agent: underlay: %w", err)
	}
	a := &agent{cfg: cfg, underlay: under, node: deps.Node.Name, log: deps.Logger.With("component", AgentName),
		endpoint: deps.Client.Endpoint, tokens: deps.Client.Tokens(AgentName), metrics: newAgentMetrics()}
	// The agent starts after the node's API listener: on a node that
	// serves the API its client goes there; on a worker it goes to the
	// control plane and retries until that answers.
	return component.Module{
		Units: []component.Unit{{Component: a, DependsOn: []string{"http"}}},
		SystemGrants: map[string][]string{
			"system:" + AgentName: {"prismnet.*.get", "prismnet.*.list", "prismnet.*.watch",
				"prismnet.ports.updatestatus", "prismnet.networkhosts.updatestatus"},
		},
	}, nil
}

// agent is the prismnet host agent: it mirrors the desired state of its
// host (the ports bound to it, their networks, subnets and groups, and its
// NetworkHost), converges the kernel with the dataplane, runs every local
// network's DHCP server and RA sender, and reports per-port status and its
// own in the NetworkHost. It is level-based and keeps no state of its own:
// after a restart it adopts what the kernel has (the dataplane changes
// nothing that is already right, so running workloads are undisturbed).
type agent struct {
	component.Readiness
	cfg      AgentConfig
	underlay netip.Addr
	node     string
	log      *slog.Logger
	endpoint func(context.Context) (string, error)
	tokens   client.TokenSource

	applies   atomic.Int64
	lastError atomic.Value // string
	ports     atomic.Int64
	metrics   agentMetrics
}

// agentMetrics are the agent's Prometheus metrics.
type agentMetrics struct {
	applySeconds prometheus.Histogram
	applyErrors  prometheus.Counter
	portsReady   prometheus.Gauge
	portsError   prometheus.Gauge
	changes      prometheus.Counter
}

func newAgentMetrics() agentMetrics {
	return agentMetrics{
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ultracloud_prismnet_agent_apply_seconds",
			Help: "Time to converge the host's kernel state once.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ultracloud_prismnet_agent_apply_errors_total",
			Help: "Converge passes that ended with an error (retried with backoff)."}),
		portsReady: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ultracloud_prismnet_agent_ports_ready",
			Help: "Ports bound to this host that are programmed."}),
		portsError: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ultracloud_prismnet_agent_ports_error",
			Help: "Ports bound to this host that failed to program."}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ultracloud_prismnet_agent_kernel_changes_total",
			Help: "Kernel objects created, changed or removed."}),
	}
}

// Collectors implements component.MetricsSource.
func (a *agent) Collectors() []prometheus.Collector {
	m := a.metrics
	return []prometheus.Collector{m.applySeconds, m.applyErrors, m.portsReady, m.portsError, m.changes}
}

func (a *agent) Name() string { return AgentName }

// Report says how the host is doing.
func (a *agent) Report(context.Context) component.Report {
	le, _ := a.lastError.Load().(string)
	return component.Report{Details: map[string]string{"underlay": a.underlay.String(),
		"ports": fmt.Sprint(a.ports.Load()), "applies": fmt.Sprint(a.applies.Load()), "lastError": le}}
}

// Run follows the API and converges until ctx ends. Stopping leaves the
// kernel as it is: workloads keep their network while the agent is away.
func (a *agent) Run(ctx context.Context) error {
	host, err := dataplane.New(dataplane.Options{NamespaceDir: a.cfg.NamespaceDir, Logger: a.log, UnderlayDevice: a.cfg.UnderlayDevice})
	if err != nil {
		return fmt.Errorf("prismnet-agent: %w", err)
	}
	defer host.Close()
	a.MarkReady()
	var cl *client.Client
	for cl == nil {
		base, err := a.endpoint(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("prismnet-agent: API endpoint: %w", err)
		}
		if cl, err = client.New(client.Config{Endpoint: base, TokenSource: a.tokens}); err != nil {
			return fmt.Errorf("prismnet-agent: API client: %w", err)
		}
	}
	c := apicache.New(a.log, prismnetv1.PortCollection, prismnetv1.NetworkCollection, prismnetv1.SubnetCollection,
		prismnetv1.SecurityGroupCollection, prismnetv1.HostCollection)
	upstream, err := url.Parse(strings.TrimSuffix(cl.Endpoint(), "/") + MetadataServicePath)
	if err != nil {
		return fmt.Errorf("prismnet-agent: metadata upstream: %w", err)
	}
	svc := newServices(host, a.log, upstream, bearer{next: http.DefaultTransport, tokens: a.tokens})
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx, cl) })
	defer func() {
		svc.stopAll()
		wg.Wait()
	}()

	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := 100 * time.Millisecond
	reported := map[string]prismnetv1.PortStatus{}
	var last *dataplane.State // the state the last successful pass applied
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-c.Changed():
		case <-resync.C:
			force = true // repair drift even when nothing changed
		case <-retry.C:
			force = true
		}
		if !c.Synced() {
			continue
		}
		if force {
			last = nil
		}
		applied, err := a.converge(ctx, cl, c, host, svc, reported, last)
		last = applied
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.lastError.Store(err.Error())
			a.metrics.applyErrors.Inc()
			a.log.Warn("prismnet-agent: converging failed; retrying", "err", err, "retry", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		a.lastError.Store("")
		backoff = 100 * time.Millisecond
	}
}

// MetadataServicePath is where the API serves instance metadata to the
// agents' metadata proxies (plasmavmc's metadata service); a guest's
// /latest/meta-data/... arrives at MetadataServicePath + that path.
const MetadataServicePath = "/metadata"

// bearer adds the agent's credentials to the metadata proxies' requests.
type bearer struct {
	next   http.RoundTripper
	tokens client.TokenSource
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := b.tokens.Token(r.Context())
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}

// converge applies the desired state once and reports the outcome. When
// the state equals last (what the previous pass applied: a change that
// only concerned the status the agent itself wrote), the kernel is not
// touched again; the resync timer still applies every interval. It
// returns the state applied when everything succeeded, else nil.
func (a *agent) converge(ctx context.Context, cl *client.Client, c *apicache.Cache, host *dataplane.Host, svc *services,
	reported map[string]prismnetv1.PortStatus, last *dataplane.State) (*dataplane.State, error) {
	view := computeHostView(c, a.node, a.underlay)
	if last != nil && reflect.DeepEqual(*last, view.state) {
		return last, nil
	}
	start := time.Now()
	rep, applyErr := host.Apply(ctx, view.state)
	a.metrics.applySeconds.Observe(time.Since(start).Seconds())
	a.metrics.changes.Add(float64(rep.Changes))
	a.applies.Add(1)
	a.ports.Store(int64(len(view.state.Ports)))
	ready := 0
	for _, r := range rep.Ports {
		if r.Ready {
			ready++
		}
	}
	a.metrics.portsReady.Set(float64(ready))
	a.metrics.portsError.Set(float64(len(rep.Ports) - ready))
	svcErr := svc.sync(ctx, view.services)
	var problems []error
	if applyErr != nil {
		problems = append(problems, applyErr)
	}
	problems = append(problems, rep.Errors...)
	if svcErr != nil {
		problems = append(problems, svcErr)
	}
	statusErr := a.reportPorts(ctx, cl, c, view, rep, reported)
	hostErr := a.reportHost(ctx, cl, c, len(view.state.Ports), errors.Join(problems...))
	if err := errors.Join(append(problems, statusErr, hostErr)...); err != nil {
		return nil, err
	}
	return &view.state, nil
}

// statusWriters bounds the agent's concurrent status writes (1,000 ports
// coming up at once are reported in parallel, not one after another).
const statusWriters = 8

// reportPorts writes the status of every local port whose outcome changed.
func (a *agent) reportPorts(ctx context.Context, cl *client.Client, c *apicache.Cache, view hostView, rep dataplane.Report,
	reported map[string]prismnetv1.PortStatus) error {
	type write struct {
		id   string
		o    *api.Object
		want prismnetv1.PortStatus
	}
	var writes []write
	now := time.Now().UTC().Truncate(time.Second)
	seen := map[string]bool{}
	for _, p := range view.state.Ports {
		o := view.ports[p.ID]
		seen[p.ID] = true
		_, cur, err := apicache.DecodeCached[prismnetv1.PortSpec, prismnetv1.PortStatus](c, o)
		if err != nil {
			continue
		}
		want := cur
		res, ok := rep.Ports[p.ID]
		want.Host, want.Device = a.node, dataplane.DeviceName(p)
		switch {
		case ok && res.Ready:
			want.Phase, want.LastError = prismnetv1.PortReady, ""
		case ok:
			want.Phase, want.LastError = prismnetv1.PortError, res.Err
		default:
			want.Phase, want.LastError = prismnetv1.PortPending, "not applied yet"
		}
		if sameStatus(cur, want) {
			reported[p.ID] = want
			continue
		}
		want.ObservedAt = &now
		writes = append(writes, write{p.ID, o, want})
	}
	for id := range reported {
		if !seen[id] {
			delete(reported, id)
		}
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, statusWriters)
	for _, w := range writes {
		raw, err := json.Marshal(w.want)
		if err != nil {
			return err
		}
		upd := *w.o
		upd.Status = raw
		upd.Metadata.Revision = 0 // the agent owns these fields: no compare
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err := cl.Resources(prismnetv1.PortCollection, w.o.Metadata.Project).UpdateStatus(ctx, &upd)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && !client.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("status of port %s: %w", w.id, err))
				return
			}
			reported[w.id] = w.want
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sameStatus(a, b prismnetv1.PortStatus) bool {
	return a.Phase == b.Phase && a.Host == b.Host && a.Device == b.Device && a.LastError == b.LastError
}

// reportHost writes the host's NetworkHost status (once it exists: the
// hosts controller creates it when a port is bound here) when it changed.
func (a *agent) reportHost(ctx context.Context, cl *client.Client, c *apicache.Cache, ports int, problem error) error {
	o := c.Get(prismnetv1.HostCollection, "", a.node)
	if o == nil {
		return nil
	}
	_, cur, err := apicache.DecodeCached[prismnetv1.NetworkHostSpec, prismnetv1.NetworkHostStatus](c, o)
	if err != nil {
		return err
	}
	want := prismnetv1.NetworkHostStatus{Underlay: a.underlay.String(), Ready: problem == nil, Ports: ports}
	if problem != nil {
		want.LastError = problem.Error()
		if len(want.LastError) > 1024 {
			want.LastError = want.LastError[:1024]
		}
	}
	if cur.Underlay == want.Underlay && cur.Ready == want.Ready && cur.Ports == want.Ports && cur.LastError == want.LastError {
		return nil
	}
	now := time.Now().UTC().Truncate(time.Second)
	want.ObservedAt = &now
	raw, err := json.Marshal(want)
	if err != nil {
		return err
	}
	upd := api.Object{Metadata: api.ObjectMeta{Name: a.node}, Status: raw}
	if _, err := cl.Resources(prismnetv1.HostCollection, "").UpdateStatus(ctx, &upd); err != nil && !client.IsNotFound(err) {
		return fmt.Errorf("status of networkhost %s: %w", a.node, err)
	}
	return nil
}
