package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/internal/runtime/coord/coordtest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// The singleton tests run against real etcd members embedded in the test
// process by coordtest (the controller must not depend on the chainfire
// component), and partition a client with coordtest's Proxy.

// singletonTTL is the election TTL of the singleton tests: coord's safety
// margin is then 600ms and a keepalive goes out every second.
const singletonTTL = 3 * time.Second

// takeoverBound is how long after the leader stops renewing another
// instance must be reconciling: the TTL, plus etcd's expiry check (every
// 500ms) and revoke, the watch that wakes the next candidate, and its list.
const takeoverBound = singletonTTL + 3*time.Second

// overlapTracker is shared by the reconcilers of every instance. It counts
// each instance's running reconciles and records a violation whenever an
// instance starts a reconcile while another instance's is still running,
// or a key is reconciled by two instances at once.
type overlapTracker struct {
	mu         sync.Mutex
	inflight   map[string]int   // instance -> running reconciles
	keys       map[Key]string   // key -> instance reconciling it
	calls      map[string]int   // instance -> reconciles begun
	seen       map[string][]Key // instance -> keys it reconciled
	firstStart map[string]time.Time
	lastEnd    map[string]time.Time
	violations []string
}

func newOverlapTracker() *overlapTracker {
	return &overlapTracker{
		inflight: map[string]int{}, keys: map[Key]string{}, calls: map[string]int{}, seen: map[string][]Key{},
		firstStart: map[string]time.Time{}, lastEnd: map[string]time.Time{},
	}
}

// reconciler returns instance id's reconciler: each reconcile works for
// a few milliseconds (returning early when its context ends, as
// reconcilers must) and asks to run again soon, so the leader always has
// reconciles in flight.
func (o *overlapTracker) reconciler(id string) Reconciler {
	return ReconcilerFunc(func(ctx context.Context, k Key) (Result, error) {
		o.begin(id, k)
		defer o.end(id, k)
		t := time.NewTimer(3 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-t.C:
		}
		return Result{RequeueAfter: 5 * time.Millisecond}, nil
	})
}

func (o *overlapTracker) begin(id string, k Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for other, n := range o.inflight {
		if other != id && n > 0 {
			o.violations = append(o.violations, fmt.Sprintf("%s began reconciling %s while %s had %d reconciles running", id, k, other, n))
		}
	}
	if other, busy := o.keys[k]; busy {
		o.violations = append(o.violations, fmt.Sprintf("%s began reconciling %s while %s was reconciling it", id, k, other))
	}
	o.keys[k] = id
	o.inflight[id]++
	o.calls[id]++
	if !slices.Contains(o.seen[id], k) {
		o.seen[id] = append(o.seen[id], k)
	}
	if o.firstStart[id].IsZero() {
		o.firstStart[id] = time.Now()
	}
}

func (o *overlapTracker) end(id string, k Key) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inflight[id]--
	delete(o.keys, k)
	o.lastEnd[id] = time.Now()
}

func (o *overlapTracker) callsOf(id string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.calls[id]
}

func (o *overlapTracker) times(id string) (first, last time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.firstStart[id], o.lastEnd[id]
}

func (o *overlapTracker) reconciled(id string, k Key) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.seen[id], k)
}

func (o *overlapTracker) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, v := range o.violations {
		t.Error(v)
	}
}

