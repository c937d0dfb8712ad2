package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultRegistryPrefix is where the node registry keeps its entries, one
// key per node: <prefix><name> = JSON NodeInfo.
const DefaultRegistryPrefix = "/ultracloud/nodes/"

// NodeInfo is what a node announces about itself.
type NodeInfo struct {
	// Name is the node's unique name.
	Name string `json:"name"`
	// Addresses are the node's reachable addresses (IPs or host:port).
	Addresses []string `json:"addresses,omitempty"`
	// Capacity is what the node offers, by resource name (e.g. "cpu" in
	// millicores, "memory" in bytes).
	Capacity map[string]int64 `json:"capacity,omitempty"`
	// Labels are free-form key/value attributes (zone, rack, roles).
	Labels map[string]string `json:"labels,omitempty"`
}

func (n NodeInfo) validate() error {
	if err := validName("node", n.Name); err != nil {
		return err
	}
	for k, v := range n.Capacity {
		if k == "" || v < 0 {
			return fmt.Errorf("%w: node %s: capacity %q = %d: names must be non-empty and amounts not negative", ErrInvalid, n.Name, k, v)
		}
	}
	for k := range n.Labels {
		if k == "" {
			return fmt.Errorf("%w: node %s: label keys must not be empty", ErrInvalid, n.Name)
		}
	}
	return nil
}

// Clone returns a deep copy.
func (n NodeInfo) Clone() NodeInfo {
	n.Addresses = slices.Clone(n.Addresses)
	n.Capacity = maps.Clone(n.Capacity)
	n.Labels = maps.Clone(n.Labels)
	return n
}

// NodeEventType is the kind of a registry change.
type NodeEventType int

// Node event types.
const (
	// NodeJoined: a node registered (its key was created).
	NodeJoined NodeEventType = iota + 1
	// NodeUpdated: a registered node changed its information or
	// re-registered before its previous lease ran out.
	NodeUpdated
	// NodeLeft: a node's entry disappeared: it deregistered, or its
	// lease expired because its heartbeats stopped.
	NodeLeft
)

func (t NodeEventType) String() string {
	switch t {
	case NodeJoined:
		return "joined"
	case NodeUpdated:
		return "updated"
	case NodeLeft:
		return "left"
	}
	return "unknown"
}

// NodeEvent is one registry change. For NodeLeft, Node is the last known
// information (at least the name).
type NodeEvent struct {
	Type     NodeEventType
	Node     NodeInfo
	Revision int64
}

// Registry is the typed node registry under a key prefix.
type Registry struct {
	c      *Client
	prefix string
}

// Registry returns the node registry under prefix ("" means
// DefaultRegistryPrefix; a missing trailing '/' is added).
func (c *Client) Registry(prefix string) *Registry {
	if prefix == "" {
		prefix = DefaultRegistryPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Registry{c: c, prefix: prefix}
}

func (r *Registry) key(name string) string { return r.prefix + name }

// Register announces info under a lease of ttl (0 means DefaultTTL) kept
// alive until the Registration is released or lost, or ctx ends. A stale
// entry of the same name (a previous run whose lease has not expired yet)
// is replaced. When the Registration's Context ends with ErrLeaseLost the
// entry is gone or about to go: register again.
func (r *Registry) Register(ctx context.Context, info NodeInfo, ttl time.Duration) (Registration, error) {
	if err := info.validate(); err != nil {
		return nil, err
	}
	val, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("coord: encoding node %s: %w", info.Name, err)
	}
	l, err := r.c.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("coord: registering node %s: %w", info.Name, err)
	}
	if _, err := r.c.cli.Put(ctx, r.key(info.Name), string(val), clientv3.WithLease(l.ID())); err != nil {
		relErr := l.Release(context.WithoutCancel(ctx))
		return nil, errors.Join(fmt.Errorf("coord: registering node %s: %w", info.Name, err), relErr)
	}
	return &registration{Lease: l, r: r, name: info.Name}, nil
}

type registration struct {
	*Lease
	r    *Registry
	name string
}

// Update replaces the node's information under the same lease. It fails
// if the registration has ended.
func (g *registration) Update(ctx context.Context, info NodeInfo) error {
	if info.Name != g.name {
		return fmt.Errorf("%w: registration is for node %s, not %s", ErrInvalid, g.name, info.Name)
	}
	if err := info.validate(); err != nil {
		return err
	}
	if err := g.Err(); err != nil {
		return fmt.Errorf("coord: updating node %s: registration ended: %w", g.name, err)
	}
	val, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("coord: encoding node %s: %w", info.Name, err)
	}
	if _, err := g.r.c.cli.Put(ctx, g.r.key(info.Name), string(val), clientv3.WithLease(g.ID())); err != nil {
		return fmt.Errorf("coord: updating node %s: %w", g.name, err)
	}
	return nil
}

// List returns the registered nodes sorted by name and the revision they
// were read at (watch from revision+1 to follow changes).
func (r *Registry) List(ctx context.Context) ([]NodeInfo, int64, error) {
	resp, err := r.c.cli.Get(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("coord: listing nodes: %w", err)
	}
	out := make([]NodeInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n, err := r.decode(string(kv.Key), kv.Value)
		if err != nil {
			r.c.log.Warn("skipping unreadable registry entry", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, n)
	}
	return out, resp.Header.Revision, nil
}

// Get returns one node, or ErrNodeNotFound.
func (r *Registry) Get(ctx context.Context, name string) (NodeInfo, error) {
	resp, err := r.c.cli.Get(ctx, r.key(name))
	if err != nil {
		return NodeInfo{}, fmt.Errorf("coord: reading node %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return NodeInfo{}, fmt.Errorf("%w: %s", ErrNodeNotFound, name)
	}
	return r.decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value)
}

// Watch calls fn with every registry change from fromRev on (see
// Client.Watch for resume and compaction). To follow the registry
// completely: List, then Watch from the list's revision + 1.
func (r *Registry) Watch(ctx context.Context, fromRev int64, fn func(NodeEvent) error) error {
	return r.c.Watch(ctx, r.prefix, fromRev, func(b Batch) error {
		for _, e := range b.Events {
			ev := NodeEvent{Revision: e.Revision}
			name := strings.TrimPrefix(e.Key, r.prefix)
			switch e.Type {
			case EventPut:
				n, err := r.decode(e.Key, e.Value)
				if err != nil {
					r.c.log.Warn("skipping unreadable registry entry", "key", e.Key, "err", err)
					continue
				}
				ev.Node, ev.Type = n, NodeUpdated
				if e.Version == 1 {
					ev.Type = NodeJoined
				}
			case EventDelete:
				ev.Type, ev.Node = NodeLeft, NodeInfo{Name: name}
				if e.PrevValue != nil {
					if n, err := r.decode(e.Key, e.PrevValue); err == nil {
						ev.Node = n
					}
				}
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
		return nil
	})
}

func (r *Registry) decode(key string, val []byte) (NodeInfo, error) {
	var n NodeInfo
	if err := json.Unmarshal(val, &n); err != nil {
		return NodeInfo{}, fmt.Errorf("coord: registry entry %s: %w", key, err)
	}
	if want := strings.TrimPrefix(key, r.prefix); n.Name != want {
		return NodeInfo{}, fmt.Errorf("coord: registry entry %s names node %q", key, n.Name)
	}
	return n, nil
}
