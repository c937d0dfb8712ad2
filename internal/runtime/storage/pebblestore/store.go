package pebblestore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ultracloud/ultracloud/internal/runtime/pebblelog"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

var _ storage.Store = (*Store)(nil)

const (
	// DefaultMaxBatch is the group-commit size used when Options.MaxBatch <= 0.
	DefaultMaxBatch = 256

	// memTableSize bounds the unflushed write buffer.
	memTableSize = 16 << 20
	// cacheSize is Pebble's block cache: a metadata store is small and mostly
	// served from the memtable and OS page cache. Pebble charges the
	// memtables (two at most by default) to it, so 32 MiB are for blocks.
	cacheSize = 2*memTableSize + 32<<20
	// defaultMaxBatchBytes stops the writer from adding more transactions to one
	// Pebble batch once it holds this much; the rest of the group goes into
	// the next batch. One transaction alone can exceed it (about
	// 2*MaxTxnOps*MaxValueSize, state plus log), far below Pebble's 4 GiB
	// batch limit.
	defaultMaxBatchBytes = 32 << 20
)

// Options configures a Store.
type Options struct {
	// Logger receives the store's and Pebble's log messages. Nil discards
	// them.
	Logger *slog.Logger
	// MaxBatch is the most write transactions committed in one synced Pebble
	// batch. Zero or negative means DefaultMaxBatch.
	MaxBatch int

	// maxBatchBytes overrides defaultMaxBatchBytes (tests only).
	maxBatchBytes int
}

// Stats is a point-in-time snapshot of a Store's counters.
type Stats struct {
	// CurrentRevision is the latest committed revision.
	CurrentRevision int64
	// CompactedRevision is the highest revision whose history is discarded.
	CompactedRevision int64
	// BatchesCommitted counts synced Pebble batches written by the writer.
	BatchesCommitted uint64
	// TxnsCommitted counts write transactions committed; each advanced the
	// revision by one. Read-only transactions are not counted.
	TxnsCommitted uint64
	// Watchers is the number of running watches.
	Watchers int64
}

// Store implements storage.Store on a Pebble directory. Create it with Open.
type Store struct {
	db       *pebble.DB
	log      *slog.Logger
	maxBatch int
	// maxBatchBytes: see defaultMaxBatchBytes.
	maxBatchBytes int

	// closed is set first by Close. dbMu guards the db against being closed
	// under a reader: every direct use of db outside the writer holds it for
	// reading and checks closed; Close takes it for writing once, as a
	// barrier, before stopping everything.
	closed atomic.Bool
	dbMu   sync.RWMutex
	// closing is closed by Close; the writer, enqueuers and watchers select
	// on it.
	closing    chan struct{}
	reqCh      chan *request // unbuffered: blocked senders are the queue
	writerDone chan struct{}
	watchWG    sync.WaitGroup

	// current is the latest committed (synced) revision. Only the writer
	// stores it, under notifyMu together with replacing commitCh, which is
	// closed to wake watchers after every commit.
	notifyMu sync.Mutex
	commitCh chan struct{}
	current  atomic.Int64

	// compactMu serializes Compact; compacted is stored after the compaction
	// batch is synced.
	compactMu sync.Mutex
	compacted atomic.Int64

	// writeErr is set by the writer when a commit failed; from then on every
	// write fails with it, since Pebble's state is no longer known. Writer
	// goroutine only.
	writeErr error

	batches  atomic.Uint64
	txns     atomic.Uint64
	watchers atomic.Int64
}

// Open opens (creating if needed) the store in dir and starts its writer
// goroutine. The caller must Close it.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("pebblestore: open: empty directory")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "pebblestore")
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}

	db, err := pebble.Open(dir, &pebble.Options{
		CacheSize:          cacheSize,
		MemTableSize:       memTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebblelog.New(logger, "pebblestore"),
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	current, compacted, err := recoverMeta(db)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pebblestore: open %s: %w", dir, err), db.Close())
	}

	s := &Store{
		db:            db,
		log:           logger,
		maxBatch:      maxBatch,
		maxBatchBytes: cmp.Or(opts.maxBatchBytes, defaultMaxBatchBytes),
		closing:       make(chan struct{}),
		reqCh:         make(chan *request),
		writerDone:    make(chan struct{}),
		commitCh:      make(chan struct{}),
	}
	s.current.Store(current)
	s.compacted.Store(compacted)
	go s.runWriter()
	logger.Info("store opened", "dir", dir, "revision", current, "compacted", compacted)
	return s, nil
}

