package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

const storageMaxKey = storage.MaxKeySize

// Store is a storage.Store backed by a flaredb cluster: every key lives in
// one namespace, reads are linearizable, and a write is acknowledged only
// once a quorum has it in its fsynced Raft log.
type Store struct {
	c  *Client
	ns string

	closed  atomic.Bool
	ctx     context.Context // cancelled by Close; ends watches
	cancel  context.CancelFunc
	watches sync.WaitGroup
}

var _ storage.Store = (*Store)(nil)

// NewStore returns a storage.Store over c in namespace ns. Closing the
// Store ends its watches but leaves c open: the caller closes c.
func NewStore(c *Client, ns string) (*Store, error) {
	if err := wire.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("flaredb: store: %w", err)
	}
	s := &Store{c: c, ns: ns}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("flaredb: %s: %w", op, storage.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flaredb: %s: %w", op, err)
	}
	return nil
}

// mapErr turns a closed client into storage.ErrClosed.
func mapErr(err error) error {
	if errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", storage.ErrClosed, err)
	}
	return err
}

// Get returns the current value of key, or storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, key []byte) (storage.KV, error) {
	if err := wire.CheckUserKey(key); err != nil {
		return storage.KV{}, fmt.Errorf("flaredb: get: %w", err)
	}
	if err := s.check(ctx, "get"); err != nil {
		return storage.KV{}, err
	}
	kv, found, _, err := s.c.Get(ctx, s.ns, key, ReadOptions{})
	if err != nil {
		return storage.KV{}, mapErr(err)
	}
	if !found {
		return storage.KV{}, fmt.Errorf("flaredb: get %q: %w", key, storage.ErrNotFound)
	}
	return kv.Storage(), nil
}

// Range returns keys in [start, end) in order, up to limit, and the
// revision they were read at (one consistent snapshot even across pages).
func (s *Store) Range(ctx context.Context, start, end []byte, limit int) ([]storage.KV, int64, error) {
	if err := s.check(ctx, "range"); err != nil {
		return nil, 0, err
	}
	if len(start) > storage.MaxKeySize || len(end) > storage.MaxKeySize {
		return nil, 0, fmt.Errorf("flaredb: range: bound of more than %d bytes: %w", storage.MaxKeySize, storage.ErrKeyTooLarge)
	}
	if limit < 0 {
		limit = 0
	}
	kvs, rev, err := s.c.Range(ctx, s.ns, start, end, RangeOptions{Limit: limit})
	if err != nil {
		return nil, 0, mapErr(err)
	}
	out := make([]storage.KV, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Storage()
	}
	return out, rev, nil
}

// Txn runs an atomic transaction.
func (s *Store) Txn(ctx context.Context, txn storage.Txn) (storage.TxnResult, error) {
	t := wire.FromStorageTxn(txn)
	if err := t.Validate(storage.MaxKeySize); err != nil {
		return storage.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	if err := s.check(ctx, "txn"); err != nil {
		return storage.TxnResult{}, err
	}
	res, err := s.c.Txn(ctx, s.ns, t)
	if err != nil {
		return storage.TxnResult{}, mapErr(err)
	}
	return res.Storage(), nil
}

// Watch streams changes under prefix from fromRevision (0: after now).
func (s *Store) Watch(ctx context.Context, prefix []byte, fromRevision int64) (storage.Watcher, error) {
	if err := s.check(ctx, "watch"); err != nil {
		return nil, err
	}
	// The watch also ends when the store closes.
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	ch := make(chan storage.Event, watchChanSize)
	w, err := startWatch(s.c, wctx, s.ns, prefix, fromRevision, ch, wire.Event.Storage, &s.watches, func() {
		stop()
		cancel()
	})
	if err != nil {
		return nil, mapErr(err)
	}
	return w, nil
}

// Revision returns the current and compacted revisions.
func (s *Store) Revision(ctx context.Context) (current, compacted int64, err error) {
	if err := s.check(ctx, "revision"); err != nil {
		return 0, 0, err
	}
	cur, comp, err := s.c.Revision(ctx, false)
	return cur, comp, mapErr(err)
}

// Compact discards history below rev (for the whole cluster, not only this
// namespace: revisions are store-wide).
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if err := s.check(ctx, "compact"); err != nil {
		return err
	}
	return mapErr(s.c.Compact(ctx, rev))
}

// Close ends the store's watches cleanly; later calls fail with
// storage.ErrClosed. The client stays open.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("flaredb: close: %w", storage.ErrClosed)
	}
	s.cancel()
	s.watches.Wait()
	return nil
}
