package fsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Reads serve local state: callers decide whether it is fresh enough (the
// server waits for a read index first unless a stale read was asked for).
// Results never alias Pebble memory. Keys are raw.

// view is a consistent read view: a Pebble snapshot plus its meta record.
type view struct {
	snap *pebble.Snapshot
	meta metaState
}

func (f *FSM) newView() (*view, error) {
	if err := f.acquire(); err != nil {
		return nil, err
	}
	snap := f.db.NewSnapshot()
	f.dbMu.RUnlock()
	v := &view{snap: snap}
	raw, closer, err := snap.Get(metaStateKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		snap.Close()
		return nil, err
	default:
		m, derr := decodeMeta(raw)
		closer.Close()
		if derr != nil {
			snap.Close()
			return nil, derr
		}
		v.meta = m
	}
	return v, nil
}

func (v *view) close() { v.snap.Close() }

// checkRev validates a read revision (0: latest) against the view.
func (v *view) checkRev(rev int64) (int64, error) {
	switch {
	case rev == 0:
		return v.meta.rev, nil
	case rev > v.meta.rev:
		return 0, fmt.Errorf("read at %d (current %d): %w", rev, v.meta.rev, storage.ErrFutureRev)
	case rev <= v.meta.compacted:
		return 0, fmt.Errorf("read at %d (compacted %d): %w", rev, v.meta.compacted, storage.ErrCompacted)
	}
	return rev, nil
}

// Get returns raw's value at rev (0: latest) and the revision read at. For
// the latest value readRev is a revision at or below the state the read saw
// (it is loaded before the read), so watching from readRev+1 misses
// nothing; the value itself may be newer.
func (f *FSM) Get(raw []byte, rev int64) (kv wire.KV, found bool, readRev int64, err error) {
	if rev == 0 {
		if err := f.acquire(); err != nil {
			return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: %w", err)
		}
		defer f.dbMu.RUnlock()
		readRev = f.current.Load()
		s, ok, err := readState(f.db, raw)
		if err != nil {
			return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: %w", err)
		}
		if !ok {
			return wire.KV{}, false, readRev, nil
		}
		return s.kv(bytes.Clone(raw)), true, readRev, nil
	}
	v, err := f.newView()
	if err != nil {
		return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: %w", err)
	}
	defer v.close()
	at, err := v.checkRev(rev)
	if err != nil {
		return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: %w", err)
	}
	if at == v.meta.rev {
		s, ok, err := readState(v.snap, raw)
		if err != nil || !ok {
			return wire.KV{}, false, at, err
		}
		return s.kv(bytes.Clone(raw)), true, at, nil
	}
	kv, found, err = versionAt(v.snap, raw, at)
	return kv, found, at, err
}

// versionAt returns raw's value as of revision at from the version keyspace.
func versionAt(r pebble.Reader, raw []byte, at int64) (wire.KV, bool, error) {
	prefix := versionPrefix(raw)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: versionKey(raw, at+1)})
	if err != nil {
		return wire.KV{}, false, err
	}
	defer it.Close()
	if !it.Last() {
		return wire.KV{}, false, it.Error()
	}
	return decodeVersionKV(it, raw)
}

func decodeVersionKV(it *pebble.Iterator, raw []byte) (wire.KV, bool, error) {
	_, rev, err := parseVersionKey(it.Key())
	if err != nil {
		return wire.KV{}, false, err
	}
	val, err := it.ValueAndErr()
	if err != nil {
		return wire.KV{}, false, err
	}
	ver, err := decodeVersion(bytes.Clone(val))
	if err != nil {
		return wire.KV{}, false, err
	}
	if ver.tombstone {
		return wire.KV{}, false, nil
	}
	return wire.KV{Key: bytes.Clone(raw), Value: ver.value, CreateRevision: ver.create, ModRevision: rev, ExpiresAt: ver.expires}, true, nil
}

// RangeOptions bound a range read.
type RangeOptions struct {
	Limit    int   // <= 0: none
	MaxBytes int   // stop (More) once the result holds this many bytes; <= 0: none
	Revision int64 // 0: latest
	Reverse  bool
}

