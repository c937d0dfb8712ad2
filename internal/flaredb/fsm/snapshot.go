package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Snapshot stream format (also what `flaredb snapshot save` writes):
//
//	magic "FDBSNAP1"
//	records: uvarint len(key) | key | uvarint len(value) | value   (keys > 0 bytes, ascending)
//	end:     0x00 | uvarint record count | CRC-32C (Castagnoli, 4 bytes big-endian) of everything after the magic
//
// Records are every Pebble key of the FSM (state, versions, log, expiry
// index, members, meta), so a restored member is byte-for-byte the same
// state machine, applied index included.
var snapMagic = []byte("FDBSNAP1")

const (
	maxSnapKey   = 64 << 10
	maxSnapValue = 1 << 30
	// restoreBatchBytes bounds one restore batch.
	restoreBatchBytes = 8 << 20
)

// ErrBadSnapshot marks a snapshot stream that cannot be restored.
var ErrBadSnapshot = errors.New("flaredb: bad snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot captures the current state (raft.FSM). It is called between
// applies, so the Pebble snapshot matches the applied index exactly. It also
// starts flushing Pebble's memtables (the state machine has no WAL), and
// Persist waits for that flush before it reports the snapshot stored: once
// it is, Raft may truncate the log below it, so everything up to the
// snapshot index must be on disk in Pebble by then (see the recovery note
// in the package doc). The flush runs in the background so applies go on
// meanwhile.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Err(); err != nil {
		return nil, err
	}
	if err := f.acquire(); err != nil {
		return nil, fmt.Errorf("flaredb: snapshot: %w", err)
	}
	defer f.dbMu.RUnlock()
	flushed, err := f.db.AsyncFlush()
	if err != nil {
		return nil, fmt.Errorf("flaredb: snapshot: flush: %w", err)
	}
	return &fsmSnapshot{snap: f.db.NewSnapshot(), flushed: flushed, log: f}, nil
}

type fsmSnapshot struct {
	snap *pebble.Snapshot
	// flushed is closed once the state up to the snapshot is on disk.
	flushed <-chan struct{}
	log     *FSM
}

// Persist streams the snapshot to sink, and succeeds only once the state
// it holds is also durable in the state machine's own files.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(s.snap, sink); err != nil {
		return errors.Join(fmt.Errorf("flaredb: persist snapshot: %w", err), sink.Cancel())
	}
	if err := s.log.waitFlushed(s.flushed); err != nil {
		return errors.Join(fmt.Errorf("flaredb: persist snapshot: %w", err), sink.Cancel())
	}
	return sink.Close()
}

// Release frees the Pebble snapshot.
func (s *fsmSnapshot) Release() { s.snap.Close() }

// WriteSnapshot streams a point-in-time snapshot of the current state to w
// (for backups; Raft snapshots use Snapshot).
func (f *FSM) WriteSnapshot(w io.Writer) error {
	if err := f.acquire(); err != nil {
		return fmt.Errorf("flaredb: snapshot: %w", err)
	}
	snap := f.db.NewSnapshot()
	f.dbMu.RUnlock()
	defer snap.Close()
	return writeSnapshot(snap, w)
}

func writeSnapshot(r pebble.Reader, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(snapMagic); err != nil {
		return err
	}
	crc := crc32.New(castagnoli)
	out := io.MultiWriter(bw, crc)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: allLower, UpperBound: allUpper})
	if err != nil {
		return err
	}
	defer it.Close()
	var n uint64
	var hdr [2 * binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		k := it.Key()
		h := binary.AppendUvarint(hdr[:0], uint64(len(k)))
		if _, err := out.Write(h); err != nil {
			return err
		}
		if _, err := out.Write(k); err != nil {
			return err
		}
		h = binary.AppendUvarint(hdr[:0], uint64(len(val)))
		if _, err := out.Write(h); err != nil {
			return err
		}
		if _, err := out.Write(val); err != nil {
			return err
		}
		n++
	}
	if err := it.Error(); err != nil {
		return err
	}
	end := binary.AppendUvarint([]byte{0}, n)
	if _, err := out.Write(end); err != nil {
		return err
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces the whole state with a snapshot stream (raft.FSM). Raft
// calls it with no Apply running; reads wait for it. A restore marker is
// synced before the old state is dropped and removed (synced) after the last
// record, so a crash in between is detected at Open (NeedsRestore) instead
// of serving a half-restored state.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	if f.closed {
		return fmt.Errorf("flaredb: restore: %w", storage.ErrClosed)
	}
	// The restored state's history replaces what the recent log holds.
	f.recent.clear()
	if err := f.restore(rc); err != nil {
		err = fmt.Errorf("flaredb: restore: %w", err)
		f.fail(err)
		return err
	}
	if err := f.loadMeta(); err != nil {
		err = fmt.Errorf("flaredb: restore: %w", err)
		f.fail(err)
		return err
	}
	f.restores.Add(1)
	f.log.Info("fsm restored from snapshot", "applied_index", f.meta.appliedIndex, "revision", f.meta.rev, "compacted", f.meta.compacted)
	f.publish()
	return nil
}

