package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// request is one write transaction queued for the writer.
type request struct {
	ctx   context.Context
	txn   storage.Txn
	reply chan reply // buffered, capacity 1
}

type reply struct {
	res storage.TxnResult
	err error
}

// Txn runs an atomic transaction.
//
// A transaction whose branches hold no OpPut or OpDelete is evaluated at once
// against a consistent snapshot of committed state. Any other transaction is
// queued for the writer goroutine; ctx is honoured while waiting to be queued
// and, once queued, up to the moment the writer evaluates it (it then fails
// with ctx's error and changes nothing). After the writer has evaluated it the
// transaction will be committed, and Txn waits for that and returns the
// result even if ctx has ended meanwhile: a nil error always means durable.
//
// A branch whose writes change nothing (only deletes of missing keys) counts
// as read-only: it does not advance the revision and leaves no history.
func (s *Store) Txn(ctx context.Context, txn storage.Txn) (storage.TxnResult, error) {
	if err := validateTxn(txn); err != nil {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", err)
	}
	if s.closed.Load() {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", storage.ErrClosed)
	}
	if !hasWrites(txn.Then) && !hasWrites(txn.Else) {
		return s.readOnlyTxn(txn)
	}
	req := &request{ctx: ctx, txn: txn, reply: make(chan reply, 1)}
	select {
	case s.reqCh <- req:
	case <-ctx.Done():
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: waiting to enqueue: %w", ctx.Err())
	case <-s.closing:
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", storage.ErrClosed)
	}
	r := <-req.reply
	return r.res, r.err
}

func (s *Store) readOnlyTxn(txn storage.Txn) (storage.TxnResult, error) {
	if err := s.acquire(); err != nil {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", err)
	}
	defer s.dbMu.RUnlock()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	rev, err := getMeta(snap, metaCurrentKey)
	if err != nil {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", err)
	}
	res, _, err := evalTxn(snap, txn, rev+1)
	if err != nil {
		return storage.TxnResult{}, fmt.Errorf("pebblestore: txn: %w", err)
	}
	res.Revision = rev
	return res, nil
}

func hasWrites(ops []storage.Op) bool {
	for _, op := range ops {
		if op.Type == storage.OpPut || op.Type == storage.OpDelete {
			return true
		}
	}
	return false
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return storage.ErrEmptyKey
	}
	if len(key) > storage.MaxKeySize {
		return fmt.Errorf("key of %d bytes (max %d): %w", len(key), storage.MaxKeySize, storage.ErrKeyTooLarge)
	}
	return nil
}

// validateTxn enforces the storage limits and rejects unknown compare
// targets and op types. Each of If, Then and Else may hold up to
// storage.MaxTxnOps entries.
func validateTxn(txn storage.Txn) error {
	for _, part := range []struct {
		name string
		n    int
	}{{"if", len(txn.If)}, {"then", len(txn.Then)}, {"else", len(txn.Else)}} {
		if part.n > storage.MaxTxnOps {
			return fmt.Errorf("%d %s entries (max %d): %w", part.n, part.name, storage.MaxTxnOps, storage.ErrTooManyOps)
		}
	}
	for i, c := range txn.If {
		if err := checkKey(c.Key); err != nil {
			return fmt.Errorf("compare %d: %w", i, err)
		}
		if err := c.CheckRange(); err != nil {
			return fmt.Errorf("compare %d: %w", i, err)
		}
		switch c.Target {
		case storage.CompareModRevision, storage.CompareExists, storage.CompareMissing, storage.CompareRangeEmpty:
		case storage.CompareValue:
			if len(c.Value) > storage.MaxValueSize {
				return fmt.Errorf("compare %d: value of %d bytes (max %d): %w", i, len(c.Value), storage.MaxValueSize, storage.ErrValueTooLarge)
			}
		default:
			return fmt.Errorf("compare %d: unknown target %d", i, c.Target)
		}
	}
	for _, branch := range []struct {
		name string
		ops  []storage.Op
	}{{"then", txn.Then}, {"else", txn.Else}} {
		for i, op := range branch.ops {
			if err := checkKey(op.Key); err != nil {
				return fmt.Errorf("%s op %d: %w", branch.name, i, err)
			}
			switch op.Type {
			case storage.OpGet, storage.OpDelete:
			case storage.OpPut:
				if len(op.Value) > storage.MaxValueSize {
					return fmt.Errorf("%s op %d: value of %d bytes (max %d): %w", branch.name, i, len(op.Value), storage.MaxValueSize, storage.ErrValueTooLarge)
				}
			default:
				return fmt.Errorf("%s op %d: unknown op type %d", branch.name, i, op.Type)
			}
		}
	}
	return nil
}

