package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// revokeTimeout bounds the best-effort revoke when a lease ends.
const revokeTimeout = 3 * time.Second

// MinTTL is the shortest lease TTL accepted. clientv3 renews a lease every
// TTL/3, checked on a 500ms tick, and the holder gives up a safety margin
// before the TTL runs out; below 2s a healthy holder could drop its lease.
const MinTTL = 2 * time.Second

// Lease is a chainfire lease kept alive by one background goroutine until
// it is released, lost, or the context it was granted with ends. Keys put
// with its ID disappear when it ends.
type Lease struct {
	cli *clientv3.Client
	log *slog.Logger
	id  clientv3.LeaseID
	ttl time.Duration

	ctx    context.Context // cancelled when the lease ends, with the reason as cause
	cancel context.CancelCauseFunc
	// kaCtx scopes the keepalive stream and key watch; only the keeper
	// cancels it, after ctx ends.
	kaCtx    context.Context
	kaCancel context.CancelFunc
	// sent is when the grant request was sent: the start of the first
	// trusted period (see keep).
	sent time.Time
	// renewals carries the outcome of each keepalive the renewer sends.
	renewals chan renewal

	guardMu sync.Mutex
	guard   *heldKey      // key whose deletion ends the lease (leadership, lock)
	guardCh chan struct{} // closed when guard is set

	done      chan struct{} // closed when the keeper has stopped
	revokeErr error         // set by the keeper before done closes
}

// renewal is the outcome of one keepalive request sent at sent.
type renewal struct {
	sent time.Time
	ttl  time.Duration // the TTL the server renewed the lease to
	err  error
}

// heldKey is a key this lease holds, identified by its creation revision.
type heldKey struct {
	key       string
	createRev int64
}

// Grant creates a lease with (at least) ttl and keeps it alive until
// Release, loss, or the end of ctx. The server may grant a longer TTL than
// asked (its minimum is 1.5 election timeouts); TTL reports the granted one.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (*Lease, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL {
		return nil, fmt.Errorf("%w: lease TTL %s is below the minimum %s", ErrInvalid, ttl, MinTTL)
	}
	secs := int64(math.Ceil(ttl.Seconds()))
	// The server starts the lease's TTL when it applies the grant, which is
	// after this moment: trusting the lease for TTL - margin from here
	// ends the trust before the server can expire it (see keep).
	sent := time.Now()
	resp, err := c.cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("coord: granting a %ds lease: %w", secs, err)
	}
	l := &Lease{
		cli:      c.cli,
		log:      c.log.With("lease", fmt.Sprintf("%x", int64(resp.ID))),
		id:       resp.ID,
		ttl:      time.Duration(resp.TTL) * time.Second,
		sent:     sent,
		renewals: make(chan renewal),
		guardCh:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.kaCtx, l.kaCancel = context.WithCancel(context.WithoutCancel(ctx))
	go l.keep()
	return l, nil
}

// ID is the lease ID, for keys put under the lease.
func (l *Lease) ID() clientv3.LeaseID { return l.id }

// TTL is the granted TTL.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Context is cancelled when the lease ends; context.Cause tells why.
func (l *Lease) Context() context.Context { return l.ctx }

// Err is nil while the lease is alive, then why it ended (wrapping
// ErrLeaseLost, ErrKeyLost, ErrReleased, or the creating context's error).
func (l *Lease) Err() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// Release ends the lease: it stops the keepalive, revokes the lease
// (deleting its keys) and waits for the keeper to stop, or for ctx. It
// returns the revoke's error, if any; releasing an already lost lease
// returns nil.
func (l *Lease) Release(ctx context.Context) error {
	l.cancel(ErrReleased)
	select {
	case <-l.done:
		return l.revokeErr
	case <-ctx.Done():
		return fmt.Errorf("coord: releasing lease %x: %w", int64(l.id), ctx.Err())
	}
}

// Done is closed once the keeper goroutine has stopped (after the lease
// ended and its revoke was attempted).
func (l *Lease) Done() <-chan struct{} { return l.done }

// lose ends the lease with cause.
func (l *Lease) lose(cause error) {
	if l.ctx.Err() == nil {
		l.log.Warn("lease lost", "err", cause)
	}
	l.cancel(cause)
}