func (f *FSM) restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || !bytes.Equal(magic, snapMagic) {
		return fmt.Errorf("%w: missing magic", ErrBadSnapshot)
	}
	b := f.db.NewBatch()
	if err := errors.Join(
		b.DeleteRange(allLower, allUpper, nil),
		b.Set(metaRestoringKey, []byte{1}, nil),
		b.Commit(pebble.NoSync),
		b.Close(),
	); err != nil {
		return err
	}
	// The marker and the removal of the old state reach the disk together
	// here, before any restored record can (a memtable filling up during
	// the restore flushes): a crash later in the restore finds the marker.
	if err := f.db.Flush(); err != nil {
		return err
	}
	f.restoring.Store(true)

	crc := crc32.New(castagnoli)
	tr := &teeByteReader{r: br, h: crc}
	b = f.db.NewBatch()
	defer func() { b.Close() }()
	var n uint64
	var haveMeta bool
	for {
		kl, err := binary.ReadUvarint(tr)
		if err != nil {
			return fmt.Errorf("%w: record %d key length: %v", ErrBadSnapshot, n, err)
		}
		if kl == 0 {
			break
		}
		if kl > maxSnapKey {
			return fmt.Errorf("%w: record %d key of %d bytes", ErrBadSnapshot, n, kl)
		}
		key := make([]byte, kl)
		if _, err := io.ReadFull(tr, key); err != nil {
			return fmt.Errorf("%w: record %d key: %v", ErrBadSnapshot, n, err)
		}
		vl, err := binary.ReadUvarint(tr)
		if err != nil || vl > maxSnapValue {
			return fmt.Errorf("%w: record %d value length", ErrBadSnapshot, n)
		}
		val := make([]byte, vl)
		if _, err := io.ReadFull(tr, val); err != nil {
			return fmt.Errorf("%w: record %d value: %v", ErrBadSnapshot, n, err)
		}
		if bytes.Equal(key, metaRestoringKey) {
			return fmt.Errorf("%w: snapshot holds a restore marker", ErrBadSnapshot)
		}
		if bytes.Equal(key, metaStateKey) {
			if _, err := decodeMeta(val); err != nil {
				return fmt.Errorf("%w: meta record: %v", ErrBadSnapshot, err)
			}
			haveMeta = true
		}
		if err := b.Set(key, val, nil); err != nil {
			return err
		}
		n++
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = f.db.NewBatch()
		}
	}
	count, err := binary.ReadUvarint(tr)
	if err != nil || count != n {
		return fmt.Errorf("%w: trailer says %d records, read %d", ErrBadSnapshot, count, n)
	}
	sum := crc.Sum32()
	var want [4]byte
	if _, err := io.ReadFull(br, want[:]); err != nil {
		return fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(want[:]) != sum {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if n > 0 && !haveMeta {
		return fmt.Errorf("%w: no meta record", ErrBadSnapshot)
	}
	if err := b.Delete(metaRestoringKey, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	if err := f.db.Flush(); err != nil {
		return err
	}
	f.restoring.Store(false)
	return nil
}

// teeByteReader feeds every byte read into a hash.
type teeByteReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (t *teeByteReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	return n, err
}

func (t *teeByteReader) ReadByte() (byte, error) {
	c, err := t.r.ReadByte()
	if err == nil {
		t.h.Write([]byte{c})
	}
	return c, err
}
