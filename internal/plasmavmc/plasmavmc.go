// Package plasmavmc is the control plane of virtual machines: the kinds
// VM, Image and Worker with their validation and actions (start, stop,
// reboot; image upload and download), worker heartbeats as chainfire
// leases, and the scheduler, a cluster-wide singleton that places VMs on
// workers by free capacity and anti-affinity, explains refusals, marks the
// VMs of a worker whose lease expired lost and places again those whose
// disks allow it.
//
// It never starts a process: the plasmavmc-agent role on each worker runs
// QEMU for the VMs placed on it.
package plasmavmc

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// Config is the plasmavmc section of node.yaml (role plasmavmc: the API
// kinds and the scheduler, on control-plane nodes).
type Config struct {
	// HeartbeatTTL is how long a worker counts as alive after its last
	// heartbeat (default 15s, 3s to 5m). Its VMs are marked lost when it
	// passes.
	HeartbeatTTL time.Duration `yaml:"heartbeatTTL"`
}

var _ config.Section = (*Config)(nil)

// Default returns plasmavmc's defaults.
func Default() Config { return Config{HeartbeatTTL: 15 * time.Second} }

// Derive has nothing to derive from the core.
func (c *Config) Derive(*config.Core) {}

// Validate checks the section.
func (c *Config) Validate() error {
	p := &config.Problems{}
	if c.HeartbeatTTL < 3*time.Second || c.HeartbeatTTL > 5*time.Minute {
		p.Add("heartbeatTTL", "%s is outside 3s to 5m", c.HeartbeatTTL)
	}
	return p.Err()
}

// SchedulerName is the unit, system principal and election of the
// scheduler.
const SchedulerName = "plasmavmc-scheduler"

// Build builds plasmavmc's control plane for a node.
func Build(cfg Config, deps component.Deps) (component.Module, error) {
	now := time.Now
	beats := heartbeats{coord: deps.Coord, ttl: cfg.HeartbeatTTL}
	k := &kinds{store: deps.Store, now: now, beats: beats}
	md, err := newMetadataService(deps.Store, deps.Node.Name)
	if err != nil {
		return component.Module{}, err
	}
	s := &scheduler{log: deps.Logger.With("component", SchedulerName), endpoint: deps.Client.Endpoint,
		tokens: deps.Client.Tokens(SchedulerName), identity: deps.Node.Name, beats: beats, store: deps.Store, now: now}
	if deps.Coord != nil {
		s.elector = coord.DeferredElection(deps.Coord, SchedulerName, 0)
	}
	return component.Module{
		Register: func(a *apiserver.API) error {
			if err := k.register(a); err != nil {
				return err
			}
			return md.register(a)
		},
		Units: []component.Unit{{Component: s, DependsOn: []string{"http"}}},
		SystemGrants: map[string][]string{
			"system:" + SchedulerName: {"plasmavmc.*.get", "plasmavmc.*.list", "plasmavmc.*.watch",
				"plasmavmc.vms.updatestatus",
				// A VM's NICs are prismnet ports it manages.
				"prismnet.ports.get", "prismnet.ports.list", "prismnet.ports.watch",
				"prismnet.ports.create", "prismnet.ports.update", "prismnet.ports.delete"},
		},
	}, nil
}

// heartbeats are the workers' liveness: each heartbeat puts the worker's
// key under heartbeatPrefix in chainfire with a fresh lease of ttl, so the
// key disappears ttl after the last one. Without coordination (a node
// without chainfire) heartbeats are accepted and every worker that
// reported counts as alive.
type heartbeats struct {
	coord func(ctx context.Context) (*coord.Client, error)
	ttl   time.Duration
}

const heartbeatPrefix = "/plasmavmc/heartbeats/"

func (h heartbeats) beat(ctx context.Context, worker string) error {
	if h.coord == nil {
		return nil
	}
	c, err := h.coord(ctx)
	if err != nil {
		return fmt.Errorf("plasmavmc: heartbeat of %s: %w", worker, err)
	}
	cli := c.Raw()
	lease, err := cli.Grant(ctx, int64(h.ttl/time.Second))
	if err != nil {
		return fmt.Errorf("plasmavmc: heartbeat of %s: %w", worker, err)
	}
	if _, err := cli.Put(ctx, heartbeatPrefix+worker, time.Now().UTC().Format(time.RFC3339Nano), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("plasmavmc: heartbeat of %s: %w", worker, err)
	}
	return nil
}

// alive returns the workers whose lease is current; ok is false without
// coordination (then liveness is not known).
func (h heartbeats) alive(ctx context.Context) (map[string]bool, bool, error) {
	if h.coord == nil {
		return nil, false, nil
	}
	c, err := h.coord(ctx)
	if err != nil {
		return nil, true, err
	}
	resp, err := c.Raw().Get(ctx, heartbeatPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, true, fmt.Errorf("plasmavmc: reading heartbeats: %w", err)
	}
	out := map[string]bool{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(heartbeatPrefix):])] = true
	}
	return out, true, nil
}

// decodeObj decodes a stored object's spec and status.
func decodeObj[S, T any](o *api.Object) (*S, *T, error) {
	s, t := new(S), new(T)
	if len(o.Spec) > 0 {
		if err := json.Unmarshal(o.Spec, s); err != nil {
			return nil, nil, fmt.Errorf("plasmavmc: %s %s spec: %w", o.Kind, o.Metadata.Name, err)
		}
	}
	if len(o.Status) > 0 {
		if err := json.Unmarshal(o.Status, t); err != nil {
			return nil, nil, fmt.Errorf("plasmavmc: %s %s status: %w", o.Kind, o.Metadata.Name, err)
		}
	}
	return s, t, nil
}

// patchSpec edits a VM object's spec in place.
func patchSpec[S any](o *api.Object, edit func(*S)) error {
	s := new(S)
	if len(o.Spec) > 0 {
		if err := json.Unmarshal(o.Spec, s); err != nil {
			return fmt.Errorf("plasmavmc: %s %s spec: %w", o.Kind, o.Metadata.Name, err)
		}
	}
	edit(s)
	raw, err := json.Marshal(s)
	o.Spec = raw
	return err
}
