package coord

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/coord/coordtest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestHeartbeatKeepsKeyAliveAndReleaseDeletesIt: the key outlives several
// TTLs while heartbeats run, and disappears at once on release.
func TestHeartbeatKeepsKeyAliveAndReleaseDeletesIt(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	c, raw := newCoord(t, ep)
	if _, err := c.Heartbeat(ctxT(t, 5*time.Second), "/hb/n1", "alive", time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("TTL below MinTTL: %v", err)
	}
	h, err := c.Heartbeat(ctxT(t, 20*time.Second), "/hb/n1", "alive", MinTTL)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2*MinTTL + 500*time.Millisecond) // more than two TTLs
	for time.Now().Before(deadline) {
		resp, err := raw.Get(ctxT(t, 5*time.Second), "/hb/n1")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("heartbeat key gone while alive: %v %v (hold err %v)", resp, err, context.Cause(h.Context()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := h.Release(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.Get(ctxT(t, 5*time.Second), "/hb/n1")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("heartbeat key after release: %v %v", resp.Kvs, err)
	}
	if !errors.Is(context.Cause(h.Context()), ErrReleased) {
		t.Fatalf("cause after release = %v", context.Cause(h.Context()))
	}
}

// TestRegistryExpiresNodeWhenHeartbeatsStop: a node registers, updates its
// capacity, then its connection is cut: its registration reports the loss,
// and after the TTL the entry is gone and watchers see it leave.
func TestRegistryExpiresNodeWhenHeartbeatsStop(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	p := coordtest.NewProxy(t, ep)
	nodeSide, _ := newCoord(t, p.URL())
	ctlSide, _ := newCoord(t, ep)
	nodeReg, ctlReg := nodeSide.Registry(""), ctlSide.Registry("")

	info := NodeInfo{
		Name:      "n1",
		Addresses: []string{"10.0.0.1"},
		Capacity:  map[string]int64{"cpu": 4000, "memory": 8 << 30},
		Labels:    map[string]string{"zone": "a"},
	}
	if _, err := nodeReg.Register(ctxT(t, 5*time.Second), NodeInfo{Name: "bad/name"}, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid name: %v", err)
	}
	if _, err := nodeReg.Register(ctxT(t, 5*time.Second), NodeInfo{Name: "n", Capacity: map[string]int64{"cpu": -1}}, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative capacity: %v", err)
	}
	_, rev0, err := ctlReg.List(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	// Follow the registry from before the registration.
	type seenEvent struct {
		NodeEvent
		at time.Time
	}
	var mu sync.Mutex
	var events []seenEvent
	wctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- ctlReg.Watch(wctx, rev0+1, func(e NodeEvent) error {
			mu.Lock()
			events = append(events, seenEvent{e, time.Now()})
			mu.Unlock()
			return nil
		})
	}()
	defer func() {
		stopWatch()
		if err := <-watchDone; err != nil {
			t.Errorf("registry watch: %v", err)
		}
	}()
	seen := func(typ NodeEventType) (seenEvent, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Type == typ {
				return e, true
			}
		}
		return seenEvent{}, false
	}

	const ttl = 3 * time.Second // safety margin 600ms
	reg, err := nodeReg.Register(context.Background(), info, ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Release(context.Background())
	nodes, _, err := ctlReg.List(ctxT(t, 5*time.Second))
	if err != nil || len(nodes) != 1 || !reflect.DeepEqual(nodes[0], info) {
		t.Fatalf("List = %+v, %v", nodes, err)
	}
	updated := info.Clone()
	updated.Capacity["cpu"] = 3000
	if err := reg.Update(ctxT(t, 5*time.Second), updated); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "joined and updated events", func() bool {
		_, j := seen(NodeJoined)
		_, u := seen(NodeUpdated)
		return j && u
	})
	if e, _ := seen(NodeUpdated); e.Node.Capacity["cpu"] != 3000 {
		t.Fatalf("update event = %+v", e)
	}

	// The node's network goes away: its heartbeats stop.
	cutAt := time.Now()
	p.Cut()
	cause := waitDone(t, reg.Context(), 5*time.Second, "the registration after the cut")
	if !errors.Is(cause, ErrLeaseLost) {
		t.Fatalf("registration ended with %v, want ErrLeaseLost", cause)
	}
	lostAt := time.Now()
	testkit.Eventually(t, 10*time.Second, "a left event for n1", func() bool { _, ok := seen(NodeLeft); return ok })
	left, _ := seen(NodeLeft)
	if left.Node.Name != "n1" || left.Node.Capacity["cpu"] != 3000 {
		t.Fatalf("left event = %+v, want n1's last info", left)
	}
	// The node gives up before the cluster drops it.
	if !lostAt.Before(left.at) {
		t.Fatalf("the node learned of its loss at +%s, after watchers saw it leave at +%s", lostAt.Sub(cutAt), left.at.Sub(cutAt))
	}
	t.Logf("after the cut: registration lost at +%s, watchers saw n1 leave at +%s (TTL %s)",
		lostAt.Sub(cutAt).Round(time.Millisecond), left.at.Sub(cutAt).Round(time.Millisecond), ttl)
	if _, err := ctlReg.Get(ctxT(t, 5*time.Second), "n1"); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("Get after expiry: %v", err)
	}
	if err := reg.Update(ctxT(t, time.Second), updated); err == nil {
		t.Fatal("update after loss succeeded")
	}
	if nodes, _, _ := ctlReg.List(ctxT(t, 5*time.Second)); len(nodes) != 0 {
		t.Fatalf("List after expiry = %+v", nodes)
	}
}