// setGuard makes the lease end when key (created at createRev) is deleted
// or replaced. It may be called once.
func (l *Lease) setGuard(key string, createRev int64) {
	l.guardMu.Lock()
	defer l.guardMu.Unlock()
	if l.guard != nil {
		return
	}
	l.guard = &heldKey{key: key, createRev: createRev}
	close(l.guardCh)
}

// safetyMargin is how much earlier than the server could expire the lease
// the holder gives up when keepalives go unanswered: a fifth of the TTL,
// at least 500ms. It covers the difference between the holder's and the
// server's clock rates, timer and scheduling delays of the holder, and the
// time the holder's users take to stop acting once Context ends (a
// singleton controller's running reconciles).
func (l *Lease) safetyMargin() time.Duration {
	return max(l.ttl/5, 500*time.Millisecond)
}

// renewRetry is how soon a failed keepalive is retried.
const renewRetry = 200 * time.Millisecond

// keep is the lease's keeper goroutine: it runs the renewer (renew), and
// watches the renewals, the deadline by which one must succeed, the guarded
// key and the client; on the end of the lease it stops the renewer and
// revokes the lease.
//
// Why the holder stops before anyone else can take over. The server
// expires a lease TTL after the last renewal it processed (the grant counts
// as one), and it processes a request only after the request was sent. The
// keeper trusts the lease until sent + TTL - margin, where sent is the
// holder's clock reading taken before the newest acknowledged request was
// sent (Grant, or a keepalive of renew). The server cannot expire the lease
// earlier than sent + TTL, and the leader key or lock key under it is
// deleted only by that expiry (or by a revoke, which only the holder
// sends), so another candidate can be elected only after it. Hence the
// holder's Context ends at least margin before another holder can exist.
// Measuring from the acknowledgement instead would be wrong: a response can
// arrive long after the server renewed (a stalled connection), and the
// keepalive stream of clientv3 does not say when its requests were sent,
// which is why renew sends its own with KeepAliveOnce and the lease does
// not use that stream (a concurrency.Session on the lease still runs one;
// its renewals only make the server's expiry later). A Raft leader change
// on the server only extends leases (the new leader restarts their TTLs).
// Clock-based detection assumes the holder is not paused for longer than
// the margin; writes that must never come from a stale holder carry a
// fencing comparison as well (see the package doc).
func (l *Lease) keep() {
	defer close(l.done)
	defer l.kaCancel()

	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		l.renew()
	}()

	// deadline is when the holder stops trusting the lease unless a
	// keepalive sent before then - (TTL - margin) is acknowledged.
	deadline := l.sent.Add(l.ttl - l.safetyMargin())
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()

	var (
		guard   *heldKey
		guardCh = l.guardCh
		watchCh clientv3.WatchChan
		retryC  <-chan time.Time // set while waiting to re-check the guard
		stopW   = func() {}
	)
	defer func() { stopW() }()
	openWatch := func(fromRev int64) {
		stopW()
		var wctx context.Context
		wctx, stopW = context.WithCancel(clientv3.WithRequireLeader(l.kaCtx))
		watchCh = l.cli.Watch(wctx, guard.key, clientv3.WithRev(fromRev))
	}
	// recheck reads the guarded key after its watch broke (no leader,
	// compaction, disconnect) and watches again, or ends the lease.
	recheck := func() {
		watchCh = nil
		next, err := l.checkGuard(guard, deadline)
		switch {
		case errors.Is(err, ErrKeyLost):
			l.lose(err)
		case err != nil:
			// Could not tell; try again shortly. The keepalive deadline
			// still bounds how long the holder trusts itself.
			retryC = time.After(200 * time.Millisecond)
		default:
			openWatch(next)
		}
	}

	for l.ctx.Err() == nil {
		select {
		case <-l.ctx.Done():
		case r := <-l.renewals:
			switch {
			case errors.Is(r.err, rpctypes.ErrLeaseNotFound):
				l.lose(fmt.Errorf("%w: the lease expired or was revoked", ErrLeaseLost))
			case r.err != nil:
				l.log.Debug("keepalive failed; retrying", "err", r.err, "trusted_for", time.Until(deadline))
			default:
				if d := r.sent.Add(r.ttl - l.safetyMargin()); d.After(deadline) {
					deadline = d
					timer.Reset(time.Until(deadline))
				}
			}
		case <-l.cli.Ctx().Done():
			l.lose(fmt.Errorf("%w: the client closed", ErrLeaseLost))
		case <-timer.C:
			l.lose(fmt.Errorf("%w: no keepalive acknowledged within %s of being sent (TTL %s); the server may expire the lease", ErrLeaseLost, l.ttl-l.safetyMargin(), l.ttl))
		case <-guardCh:
			guardCh = nil
			l.guardMu.Lock()
			guard = l.guard
			l.guardMu.Unlock()
			openWatch(guard.createRev + 1)
		case <-retryC:
			retryC = nil
			recheck()
		case wr, ok := <-watchCh:
			if !ok || wr.Err() != nil {
				recheck()
				continue
			}
			if lost, why := guardLost(guard, wr); lost {
				l.lose(fmt.Errorf("%w: %s %s", ErrKeyLost, guard.key, why))
			}
		}
	}

	// Teardown: stop the keepalives first so they cannot race the revoke.
	l.kaCancel()
	<-renewDone
	stopW()
	if l.cli.Ctx().Err() != nil {
		return // the client is closed; the lease expires on its own
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.kaCtx), revokeTimeout)
	defer cancel()
	_, err := l.cli.Revoke(ctx, l.id)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.revokeErr = fmt.Errorf("coord: revoking lease %x: %w", int64(l.id), err)
		l.log.Debug("revoking lease failed", "err", err)
	}
}

