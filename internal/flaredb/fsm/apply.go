package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// TxnsResult is the response to a CmdTxns entry: one result per transaction,
// in order. Keys in results are raw.
type TxnsResult struct {
	Results []wire.TxnResult
}

// Apply applies one log entry (raft.FSM).
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in order (raft.BatchingFSM). All
// of them go into one Pebble batch together with the new applied index, so
// the state and the index move together. The batch is committed without
// fsync: the Raft log is the durable record and on restart every entry after
// the stored applied index is applied again (entries at or below it are
// skipped, which makes replay idempotent).
//
// The response for a command is a *TxnsResult (CmdTxns), nil, or an error;
// an error is deterministic (the same on every replica) unless the FSM failed.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	resps := make([]any, len(logs))
	if err := f.Err(); err != nil {
		for i := range resps {
			resps[i] = err
		}
		return resps
	}
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.closed {
		for i := range resps {
			resps[i] = storage.ErrClosed
		}
		return resps
	}

	b := f.db.NewIndexedBatch()
	defer b.Close()
	rd, err := newBatchReader(b)
	if err != nil {
		f.fail(fmt.Errorf("open batch reader: %w", err))
		return fillErr(resps, f.Err())
	}
	defer rd.close()
	meta := f.meta
	f.batchLog = f.batchLog[:0]
	var commands uint64
	for i, l := range logs {
		if l.Index <= meta.appliedIndex {
			continue // replayed after a restart: already in Pebble
		}
		if l.Type == raft.LogCommand {
			resp, err := f.applyCommand(b, rd, &meta, l.Data)
			if err != nil {
				var fatal *fatalError
				if errors.As(err, &fatal) {
					f.fail(fmt.Errorf("apply index %d: %w", l.Index, fatal.err))
					for j := range resps {
						resps[j] = f.Err()
					}
					return resps
				}
				resp = err
			}
			resps[i] = resp
			commands++
		}
		meta.appliedIndex, meta.appliedTerm = l.Index, l.Term
	}
	if meta == f.meta {
		return resps
	}
	if err := b.Set(metaStateKey, appendMeta(nil, &meta), nil); err != nil {
		f.fail(fmt.Errorf("build batch: %w", err))
		return fillErr(resps, f.Err())
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		f.fail(fmt.Errorf("commit batch: %w", err))
		return fillErr(resps, f.Err())
	}
	f.meta = meta
	f.batches.Add(1)
	f.commands.Add(commands)
	f.keepRecent()
	f.publish()
	return resps
}

// keepRecent hands the batch's log entries, now committed, to the recent
// log before publish wakes the watchers that read them.
func (f *FSM) keepRecent() {
	for i, enc := range f.batchLog {
		// Decoded from our own encoding, so the entry aliases no batch
		// or Raft buffer; it cannot fail unless the encoder is broken.
		e, err := decodeLogEntry(enc)
		if err != nil {
			f.log.Error("fsm: a log entry just written does not decode; watchers read it from Pebble", "err", err)
			f.recent.clear()
		} else {
			f.recent.add(e, len(enc))
		}
		f.batchLog[i] = nil
	}
	f.batchLog = f.batchLog[:0]
}

func fillErr(resps []any, err error) []any {
	for i := range resps {
		resps[i] = err
	}
	return resps
}

// fatalError marks errors that mean Pebble can no longer be trusted (I/O,
// corruption). They fail the FSM instead of answering one command.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

func fatal(err error) error { return &fatalError{err: err} }

