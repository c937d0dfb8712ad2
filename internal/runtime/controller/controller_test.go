package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// The test kind: a project-scoped Widget whose controller copies
// spec.replicas into status.observed.
type widgetSpec struct {
	Replicas int `json:"replicas"`
}

type widgetStatus struct {
	Observed int `json:"observed"`
}

type env struct {
	store *pebblestore.Store
	cl    *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := apiserver.New(st, apiserver.Options{BookmarkInterval: 50 * time.Millisecond})
	err = apiserver.Register(a, "test", apiserver.KindDef[widgetSpec, widgetStatus]{
		Kind: "Widget", Collection: "widgets", Singular: "widget", Scope: api.ScopeProject,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Mount(mux)
	srv := httptest.NewServer(mux)
	cl, err := client.New(client.Config{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.CloseStreams()
		srv.Close()
		_ = st.Close()
	})
	return &env{store: st, cl: cl}
}

func (e *env) widgets(project string) *client.Resources { return e.cl.Resources("widgets", project) }

func (e *env) source() Source { return FromClient(e.widgets(""), "") }

func (e *env) create(t *testing.T, project, name string, replicas int) {
	t.Helper()
	spec, _ := json.Marshal(widgetSpec{Replicas: replicas})
	o := &api.Object{Kind: "Widget", Metadata: api.ObjectMeta{Name: name}, Spec: spec}
	if _, err := e.widgets(project).Create(context.Background(), o); err != nil {
		t.Fatalf("creating %s/%s: %v", project, name, err)
	}
}

func (e *env) setReplicas(t *testing.T, project, name string, replicas int) {
	t.Helper()
	spec, _ := json.Marshal(widgetSpec{Replicas: replicas})
	o := &api.Object{Kind: "Widget", Metadata: api.ObjectMeta{Name: name}, Spec: spec}
	if _, err := e.widgets(project).Update(context.Background(), o); err != nil {
		t.Fatalf("updating %s/%s: %v", project, name, err)
	}
}

func (e *env) remove(t *testing.T, project, name string) {
	t.Helper()
	if _, err := e.widgets(project).Delete(context.Background(), name, 0); err != nil {
		t.Fatalf("deleting %s/%s: %v", project, name, err)
	}
}

func (e *env) revision(t *testing.T) int64 {
	t.Helper()
	cur, _, err := e.store.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// converged returns nil when every widget's status.observed equals its
// spec.replicas, else an error naming one that does not.
func (e *env) converged(ctx context.Context) error {
	items, _, err := e.widgets("").ListAll(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	for _, o := range items {
		var spec widgetSpec
		var st widgetStatus
		_ = json.Unmarshal(o.Spec, &spec)
		if len(o.Status) == 0 {
			return fmt.Errorf("%s has no status", KeyOf(&o))
		}
		_ = json.Unmarshal(o.Status, &st)
		if st.Observed != spec.Replicas {
			return fmt.Errorf("%s observed %d, want %d", KeyOf(&o), st.Observed, spec.Replicas)
		}
	}
	return nil
}

// recorder is the test reconciler: it copies spec.replicas into
// status.observed and records what it was asked to do.
type recorder struct {
	cl *client.Client
	// failFirst makes the first n reconciles of a key fail.
	failFirst map[Key]int
	// hook, if set, runs at the start of every reconcile.
	hook func(ctx context.Context, k Key) error

	overlap atomic.Bool // two reconciles of one key ran at once

	mu       sync.Mutex
	active   map[Key]*atomic.Int32
	calls    map[Key]int
	deleted  map[Key]int
	attempts map[Key][]time.Time
}

func newRecorder(cl *client.Client) *recorder {
	return &recorder{cl: cl, failFirst: map[Key]int{}, active: map[Key]*atomic.Int32{},
		calls: map[Key]int{}, deleted: map[Key]int{}, attempts: map[Key][]time.Time{}}
}

var errInjected = errors.New("injected failure")

func (r *recorder) Reconcile(ctx context.Context, k Key) (Result, error) {
	r.mu.Lock()
	act := r.active[k]
	if act == nil {
		act = new(atomic.Int32)
		r.active[k] = act
	}
	r.calls[k]++
	n := r.calls[k]
	r.attempts[k] = append(r.attempts[k], time.Now())
	fail := n <= r.failFirst[k]
	r.mu.Unlock()

	if act.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer act.Add(-1)

	if r.hook != nil {
		if err := r.hook(ctx, k); err != nil {
			return Result{}, err
		}
	}
	if fail {
		return Result{}, fmt.Errorf("reconciling %s: %w", k, errInjected)
	}
	res := r.cl.Resources("widgets", k.Project)
	o, err := res.Get(ctx, k.Name)
	if client.IsNotFound(err) {
		r.mu.Lock()
		r.deleted[k]++
		r.mu.Unlock()
		return Result{}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("getting %s: %w", k, err)
	}
	var spec widgetSpec
	var st widgetStatus
	if err := json.Unmarshal(o.Spec, &spec); err != nil {
		return Result{}, fmt.Errorf("decoding %s spec: %w", k, err)
	}
	if len(o.Status) > 0 {
		if err := json.Unmarshal(o.Status, &st); err != nil {
			return Result{}, fmt.Errorf("decoding %s status: %w", k, err)
		}
		if st.Observed == spec.Replicas {
			return Result{}, nil
		}
	}
	o.Status, _ = json.Marshal(widgetStatus{Observed: spec.Replicas})
	if _, err := res.UpdateStatus(ctx, o); err != nil { // conditional on o's revision
		return Result{}, fmt.Errorf("updating %s status: %w", k, err)
	}
	return Result{}, nil
}

func (r *recorder) callsOf(k Key) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[k]
}

func (r *recorder) deletedOf(k Key) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deleted[k]
}

func (r *recorder) calledKeys() []Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []Key
	for k := range r.calls {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
	return ks
}

// start runs c until the test ends or the returned stop is called; stop
// cancels, waits (bounded) for Run to return and returns its error.
func start(t *testing.T, c *Controller) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = errors.New("Run did not return within 10s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("controller %s: %v", c.Name(), err)
		}
	})
	return stop
}

