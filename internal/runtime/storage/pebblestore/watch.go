package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

const (
	// watchChanSize is the buffer of a watcher's Events channel.
	watchChanSize = 256
	// A watcher reads the log in chunks and closes its Pebble iterator
	// before sending, so a slow consumer never pins Pebble resources. A chunk
	// holds at most this many entries, or this many bytes (always at least
	// one entry).
	watchChunkEntries = 256
	watchChunkBytes   = 4 << 20
)

// Watch streams every change to keys under prefix with revision >=
// fromRevision; 0 means changes after the current revision. It fails with
// storage.ErrCompacted if fromRevision is at or below the compacted revision
// and with storage.ErrFutureRev if it is beyond the current revision + 1.
//
// Each watcher has its own goroutine that reads the durable log, so it sees
// exactly what was committed, however slowly it is consumed. If compaction
// overtakes it, it ends with storage.ErrCompacted. ctx ending, Watcher.Close
// or Store.Close end it cleanly (Err nil).
func (s *Store) Watch(ctx context.Context, prefix []byte, fromRevision int64) (storage.Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pebblestore: watch: %w", err)
	}
	if err := s.acquire(); err != nil {
		return nil, fmt.Errorf("pebblestore: watch: %w", err)
	}
	defer s.dbMu.RUnlock()

	cur, compacted := s.current.Load(), s.compacted.Load()
	if fromRevision > cur+1 {
		// A commit is readable (by Get, Range) a moment before the writer
		// publishes its revision; a caller that read revision R may watch
		// from R+1 in that gap. The durable meta record is the authority.
		if durable, err := getMeta(s.db, metaCurrentKey); err == nil && durable > cur {
			cur = durable
		}
	}
	switch {
	case fromRevision == 0:
		fromRevision = cur + 1
	case fromRevision <= compacted:
		return nil, fmt.Errorf("pebblestore: watch from %d (compacted %d): %w", fromRevision, compacted, storage.ErrCompacted)
	case fromRevision > cur+1:
		return nil, fmt.Errorf("pebblestore: watch from %d (current %d): %w", fromRevision, cur, storage.ErrFutureRev)
	}
	w := &watcher{
		s:      s,
		ctx:    ctx,
		prefix: bytes.Clone(prefix),
		next:   fromRevision,
		ch:     make(chan storage.Event, watchChanSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	// Registered under the read lock: Close cannot be between its barrier
	// and watchWG.Wait here.
	s.watchWG.Add(1)
	s.watchers.Add(1)
	go w.run()
	return w, nil
}

type watcher struct {
	s      *Store
	ctx    context.Context
	prefix []byte
	next   int64 // next revision to deliver; goroutine only

	ch       chan storage.Event
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	err      atomic.Pointer[error]
}

func (w *watcher) Events() <-chan storage.Event { return w.ch }

func (w *watcher) Err() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Close ends the watch and waits for its goroutine to exit.
func (w *watcher) Close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// errWatchEnded tells run to end cleanly.
var errWatchEnded = errors.New("watch ended")

func (w *watcher) run() {
	err := w.loop()
	if errors.Is(err, errWatchEnded) || errors.Is(err, storage.ErrClosed) {
		err = nil
	}
	if err != nil {
		w.err.Store(&err)
		w.s.log.Debug("watch failed", "prefix", w.prefix, "next", w.next, "err", err)
	}
	close(w.ch)
	w.s.watchers.Add(-1)
	w.s.watchWG.Done()
	close(w.done)
}

func (w *watcher) loop() error {
	for {
		latest, wake := w.s.commitNotify()
		for w.next <= latest {
			entries, err := w.s.readLog(w.next, latest)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if err := w.deliver(e); err != nil {
					return err
				}
				w.next = e.rev + 1
			}
		}
		select {
		case <-wake:
		case <-w.stop:
			return errWatchEnded
		case <-w.ctx.Done():
			return errWatchEnded
		case <-w.s.closing:
			return errWatchEnded
		}
	}
}

// deliver sends the events of one entry that match the prefix.
func (w *watcher) deliver(e logEntry) error {
	for _, ev := range e.events {
		if !bytes.HasPrefix(ev.key, w.prefix) {
			continue
		}
		out := storage.Event{Type: ev.typ, KV: storage.KV{
			Key: ev.key, Value: ev.value, CreateRevision: ev.create, ModRevision: e.rev,
		}}
		select {
		case w.ch <- out:
		case <-w.stop:
			return errWatchEnded
		case <-w.ctx.Done():
			return errWatchEnded
		case <-w.s.closing:
			return errWatchEnded
		}
	}
	return nil
}

// readLog returns the log entries from..to in order, or a prefix of them
// bounded by watchChunkEntries/watchChunkBytes (at least one). The entries
// do not alias Pebble memory. A missing revision means compaction removed it.
func (s *Store) readLog(from, to int64) ([]logEntry, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.dbMu.RUnlock()
	if c := s.compacted.Load(); from <= c {
		return nil, fmt.Errorf("pebblestore: watch at %d (compacted %d): %w", from, c, storage.ErrCompacted)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(from), UpperBound: logKey(to + 1)})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: watch: %w", err)
	}
	entries, err := s.scanLog(it, from)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("pebblestore: watch: %w", cerr)
	}
	return entries, err
}

func (s *Store) scanLog(it *pebble.Iterator, from int64) ([]logEntry, error) {
	var entries []logEntry
	want, bytesRead := from, 0
	for ok := it.First(); ok && len(entries) < watchChunkEntries && bytesRead < watchChunkBytes; ok = it.Next() {
		rev, err := revFromLogKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("pebblestore: watch: %w", err)
		}
		if rev != want {
			return nil, s.logGap(want)
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("pebblestore: watch: read log %d: %w", rev, err)
		}
		e, err := decodeLogEntry(bytes.Clone(raw))
		if err != nil {
			return nil, fmt.Errorf("pebblestore: watch: log %d: %w", rev, err)
		}
		if e.rev != rev {
			return nil, fmt.Errorf("pebblestore: watch: log key %d holds revision %d: %w", rev, e.rev, errCorrupt)
		}
		entries = append(entries, e)
		bytesRead += len(raw)
		want++
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebblestore: watch: %w", err)
	}
	if len(entries) == 0 {
		// The caller only asks for revisions that were committed.
		return nil, s.logGap(want)
	}
	return entries, nil
}

// logGap explains a missing log entry. The log is contiguous by
// construction, so a hole at or below the compacted revision is compaction;
// waiting for compactMu lets a compaction that is committing finish
// publishing its revision first.
func (s *Store) logGap(rev int64) error {
	s.compactMu.Lock()
	c := s.compacted.Load()
	s.compactMu.Unlock()
	if rev <= c {
		return fmt.Errorf("pebblestore: watch at %d (compacted %d): %w", rev, c, storage.ErrCompacted)
	}
	return fmt.Errorf("pebblestore: watch: log entry %d missing (compacted %d): %w", rev, c, errCorrupt)
}
