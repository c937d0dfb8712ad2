package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Key names one object of the collection. Project is empty for
// cluster-scoped kinds.
type Key struct {
	Project string
	Name    string
}

// KeyOf returns the key of o.
func KeyOf(o *api.Object) Key { return Key{Project: o.Metadata.Project, Name: o.Metadata.Name} }

// String returns "project/name", or the name for cluster-scoped kinds.
func (k Key) String() string {
	if k.Project == "" {
		return k.Name
	}
	return k.Project + "/" + k.Name
}

// Result tells the controller what to do after a successful reconcile.
type Result struct {
	// RequeueAfter, when > 0, reconciles the key again after this long even
	// if nothing changes (e.g. to poll something outside the API).
	RequeueAfter time.Duration
}

// Reconciler makes the world match the current state of one object. It
// reads that state itself (the object may have changed again, or be gone:
// then it cleans up). It must be idempotent. An error retries the key with
// backoff; a panic counts as an error.
type Reconciler interface {
	Reconcile(ctx context.Context, key Key) (Result, error)
}

// Hint is the newest state of an object the controller saw in the event (or
// list) that queued its key. Object is nil when the object was deleted.
type Hint struct {
	Object *api.Object
}

// HintedReconciler is a Reconciler that can use the state carried by the
// event that queued a key, to skip a read of the API when that state already
// shows nothing to do. The hint is at least as new as the change that queued
// the key, but may be older than the stored object by the time Reconcile
// runs; a reconciler that writes must use its revision so a stale hint fails
// with a conflict (the key is then retried without a hint). ok is false when
// there is no hint, e.g. on a retry after a failure.
type HintedReconciler interface {
	Reconciler
	ReconcileHinted(ctx context.Context, key Key, hint Hint, ok bool) (Result, error)
}

// ReconcilerFunc adapts a function to Reconciler.
type ReconcilerFunc func(ctx context.Context, key Key) (Result, error)

// Reconcile implements Reconciler.
func (f ReconcilerFunc) Reconcile(ctx context.Context, key Key) (Result, error) { return f(ctx, key) }

// Defaults for Options fields left zero.
const (
	DefaultWorkers            = 2
	DefaultBaseDelay          = 50 * time.Millisecond
	DefaultMaxDelay           = 30 * time.Second
	DefaultQPS                = 10
	DefaultBurst              = 100
	DefaultCheckpointInterval = time.Second
)

// Options configure a Controller.
type Options struct {
	// Name identifies the controller in logs, metrics and component status
	// (e.g. "prismnet-ports"). Required.
	Name string
	// Source is the collection to follow. Required.
	Source Source
	// Reconciler is called for every changed key. Required.
	Reconciler Reconciler
	// Workers is how many keys are reconciled in parallel (default 2).
	Workers int
	// BaseDelay is the first retry delay of a failing key; each further
	// failure doubles it up to MaxDelay (defaults 50ms and 30s). List and
	// watch failures back off the same way.
	BaseDelay, MaxDelay time.Duration
	// QPS and Burst bound how fast failed keys are retried, across all keys
	// (defaults 10 and 100; float64(rate.Inf) means no limit). Reconciles
	// of new changes are not throttled, only retries of failures.
	QPS   float64
	Burst int
	// Checkpoint keeps the reconciled-through revision across restarts. Nil
	// means no checkpoint: every start lists everything.
	Checkpoint CheckpointStore
	// CheckpointInterval is how often a changed checkpoint is saved
	// (default 1s). It is also saved on clean shutdown.
	CheckpointInterval time.Duration
	// Logger receives the controller's logs; discarded if nil.
	Logger *slog.Logger
	// Registerer, if set, gets the controller's metrics while Run runs.
	Registerer prometheus.Registerer
	// Singleton, if set, makes the controller run on one instance in the
	// cluster at a time (see "Singleton mode" in the package doc). A
	// singleton lists everything whenever it gains leadership, so it takes
	// no Checkpoint.
	Singleton *Singleton
}