// recoverMeta reads the current and compacted revisions and checks that the
// log agrees with them: its entries must be exactly compacted+1 .. current.
func recoverMeta(db *pebble.DB) (current, compacted int64, err error) {
	if current, err = getMeta(db, metaCurrentKey); err != nil {
		return 0, 0, err
	}
	if compacted, err = getMeta(db, metaCompactedKey); err != nil {
		return 0, 0, err
	}
	if compacted < 0 || current < 0 || (current > 0 && compacted >= current) || (current == 0 && compacted != 0) {
		return 0, 0, fmt.Errorf("%w: meta revisions current=%d compacted=%d", errCorrupt, current, compacted)
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: logLower, UpperBound: logUpper})
	if err != nil {
		return 0, 0, fmt.Errorf("log iterator: %w", err)
	}
	defer it.Close()
	var first, last int64
	if it.First() {
		if first, err = revFromLogKey(it.Key()); err != nil {
			return 0, 0, err
		}
		if !it.Last() {
			return 0, 0, fmt.Errorf("log last entry: %w", it.Error())
		}
		if last, err = revFromLogKey(it.Key()); err != nil {
			return 0, 0, err
		}
	}
	if err := it.Error(); err != nil {
		return 0, 0, fmt.Errorf("log scan: %w", err)
	}
	if current == 0 && first != 0 {
		return 0, 0, fmt.Errorf("%w: log has revisions %d..%d but store revision is 0", errCorrupt, first, last)
	}
	if current > 0 && (first != compacted+1 || last != current) {
		return 0, 0, fmt.Errorf("%w: log spans %d..%d, meta says %d..%d", errCorrupt, first, last, compacted+1, current)
	}
	return current, compacted, nil
}

func getMeta(r pebble.Reader, key []byte) (int64, error) {
	raw, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	defer closer.Close()
	rev, err := decodeMeta(raw)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	return rev, nil
}

// acquire takes dbMu for reading and reports ErrClosed if the store is
// closed. On success the caller must call s.dbMu.RUnlock.
func (s *Store) acquire() error {
	s.dbMu.RLock()
	if s.closed.Load() {
		s.dbMu.RUnlock()
		return storage.ErrClosed
	}
	return nil
}

// Get returns the current value of key, or storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, key []byte) (storage.KV, error) {
	if err := checkKey(key); err != nil {
		return storage.KV{}, fmt.Errorf("pebblestore: get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return storage.KV{}, fmt.Errorf("pebblestore: get: %w", err)
	}
	if err := s.acquire(); err != nil {
		return storage.KV{}, fmt.Errorf("pebblestore: get: %w", err)
	}
	defer s.dbMu.RUnlock()
	v, found, err := readState(s.db, key)
	if err != nil {
		return storage.KV{}, fmt.Errorf("pebblestore: get %q: %w", key, err)
	}
	if !found {
		return storage.KV{}, fmt.Errorf("pebblestore: get %q: %w", key, storage.ErrNotFound)
	}
	return v.kv(key), nil
}

// readState reads and decodes the state record of key. The returned value
// does not alias Pebble memory.
func readState(r pebble.Reader, key []byte) (storedValue, bool, error) {
	raw, closer, err := r.Get(stateKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return storedValue{}, false, nil
	}
	if err != nil {
		return storedValue{}, false, err
	}
	buf := bytes.Clone(raw)
	if err := closer.Close(); err != nil {
		return storedValue{}, false, err
	}
	v, err := decodeValue(buf)
	if err != nil {
		return storedValue{}, false, err
	}
	return v, true, nil
}

// kv builds the public KV; it copies key and shares v.value, which the
// caller must own.
func (v storedValue) kv(key []byte) storage.KV {
	return storage.KV{Key: bytes.Clone(key), Value: v.value, CreateRevision: v.create, ModRevision: v.mod}
}