func waitReady(t *testing.T, c *Controller) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("controller %s not ready within 10s", c.Name())
	}
}

func mustNew(t *testing.T, o Options) *Controller {
	t.Helper()
	if o.Name == "" {
		o.Name = "widgets"
	}
	if o.BaseDelay == 0 {
		o.BaseDelay = 10 * time.Millisecond
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = time.Second
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = 20 * time.Millisecond
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// metricValue returns the value of a counter or gauge, or a histogram's
// sample count, whose labels include want.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func TestConvergesAndFollowsChanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, p := range []string{"p1", "p2"} {
		for i := range 15 {
			e.create(t, p, fmt.Sprintf("w-%02d", i), i)
		}
	}
	rec := newRecorder(e.cl)
	reg := prometheus.NewPedanticRegistry()
	c := mustNew(t, Options{Source: e.source(), Reconciler: rec, Workers: 4, Registerer: reg})
	start(t, c)
	waitReady(t, c)
	testkit.EventuallyErr(t, 15*time.Second, "the initial widgets to converge", func() error { return e.converged(ctx) })

	// Updates and new objects converge too.
	for i := range 10 {
		e.setReplicas(t, "p1", fmt.Sprintf("w-%02d", i), 50+i)
	}
	for i := range 5 {
		e.create(t, "p2", fmt.Sprintf("new-%d", i), 7)
	}
	testkit.EventuallyErr(t, 15*time.Second, "updates to converge", func() error { return e.converged(ctx) })

	if rec.overlap.Load() {
		t.Fatal("a key was reconciled by two workers at once")
	}
	if n := metricValue(t, reg, "ultracloud_controller_reconciles_total", map[string]string{"controller": "widgets", "result": "success"}); n < 35 {
		t.Fatalf("reconciles_total{result=success} = %v, want at least 35", n)
	}
	if n := metricValue(t, reg, "ultracloud_controller_reconcile_duration_seconds", nil); n < 35 {
		t.Fatalf("reconcile_duration_seconds count = %v, want at least 35", n)
	}
	if n := metricValue(t, reg, "ultracloud_controller_queue_depth", nil); n < 0 {
		t.Fatal("queue_depth not exported")
	}
}