func (f *FSM) applyCommand(b *pebble.Batch, rd txnReader, meta *metaState, data []byte) (any, error) {
	cmd, err := DecodeCommand(data)
	if err != nil {
		// The leader validated it, so this is a bug or a newer format;
		// either way it is the same on every replica.
		return nil, err
	}
	if cmd.Timestamp > meta.clock {
		meta.clock = cmd.Timestamp
	}
	switch cmd.Kind {
	case CmdTxns:
		res := &TxnsResult{Results: make([]wire.TxnResult, len(cmd.Txns))}
		for i := range cmd.Txns {
			r, w, err := evalTxn(rd, &cmd.Txns[i], meta.rev+1, cmd.Timestamp)
			if err != nil {
				return nil, fatal(err)
			}
			if len(w.events) > 0 {
				enc, err := w.apply(b, meta.rev+1)
				if err != nil {
					return nil, fatal(err)
				}
				f.batchLog = append(f.batchLog, enc)
				meta.rev++
			}
			r.Revision = meta.rev
			res.Results[i] = r
		}
		return res, nil
	case CmdCompact:
		return nil, f.applyCompact(b, meta, cmd.Revision)
	case CmdExpire:
		w := &txnWriter{}
		for _, k := range cmd.Expire {
			cur, found, err := w.get(b, k.Key)
			if err != nil {
				return nil, fatal(err)
			}
			if found && cur.mod == k.Mod && cur.expires != 0 && cur.expires <= cmd.Timestamp {
				w.del(k.Key, cur)
			}
		}
		if len(w.events) > 0 {
			enc, err := w.apply(b, meta.rev+1)
			if err != nil {
				return nil, fatal(err)
			}
			f.batchLog = append(f.batchLog, enc)
			meta.rev++
		}
		return nil, nil
	case CmdSetMember:
		if err := b.Set(memberKey(cmd.MemberID), []byte(cmd.APIAddr), nil); err != nil {
			return nil, fatal(err)
		}
		return nil, nil
	case CmdRemoveMember:
		if err := b.Delete(memberKey(cmd.MemberID), nil); err != nil {
			return nil, fatal(err)
		}
		return nil, nil
	}
	return nil, fmt.Errorf("%w: command kind %d", wire.ErrMalformed, cmd.Kind)
}

// getter is the point read readState needs: a pebble.Reader, or the
// batchReader of an ApplyBatch.
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// txnReader is what evalTxn reads: point reads, and whether a range of the
// state keyspace is empty (CompareRangeEmpty).
type txnReader interface {
	getter
	// stateEmpty reports whether no state record lies in [start, end)
	// (raw keys).
	stateEmpty(start, end []byte) (bool, error)
}

// snapReader is a txnReader over a Pebble snapshot.
type snapReader struct{ *pebble.Snapshot }