// Range returns keys in [start, end) (end nil: unbounded) at a revision, the
// revision read at, and whether more keys remain.
func (f *FSM) Range(ctx context.Context, start, end []byte, o RangeOptions) ([]wire.KV, int64, bool, error) {
	if o.Revision == 0 {
		return f.rangeLatest(ctx, start, end, o)
	}
	v, err := f.newView()
	if err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	defer v.close()
	at, err := v.checkRev(o.Revision)
	if err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	if end != nil && bytes.Compare(start, end) >= 0 {
		return nil, at, false, nil
	}
	var kvs []wire.KV
	var more bool
	if at == v.meta.rev {
		kvs, more, err = rangeState(ctx, v.snap, start, end, o)
	} else {
		kvs, more, err = rangeVersions(ctx, v.snap, start, end, at, o)
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	return kvs, at, more, nil
}

// rangeLatest reads current state and the revision from one iterator
// spanning the meta record and the state keyspace: its implicit snapshot
// makes them agree, without the cost of a Pebble snapshot.
func (f *FSM) rangeLatest(ctx context.Context, start, end []byte, o RangeOptions) ([]wire.KV, int64, bool, error) {
	if err := f.acquire(); err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	defer f.dbMu.RUnlock()
	upper := stateUpper
	if end != nil {
		upper = stateKey(end)
	}
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: metaStateKey, UpperBound: upper})
	if err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	defer it.Close()
	var meta metaState
	if it.SeekGE(metaStateKey) && bytes.Equal(it.Key(), metaStateKey) {
		val, err := it.ValueAndErr()
		if err == nil {
			meta, err = decodeMeta(val)
		}
		if err != nil {
			return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
		}
	}
	if end != nil && bytes.Compare(start, end) >= 0 {
		return nil, meta.rev, false, it.Error()
	}
	c := collector{o: o}
	lower := stateKey(start)
	var ok bool
	if o.Reverse {
		ok = it.Last()
	} else {
		ok = it.SeekGE(lower)
	}
	for ; ok; ok = f.step(it, o.Reverse) {
		k := it.Key()
		if bytes.Compare(k, lower) < 0 {
			break // reverse iteration reached the meta record
		}
		if c.full() {
			return c.kvs, meta.rev, true, nil
		}
		if len(c.kvs)%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, 0, false, err
			}
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, false, err
		}
		raw := bytes.Clone(k[1:])
		s, err := decodeState(bytes.Clone(val))
		if err != nil {
			return nil, 0, false, fmt.Errorf("flaredb: range: key %q: %w", raw, err)
		}
		c.add(s.kv(raw))
	}
	if err := it.Error(); err != nil {
		return nil, 0, false, fmt.Errorf("flaredb: range: %w", err)
	}
	return c.kvs, meta.rev, false, nil
}

func (f *FSM) step(it *pebble.Iterator, reverse bool) bool {
	if reverse {
		return it.Prev()
	}
	return it.Next()
}

type collector struct {
	o     RangeOptions
	kvs   []wire.KV
	bytes int
}

// full reports whether the collector can take no more.
func (c *collector) full() bool {
	return (c.o.Limit > 0 && len(c.kvs) >= c.o.Limit) || (c.o.MaxBytes > 0 && c.bytes >= c.o.MaxBytes)
}

func (c *collector) add(kv wire.KV) {
	c.kvs = append(c.kvs, kv)
	c.bytes += len(kv.Key) + len(kv.Value) + 32
}

func rangeState(ctx context.Context, r pebble.Reader, start, end []byte, o RangeOptions) ([]wire.KV, bool, error) {
	upper := stateUpper
	if end != nil {
		upper = stateKey(end)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: stateKey(start), UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	c := collector{o: o}
	first, next := it.First, it.Next
	if o.Reverse {
		first, next = it.Last, it.Prev
	}
	for ok := first(); ok; ok = next() {
		if c.full() {
			return c.kvs, true, nil
		}
		if len(c.kvs)%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, false, err
			}
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, false, err
		}
		raw := bytes.Clone(it.Key()[1:])
		s, err := decodeState(bytes.Clone(val))
		if err != nil {
			return nil, false, fmt.Errorf("key %q: %w", raw, err)
		}
		c.add(s.kv(raw))
	}
	return c.kvs, false, it.Error()
}

// rangeVersions reads a range as of revision at: for each key with versions
// in the range, the newest version at or below at, if it is not a tombstone.
func rangeVersions(ctx context.Context, r pebble.Reader, start, end []byte, at int64, o RangeOptions) ([]wire.KV, bool, error) {
	upper := versionUpper
	if end != nil {
		upper = versionPrefix(end)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: versionPrefix(start), UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	c := collector{o: o}
	ok := it.First()
	if o.Reverse {
		ok = it.Last()
	}
	for steps := 0; ok; steps++ {
		if steps%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, false, err
			}
		}
		raw, _, err := parseVersionKey(it.Key())
		if err != nil {
			return nil, false, err
		}
		// Position on raw's newest version <= at, then decide.
		var found bool
		if it.SeekLT(versionKey(raw, at+1)) {
			if k, _, err := parseVersionKey(it.Key()); err == nil && bytes.Equal(k, raw) {
				found = true
			}
		}
		if found {
			kv, live, err := decodeVersionKV(it, raw)
			if err != nil {
				return nil, false, err
			}
			if live {
				if c.full() {
					return c.kvs, true, nil
				}
				c.add(kv)
			}
		}
		if o.Reverse {
			ok = it.SeekLT(versionPrefix(raw))
		} else {
			ok = it.SeekGE(versionKeyAfter(raw))
		}
	}
	return c.kvs, false, it.Error()
}