func TestDeletesReachReconciler(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 4 {
		e.create(t, "p", fmt.Sprintf("d-%d", i), 1)
	}
	rec := newRecorder(e.cl)
	c := mustNew(t, Options{Source: e.source(), Reconciler: rec})
	start(t, c)
	testkit.EventuallyErr(t, 10*time.Second, "convergence", func() error { return e.converged(ctx) })
	e.remove(t, "p", "d-1")
	e.remove(t, "p", "d-3")
	for _, name := range []string{"d-1", "d-3"} {
		k := Key{"p", name}
		testkit.EventuallyErr(t, 10*time.Second, "the reconciler to see "+k.String()+" deleted", func() error {
			if rec.deletedOf(k) == 0 {
				return errors.New("not reconciled as deleted yet")
			}
			return nil
		})
	}
	for _, name := range []string{"d-0", "d-2"} {
		if n := rec.deletedOf(Key{"p", name}); n != 0 {
			t.Fatalf("%s reported deleted %d times", name, n)
		}
	}
}

func TestFailuresRetryWithBackoff(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create(t, "p", "flaky", 3)
	e.create(t, "p", "fine", 4)
	const fails = 4
	base := 20 * time.Millisecond
	flaky := Key{"p", "flaky"}
	rec := newRecorder(e.cl)
	rec.failFirst[flaky] = fails
	reg := prometheus.NewRegistry()
	c := mustNew(t, Options{Source: e.source(), Reconciler: rec, BaseDelay: base, MaxDelay: 5 * time.Second, Registerer: reg})
	start(t, c)
	testkit.EventuallyErr(t, 10*time.Second, "convergence despite failures", func() error { return e.converged(ctx) })

	rec.mu.Lock()
	at := append([]time.Time(nil), rec.attempts[flaky]...)
	rec.mu.Unlock()
	if len(at) < fails+1 {
		t.Fatalf("flaky reconciled %d times, want at least %d", len(at), fails+1)
	}
	// Attempt i+1 follows failure i after at least base*2^i.
	for i := range fails {
		gap := at[i+1].Sub(at[i])
		if want := base << i; gap < want {
			t.Fatalf("retry %d came %s after attempt %d, want at least %s (gaps must grow)", i+1, gap, i, want)
		}
	}
	if n := metricValue(t, reg, "ultracloud_controller_reconciles_total", map[string]string{"result": "error"}); n != fails {
		t.Fatalf("reconciles_total{result=error} = %v, want %d", n, fails)
	}
}

