package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Lock blocks until it holds the lock called name (or ctx ends). The lock
// is kept by a lease of ttl (0 means DefaultTTL): if the holder stops
// renewing, the lock is freed within ttl and the holder's Context is
// cancelled before that. Unlock releases it.
//
// Waiting includes riding out passing trouble of the cluster (see
// retryPassing): an attempt that fails that way is undone (its lease
// revoked, which deletes its key) and the lock taken afresh.
func (c *Client) Lock(ctx context.Context, name string, ttl time.Duration) (Held, error) {
	if err := validName("lock", name); err != nil {
		return nil, err
	}
	return retryPassing(ctx, c.log, "taking lock "+name, func() (Held, error) { return c.tryLock(ctx, name, ttl) })
}

// tryLock makes one attempt at the lock.
func (c *Client) tryLock(ctx context.Context, name string, ttl time.Duration) (Held, error) {
	l, err := c.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("coord: lock %s: %w", name, err)
	}
	fail := func(err error) (Held, error) {
		relErr := l.Release(context.WithoutCancel(ctx))
		if cause := l.Err(); cause != nil && !errors.Is(cause, ErrReleased) && ctx.Err() == nil {
			err = cause
		}
		return nil, errors.Join(fmt.Errorf("coord: taking lock %s: %w", name, err), relErr)
	}
	sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(l.ID()), concurrency.WithContext(l.kaCtx))
	if err != nil {
		return fail(err)
	}
	// concurrency.Mutex keeps waiters under this prefix + "/".
	m := concurrency.NewMutex(sess, KeyPrefix+"lock/"+name)
	if err := m.Lock(l.Context()); err != nil {
		return fail(err)
	}
	resp, err := c.cli.Get(l.Context(), m.Key())
	if err != nil {
		return fail(err)
	}
	if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != l.ID() {
		return fail(fmt.Errorf("%w: lock key %s vanished", ErrKeyLost, m.Key()))
	}
	rev := resp.Kvs[0].CreateRevision
	l.setGuard(m.Key(), rev)
	return &heldLock{lease: l, name: name, rev: rev}, nil
}

type heldLock struct {
	lease *Lease
	name  string
	rev   int64
}

func (h *heldLock) Context() context.Context { return h.lease.Context() }
func (h *heldLock) Revision() int64          { return h.rev }

// Unlock releases the lock (revoking its lease) and waits for the keeper.
func (h *heldLock) Unlock(ctx context.Context) error {
	if err := h.lease.Release(ctx); err != nil {
		return fmt.Errorf("coord: unlocking %s: %w", h.name, err)
	}
	return nil
}