// ReadTxn evaluates a transaction without writes against the latest state
// and returns its result at the current revision.
func (f *FSM) ReadTxn(t *wire.Txn) (wire.TxnResult, error) {
	v, err := f.newView()
	if err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	defer v.close()
	res, _, err := evalTxn(snapReader{v.snap}, t, v.meta.rev+1, v.meta.clock)
	if err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	res.Revision = v.meta.rev
	return res, nil
}

// Log reading for watches: chunks bounded by entries and bytes.
const (
	logChunkEntries = 256
	logChunkBytes   = 4 << 20
)

// ReadLog returns log entries from..to (inclusive) in order, or a prefix of
// them bounded by size (at least one). from at or below the compacted
// revision fails with storage.ErrCompacted.
func (f *FSM) ReadLog(from, to int64) ([]LogEntry, error) {
	if entries, ok, err := f.readRecentLog(from, to); ok || err != nil {
		return entries, err
	}
	return f.readStoredLog(from, to)
}

// readStoredLog is ReadLog from Pebble.
func (f *FSM) readStoredLog(from, to int64) ([]LogEntry, error) {
	v, err := f.newView()
	if err != nil {
		return nil, fmt.Errorf("flaredb: watch: %w", err)
	}
	defer v.close()
	if from <= v.meta.compacted {
		return nil, fmt.Errorf("flaredb: watch at %d (compacted %d): %w", from, v.meta.compacted, storage.ErrCompacted)
	}
	if to > v.meta.rev {
		to = v.meta.rev
	}
	if from > to {
		return nil, nil
	}
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: logKey(from), UpperBound: logKey(to + 1)})
	if err != nil {
		return nil, fmt.Errorf("flaredb: watch: %w", err)
	}
	defer it.Close()
	var entries []LogEntry
	want, size := from, 0
	for ok := it.First(); ok && len(entries) < logChunkEntries && size < logChunkBytes; ok = it.Next() {
		rev, err := revFromLogKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("flaredb: watch: %w", err)
		}
		if rev != want {
			return nil, fmt.Errorf("flaredb: watch: log entry %d missing (compacted %d): %w", want, v.meta.compacted, errCorrupt)
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("flaredb: watch: read log %d: %w", rev, err)
		}
		e, err := decodeLogEntry(bytes.Clone(val))
		if err != nil {
			return nil, fmt.Errorf("flaredb: watch: log %d: %w", rev, err)
		}
		entries = append(entries, e)
		size += len(val)
		want++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("flaredb: watch: %w", err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("flaredb: watch: log entry %d missing: %w", from, errCorrupt)
	}
	return entries, nil
}

// readRecentLog serves ReadLog from the recent log when it holds from;
// ok is false when Pebble must be read instead.
func (f *FSM) readRecentLog(from, to int64) (entries []LogEntry, ok bool, err error) {
	if err := f.acquire(); err != nil {
		return nil, false, fmt.Errorf("flaredb: watch: %w", err)
	}
	defer f.dbMu.RUnlock()
	cur, compacted := f.Revision()
	if from <= compacted {
		return nil, false, fmt.Errorf("flaredb: watch at %d (compacted %d): %w", from, compacted, storage.ErrCompacted)
	}
	to = min(to, cur)
	if from > to {
		return nil, true, nil
	}
	entries, ok = f.recent.read(from, to, logChunkEntries, logChunkBytes)
	return entries, ok, nil
}

// ExpiredKeys returns up to limit keys whose expiry is at or before now
// (unix ms), with the mod revision their expiry belongs to.
func (f *FSM) ExpiredKeys(now int64, limit int) ([]ExpireKey, error) {
	if err := f.acquire(); err != nil {
		return nil, err
	}
	defer f.dbMu.RUnlock()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: expiryLower, UpperBound: expiryKey(now+1, nil)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []ExpireKey
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		k := it.Key()
		if len(k) < 10 {
			return nil, fmt.Errorf("%w: expiry key %x", errCorrupt, k)
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		mod, n := binary.Uvarint(val)
		if n <= 0 {
			return nil, fmt.Errorf("%w: expiry record %x", errCorrupt, val)
		}
		out = append(out, ExpireKey{Key: bytes.Clone(k[9:]), Mod: int64(mod)})
	}
	return out, it.Error()
}

// Members returns the recorded API address of every member by ID.
func (f *FSM) Members() (map[string]string, error) {
	if err := f.acquire(); err != nil {
		return nil, err
	}
	defer f.dbMu.RUnlock()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: memberLower, UpperBound: memberUpper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := make(map[string]string)
	for ok := it.First(); ok; ok = it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		out[string(it.Key()[1:])] = string(val)
	}
	return out, it.Error()
}
