package fsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/pebblelog"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

var _ raft.BatchingFSM = (*FSM)(nil)

const (
	// memTableSize is Pebble's write buffer.
	memTableSize = 32 << 20
	// cacheSize is Pebble's block cache. Pebble charges every memtable
	// (the one taking writes and those waiting to flush, two by default)
	// to the block cache, so only what is left after 2*memTableSize holds
	// blocks; with the cache no larger than that, every lookup read and
	// decompressed its index, filter and data blocks from the file, which
	// made applying a write three times as costly (BenchmarkApply).
	cacheSize = 2*memTableSize + 64<<20
)

// Options configures an FSM.
type Options struct {
	// Logger receives the FSM's and Pebble's messages; nil discards them.
	Logger *slog.Logger
	// FS is the file system Pebble uses (nil: the OS's). Tests pass an
	// in-memory one that can simulate a crash.
	FS vfs.FS
}

// Stats are the FSM's counters.
type Stats struct {
	AppliedIndex uint64
	Revision     int64
	Compacted    int64
	// Batches counts ApplyBatch calls that wrote; Commands counts the
	// commands applied; Restores counts snapshot restores.
	Batches  uint64
	Commands uint64
	Restores uint64
}

// FSM is flaredb's replicated state machine on one Pebble directory. Raft
// calls Apply/ApplyBatch, Snapshot and Restore; the server reads through
// the read methods. Create it with Open.
type FSM struct {
	log *slog.Logger
	dir string

	// dbMu: readers and ApplyBatch hold it shared; Restore and Close hold
	// it exclusively. closed is set by Close.
	dbMu   sync.RWMutex
	db     *pebble.DB
	closed bool

	// meta is the durable progress; apply goroutine (and Restore) only.
	meta metaState
	// batchLog collects the encoded log entries of the batch being
	// applied; apply goroutine only.
	batchLog [][]byte
	// recent serves watchers the newest log entries from memory.
	recent recentLog
	// restoring is set while a restore marker is on disk.
	restoring atomic.Bool

	// Published after every commit, under notifyMu with replacing notifyCh.
	notifyMu  sync.Mutex
	notifyCh  chan struct{}
	applied   atomic.Uint64
	current   atomic.Int64
	compacted atomic.Int64

	failed atomic.Pointer[error]
	failCh chan struct{}

	batches  atomic.Uint64
	commands atomic.Uint64
	restores atomic.Uint64
}

// Open opens (creating if needed) the FSM in dir.
func Open(dir string, opts Options) (*FSM, error) {
	if dir == "" {
		return nil, errors.New("flaredb: fsm: open: empty directory")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("subsystem", "fsm")
	popts := &pebble.Options{
		CacheSize:    cacheSize,
		MemTableSize: memTableSize,
		// No WAL: the Raft log is the durable record of every write, and
		// a WAL would write each value a second time per member. After a
		// crash Pebble holds the state as of its last flush, and Raft
		// replays the rest (package doc, "Durability and recovery").
		DisableWAL:         true,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebblelog.New(logger, "flaredb fsm"),
		FS:                 opts.FS,
	}
	// Every write reads the key's previous state first, and most writes of
	// a metadata store create keys: bloom filters let those negative
	// lookups skip the sstables (inherited by every level below L0).
	popts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("flaredb: fsm: open %s: %w", dir, err)
	}
	f := &FSM{log: logger, dir: dir, db: db, notifyCh: make(chan struct{}), failCh: make(chan struct{})}
	if err := f.loadMeta(); err != nil {
		return nil, errors.Join(fmt.Errorf("flaredb: fsm: open %s: %w", dir, err), db.Close())
	}
	logger.Info("fsm opened", "dir", dir, "applied_index", f.meta.appliedIndex, "revision", f.meta.rev,
		"compacted", f.meta.compacted, "restoring", f.restoring.Load())
	return f, nil
}

// waitFlushed waits for a flush started by Snapshot, or for the FSM to fail
// or close (then the flush may never finish).
func (f *FSM) waitFlushed(flushed <-chan struct{}) error {
	select {
	case <-flushed:
		return nil
	case <-f.failCh:
		return fmt.Errorf("waiting for the state machine flush: %w", f.Err())
	}
}