// Singleton is the cluster-wide election a singleton controller runs under.
type Singleton struct {
	// Elector is the election every instance of this controller campaigns
	// in: a *coord.Election named after the controller, with the same name
	// and TTL on every node. Required.
	Elector coord.Elector
	// Identity is the value this instance campaigns with (its node name);
	// coord.Election.Leader reports the leader's. Required.
	Identity string
}

// Controller follows a Source and reconciles every key that changes. Build
// it with New and run it once with Run.
type Controller struct {
	component.Readiness
	opts    Options
	log     *slog.Logger
	started atomic.Bool
	// leading is true while this instance holds leadership and may run
	// reconciles (always false without Options.Singleton).
	leading atomic.Bool

	// hints holds, for queued keys only, the state seen when they were
	// queued; a worker takes a key's hint when it dequeues the key.
	hintMu sync.Mutex
	hints  map[Key]Hint
}

func (c *Controller) setHint(k Key, h Hint) {
	if _, ok := c.opts.Reconciler.(HintedReconciler); !ok {
		return
	}
	c.hintMu.Lock()
	c.hints[k] = h
	c.hintMu.Unlock()
}

func (c *Controller) takeHint(k Key) (Hint, bool) {
	c.hintMu.Lock()
	defer c.hintMu.Unlock()
	h, ok := c.hints[k]
	delete(c.hints, k)
	return h, ok
}

var _ component.Component = (*Controller)(nil)

// New checks o, fills in defaults and returns a controller. It has no side
// effects; Run does the work.
func New(o Options) (*Controller, error) {
	switch {
	case o.Name == "":
		return nil, errors.New("controller: Options.Name is empty: name the controller (it labels logs and metrics)")
	case o.Source == nil:
		return nil, fmt.Errorf("controller %s: Options.Source is nil: pass the collection to follow (e.g. controller.FromClient)", o.Name)
	case o.Reconciler == nil:
		return nil, fmt.Errorf("controller %s: Options.Reconciler is nil", o.Name)
	case o.Workers < 0:
		return nil, fmt.Errorf("controller %s: Options.Workers is %d: use a positive number (0 means %d)", o.Name, o.Workers, DefaultWorkers)
	}
	if s := o.Singleton; s != nil {
		switch {
		case s.Elector == nil:
			return nil, fmt.Errorf("controller %s: Options.Singleton.Elector is nil: pass the election the instances campaign in (e.g. a coord.Election)", o.Name)
		case s.Identity == "":
			return nil, fmt.Errorf("controller %s: Options.Singleton.Identity is empty: name this instance (e.g. the node name)", o.Name)
		case o.Checkpoint != nil:
			return nil, fmt.Errorf("controller %s: Options.Checkpoint is set on a singleton: a singleton lists everything when it gains leadership, and a checkpoint kept on one node would be stale or missing on the next leader; leave Checkpoint nil", o.Name)
		}
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = DefaultBaseDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxDelay < o.BaseDelay {
		return nil, fmt.Errorf("controller %s: Options.MaxDelay %s is below BaseDelay %s", o.Name, o.MaxDelay, o.BaseDelay)
	}
	if o.QPS <= 0 {
		o.QPS = DefaultQPS
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{opts: o, log: o.Logger.With("controller", o.Name), hints: map[Key]Hint{}}, nil
}

// Name implements component.Component.
func (c *Controller) Name() string { return c.opts.Name }

// Run follows the source and reconciles until ctx ends. It becomes ready
// once the initial list (or the resume from the checkpoint) has been queued;
// a singleton becomes ready at once, leading or standing by (see the
// package doc). After ctx ends it waits for running reconciles to return
// (they see ctx cancelled), saves the checkpoint, gives up leadership if it
// held it, and returns nil. Run may be called once.
func (c *Controller) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return fmt.Errorf("controller %s: Run called twice", c.opts.Name)
	}
	m := newMetrics(c.opts.Name, c.opts.Registerer, c.opts.Singleton != nil)
	if err := m.register(); err != nil {
		return err
	}
	defer m.unregister()
	if c.opts.Singleton != nil {
		c.runSingleton(ctx, m)
		return nil
	}
	c.runTerm(ctx, m)
	return nil
}