// Range returns, in key order, up to limit keys in [start, end) and the
// revision the read saw. end nil means no upper bound; limit <= 0 means no
// limit. The keys and the revision come from one consistent Pebble view.
func (s *Store) Range(ctx context.Context, start, end []byte, limit int) ([]storage.KV, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("pebblestore: range: %w", err)
	}
	if err := s.acquire(); err != nil {
		return nil, 0, fmt.Errorf("pebblestore: range: %w", err)
	}
	defer s.dbMu.RUnlock()

	upper := stateUpper
	if end != nil {
		upper = stateKey(end)
	}
	// One iterator spanning meta and state: its implicit snapshot makes the
	// revision match the keys.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: metaLower, UpperBound: upper})
	if err != nil {
		return nil, 0, fmt.Errorf("pebblestore: range: %w", err)
	}
	kvs, rev, err := scanRange(ctx, it, start, end, limit)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, 0, fmt.Errorf("pebblestore: range: %w", err)
	}
	return kvs, rev, nil
}

func scanRange(ctx context.Context, it *pebble.Iterator, start, end []byte, limit int) ([]storage.KV, int64, error) {
	var rev int64
	if it.SeekGE(metaCurrentKey) && bytes.Equal(it.Key(), metaCurrentKey) {
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		if rev, err = decodeMeta(raw); err != nil {
			return nil, 0, err
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	var kvs []storage.KV
	if end != nil && bytes.Compare(start, end) >= 0 {
		return kvs, rev, nil
	}
	for ok := it.SeekGE(stateKey(start)); ok; ok = it.Next() {
		if limit > 0 && len(kvs) >= limit {
			break
		}
		if len(kvs)%256 == 255 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		k := it.Key()[1:]
		v, err := decodeValue(bytes.Clone(raw))
		if err != nil {
			return nil, 0, fmt.Errorf("key %q: %w", k, err)
		}
		kvs = append(kvs, v.kv(k))
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	return kvs, rev, nil
}

// Revision returns the current and the compacted revision.
func (s *Store) Revision(ctx context.Context) (current, compacted int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("pebblestore: revision: %w", err)
	}
	if s.closed.Load() {
		return 0, 0, fmt.Errorf("pebblestore: revision: %w", storage.ErrClosed)
	}
	return s.current.Load(), s.compacted.Load(), nil
}

// Compact discards the history of revisions < rev: watches can no longer
// start at or below rev-1, which becomes the compacted revision. rev beyond
// the current revision fails with storage.ErrFutureRev; rev at or below the
// compacted revision + 1 changes nothing. Current values are never touched.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebblestore: compact: %w", err)
	}
	if err := s.acquire(); err != nil {
		return fmt.Errorf("pebblestore: compact: %w", err)
	}
	defer s.dbMu.RUnlock()
	s.compactMu.Lock()
	defer s.compactMu.Unlock()

	if cur := s.current.Load(); rev > cur {
		return fmt.Errorf("pebblestore: compact %d (current %d): %w", rev, cur, storage.ErrFutureRev)
	}
	newCompacted := rev - 1
	if newCompacted <= s.compacted.Load() {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(logLower, logKey(rev), nil); err != nil {
		return fmt.Errorf("pebblestore: compact %d: %w", rev, err)
	}
	if err := b.Set(metaCompactedKey, encodeMeta(newCompacted), nil); err != nil {
		return fmt.Errorf("pebblestore: compact %d: %w", rev, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebblestore: compact %d: %w", rev, err)
	}
	s.compacted.Store(newCompacted)
	s.log.Debug("compacted history", "compacted", newCompacted)
	return nil
}

// Metrics returns the store's counters. It works after Close too.
func (s *Store) Metrics() Stats {
	return Stats{
		CurrentRevision:   s.current.Load(),
		CompactedRevision: s.compacted.Load(),
		BatchesCommitted:  s.batches.Load(),
		TxnsCommitted:     s.txns.Load(),
		Watchers:          s.watchers.Load(),
	}
}

// Close stops the writer (transactions still waiting to be queued fail with
// storage.ErrClosed; those already taken by the writer finish), ends every
// watch cleanly, and closes Pebble. Later calls of any method, Close
// included, return storage.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("pebblestore: close: %w", storage.ErrClosed)
	}
	// Barrier: wait out readers that got in before closed was set; later
	// ones see it. Watch registers watchers under the read lock, so none
	// is added after this point.
	s.dbMu.Lock()
	s.dbMu.Unlock()
	close(s.closing)
	<-s.writerDone
	s.watchWG.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	s.log.Info("store closed", "revision", s.current.Load())
	return nil
}