func (r snapReader) stateEmpty(start, end []byte) (bool, error) {
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

// batchReader serves the point reads of one ApplyBatch through one iterator
// over its indexed batch, refreshed before each read so it sees the batch's
// own writes. Batch.Get would build an iterator stack over the memtables
// and every overlapping sstable for each read; every L0 file spans all
// keyspaces (state, versions, history are written together), so that was
// most of what a lookup cost. The iterator keeps its per-level iterators
// open across reads and checks bloom filters on every level, L6 included
// (Get skips L6's, where most data lives).
type batchReader struct {
	it   *pebble.Iterator
	opts pebble.IterOptions
}

func newBatchReader(b *pebble.Batch) (*batchReader, error) {
	r := &batchReader{opts: pebble.IterOptions{UseL6Filters: true}}
	it, err := b.NewIter(&r.opts)
	if err != nil {
		return nil, err
	}
	r.it = it
	return r, nil
}

// Get is pebble.Reader's Get: the value is valid until the next Get.
func (r *batchReader) Get(key []byte) ([]byte, io.Closer, error) {
	r.it.SetOptions(&r.opts) // sees the batch's writes since the last read
	if !r.it.SeekPrefixGE(key) || !bytes.Equal(r.it.Key(), key) {
		if err := r.it.Error(); err != nil {
			return nil, nil, err
		}
		return nil, nil, pebble.ErrNotFound
	}
	v, err := r.it.ValueAndErr()
	if err != nil {
		return nil, nil, err
	}
	return v, nopCloser{}, nil
}

// stateEmpty reports whether no state record lies in [start, end),
// counting the batch's own writes and deletes. Only the state keyspace is
// looked at: the versions, log entries and tombstone versions a deleted key
// leaves live in other keyspaces and do not count. The iterator is bounded
// to the range for this one seek; the next Get puts its options back.
func (r *batchReader) stateEmpty(start, end []byte) (bool, error) {
	o := r.opts
	o.LowerBound, o.UpperBound = stateKey(start), stateKey(end)
	r.it.SetOptions(&o)
	found := r.it.First()
	if err := r.it.Error(); err != nil {
		return false, err
	}
	return !found, nil
}

func (r *batchReader) close() { _ = r.it.Close() }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// readState reads the state record of raw from r; the result does not alias
// Pebble memory.
func readState(r getter, raw []byte) (stateRecord, bool, error) {
	v, closer, err := r.Get(stateKey(raw))
	if errors.Is(err, pebble.ErrNotFound) {
		return stateRecord{}, false, nil
	}
	if err != nil {
		return stateRecord{}, false, err
	}
	buf := bytes.Clone(v)
	if err := closer.Close(); err != nil {
		return stateRecord{}, false, err
	}
	s, err := decodeState(buf)
	if err != nil {
		return stateRecord{}, false, fmt.Errorf("key %q: %w", raw, err)
	}
	return s, true, nil
}

// txnWriter collects what one transaction changes: the final state of each
// key it wrote (nil: deleted), the state each had before, and the events.
type txnWriter struct {
	overlay map[string]*stateRecord
	before  map[string]*stateRecord
	events  []logEvent
}

// get returns raw as the transaction sees it (a fresh copy).
func (w *txnWriter) get(r getter, raw []byte) (stateRecord, bool, error) {
	if v, ok := w.overlay[string(raw)]; ok {
		if v == nil {
			return stateRecord{}, false, nil
		}
		c := *v
		c.value = bytes.Clone(v.value)
		return c, true, nil
	}
	return readState(r, raw)
}

func (w *txnWriter) touch(raw []byte, cur stateRecord, found bool) {
	if w.overlay == nil {
		w.overlay = make(map[string]*stateRecord)
		w.before = make(map[string]*stateRecord)
	}
	if _, seen := w.before[string(raw)]; !seen {
		if found {
			c := cur
			w.before[string(raw)] = &c
		} else {
			w.before[string(raw)] = nil
		}
	}
}

func (w *txnWriter) put(raw []byte, cur stateRecord, found bool, nv *stateRecord) {
	w.touch(raw, cur, found)
	w.overlay[string(raw)] = nv
	w.events = append(w.events, logEvent{typ: wire.EventPut, key: bytes.Clone(raw), value: nv.value, create: nv.create, expires: nv.expires})
}

func (w *txnWriter) del(raw []byte, cur stateRecord) {
	w.touch(raw, cur, true)
	w.overlay[string(raw)] = nil
	w.events = append(w.events, logEvent{typ: wire.EventDelete, key: bytes.Clone(raw), value: cur.value, create: cur.create, expires: cur.expires})
}

// evalTxn evaluates t against r as if committed at rev with leader clock
// now (unix ms). It writes nothing to r.
//
// A key whose TTL ran out still counts, for every compare, until the
// leader's CmdExpire deletes it: compares read state only, never a clock,
// so every replica decides alike.
func evalTxn(r txnReader, t *wire.Txn, rev, now int64) (wire.TxnResult, *txnWriter, error) {
	w := &txnWriter{}
	ok := true
	for i, c := range t.If {
		if c.Target == wire.CompareRangeEmpty {
			empty, err := r.stateEmpty(c.Key, c.RangeEnd)
			if err != nil {
				return wire.TxnResult{}, nil, fmt.Errorf("compare %d: %w", i, err)
			}
			if !empty {
				ok = false
				break
			}
			continue
		}
		v, found, err := readState(r, c.Key)
		if err != nil {
			return wire.TxnResult{}, nil, fmt.Errorf("compare %d: %w", i, err)
		}
		// wire's compare targets number like storage's
		// (TestCompareTargetsMatchStorage).
		sc := storage.Compare{Target: storage.CompareTarget(c.Target), Revision: c.Revision, Value: c.Value}
		if !sc.Holds(found, v.mod, v.value) {
			ok = false
			break
		}
	}
	ops := t.Then
	if !ok {
		ops = t.Else
	}
	res := wire.TxnResult{Succeeded: ok, Results: make([]wire.OpResult, len(ops))}
	for i, op := range ops {
		cur, found, err := w.get(r, op.Key)
		if err != nil {
			return wire.TxnResult{}, nil, fmt.Errorf("op %d: %w", i, err)
		}
		switch op.Type {
		case wire.OpGet:
			if found {
				res.Results[i] = wire.OpResult{KV: cur.kv(bytes.Clone(op.Key)), Found: true}
			}
		case wire.OpPut:
			nv := &stateRecord{value: bytes.Clone(op.Value), create: rev, mod: rev}
			if nv.value == nil {
				nv.value = []byte{}
			}
			if found {
				nv.create = cur.create
			}
			if op.TTL > 0 {
				nv.expires = now + op.TTL*1000
			}
			w.put(op.Key, cur, found, nv)
			res.Results[i] = wire.OpResult{KV: nv.kv(bytes.Clone(op.Key)), Found: found}
		case wire.OpDelete:
			if !found {
				continue
			}
			w.del(op.Key, cur)
			res.Results[i] = wire.OpResult{KV: cur.kv(bytes.Clone(op.Key)), Found: true}
		}
	}
	return res, w, nil
}

// apply writes the transaction at rev into b: state, one version per key
// touched, expiry index changes, and the log entry, which it also returns
// encoded. Keys are visited in sorted order so every replica builds the
// same batch.
func (w *txnWriter) apply(b *pebble.Batch, rev int64) ([]byte, error) {
	keys := make([]string, 0, len(w.overlay))
	for k := range w.overlay {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := []byte(k)
		before, after := w.before[k], w.overlay[k]
		if before != nil && before.expires != 0 {
			if err := b.Delete(expiryKey(before.expires, raw), nil); err != nil {
				return nil, err
			}
		}
		if after == nil {
			if err := b.Delete(stateKey(raw), nil); err != nil {
				return nil, err
			}
			if before != nil {
				if err := b.Set(versionKey(raw, rev), appendVersion(nil, &versionRecord{tombstone: true, create: before.create}), nil); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := b.Set(stateKey(raw), appendState(nil, after), nil); err != nil {
			return nil, err
		}
		if err := b.Set(versionKey(raw, rev), appendVersion(nil, &versionRecord{create: after.create, expires: after.expires, value: after.value}), nil); err != nil {
			return nil, err
		}
		if after.expires != 0 {
			if err := b.Set(expiryKey(after.expires, raw), binary.AppendUvarint(nil, uint64(after.mod)), nil); err != nil {
				return nil, err
			}
		}
	}
	slices.SortStableFunc(w.events, func(a, b logEvent) int { return bytes.Compare(a.key, b.key) })
	enc := appendLogEntry(nil, &LogEntry{Rev: rev, events: w.events})
	return enc, b.Set(logKey(rev), enc, nil)
}

// applyCompact discards history below rev: the compacted revision becomes
// rev-1 (C). Log entries up to C go. For every key changed in (old C, C], the
// versions older than its latest version at or below C go, and that latest
// version too if it is a tombstone. Reads at revisions > C stay exact.
func (f *FSM) applyCompact(b *pebble.Batch, meta *metaState, rev int64) error {
	if rev > meta.rev {
		return fmt.Errorf("compact %d (current %d): %w", rev, meta.rev, storage.ErrFutureRev)
	}
	newC := rev - 1
	if newC <= meta.compacted {
		return nil
	}
	latest := make(map[string]int64)
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: logKey(meta.compacted + 1), UpperBound: logKey(newC + 1)})
	if err != nil {
		return fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		raw, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fatal(err)
		}
		e, err := decodeLogEntry(raw)
		if err != nil {
			it.Close()
			return fatal(err)
		}
		for _, ev := range e.events {
			latest[string(ev.key)] = e.Rev // entries come in revision order
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fatal(err)
	}
	keys := make([]string, 0, len(latest))
	for k := range latest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw, r := []byte(k), latest[k]
		if err := b.DeleteRange(versionKey(raw, 0), versionKey(raw, r), nil); err != nil {
			return fatal(err)
		}
		v, closer, err := b.Get(versionKey(raw, r))
		if errors.Is(err, pebble.ErrNotFound) {
			continue // created and deleted within one transaction
		}
		if err != nil {
			return fatal(err)
		}
		ver, derr := decodeVersion(v)
		closer.Close()
		if derr != nil {
			return fatal(derr)
		}
		if ver.tombstone {
			if err := b.Delete(versionKey(raw, r), nil); err != nil {
				return fatal(err)
			}
		}
	}
	if err := b.DeleteRange(logKey(meta.compacted+1), logKey(newC+1), nil); err != nil {
		return fatal(err)
	}
	meta.compacted = newC
	return nil
}