// Leading reports whether this instance currently leads and may reconcile.
// It is always false without Options.Singleton. It turns true before the
// first reconcile of a term, and false only after the term's reconciles
// have returned.
func (c *Controller) Leading() bool { return c.leading.Load() }

// resignTimeout bounds giving leadership up after a term.
const resignTimeout = 5 * time.Second

// runSingleton campaigns, runs a term (runTerm) while it leads, and
// campaigns again after losing leadership, until ctx ends.
func (c *Controller) runSingleton(ctx context.Context, m *metrics) {
	s := c.opts.Singleton
	c.MarkReady()
	// Leadership is campaigned for under electCtx, which ends with ctx only
	// while campaigning: a lease granted under ctx itself would be revoked
	// by its keeper the moment ctx ends, handing leadership on while this
	// instance's reconciles may still run. While leading, the end of ctx
	// stops the term; the term's reconciles return; then lead resigns.
	electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElect()
	failures := 0
	for ctx.Err() == nil {
		stop := context.AfterFunc(ctx, cancelElect)
		c.log.Info("campaigning for leadership", "identity", s.Identity)
		lead, err := s.Elector.Campaign(electCtx, s.Identity)
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			delay := backoff(c.opts.BaseDelay, c.opts.MaxDelay, failures-1)
			c.log.Warn("campaign failed; retrying", "err", err, "failures", failures, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		failures = 0
		c.lead(ctx, lead, m)
	}
}

// leadershipKey carries the term's Leadership in the reconcile context.
type leadershipKey struct{}

// LeadershipOf returns the leadership a singleton controller's reconcile
// runs under, for writes that carry a fencing token (Revision) or
// comparison (IsLeaderCmp). ok is false outside a singleton's reconcile.
func LeadershipOf(ctx context.Context) (l coord.Leadership, ok bool) {
	l, ok = ctx.Value(leadershipKey{}).(coord.Leadership)
	return l, ok
}

// lead runs one term under lead until leadership is lost or ctx ends, then
// resigns. Leading is true exactly while the term's workers may run.
//
// No key is reconciled by two instances at once: the term's context is
// the leadership's (plus ctx), which coord ends at least its safety margin
// (a fifth of the TTL, >= 500ms) before the server could expire the lease
// and let another instance be elected (coord's Lease.keep gives the
// argument); runTerm returns only after every running reconcile has
// returned, and only then does Leading turn false and the lease get
// revoked. Reconcilers must therefore return promptly once their context
// ends, well within that margin; one that does not can overlap with the
// next leader, which is what fencing (LeadershipOf) is for.
func (c *Controller) lead(ctx context.Context, lead coord.Leadership, m *metrics) {
	term, cancel := context.WithCancel(context.WithValue(lead.Context(), leadershipKey{}, lead))
	stop := context.AfterFunc(ctx, cancel)
	c.leading.Store(true)
	m.setLeader(true)
	c.log.Info("leading; listing everything", "term", lead.Revision())
	began := time.Now()
	c.runTerm(term, m)
	// Every reconcile of the term has returned.
	c.leading.Store(false)
	m.setLeader(false)
	stop()
	cancel()
	lost := lead.Context().Err() != nil && ctx.Err() == nil
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
	defer rcancel()
	rerr := lead.Resign(rctx)
	switch {
	case lost:
		c.log.Warn("leadership lost; workers stopped", "term", lead.Revision(), "led_for", time.Since(began), "cause", context.Cause(lead.Context()))
	case rerr != nil:
		c.log.Warn("resigning leadership failed; the lease expires by itself", "term", lead.Revision(), "err", rerr)
	default:
		c.log.Info("resigned leadership", "term", lead.Revision(), "led_for", time.Since(began))
	}
}

// runTerm follows the source and reconciles until ctx ends, then waits for
// the workers and saves the checkpoint: the whole of an ordinary
// controller's Run, and one leadership term of a singleton's.
func (c *Controller) runTerm(ctx context.Context, m *metrics) {
	c.hintMu.Lock()
	clear(c.hints) // a previous term's leftovers
	c.hintMu.Unlock()

	since, resume := int64(0), false
	if c.opts.Checkpoint != nil {
		rev, ok, err := c.opts.Checkpoint.Load()
		switch {
		case err != nil:
			c.log.Warn("checkpoint unreadable; listing everything", "err", err)
		case ok:
			since, resume = rev, true
		}
	}
	c.log.Info("controller starting", "resume", resume, "since", since, "workers", c.opts.Workers)

	q := newQueue(c.opts.BaseDelay, c.opts.MaxDelay, rate.NewLimiter(rate.Limit(c.opts.QPS), c.opts.Burst),
		func(n int) { m.depth.Set(float64(n)) })
	saved := int64(-1)
	if resume {
		saved = since
	}
	var saveFailing bool

	var wg sync.WaitGroup
	wg.Go(func() { q.runTimers(ctx) })
	for range c.opts.Workers {
		wg.Go(func() { c.work(ctx, q, m) })
	}
	wg.Go(func() { c.follow(ctx, q, since, resume) })
	wg.Go(func() {
		t := time.NewTicker(c.opts.CheckpointInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				c.saveCheckpoint(q, m, &saved, &saveFailing)
			}
		}
	})

	<-ctx.Done()
	q.close()
	wg.Wait()
	c.saveCheckpoint(q, m, &saved, &saveFailing)
	c.log.Info("controller stopped", "checkpoint", saved)
}