// loadMeta reads the meta record into f.meta and the published atomics.
func (f *FSM) loadMeta() error {
	raw, closer, err := f.db.Get(metaStateKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		f.meta = metaState{}
	case err != nil:
		return fmt.Errorf("read meta: %w", err)
	default:
		m, derr := decodeMeta(raw)
		closer.Close()
		if derr != nil {
			return derr
		}
		f.meta = m
	}
	_, closer, err = f.db.Get(metaRestoringKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		f.restoring.Store(false)
	case err != nil:
		return fmt.Errorf("read restore marker: %w", err)
	default:
		closer.Close()
		f.restoring.Store(true)
	}
	f.applied.Store(f.meta.appliedIndex)
	f.current.Store(f.meta.rev)
	f.compacted.Store(f.meta.compacted)
	return nil
}

// AppliedIndex is the last Raft index whose effects are in Pebble.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// NeedsRestore reports whether a restore was interrupted: the state is
// partial and must be restored from a snapshot before use.
func (f *FSM) NeedsRestore() bool { return f.restoring.Load() }

// Revision returns the current and compacted revisions as last applied.
func (f *FSM) Revision() (current, compacted int64) {
	return f.current.Load(), f.compacted.Load()
}

// Stats returns the FSM's counters.
func (f *FSM) Stats() Stats {
	return Stats{
		AppliedIndex: f.applied.Load(), Revision: f.current.Load(), Compacted: f.compacted.Load(),
		Batches: f.batches.Load(), Commands: f.commands.Load(), Restores: f.restores.Load(),
	}
}

// Failed is closed when the FSM hit an unrecoverable error (Err says
// which); it then refuses to apply anything more and the server must stop.
func (f *FSM) Failed() <-chan struct{} { return f.failCh }

// Err returns the error that failed the FSM, or nil.
func (f *FSM) Err() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *FSM) fail(err error) {
	if f.failed.CompareAndSwap(nil, &err) {
		f.log.Error("fsm failed; it applies nothing more", "err", err)
		close(f.failCh)
	}
}

// Notify returns the applied index and a channel closed at the next commit
// after it (an applied batch or a restore).
func (f *FSM) Notify() (uint64, <-chan struct{}) {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	return f.applied.Load(), f.notifyCh
}

// publish makes f.meta visible and wakes waiters.
func (f *FSM) publish() {
	f.notifyMu.Lock()
	f.applied.Store(f.meta.appliedIndex)
	f.current.Store(f.meta.rev)
	f.compacted.Store(f.meta.compacted)
	old := f.notifyCh
	f.notifyCh = make(chan struct{})
	f.notifyMu.Unlock()
	close(old)
}

// WaitApplied blocks until index is applied, ctx ends, or the FSM fails.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		applied, ch := f.Notify()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (applied %d): %w", index, applied, ctx.Err())
		case <-f.failCh:
			return fmt.Errorf("waiting for index %d: %w", index, f.Err())
		}
	}
}

// acquire takes dbMu shared, failing if the FSM is closed.
func (f *FSM) acquire() error {
	f.dbMu.RLock()
	if f.closed {
		f.dbMu.RUnlock()
		return storage.ErrClosed
	}
	if f.restoring.Load() {
		f.dbMu.RUnlock()
		return fmt.Errorf("%w: state is being restored from a snapshot", wire.ErrUnavailable)
	}
	return nil
}

// Close closes Pebble. Raft must be shut down first (no Apply after Close).
func (f *FSM) Close() error {
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	// Flush what the memtables hold, so a restart need not replay it from
	// the Raft log. Not after a failure: the memtables may be suspect.
	if f.Err() == nil {
		if err := f.db.Flush(); err != nil {
			f.log.Warn("fsm: flushing before close failed; the next start replays the Raft log", "err", err)
		}
	}
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("flaredb: fsm: close: %w", err)
	}
	f.log.Info("fsm closed", "applied_index", f.applied.Load(), "revision", f.current.Load())
	return nil
}