// txnWrites is what one evaluated transaction changes: the final state of
// every key it wrote (nil value pointer: deleted) and its events in op order.
type txnWrites struct {
	overlay map[string]*storedValue
	events  []logEvent
}

// get returns key as the transaction sees it: its own writes first, then r.
// The returned value is always a fresh copy.
func (w *txnWrites) get(r pebble.Reader, key []byte) (storedValue, bool, error) {
	if v, ok := w.overlay[string(key)]; ok {
		if v == nil {
			return storedValue{}, false, nil
		}
		c := *v
		c.value = bytes.Clone(v.value)
		return c, true, nil
	}
	return readState(r, key)
}

// evalTxn evaluates txn against r as if committed at revision rev. It writes
// nothing to r; the caller applies the returned writes if it commits them.
// Results never alias r's memory or the caller's slices. A put's result and
// its log event share one copy of the value; the log event is only read by
// apply, before the result is handed back.
func evalTxn(r pebble.Reader, txn storage.Txn, rev int64) (storage.TxnResult, *txnWrites, error) {
	w := &txnWrites{}
	ok := true
	for i, c := range txn.If {
		if c.Target == storage.CompareRangeEmpty {
			empty, err := rangeEmpty(r, c.Key, c.RangeEnd)
			if err != nil {
				return storage.TxnResult{}, nil, fmt.Errorf("compare %d range [%q, %q): %w", i, c.Key, c.RangeEnd, err)
			}
			if !empty {
				ok = false
				break
			}
			continue
		}
		v, found, err := readState(r, c.Key)
		if err != nil {
			return storage.TxnResult{}, nil, fmt.Errorf("compare %d key %q: %w", i, c.Key, err)
		}
		if !c.Holds(found, v.mod, v.value) {
			ok = false
			break
		}
	}
	ops := txn.Then
	if !ok {
		ops = txn.Else
	}
	res := storage.TxnResult{Succeeded: ok, Results: make([]storage.OpResult, len(ops))}
	for i, op := range ops {
		cur, found, err := w.get(r, op.Key)
		if err != nil {
			return storage.TxnResult{}, nil, fmt.Errorf("op %d key %q: %w", i, op.Key, err)
		}
		switch op.Type {
		case storage.OpGet:
			if found {
				res.Results[i] = storage.OpResult{KV: cur.kv(op.Key), Found: true}
			}
		case storage.OpPut:
			nv := &storedValue{value: bytes.Clone(op.Value), create: rev, mod: rev}
			if nv.value == nil {
				nv.value = []byte{}
			}
			if found {
				nv.create = cur.create
			}
			w.set(op.Key, nv)
			w.events = append(w.events, logEvent{typ: storage.EventPut, key: bytes.Clone(op.Key), value: nv.value, create: nv.create})
			res.Results[i] = storage.OpResult{KV: nv.kv(op.Key), Found: found}
		case storage.OpDelete:
			if !found {
				continue
			}
			w.set(op.Key, nil)
			w.events = append(w.events, logEvent{typ: storage.EventDelete, key: bytes.Clone(op.Key), value: cur.value, create: cur.create})
			res.Results[i] = storage.OpResult{KV: cur.kv(op.Key), Found: true}
		}
	}
	return res, w, nil
}

// rangeEmpty reports whether r holds no current key k with start <= k <
// end. Only the state keyspace is looked at, so a deleted key counts as
// absent whatever history (log entries) it left; the iterator hides
// deleted state records, including those deleted by earlier transactions
// of the batch r may be.
func rangeEmpty(r pebble.Reader, start, end []byte) (bool, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: stateKey(start), UpperBound: stateKey(end)})
	if err != nil {
		return false, err
	}
	found := it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return false, err
	}
	return !found, nil
}

func (w *txnWrites) set(key []byte, v *storedValue) {
	if w.overlay == nil {
		w.overlay = make(map[string]*storedValue)
	}
	w.overlay[string(key)] = v
}