// TestNoConcurrentReconcileOfOneKey hammers a few keys with updates while
// several workers reconcile them (the reconciler's own status writes race
// the updates, so conflicts and retries happen too).
func TestNoConcurrentReconcileOfOneKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const keys = 4
	for i := range keys {
		e.create(t, "p", fmt.Sprintf("hot-%d", i), 0)
	}
	rec := newRecorder(e.cl)
	c := mustNew(t, Options{Source: e.source(), Reconciler: rec, Workers: 6})
	start(t, c)
	var wg sync.WaitGroup
	for w := range keys {
		wg.Go(func() {
			for i := 1; i <= 25; i++ {
				spec, _ := json.Marshal(widgetSpec{Replicas: i})
				o := &api.Object{Kind: "Widget", Metadata: api.ObjectMeta{Name: fmt.Sprintf("hot-%d", w)}, Spec: spec}
				if _, err := e.widgets("p").Update(ctx, o); err != nil {
					t.Errorf("updating hot-%d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	testkit.EventuallyErr(t, 15*time.Second, "convergence after the updates", func() error { return e.converged(ctx) })
	if rec.overlap.Load() {
		t.Fatal("a key was reconciled by two workers at once")
	}
}

// TestChangeDuringReconcileIsProcessedAfter holds a reconcile open, changes
// its key meanwhile, and checks the key is reconciled again afterwards by
// one worker at a time, although idle workers were available.
func TestChangeDuringReconcileIsProcessedAfter(t *testing.T) {
	src := newFakeSource([]api.Object{obj("p", "hot", 1)}, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var active atomic.Int32
	var overlap atomic.Bool
	rec := ReconcilerFunc(func(ctx context.Context, k Key) (Result, error) {
		if active.Add(1) > 1 {
			overlap.Store(true)
		}
		defer active.Add(-1)
		if calls.Add(1) == 1 {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return Result{}, nil
	})
	c := mustNew(t, Options{Source: src, Reconciler: rec, Workers: 4})
	start(t, c)
	s := src.nextStream(t)
	<-entered
	s.send(t, api.Event{Type: api.EventModified, Revision: 2, Object: ptr(obj("p", "hot", 2))})
	s.send(t, api.Event{Type: api.EventBookmark, Revision: 2}) // the change above has been queued
	if n := calls.Load(); n != 1 {
		t.Fatalf("key reconciled %d times while its first reconcile was still running", n)
	}
	close(release)
	testkit.EventuallyErr(t, 20*time.Second, "the changed key to be reconciled again", func() error {
		if n := calls.Load(); n < 2 {
			return fmt.Errorf("%d reconciles", n)
		}
		return nil
	})
	if overlap.Load() {
		t.Fatal("a key was reconciled by two workers at once")
	}
}

func TestRestartResumesFromCheckpoint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 8 {
		e.create(t, "p", fmt.Sprintf("w-%d", i), i)
	}
	cpPath := filepath.Join(t.TempDir(), "widgets.checkpoint")
	waitCheckpoint := func(what string) {
		t.Helper()
		testkit.EventuallyErr(t, 10*time.Second, what, func() error {
			want := e.revision(t)
			rev, ok, err := FileCheckpoint(cpPath).Load()
			if err != nil || !ok || rev != want {
				return fmt.Errorf("checkpoint %d (saved %v, err %v), store at %d", rev, ok, err, want)
			}
			return nil
		})
	}

	rec1 := newRecorder(e.cl)
	c1 := mustNew(t, Options{Source: e.source(), Reconciler: rec1, Checkpoint: FileCheckpoint(cpPath)})
	stop1 := start(t, c1)
	testkit.EventuallyErr(t, 10*time.Second, "first run to converge", func() error { return e.converged(ctx) })
	waitCheckpoint("the first run's checkpoint to reach the store revision")
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if rev, _, _ := FileCheckpoint(cpPath).Load(); rev != e.revision(t) {
		t.Fatalf("checkpoint after clean stop = %d, store at %d", rev, e.revision(t))
	}

	// While the controller is down: one update, one create, one delete.
	e.setReplicas(t, "p", "w-3", 33)
	e.create(t, "p", "w-new", 9)
	e.remove(t, "p", "w-5")

	rec2 := newRecorder(e.cl)
	c2 := mustNew(t, Options{Source: e.source(), Reconciler: rec2, Checkpoint: FileCheckpoint(cpPath)})
	start(t, c2)
	waitReady(t, c2)
	testkit.EventuallyErr(t, 10*time.Second, "changes made while down to converge", func() error { return e.converged(ctx) })
	testkit.EventuallyErr(t, 10*time.Second, "the delete made while down to be reconciled", func() error {
		if rec2.deletedOf(Key{"p", "w-5"}) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	waitCheckpoint("the second run's checkpoint to reach the store revision")

	got := rec2.calledKeys()
	want := []Key{{"p", "w-3"}, {"p", "w-5"}, {"p", "w-new"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restart the reconciler saw %v, want only the changed %v (unchanged objects must not be reconciled again)", got, want)
	}
}

func TestCompactedCheckpointFallsBackToList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 6 {
		e.create(t, "p", fmt.Sprintf("w-%d", i), i)
	}
	cpPath := filepath.Join(t.TempDir(), "widgets.checkpoint")
	c1 := mustNew(t, Options{Source: e.source(), Reconciler: newRecorder(e.cl), Checkpoint: FileCheckpoint(cpPath)})
	stop1 := start(t, c1)
	testkit.EventuallyErr(t, 10*time.Second, "first run to converge", func() error { return e.converged(ctx) })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	saved, ok, err := FileCheckpoint(cpPath).Load()
	if err != nil || !ok {
		t.Fatalf("no checkpoint after the first run: %v", err)
	}

	e.setReplicas(t, "p", "w-1", 11)
	e.remove(t, "p", "w-2")
	e.create(t, "p", "w-9", 9)
	if err := e.store.Compact(ctx, e.revision(t)); err != nil {
		t.Fatal(err)
	}
	since := saved
	if _, err := e.widgets("").Watch(ctx, client.WatchOptions{Since: &since}); !client.IsCompacted(err) {
		t.Fatalf("test setup: watch since the checkpoint %d is not compacted: %v", saved, err)
	}

	rec2 := newRecorder(e.cl)
	c2 := mustNew(t, Options{Source: e.source(), Reconciler: rec2, Checkpoint: FileCheckpoint(cpPath)})
	start(t, c2)
	waitReady(t, c2)
	testkit.EventuallyErr(t, 10*time.Second, "convergence after the full relist", func() error { return e.converged(ctx) })
	items, _, err := e.widgets("").ListAll(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range items {
		if rec2.callsOf(KeyOf(&o)) == 0 {
			t.Fatalf("%s was not reconciled: the controller did not fall back to a full list", KeyOf(&o))
		}
	}
	testkit.EventuallyErr(t, 10*time.Second, "a fresh checkpoint past the compaction", func() error {
		rev, _, err := FileCheckpoint(cpPath).Load()
		if err != nil || rev < e.revision(t) {
			return fmt.Errorf("checkpoint %d, store at %d (err %v)", rev, e.revision(t), err)
		}
		return nil
	})
}

// TestCheckpointAheadOfStoreFallsBackToList: a checkpoint beyond the
// store's revision (the store was recreated) makes the watch fail with 400;
// the controller lists instead of retrying it forever.
func TestCheckpointAheadOfStoreFallsBackToList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create(t, "p", "w-0", 2)
	cp := FileCheckpoint(filepath.Join(t.TempDir(), "cp"))
	if err := cp.Save(1000); err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, Options{Source: e.source(), Reconciler: newRecorder(e.cl), Checkpoint: cp})
	start(t, c)
	waitReady(t, c)
	testkit.EventuallyErr(t, 10*time.Second, "convergence after the fallback list", func() error { return e.converged(ctx) })
	testkit.EventuallyErr(t, 10*time.Second, "the checkpoint to follow the store again", func() error {
		rev, _, err := cp.Load()
		if err != nil || rev != e.revision(t) {
			return fmt.Errorf("checkpoint %d, store at %d (err %v)", rev, e.revision(t), err)
		}
		return nil
	})
}

func TestRunReturnsPromptlyOnCancel(t *testing.T) {
	e := newEnv(t)
	e.create(t, "p", "slow", 1)
	entered := make(chan struct{})
	var enterOnce sync.Once
	var returned atomic.Bool
	rec := newRecorder(e.cl)
	rec.hook = func(ctx context.Context, k Key) error {
		if k.Name != "slow" {
			return nil
		}
		enterOnce.Do(func() { close(entered) })
		<-ctx.Done() // a long reconcile that honours its context
		returned.Store(true)
		return ctx.Err()
	}
	c := mustNew(t, Options{Source: e.source(), Reconciler: rec, Checkpoint: FileCheckpoint(filepath.Join(t.TempDir(), "cp"))})
	stop := start(t, c)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("reconcile never started")
	}
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if !returned.Load() {
		t.Fatal("Run returned before the running reconcile finished")
	}
	t.Logf("Run returned %s after cancel", time.Since(began))
}

func TestRequeueAfter(t *testing.T) {
	src := newFakeSource([]api.Object{obj("", "poll", 1)}, 1)
	var calls atomic.Int32
	rec := ReconcilerFunc(func(ctx context.Context, k Key) (Result, error) {
		if calls.Add(1) < 3 {
			return Result{RequeueAfter: 10 * time.Millisecond}, nil
		}
		return Result{}, nil
	})
	c := mustNew(t, Options{Source: src, Reconciler: rec})
	start(t, c)
	testkit.EventuallyErr(t, 20*time.Second, "three reconciles through RequeueAfter", func() error {
		if n := calls.Load(); n < 3 {
			return fmt.Errorf("%d reconciles", n)
		}
		return nil
	})
}

// TestRelistReportsVanishedKeys: when a running watch learns its history is
// compacted, the controller lists again, and keys it saw before that are
// missing from the new list are reconciled as deletions.
func TestRelistReportsVanishedKeys(t *testing.T) {
	src := newFakeSource([]api.Object{obj("p", "a", 1), obj("p", "b", 2)}, 2)
	var mu sync.Mutex
	seen := map[Key]int{}
	r := ReconcilerFunc(func(ctx context.Context, k Key) (Result, error) {
		mu.Lock()
		seen[k]++
		mu.Unlock()
		return Result{}, nil
	})
	count := func(k Key) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[k]
	}
	c := mustNew(t, Options{Source: src, Reconciler: r})
	start(t, c)
	s := src.nextStream(t)
	testkit.EventuallyErr(t, 20*time.Second, "the initial keys", func() error {
		if count(Key{"p", "a"}) == 0 || count(Key{"p", "b"}) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	src.set([]api.Object{obj("p", "a", 1)}, 9) // b vanished while history was lost
	s.end(fmt.Errorf("test: %w", ErrCompacted))
	src.nextStream(t) // the watch after the relist
	if src.lists.Load() != 2 {
		t.Fatalf("%d lists, want 2", src.lists.Load())
	}
	testkit.EventuallyErr(t, 20*time.Second, "the vanished key to be reconciled", func() error {
		if n := count(Key{"p", "b"}); n < 2 {
			return fmt.Errorf("b reconciled %d times", n)
		}
		return nil
	})
}

// TestWatchErrorsRetryWithoutRelist: a refused watch is retried, and a
// watch that ends with an error other than compaction resumes from where it
// got to; neither lists again.
func TestWatchErrorsRetryWithoutRelist(t *testing.T) {
	src := newFakeSource([]api.Object{obj("p", "a", 4)}, 5)
	src.failWatches.Store(2)
	var calls atomic.Int32
	r := ReconcilerFunc(func(context.Context, Key) (Result, error) {
		calls.Add(1)
		return Result{}, nil
	})
	c := mustNew(t, Options{Source: src, Reconciler: r})
	start(t, c)
	s := src.nextStream(t)
	if n := src.watches.Load(); n != 3 || s.since != 5 {
		t.Fatalf("watch %d since %d, want the third attempt since the list's revision 5", n, s.since)
	}
	s.send(t, api.Event{Type: api.EventModified, Revision: 8, Object: ptr(obj("p", "a", 8))})
	s.send(t, api.Event{Type: api.EventBookmark, Revision: 9})
	s.end(errors.New("test: stream broke"))
	s = src.nextStream(t)
	if s.since != 9 {
		t.Fatalf("resumed since %d, want 9 (the last bookmark)", s.since)
	}
	if n := src.lists.Load(); n != 1 {
		t.Fatalf("%d lists, want 1: only compaction may force a relist", n)
	}
	testkit.EventuallyErr(t, 20*time.Second, "both changes of a to be reconciled", func() error {
		if n := calls.Load(); n < 2 {
			return fmt.Errorf("%d reconciles", n)
		}
		return nil
	})
}

func TestPanicIsRetriedAsFailure(t *testing.T) {
	src := newFakeSource([]api.Object{obj("p", "boom", 1)}, 1)
	var calls atomic.Int32
	r := ReconcilerFunc(func(context.Context, Key) (Result, error) {
		if calls.Add(1) == 1 {
			panic("test: reconciler bug")
		}
		return Result{}, nil
	})
	reg := prometheus.NewRegistry()
	c := mustNew(t, Options{Source: src, Reconciler: r, Registerer: reg})
	start(t, c)
	testkit.EventuallyErr(t, 20*time.Second, "the retry after the panic to succeed", func() error {
		if n := metricValue(t, reg, "ultracloud_controller_reconciles_total", map[string]string{"result": "success"}); n != 1 {
			return fmt.Errorf("%v successes", n)
		}
		return nil
	})
	if n := metricValue(t, reg, "ultracloud_controller_reconciles_total", map[string]string{"result": "error"}); n != 1 {
		t.Fatalf("%v errors, want the panic counted once", n)
	}
}

func TestRunTwiceFails(t *testing.T) {
	c := mustNew(t, Options{Source: newFakeSource(nil, 1), Reconciler: ReconcilerFunc(func(context.Context, Key) (Result, error) { return Result{}, nil })})
	stop := start(t, c)
	waitReady(t, c)
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("a second Run succeeded")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	src := newFakeSource(nil, 1)
	r := ReconcilerFunc(func(context.Context, Key) (Result, error) { return Result{}, nil })
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Source: src, Reconciler: r}, "Name"},
		{Options{Name: "x", Reconciler: r}, "Source"},
		{Options{Name: "x", Source: src}, "Reconciler"},
		{Options{Name: "x", Source: src, Reconciler: r, Workers: -1}, "Workers"},
		{Options{Name: "x", Source: src, Reconciler: r, BaseDelay: time.Second, MaxDelay: time.Millisecond}, "MaxDelay"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.o, err, tc.want)
		}
	}
	c, err := New(Options{Name: "x", Source: src, Reconciler: r})
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Workers != DefaultWorkers || c.opts.BaseDelay != DefaultBaseDelay || c.opts.MaxDelay != DefaultMaxDelay {
		t.Fatalf("defaults not applied: %+v", c.opts)
	}
}

// fakeSource is a scripted Source: List returns what set stored; each Watch
// returns a stream the test feeds through nextStream.
type fakeSource struct {
	mu    sync.Mutex
	items []api.Object
	rev   int64

	lists   atomic.Int32
	watches atomic.Int32
	// failWatches is how many Watch calls fail before one succeeds.
	failWatches atomic.Int32
	streams     chan *fakeStream
}

func newFakeSource(items []api.Object, rev int64) *fakeSource {
	return &fakeSource{items: items, rev: rev, streams: make(chan *fakeStream, 16)}
}

func (f *fakeSource) set(items []api.Object, rev int64) {
	f.mu.Lock()
	f.items, f.rev = items, rev
	f.mu.Unlock()
}

func (f *fakeSource) List(ctx context.Context) ([]api.Object, int64, error) {
	f.lists.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Object(nil), f.items...), f.rev, nil
}

func (f *fakeSource) Watch(ctx context.Context, since int64) (Stream, error) {
	f.watches.Add(1)
	if f.failWatches.Add(-1) >= 0 {
		return nil, errors.New("test: watch refused")
	}
	s := &fakeStream{ch: make(chan api.Event), since: since, ctx: ctx}
	f.streams <- s
	return s, nil
}

func (f *fakeSource) nextStream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the controller did not start a watch")
		return nil
	}
}

