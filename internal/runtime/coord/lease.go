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
	ka       <-chan *clientv3.LeaseKeepAliveResponse
	granted  time.Time // when the grant was acknowledged

	guardMu sync.Mutex
	guard   *heldKey      // key whose deletion ends the lease (leadership, lock)
	guardCh chan struct{} // closed when guard is set

	done      chan struct{} // closed when the keeper has stopped
	revokeErr error         // set by the keeper before done closes
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
	resp, err := c.cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("coord: granting a %ds lease: %w", secs, err)
	}
	granted := time.Now()
	l := &Lease{
		cli:     c.cli,
		log:     c.log.With("lease", fmt.Sprintf("%x", int64(resp.ID))),
		id:      resp.ID,
		ttl:     time.Duration(resp.TTL) * time.Second,
		granted: granted,
		guardCh: make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.kaCtx, l.kaCancel = context.WithCancel(context.WithoutCancel(ctx))
	ka, err := c.cli.KeepAlive(l.kaCtx, resp.ID)
	if err != nil {
		l.kaCancel()
		l.cancel(err)
		revokeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
		_, _ = c.cli.Revoke(revokeCtx, resp.ID)
		cancel()
		return nil, fmt.Errorf("coord: starting keepalive for lease %x: %w", int64(resp.ID), err)
	}
	l.ka = ka
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
// at least 500ms. It covers the time a keepalive takes to reach the server
// and scheduling delays of the holder.
func (l *Lease) safetyMargin() time.Duration {
	return max(l.ttl/5, 500*time.Millisecond)
}

// keep is the lease's only goroutine: it watches keepalive responses, the
// deadline by which one must arrive, and the guarded key, and on the end of
// the lease stops the keepalive and revokes it.
func (l *Lease) keep() {
	defer close(l.done)
	defer l.kaCancel()

	// deadline is when the holder stops trusting the lease unless a
	// keepalive is acknowledged before.
	deadline := l.granted.Add(l.ttl - l.safetyMargin())
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
		case resp, ok := <-l.ka:
			switch {
			case !ok:
				l.lose(fmt.Errorf("%w: keepalive stream ended (the lease expired or was revoked, or the client closed)", ErrLeaseLost))
			case resp.TTL <= 0:
				l.lose(fmt.Errorf("%w: the lease expired", ErrLeaseLost))
			default:
				deadline = time.Now().Add(time.Duration(resp.TTL)*time.Second - l.safetyMargin())
				timer.Reset(time.Until(deadline))
			}
		case <-timer.C:
			l.lose(fmt.Errorf("%w: no keepalive acknowledged within %s (TTL %s); the server may expire the lease", ErrLeaseLost, l.ttl-l.safetyMargin(), l.ttl))
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

	// Teardown: stop the keepalive first so it cannot race the revoke.
	l.kaCancel()
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
