package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// KeyPrefix is where elections and locks keep their keys.
const KeyPrefix = "/ultracloud/coord/"

// DefaultTTL is the lease TTL used when a caller passes 0.
const DefaultTTL = 10 * time.Second

// Sentinel errors.
var (
	// ErrLeaseLost: the lease expired, was revoked, or could not be kept
	// alive in time. Whatever it held may already belong to someone else.
	ErrLeaseLost = errors.New("coord: lease lost")
	// ErrKeyLost: the key held under the lease (leader key, lock key) was
	// deleted or replaced.
	ErrKeyLost = errors.New("coord: held key lost")
	// ErrReleased: the holder released the lease (Resign, Unlock, Release).
	ErrReleased = errors.New("coord: released")
	// ErrCompacted: a watch asked for history that has been compacted.
	ErrCompacted = errors.New("coord: revision compacted")
	// ErrNoLeader: an election currently has no leader.
	ErrNoLeader = errors.New("coord: no leader")
	// ErrNodeNotFound: the registry has no such node.
	ErrNodeNotFound = errors.New("coord: node not found")
	// ErrInvalid: an argument was rejected before anything was written.
	ErrInvalid = errors.New("coord: invalid argument")
)

// Client is the coordination library bound to one chainfire client. It is
// safe for concurrent use; it does not own (or close) the clientv3 client.
type Client struct {
	cli *clientv3.Client
	log *slog.Logger
}

// New returns a coordination client over cli. It has no side effects.
func New(cli *clientv3.Client, log *slog.Logger) *Client {
	return &Client{cli: cli, log: log.With("lib", "coord")}
}

// Raw returns the underlying clientv3 client (for transactions that carry
// a fencing comparison).
func (c *Client) Raw() *clientv3.Client { return c.cli }

// Interfaces components depend on, so they can be tested with fakes.
type (
	// Elector campaigns for leadership of one election.
	Elector interface {
		Campaign(ctx context.Context, value string) (Leadership, error)
	}
	// Locker takes named distributed locks.
	Locker interface {
		Lock(ctx context.Context, name string, ttl time.Duration) (Held, error)
	}
	// Heartbeater keeps a key alive under a lease.
	Heartbeater interface {
		Heartbeat(ctx context.Context, key, value string, ttl time.Duration) (Hold, error)
	}
	// Watcher follows a key prefix from a revision.
	Watcher interface {
		Watch(ctx context.Context, prefix string, fromRev int64, fn func(Batch) error) error
	}
	// NodeRegistry registers nodes and follows them.
	NodeRegistry interface {
		Register(ctx context.Context, info NodeInfo, ttl time.Duration) (Registration, error)
		List(ctx context.Context) ([]NodeInfo, int64, error)
		Watch(ctx context.Context, fromRev int64, fn func(NodeEvent) error) error
	}

	// Hold is something kept alive by a lease.
	Hold interface {
		// Context is cancelled when the hold ends: lost (cause wraps
		// ErrLeaseLost or ErrKeyLost), released (ErrReleased), or the
		// context it was created with ended.
		Context() context.Context
		// Release ends the hold, revokes its lease (deleting its keys)
		// and waits for its background work to stop.
		Release(ctx context.Context) error
	}
	// Leadership is held by the leader of an election.
	Leadership interface {
		// Context is cancelled the moment leadership may have been
		// lost; stop acting as leader when it is.
		Context() context.Context
		// Resign gives leadership up so another candidate can lead.
		Resign(ctx context.Context) error
		// Revision is the leader key's creation revision: a fencing
		// token that increases with every new leadership.
		Revision() int64
		// IsLeaderCmp is a transaction comparison that holds only while
		// this leadership is current.
		IsLeaderCmp() clientv3.Cmp
	}
	// Held is a held lock.
	Held interface {
		// Context is cancelled when the lock may have been lost.
		Context() context.Context
		// Unlock releases the lock.
		Unlock(ctx context.Context) error
		// Revision is the lock key's creation revision (fencing token).
		Revision() int64
	}
	// Registration is a node's entry in the registry.
	Registration interface {
		Hold
		// Update replaces the node's information (same name).
		Update(ctx context.Context, info NodeInfo) error
	}
)

var (
	_ Heartbeater  = (*Client)(nil)
	_ Watcher      = (*Client)(nil)
	_ Locker       = (*Client)(nil)
	_ Elector      = (*Election)(nil)
	_ NodeRegistry = (*Registry)(nil)
	_ Hold         = (*Lease)(nil)
	_ Leadership   = (*leadership)(nil)
	_ Held         = (*heldLock)(nil)
	_ Registration = (*registration)(nil)
)

// Transient reports whether err comes from a passing state of the
// cluster that a new attempt can get past: no leader or a leader change,
// a dropped or timed-out proposal, overload, a lost connection, or a lease
// or key lost before it was held. Invalid arguments, permission and auth
// errors, and the caller's own cancellation are not transient.
func Transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, ErrInvalid), errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrKeyLost):
		return true
	}
	// clientv3 turns the server's gRPC errors into rpctypes.EtcdError;
	// errors it does not know keep their gRPC status.
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return transientCode(ee.Code())
	}
	if s, ok := status.FromError(err); ok {
		// etcd answers a proposal raft dropped (as during a leader
		// transfer) with this text and no code of its own.
		if s.Code() == codes.Unknown && strings.Contains(s.Message(), "raft proposal dropped") {
			return true
		}
		return transientCode(s.Code())
	}
	return false
}

// Backoff between attempts after a passing failure.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
)

// retryPassing runs attempt until it succeeds, fails for a reason that is
// not Transient, or ctx ends, waiting between attempts with backoff. A
// leader change drops or times out the proposals of a lease grant or of a
// lock or leader key, and a lease can be lost before what it was for is
// held; callers that block until they hold something (Lock, Campaign)
// wait through that rather than hand the caller a passing error. Each
// attempt must undo itself when it fails. what names the operation in the
// log.
func retryPassing[T any](ctx context.Context, log *slog.Logger, what string, attempt func() (T, error)) (T, error) {
	wait := retryMin
	for {
		v, err := attempt()
		if err == nil || ctx.Err() != nil || !Transient(err) {
			return v, err
		}
		log.Info("failed for a passing reason; trying again", "op", what, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("coord: %s: %w (last attempt: %w)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

func transientCode(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// validName checks an election, lock or node name: non-empty, no '/', no
// control characters.
func validName(kind, name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.TrimSpace(name) != name || len(name) > 253 {
		return fmt.Errorf("%w: %s name %q must be non-empty, at most 253 characters, without '/' or surrounding spaces", ErrInvalid, kind, name)
	}
	return nil
}