// instance is one copy of the singleton controller, as on one node.
type instance struct {
	id     string
	ctrl   *Controller
	raw    *clientv3.Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

// startInstance runs a singleton widgets controller whose election goes
// through endpoint.
func startInstance(t *testing.T, id string, e *env, endpoint string, tr *overlapTracker) *instance {
	t.Helper()
	raw := coordtest.NewClient(t, endpoint)
	el, err := coord.New(raw, slog.New(slog.DiscardHandler)).Election("widgets", singletonTTL)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{id: id, raw: raw, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	in.ctrl = mustNew(t, Options{
		Source: e.source(), Reconciler: tr.reconciler(id), Workers: 2,
		Singleton: &Singleton{Elector: el, Identity: id}, Registerer: in.reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() {
		defer close(in.done)
		if err := in.ctrl.Run(ctx); err != nil {
			t.Errorf("instance %s: Run: %v", id, err)
		}
	}()
	t.Cleanup(func() { in.stop(t) })
	return in
}

// stop cancels the instance (a clean shutdown) and waits for Run.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cancel()
	select {
	case <-in.done:
	case <-time.After(15 * time.Second):
		t.Errorf("instance %s: Run did not return within 15s of cancel", in.id)
	}
}

// leaders returns the instances that report leading.
func leaders(ins []*instance) []*instance {
	var ls []*instance
	for _, in := range ins {
		if in.ctrl.Leading() {
			ls = append(ls, in)
		}
	}
	return ls
}

// waitLeader waits until exactly one instance of ins leads and has
// reconciled, and returns it.
func waitLeader(t *testing.T, within time.Duration, tr *overlapTracker, ins ...*instance) *instance {
	t.Helper()
	var l *instance
	testkit.EventuallyErr(t, within, "exactly one instance leading and reconciling", func() error {
		ls := leaders(ins)
		if len(ls) != 1 {
			return fmt.Errorf("%d leaders", len(ls))
		}
		if tr.callsOf(ls[0].id) == 0 {
			return fmt.Errorf("%s leads but has not reconciled yet", ls[0].id)
		}
		l = ls[0]
		return nil
	})
	return l
}

func others(ins []*instance, not ...*instance) []*instance {
	var out []*instance
	for _, in := range ins {
		if !slices.Contains(not, in) {
			out = append(out, in)
		}
	}
	return out
}

// TestSingletonOneInstanceReconcilesAndTakesOver: three instances of a
// singleton controller share a collection and one etcd. Exactly one
// reconciles; a clean shutdown hands over well within the TTL; a leader
// whose etcd client dies (its lease is not revoked, as in a crash) is
// replaced within the TTL plus a bound, the new leader lists everything
// (so an object created during the failover is reconciled), and at no
// moment do two instances reconcile at once.
func TestSingletonOneInstanceReconcilesAndTakesOver(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.create(t, "p", fmt.Sprintf("w%d", i), i)
	}
	ep := coordtest.StartMember(t).ClientURL
	tr := newOverlapTracker()
	defer tr.check(t)
	ins := []*instance{
		startInstance(t, "a", e, ep, tr),
		startInstance(t, "b", e, ep, tr),
		startInstance(t, "c", e, ep, tr),
	}
	for _, in := range ins {
		waitReady(t, in.ctrl) // standing by counts as ready
	}
	first := waitLeader(t, 15*time.Second, tr, ins...)

	// For a while, only the leader reconciles.
	before := tr.callsOf(first.id)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if ls := leaders(ins); len(ls) != 1 || ls[0] != first {
			t.Fatalf("leaders changed without cause: %d leaders", len(ls))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tr.callsOf(first.id) <= before {
		t.Fatalf("the leader %s made no progress in a second", first.id)
	}
	for _, in := range others(ins, first) {
		if n := tr.callsOf(in.id); n != 0 {
			t.Fatalf("standby %s reconciled %d times", in.id, n)
		}
	}
	for _, in := range ins {
		want := 0.0
		if in == first {
			want = 1
		}
		if got := metricValue(t, in.reg, "ultracloud_controller_leader", map[string]string{"controller": "widgets"}); got != want {
			t.Fatalf("%s: ultracloud_controller_leader = %v, want %v", in.id, got, want)
		}
	}

	// A clean shutdown resigns after the workers stop: a standby takes
	// over at once rather than after the TTL.
	stopped := time.Now()
	first.stop(t)
	rest := others(ins, first)
	second := waitLeader(t, singletonTTL, tr, rest...)
	t.Logf("handover after a clean shutdown took %s", time.Since(stopped))

	// Crash: the leader's etcd client dies, so its lease is not revoked and
	// only expires. An object created meanwhile must not be skipped.
	crashed := time.Now()
	if err := second.raw.Close(); err != nil {
		t.Fatal(err)
	}
	e.create(t, "p", "during-failover", 9)
	third := waitLeader(t, takeoverBound, tr, others(rest, second)...)
	took := time.Since(crashed)
	t.Logf("takeover after a crash took %s (TTL %s)", took, singletonTTL)
	testkit.EventuallyErr(t, 10*time.Second, "the new leader to reconcile the object created during the failover", func() error {
		if !tr.reconciled(third.id, Key{"p", "during-failover"}) {
			return fmt.Errorf("%s has not reconciled p/during-failover", third.id)
		}
		return nil
	})
	if second.ctrl.Leading() {
		t.Fatalf("crashed instance %s still reports leading", second.id)
	}
	if _, last := tr.times(second.id); !last.IsZero() {
		if firstNew, _ := tr.times(third.id); !last.Before(firstNew) {
			t.Fatalf("the crashed leader's last reconcile ended at %s, after the new leader's first began at %s", last, firstNew)
		}
	}
}

// TestSingletonPartitionedLeaderStopsBeforeAnotherStarts: the leader's
// etcd client loses the cluster (a 3-member etcd; each instance talks to
// its own member). The leader keeps running and can still reach the
// collection, so only its leadership can stop it: its reconciles must all
// have returned before another instance's first reconcile begins, and
// another instance must take over within the TTL plus a bound.
func TestSingletonPartitionedLeaderStopsBeforeAnotherStarts(t *testing.T) {
	for _, mode := range []string{"traffic-swallowed", "member-stopped"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			for i := range 5 {
				e.create(t, "p", fmt.Sprintf("w%d", i), i)
			}
			ms := coordtest.StartCluster(t, 3).Members
			tr := newOverlapTracker()
			defer tr.check(t)
			var ins []*instance
			var holes []*coordtest.Proxy
			for i, id := range []string{"a", "b", "c"} {
				h := coordtest.NewProxy(t, ms[i].ClientURL)
				holes = append(holes, h)
				ins = append(ins, startInstance(t, id, e, h.URL(), tr))
			}
			old := waitLeader(t, 20*time.Second, tr, ins...)
			i := slices.Index(ins, old)

			cutAt := time.Now()
			switch mode {
			case "traffic-swallowed":
				holes[i].Partition()
			case "member-stopped":
				ms[i].Stop()
			}
			bound := takeoverBound
			if mode == "member-stopped" {
				// If the member was etcd's Raft leader, its successor is
				// elected first and restarts every lease's TTL.
				bound += 2 * time.Second
			}
			next := waitLeader(t, bound-time.Since(cutAt), tr, others(ins, old)...)
			t.Logf("takeover after the partition took %s (TTL %s)", time.Since(cutAt), singletonTTL)
			if old.ctrl.Leading() {
				t.Fatalf("partitioned instance %s still reports leading while %s leads", old.id, next.id)
			}
			_, oldLast := tr.times(old.id)
			newFirst, _ := tr.times(next.id)
			if !oldLast.Before(newFirst) {
				t.Fatalf("the partitioned leader's last reconcile ended %s after the cut, the new leader's first began %s after it",
					oldLast.Sub(cutAt), newFirst.Sub(cutAt))
			}
			t.Logf("old leader's last reconcile ended %s after the cut; the new leader began %s later",
				oldLast.Sub(cutAt), newFirst.Sub(oldLast))
			// The partitioned instance stays stopped.
			n := tr.callsOf(old.id)
			time.Sleep(300 * time.Millisecond) // a window for a stray reconcile to show
			if m := tr.callsOf(old.id); m != n {
				t.Fatalf("the partitioned instance reconciled %d more times after losing leadership", m-n)
			}
		})
	}
}

// TestSingletonOptionsValidated: a singleton needs an elector and an
// identity and takes no checkpoint; an ordinary controller never leads.
func TestSingletonOptionsValidated(t *testing.T) {
	src := newFakeSource(nil, 1)
	rec := ReconcilerFunc(func(context.Context, Key) (Result, error) { return Result{}, nil })
	el := fakeElector{}
	for name, o := range map[string]Options{
		"no elector":   {Name: "x", Source: src, Reconciler: rec, Singleton: &Singleton{Identity: "n1"}},
		"no identity":  {Name: "x", Source: src, Reconciler: rec, Singleton: &Singleton{Elector: el}},
		"a checkpoint": {Name: "x", Source: src, Reconciler: rec, Singleton: &Singleton{Elector: el, Identity: "n1"}, Checkpoint: FileCheckpoint(t.TempDir() + "/cp")},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New with a singleton with %s succeeded", name)
		}
	}
	c := mustNew(t, Options{Source: src, Reconciler: rec})
	stop := start(t, c)
	waitReady(t, c)
	if c.Leading() {
		t.Fatal("an ordinary controller reports leading")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// fakeElector never elects anyone.
type fakeElector struct{}

func (fakeElector) Campaign(ctx context.Context, _ string) (coord.Leadership, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