type fakeStream struct {
	ch    chan api.Event
	since int64
	ctx   context.Context
	err   error
}

func (s *fakeStream) Events() <-chan api.Event { return s.ch }
func (s *fakeStream) Err() error               { return s.err }
func (s *fakeStream) Stop()                    {}

// send delivers ev; when it returns the controller has received it.
func (s *fakeStream) send(t *testing.T, ev api.Event) {
	t.Helper()
	select {
	case s.ch <- ev:
	case <-time.After(5 * time.Second):
		t.Fatal("the controller did not take the event")
	}
}

// end closes the stream with err.
func (s *fakeStream) end(err error) {
	s.err = err
	close(s.ch)
}

func obj(project, name string, rev int64) api.Object {
	return api.Object{Kind: "Widget", Metadata: api.ObjectMeta{Project: project, Name: name, Revision: rev}}
}

func ptr[T any](v T) *T { return &v }

// hinted records the hints a HintedReconciler receives; it fails the first
// call for each key so the retry's (absent) hint is visible too.
type hinted struct {
	mu     sync.Mutex
	calls  map[Key][]string // "hint:<size>", "deleted", "nohint"
	failed map[Key]bool
}

func (h *hinted) Reconcile(ctx context.Context, k Key) (Result, error) {
	return h.ReconcileHinted(ctx, k, Hint{}, false)
}

