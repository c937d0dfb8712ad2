// Package apicache mirrors collections of the API in memory for
// controllers and host agents that compute desired state from several
// kinds at once: each collection is listed, then watched (the SDK resumes
// broken streams), and every change is signalled. It owns no decisions and
// writes nothing.
package apicache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Cache mirrors some collections of the API: readers see every object and
// changes signal Changed. When a watch ends for good (history compacted,
// credential refused), the collection is listed again. It suits
// level-based computations: a missed intermediate state does no harm.
type Cache struct {
	log     *slog.Logger
	changed chan struct{}

	mu     sync.RWMutex
	colls  map[string]map[string]*api.Object // collection -> "project/name" -> object
	synced map[string]bool

	// memo holds decoded objects (DecodeCached), by collection and key,
	// then by the decoded types; an entry is valid for the object pointer
	// it was made from (objects are never changed in place, only replaced).
	memoMu sync.Mutex
	memo   map[string]map[reflect.Type]memoEntry
}

type memoEntry struct {
	obj          *api.Object
	spec, status any
	err          error
}

// New returns an empty cache of the given collections.
func New(log *slog.Logger, collections ...string) *Cache {
	c := &Cache{log: log, changed: make(chan struct{}, 1),
		colls: map[string]map[string]*api.Object{}, synced: map[string]bool{}, memo: map[string]map[reflect.Type]memoEntry{}}
	for _, coll := range collections {
		c.colls[coll] = map[string]*api.Object{}
	}
	return c
}

// Changed is signalled (coalesced) after every change.
func (c *Cache) Changed() <-chan struct{} { return c.changed }

func (c *Cache) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Synced reports whether every collection has delivered its initial state.
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for coll := range c.colls {
		if !c.synced[coll] {
			return false
		}
	}
	return true
}

// Run follows every collection through cl until ctx ends.
func (c *Cache) Run(ctx context.Context, cl *client.Client) {
	c.mu.RLock()
	var names []string
	for coll := range c.colls {
		names = append(names, coll)
	}
	c.mu.RUnlock()
	var wg sync.WaitGroup
	for _, coll := range names {
		wg.Go(func() { c.follow(ctx, coll, cl.Resources(coll, "")) })
	}
	wg.Wait()
}

// Key is how the cache names an object: "project/name" ("/name" for
// cluster-scoped kinds).
func Key(o *api.Object) string { return o.Metadata.Project + "/" + o.Metadata.Name }

// follow keeps one collection current: a watch without a revision starts
// with every object as ADDED, then a BOOKMARK; the snapshot replaces what
// the cache held.
func (c *Cache) follow(ctx context.Context, coll string, r *client.Resources) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		w, err := r.Watch(ctx, client.WatchOptions{})
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("apicache: watch failed; retrying", "collection", coll, "err", err, "retry", backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		fresh := map[string]*api.Object{}
		inSnapshot := true
		for ev := range w.Events() {
			switch ev.Type {
			case api.EventBookmark:
				if inSnapshot {
					inSnapshot = false
					c.mu.Lock()
					c.colls[coll] = fresh
					c.synced[coll] = true
					c.mu.Unlock()
					c.signal()
				}
				continue
			case api.EventAdded, api.EventModified:
				if inSnapshot {
					fresh[Key(ev.Object)] = ev.Object
					continue
				}
				c.mu.Lock()
				c.colls[coll][Key(ev.Object)] = ev.Object
				c.mu.Unlock()
			case api.EventDeleted:
				if inSnapshot {
					delete(fresh, Key(ev.Object))
					continue
				}
				c.mu.Lock()
				delete(c.colls[coll], Key(ev.Object))
				c.mu.Unlock()
				c.forget(ev.Object)
			default:
				continue
			}
			c.signal()
		}
		if err := w.Err(); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			c.log.Warn("apicache: watch ended; listing again", "collection", coll, "err", err)
		}
	}
}

// List returns a snapshot of one collection's objects.
func (c *Cache) List(coll string) []*api.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*api.Object, 0, len(c.colls[coll]))
	for _, o := range c.colls[coll] {
		out = append(out, o)
	}
	return out
}

// Get returns one object (nil if absent).
func (c *Cache) Get(coll, project, name string) *api.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.colls[coll][project+"/"+name]
}

func unmarshalIf(raw []byte, v any) error {
	if len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// Decode decodes an object's spec and status (zero values when absent).
func Decode[S, T any](o *api.Object) (S, T, error) {
	var s S
	var t T
	if err := unmarshalIf(o.Spec, &s); err != nil {
		return s, t, fmt.Errorf("apicache: %s %s spec: %w", o.Kind, Key(o), err)
	}
	if err := unmarshalIf(o.Status, &t); err != nil {
		return s, t, fmt.Errorf("apicache: %s %s status: %w", o.Kind, Key(o), err)
	}
	return s, t, nil
}

// DecodeCached is Decode, remembered per object: computations that decode
// every object of a collection on each change (an agent's desired state
// over 1,000 ports) decode only what changed. The values are shared
// between callers: treat them as read-only.
func DecodeCached[S, T any](c *Cache, o *api.Object) (S, T, error) {
	k := o.Kind + "|" + Key(o)
	typ := reflect.TypeFor[func(S, T)]()
	c.memoMu.Lock()
	e, ok := c.memo[k][typ]
	c.memoMu.Unlock()
	if ok && e.obj == o {
		return e.spec.(S), e.status.(T), e.err
	}
	s, t, err := Decode[S, T](o)
	c.memoMu.Lock()
	if c.memo[k] == nil {
		c.memo[k] = map[reflect.Type]memoEntry{}
	}
	c.memo[k][typ] = memoEntry{obj: o, spec: s, status: t, err: err}
	c.memoMu.Unlock()
	return s, t, err
}

// forget drops the decoded forms of an object that left the cache.
func (c *Cache) forget(o *api.Object) {
	c.memoMu.Lock()
	delete(c.memo, o.Kind+"|"+Key(o))
	c.memoMu.Unlock()
}