// saveCheckpoint saves the checkpoint if it changed since *saved. Failures
// are logged once until a save succeeds again.
func (c *Controller) saveCheckpoint(q *queue, m *metrics, saved *int64, failing *bool) {
	cp := q.checkpoint()
	if cp < 0 || cp == *saved {
		return
	}
	m.checkpoint.Set(float64(cp))
	if c.opts.Checkpoint != nil {
		if err := c.opts.Checkpoint.Save(cp); err != nil {
			if !*failing {
				c.log.Warn("saving checkpoint failed", "revision", cp, "err", err)
			}
			*failing = true
			return
		}
		if *failing {
			c.log.Info("saving checkpoint works again", "revision", cp)
		}
		*failing = false
	}
	*saved = cp
}

// follow lists (unless resuming) and watches the source, feeding the queue,
// until ctx ends. since/resume come from the checkpoint.
func (c *Controller) follow(ctx context.Context, q *queue, since int64, resume bool) {
	// known holds the keys seen alive, so a relist can report the ones that
	// vanished while history was lost.
	known := map[Key]struct{}{}
	failures := 0
	pause := func() bool {
		t := time.NewTimer(backoff(c.opts.BaseDelay, c.opts.MaxDelay, failures))
		defer t.Stop()
		failures++
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		if !resume {
			items, rev, err := c.opts.Source.List(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Warn("list failed; retrying", "err", err, "failures", failures+1)
				if !pause() {
					return
				}
				continue
			}
			prev := q.completeRev()
			alive := make(map[Key]struct{}, len(items))
			for i := range items {
				k := KeyOf(&items[i])
				alive[k] = struct{}{}
				c.setHint(k, Hint{Object: &items[i]})
				q.add(k, max(items[i].Metadata.Revision, 1))
			}
			for k := range known {
				if _, ok := alive[k]; !ok {
					c.setHint(k, Hint{})
					q.add(k, prev+1) // deleted at some revision after prev
				}
			}
			known = alive
			q.observe(rev)
			since, resume = rev, true
			c.log.Info("listed collection", "items", len(items), "revision", rev)
			c.MarkReady()
		}

		w, err := c.opts.Source.Watch(ctx, since)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isCompacted(err) {
				c.log.Info("history compacted; listing everything", "since", since)
				resume = false
				continue
			}
			if client.HasCode(err, api.CodeBadRequest) {
				// E.g. a checkpoint beyond the store's revision (the store
				// was recreated): retrying the same revision cannot help.
				c.log.Warn("watch refused the revision; listing everything", "since", since, "err", err)
				resume = false
				if !pause() {
					return
				}
				continue
			}
			c.log.Warn("watch failed; retrying", "since", since, "err", err, "failures", failures+1)
			if !pause() {
				return
			}
			continue
		}
		q.observe(since)
		c.MarkReady()
		began := time.Now()
		changes, err := c.consume(ctx, w, q, known)
		if ctx.Err() != nil {
			return
		}
		if changes > 0 || time.Since(began) >= c.opts.MaxDelay {
			failures = 0 // the watch worked for a while: start backing off afresh
		}
		since = q.completeRev()
		if isCompacted(err) {
			c.log.Info("history compacted; listing everything", "since", since)
			resume = false
			continue
		}
		c.log.Warn("watch ended; resuming", "since", since, "err", err, "failures", failures+1)
		if !pause() {
			return
		}
	}
}