func (h *hinted) ReconcileHinted(_ context.Context, k Key, hint Hint, ok bool) (Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !ok:
		h.calls[k] = append(h.calls[k], "nohint")
	case hint.Object == nil:
		h.calls[k] = append(h.calls[k], "deleted")
	default:
		var s widgetSpec
		_ = json.Unmarshal(hint.Object.Spec, &s)
		h.calls[k] = append(h.calls[k], fmt.Sprintf("hint:%d", s.Replicas))
	}
	if !h.failed[k] {
		h.failed[k] = true
		return Result{}, errors.New("first attempt fails")
	}
	return Result{}, nil
}

func (h *hinted) of(k Key) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.calls[k], ",")
}

func TestHintsCarryEventState(t *testing.T) {
	e := newEnv(t)
	h := &hinted{calls: map[Key][]string{}, failed: map[Key]bool{}}
	c := mustNew(t, Options{Source: e.source(), Reconciler: h, BaseDelay: time.Millisecond})
	start(t, c)
	waitReady(t, c)
	k := Key{"p", "h1"}
	e.create(t, "p", "h1", 7)
	testkit.EventuallyErr(t, 10*time.Second, "hinted reconcile and its retry", func() error {
		if got := h.of(k); got != "hint:7,nohint" {
			return fmt.Errorf("calls %q", got)
		}
		return nil
	})
	e.remove(t, "p", "h1")
	testkit.EventuallyErr(t, 10*time.Second, "deletion hint", func() error {
		if got := h.of(k); got != "hint:7,nohint,deleted" {
			return fmt.Errorf("calls %q", got)
		}
		return nil
	})
}