// apply writes the transaction's state changes and its log entry at rev into
// b. Events of one revision are stored in key order; events on the same key
// keep their op order.
func (w *txnWrites) apply(b *pebble.Batch, rev int64) error {
	for k, v := range w.overlay {
		var err error
		if v == nil {
			err = b.Delete(stateKey([]byte(k)), nil)
		} else {
			err = b.Set(stateKey([]byte(k)), appendValue(nil, *v), nil)
		}
		if err != nil {
			return err
		}
	}
	slices.SortStableFunc(w.events, func(a, b logEvent) int { return bytes.Compare(a.key, b.key) })
	return b.Set(logKey(rev), appendLogEntry(nil, logEntry{rev: rev, events: w.events}), nil)
}

// runWriter is the single writer goroutine. Enqueuers block on the
// unbuffered reqCh while a group is being committed; the next group takes
// every one of them that is waiting, up to maxBatch.
func (s *Store) runWriter() {
	defer close(s.writerDone)
	group := make([]*request, 0, s.maxBatch)
	for {
		select {
		case <-s.closing:
			return
		case req := <-s.reqCh:
			group = append(group[:0], req)
		}
	collect:
		for len(group) < s.maxBatch {
			select {
			case req := <-s.reqCh:
				group = append(group, req)
			default:
				break collect
			}
		}
		for rest := group; len(rest) > 0; {
			rest = rest[s.commitBatch(rest):]
		}
		clear(group)
	}
}

// commitBatch evaluates group in order against one indexed batch (so each
// transaction sees the ones before it), commits the batch once with fsync and
// then answers the callers. It stops taking transactions once the batch holds
// s.maxBatchBytes, and returns how many of group it handled (at least one).
func (s *Store) commitBatch(group []*request) (handled int) {
	replies := make([]reply, len(group))
	defer func() {
		for i, req := range group[:handled] {
			req.reply <- replies[i]
		}
	}()
	failAll := func(err error) int {
		for i := range replies {
			replies[i] = reply{err: err}
		}
		return len(group)
	}
	if s.writeErr != nil {
		return failAll(fmt.Errorf("pebblestore: txn: store failed earlier: %w", s.writeErr))
	}

	b := s.db.NewIndexedBatch()
	defer b.Close()
	base := s.current.Load()
	rev := base
	for handled < len(group) && b.Len() < s.maxBatchBytes {
		i, req := handled, group[handled]
		handled++
		if err := req.ctx.Err(); err != nil {
			replies[i].err = fmt.Errorf("pebblestore: txn: before evaluation: %w", err)
			continue
		}
		res, w, err := evalTxn(b, req.txn, rev+1)
		if err != nil {
			replies[i].err = fmt.Errorf("pebblestore: txn: %w", err)
			continue
		}
		if len(w.events) > 0 {
			if err := w.apply(b, rev+1); err != nil {
				// The batch may hold part of this transaction: drop it
				// all, nothing has been written.
				s.log.Error("building commit batch failed", "err", err)
				return failAll(fmt.Errorf("pebblestore: txn: build batch: %w", err))
			}
			rev++
		}
		res.Revision = rev
		replies[i].res = res
	}
	if rev == base {
		return handled // nothing to write: only read-only or failed transactions
	}
	if err := b.Set(metaCurrentKey, encodeMeta(rev), nil); err != nil {
		return failAll(fmt.Errorf("pebblestore: txn: build batch: %w", err))
	}
	if err := b.Commit(pebble.Sync); err != nil {
		// Whether the batch reached disk is unknown; refuse further writes
		// rather than risk assigning a revision twice.
		s.writeErr = err
		s.log.Error("commit failed; store refuses further writes", "err", err, "revision", rev)
		return failAll(fmt.Errorf("pebblestore: txn: commit: %w", err))
	}
	s.batches.Add(1)
	s.txns.Add(uint64(rev - base))
	s.publish(rev)
	return handled
}

// publish makes rev the committed revision and wakes every watcher.
func (s *Store) publish(rev int64) {
	s.notifyMu.Lock()
	s.current.Store(rev)
	old := s.commitCh
	s.commitCh = make(chan struct{})
	s.notifyMu.Unlock()
	close(old)
}

// commitNotify returns the latest committed revision and a channel closed
// at the next commit after it.
func (s *Store) commitNotify() (int64, <-chan struct{}) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.current.Load(), s.commitCh
}