// renew sends a keepalive every TTL/3 (counted from when the previous one
// was sent, so slow answers do not stretch the period; sooner after a
// failure) until kaCtx ends, and hands each outcome, with the time its
// request was sent, to the keeper. An attempt is given up after TTL -
// margin: an answer to an older request could not extend the trust anyway.
func (l *Lease) renew() {
	interval := l.ttl / 3
	next := l.sent.Add(interval)
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-l.kaCtx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(l.kaCtx, l.ttl-l.safetyMargin())
		resp, err := l.cli.KeepAliveOnce(ctx, l.id)
		cancel()
		r := renewal{sent: sent, err: err}
		if err == nil {
			r.ttl = time.Duration(resp.TTL) * time.Second
		}
		select {
		case l.renewals <- r:
		case <-l.kaCtx.Done():
			return
		}
		next = sent.Add(interval)
		if err != nil {
			next = time.Now().Add(renewRetry)
		}
		t.Reset(time.Until(next))
	}
}

// guardLost reports whether a watch response shows the held key deleted or
// replaced.
func guardLost(g *heldKey, wr clientv3.WatchResponse) (bool, string) {
	for _, ev := range wr.Events {
		switch {
		case ev.Type == mvccpb.DELETE:
			return true, "was deleted"
		case ev.Kv.CreateRevision != g.createRev:
			return true, "was replaced"
		}
	}
	return false, ""
}

// checkGuard reads the held key: it returns the revision to watch from if
// the key is still ours, an ErrKeyLost error if not, or another error if it
// could not tell. It gives up at deadline, so the keeper (which is blocked
// meanwhile) notices a missed keepalive deadline in time.
func (l *Lease) checkGuard(g *heldKey, deadline time.Time) (int64, error) {
	ctx, cancel := context.WithDeadline(l.ctx, deadline)
	defer cancel()
	resp, err := l.cli.Get(ctx, g.key)
	if err != nil {
		return 0, fmt.Errorf("coord: checking %s: %w", g.key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%w: %s was deleted", ErrKeyLost, g.key)
	}
	if kv := resp.Kvs[0]; kv.CreateRevision != g.createRev || clientv3.LeaseID(kv.Lease) != l.id {
		return 0, fmt.Errorf("%w: %s was replaced", ErrKeyLost, g.key)
	}
	return resp.Header.Revision + 1, nil
}

// Heartbeat puts key = value under a new lease with ttl and keeps it alive
// until the returned Hold is released or lost, or ctx ends; then the key
// disappears (at once on release, after the TTL on loss). Loss is reported
// through the Hold's Context; re-register by calling Heartbeat again.
func (c *Client) Heartbeat(ctx context.Context, key, value string, ttl time.Duration) (Hold, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: heartbeat key must not be empty", ErrInvalid)
	}
	l, err := c.Grant(ctx, ttl)
	if err != nil {
		return nil, err
	}
	if _, err := c.cli.Put(ctx, key, value, clientv3.WithLease(l.ID())); err != nil {
		relErr := l.Release(context.WithoutCancel(ctx))
		return nil, errors.Join(fmt.Errorf("coord: heartbeat put %s: %w", key, err), relErr)
	}
	return l, nil
}
