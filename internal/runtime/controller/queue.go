package controller

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// entryState is where a key is in the queue.
type entryState uint8

const (
	stateQueued     entryState = iota + 1 // in ready, waiting for a worker
	stateProcessing                       // a worker is reconciling it
	stateWaiting                          // scheduled for later (retry or RequeueAfter)
)

// entry is the queue's record of a key with work outstanding. Keys without
// outstanding work have no entry.
type entry struct {
	state entryState
	// dirty: the key changed while it was being reconciled.
	dirty bool
	// rev is the revision of the earliest change not yet picked up by a
	// reconcile (0: none); inflight is the one the running reconcile covers.
	rev, inflight int64
	// failures counts consecutive failed reconciles.
	failures int
	// slot identifies the entry's current timer in the heap while waiting.
	slot uint64
}

// queue is the controller's work queue: deduplicating, never handing a key
// to two workers at once, with per-key exponential backoff, an overall retry
// rate limit, and the revision bookkeeping checkpoints need.
type queue struct {
	base, max time.Duration
	limiter   *rate.Limiter
	now       func() time.Time
	depth     func(int) // reports the number of ready keys (metrics)

	wake chan struct{} // pokes runTimers when a timer is added

	mu      sync.Mutex
	cond    *sync.Cond // signalled when ready grows or the queue closes
	entries map[Key]*entry
	ready   []Key
	timers  timerHeap
	slots   uint64
	// complete is the highest revision through which every change has been
	// delivered to the queue; -1 until the first list or resume.
	complete int64
	closed   bool
}

func newQueue(base, maxDelay time.Duration, limiter *rate.Limiter, depth func(int)) *queue {
	q := &queue{
		base: base, max: maxDelay, limiter: limiter, now: time.Now, depth: depth,
		wake:     make(chan struct{}, 1),
		entries:  map[Key]*entry{},
		complete: -1,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// backoff is the retry delay after failures earlier failures:
// base*2^failures, capped at max.
func backoff(base, maxDelay time.Duration, failures int) time.Duration {
	d := base
	for i := 0; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// add records a change to k at revision rev (0: no revision, e.g. a
// deletion found by a relist with unknown revision) and queues k unless it is
// queued already; a key being reconciled is marked dirty instead.
func (q *queue) add(k Key, rev int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[k]
	if e == nil {
		e = &entry{}
		q.entries[k] = e
	}
	if rev > 0 && (e.rev == 0 || rev < e.rev) {
		e.rev = rev
	}
	switch e.state {
	case stateQueued:
	case stateProcessing:
		e.dirty = true
	default: // new, or waiting for a timer: a change goes ahead at once
		q.pushLocked(k, e)
	}
}

// observe records that every change up to rev has been delivered.
func (q *queue) observe(rev int64) {
	q.mu.Lock()
	q.complete = max(q.complete, rev)
	q.mu.Unlock()
}

// pushLocked appends k to ready.
func (q *queue) pushLocked(k Key, e *entry) {
	e.state = stateQueued
	e.slot = 0
	q.ready = append(q.ready, k)
	q.depth(len(q.ready))
	q.cond.Signal()
}

// get blocks until a key is ready and hands it to the caller, who must call
// done for it. ok is false once the queue is closed.
func (q *queue) get() (k Key, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return Key{}, false
	}
	k = q.ready[0]
	q.ready[0] = Key{}
	q.ready = q.ready[1:]
	q.depth(len(q.ready))
	e := q.entries[k]
	e.state = stateProcessing
	e.dirty = false
	e.inflight, e.rev = e.rev, 0
	return k, true
}

// succeeded ends k's reconcile: its backoff resets, and it is queued again
// if it changed meanwhile, scheduled if after > 0, or forgotten.
func (q *queue) succeeded(k Key, after time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[k]
	e.failures = 0
	e.inflight = 0
	switch {
	case e.dirty:
		q.pushLocked(k, e)
	case after > 0:
		q.scheduleLocked(k, e, after)
	default:
		delete(q.entries, k)
	}
}

// failed ends k's failed reconcile: the changes it covered stay outstanding
// and k is retried after its backoff (or at once if it changed meanwhile).
// It returns the retry delay and the number of consecutive failures.
func (q *queue) failed(k Key) (time.Duration, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[k]
	if e.inflight > 0 && (e.rev == 0 || e.inflight < e.rev) {
		e.rev = e.inflight
	}
	e.inflight = 0
	delay := backoff(q.base, q.max, e.failures)
	e.failures++
	if r := q.limiter.Reserve(); r.OK() {
		delay = max(delay, r.Delay())
	}
	if e.dirty {
		q.pushLocked(k, e)
		return 0, e.failures
	}
	q.scheduleLocked(k, e, delay)
	return delay, e.failures
}

func (q *queue) scheduleLocked(k Key, e *entry, after time.Duration) {
	q.slots++
	e.state = stateWaiting
	e.slot = q.slots
	heap.Push(&q.timers, timer{due: q.now().Add(after), key: k, slot: e.slot})
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// promoteDue moves every waiting key whose time has come to ready and
// returns when the next one is due (ok false if none waits).
func (q *queue) promoteDue() (next time.Time, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for len(q.timers) > 0 {
		t := q.timers[0]
		e := q.entries[t.key]
		if e == nil || e.state != stateWaiting || e.slot != t.slot {
			heap.Pop(&q.timers) // stale: the key moved on
			continue
		}
		if t.due.After(now) {
			return t.due, true
		}
		heap.Pop(&q.timers)
		q.pushLocked(t.key, e)
	}
	return time.Time{}, false
}

// runTimers promotes waiting keys when they are due, until ctx ends.
func (q *queue) runTimers(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next, ok := q.promoteDue()
		var fire <-chan time.Time
		if ok {
			t.Reset(time.Until(next))
			fire = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-fire:
		}
	}
}

// close wakes every worker blocked in get and makes get return false.
// Keys still queued stay outstanding for the checkpoint.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// checkpoint returns the revision through which every change has been
// reconciled successfully, or -1 before the first list or resume.
func (q *queue) checkpoint() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	cp := q.complete
	if cp < 0 {
		return -1
	}
	for _, e := range q.entries {
		for _, r := range [2]int64{e.rev, e.inflight} {
			if r > 0 && r-1 < cp {
				cp = r - 1
			}
		}
	}
	return cp
}

// completeRev returns the revision through which the stream was delivered.
func (q *queue) completeRev() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.complete
}

// timer is one scheduled promotion; slot tells a live timer from a stale one.
type timer struct {
	due  time.Time
	key  Key
	slot uint64
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