// consume feeds w's events to the queue until w ends or ctx ends, and
// returns the number of changes seen and why w ended.
func (c *Controller) consume(ctx context.Context, w Stream, q *queue, known map[Key]struct{}) (int, error) {
	defer w.Stop()
	changes := 0
	for {
		select {
		case <-ctx.Done():
			return changes, nil
		case ev, ok := <-w.Events():
			if !ok {
				return changes, w.Err()
			}
			switch ev.Type {
			case api.EventBookmark:
				q.observe(ev.Revision)
			case api.EventAdded, api.EventModified, api.EventDeleted:
				if ev.Object == nil {
					continue
				}
				k := KeyOf(ev.Object)
				if ev.Type == api.EventDeleted {
					delete(known, k)
					c.setHint(k, Hint{})
				} else {
					known[k] = struct{}{}
					c.setHint(k, Hint{Object: ev.Object})
				}
				changes++
				q.add(k, ev.Revision)
				// The resource API changes one object per revision, so an
				// event completes its revision (see the package doc).
				q.observe(ev.Revision)
			case api.EventError:
				// The SDK reports these through Err; other sources may not.
				if ev.Error != nil {
					return changes, fmt.Errorf("controller: watch: %w", ev.Error)
				}
				return changes, errors.New("controller: watch ended with an error event")
			}
		}
	}
}

// work reconciles keys until the queue closes.
func (c *Controller) work(ctx context.Context, q *queue, m *metrics) {
	for {
		k, ok := q.get()
		if !ok {
			return
		}
		start := time.Now()
		res, err := c.reconcile(ctx, k)
		m.duration.Observe(time.Since(start).Seconds())
		if err != nil {
			m.reconciles.WithLabelValues(resultError).Inc()
			delay, n := q.failed(k)
			if ctx.Err() == nil {
				c.log.Warn("reconcile failed", "key", k.String(), "err", err, "failures", n, "retry_in", delay)
			}
			continue
		}
		if res.RequeueAfter > 0 {
			m.reconciles.WithLabelValues(resultRequeue).Inc()
		} else {
			m.reconciles.WithLabelValues(resultSuccess).Inc()
		}
		q.succeeded(k, res.RequeueAfter)
	}
}

// reconcile calls the reconciler, turning a panic into an error.
func (c *Controller) reconcile(ctx context.Context, k Key) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("controller %s: reconcile of %s panicked: %v\n%s", c.opts.Name, k, p, debug.Stack())
		}
	}()
	hint, ok := c.takeHint(k)
	if hr, isHinted := c.opts.Reconciler.(HintedReconciler); isHinted {
		return hr.ReconcileHinted(ctx, k, hint, ok)
	}
	return c.opts.Reconciler.Reconcile(ctx, k)
}
