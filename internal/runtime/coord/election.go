package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Election is one named election (for example the scheduler of a
// component). Candidates campaign with a value identifying themselves
// (node name, address); the one whose key is oldest leads.
type Election struct {
	c      *Client
	name   string
	prefix string // candidates' keys are prefix + "/" + lease ID
	ttl    time.Duration
}

// Election returns the election called name whose candidates keep their
// candidacy alive with leases of ttl (0 means DefaultTTL). A leader that
// stops renewing loses leadership within ttl.
func (c *Client) Election(name string, ttl time.Duration) (*Election, error) {
	if err := validName("election", name); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	return &Election{c: c, name: name, prefix: KeyPrefix + "election/" + name, ttl: ttl}, nil
}

// Campaign blocks until this candidate leads (or ctx ends) and returns the
// leadership. Its Context is cancelled when leadership may have been lost
// (lease lost, leader key deleted, ctx ended) or on Resign. Like Lock it
// rides out passing trouble of the cluster (retryPassing): a failed
// attempt revokes its lease, which withdraws its candidacy, and campaigns
// afresh.
func (e *Election) Campaign(ctx context.Context, value string) (Leadership, error) {
	return retryPassing(ctx, e.c.log, "campaigning in election "+e.name, func() (Leadership, error) { return e.campaignOnce(ctx, value) })
}

// campaignOnce makes one attempt at leadership.
func (e *Election) campaignOnce(ctx context.Context, value string) (Leadership, error) {
	l, err := e.c.Grant(ctx, e.ttl)
	if err != nil {
		return nil, fmt.Errorf("coord: election %s: %w", e.name, err)
	}
	fail := func(err error) (Leadership, error) {
		relErr := l.Release(context.WithoutCancel(ctx))
		if cause := l.Err(); cause != nil && !errors.Is(cause, ErrReleased) && ctx.Err() == nil {
			err = cause // the lease was lost while campaigning
		}
		return nil, errors.Join(fmt.Errorf("coord: campaigning in election %s: %w", e.name, err), relErr)
	}
	// The session shares the lease (no second lease, no second keeper);
	// its own keepalive subscription ends with the lease's.
	sess, err := concurrency.NewSession(e.c.cli, concurrency.WithLease(l.ID()), concurrency.WithContext(l.kaCtx))
	if err != nil {
		return fail(err)
	}
	el := concurrency.NewElection(sess, e.prefix)
	// Campaign under the lease's context, so losing the lease while
	// waiting ends the campaign.
	if err := el.Campaign(l.Context(), value); err != nil {
		return fail(err)
	}
	// concurrency.Election does not re-check its key after waiting for
	// older candidates to go: make sure the key is still ours.
	resp, err := e.c.cli.Get(l.Context(), el.Key())
	if err != nil {
		return fail(err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev() || clientv3.LeaseID(resp.Kvs[0].Lease) != l.ID() {
		return fail(fmt.Errorf("%w: leader key %s vanished while campaigning", ErrKeyLost, el.Key()))
	}
	l.setGuard(el.Key(), el.Rev())
	e.c.log.Info("elected leader", "election", e.name, "revision", el.Rev())
	return &leadership{lease: l, key: el.Key(), rev: el.Rev(), election: e.name}, nil
}

// LeaderInfo is the current leader of an election.
type LeaderInfo struct {
	Value    string
	Revision int64 // the leader key's creation revision (fencing token)
}

// Leader returns the current leader, or ErrNoLeader.
func (e *Election) Leader(ctx context.Context) (LeaderInfo, error) {
	// concurrency.Election keeps candidates under prefix + "/".
	resp, err := e.c.cli.Get(ctx, e.prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return LeaderInfo{}, fmt.Errorf("coord: reading leader of election %s: %w", e.name, err)
	}
	if len(resp.Kvs) == 0 {
		return LeaderInfo{}, fmt.Errorf("%w in election %s", ErrNoLeader, e.name)
	}
	return LeaderInfo{Value: string(resp.Kvs[0].Value), Revision: resp.Kvs[0].CreateRevision}, nil
}

type leadership struct {
	lease    *Lease
	key      string
	rev      int64
	election string
}

func (l *leadership) Context() context.Context { return l.lease.Context() }
func (l *leadership) Revision() int64          { return l.rev }

// IsLeaderCmp holds while the leader key still exists with this
// leadership's creation revision.
func (l *leadership) IsLeaderCmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// Resign deletes the leader key (by revoking the lease) so the next
// candidate leads, and waits for the background keeper to stop.
func (l *leadership) Resign(ctx context.Context) error {
	if err := l.lease.Release(ctx); err != nil {
		return fmt.Errorf("coord: resigning from election %s: %w", l.election, err)
	}
	return nil
}

// DeferredElection is an Elector for the election name on a client that
// get yields when first needed (blocking until coordination is
// reachable), for components built before the coordination store serves.
func DeferredElection(get func(context.Context) (*Client, error), name string, ttl time.Duration) Elector {
	return deferredElection{get: get, name: name, ttl: ttl}
}

type deferredElection struct {
	get  func(context.Context) (*Client, error)
	name string
	ttl  time.Duration
}

func (d deferredElection) Campaign(ctx context.Context, value string) (Leadership, error) {
	c, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	e, err := c.Election(d.name, d.ttl)
	if err != nil {
		return nil, err
	}
	return e.Campaign(ctx, value)
}
