package fsm

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

func revs(es []LogEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Rev
	}
	return out
}

func TestRecentLogBounds(t *testing.T) {
	var r recentLog
	if _, ok := r.read(1, 1, 10, 1<<20); ok {
		t.Fatal("empty log served a read")
	}
	for rev := int64(1); rev <= recentLogEntries+10; rev++ {
		r.add(LogEntry{Rev: rev}, 100)
	}
	// The oldest ten went to make room.
	if _, ok := r.read(10, 20, 100, 1<<20); ok {
		t.Fatal("evicted revision 10 served")
	}
	got, ok := r.read(11, 15, 100, 1<<20)
	if !ok || !reflect.DeepEqual(revs(got), []int64{11, 12, 13, 14, 15}) {
		t.Fatalf("read(11, 15) = %v, %v", revs(got), ok)
	}
	// Bounded by entries, by bytes (at least one), and by the newest held.
	if got, _ := r.read(11, 100, 3, 1<<20); !reflect.DeepEqual(revs(got), []int64{11, 12, 13}) {
		t.Fatalf("entry limit: %v", revs(got))
	}
	if got, _ := r.read(11, 100, 100, 1); !reflect.DeepEqual(revs(got), []int64{11}) {
		t.Fatalf("byte limit: %v", revs(got))
	}
	last := int64(recentLogEntries + 10)
	if got, _ := r.read(last-1, last+5, 100, 1<<20); !reflect.DeepEqual(revs(got), []int64{last - 1, last}) {
		t.Fatalf("past the newest: %v", revs(got))
	}
	if _, ok := r.read(last+1, last+1, 100, 1<<20); ok {
		t.Fatal("a revision not added yet served")
	}
	if r.bytes != recentLogEntries*100 || r.n != recentLogEntries {
		t.Fatalf("held %d entries, %d bytes", r.n, r.bytes)
	}

	// A gap (as after a restore) starts afresh; so does an entry larger
	// than the budget, and the log then holds nothing until the next.
	r.add(LogEntry{Rev: last + 5}, 100)
	if _, ok := r.read(last, last, 10, 1<<20); ok || r.n != 1 {
		t.Fatalf("after a gap: %d entries held, older ones served: %v", r.n, ok)
	}
	r.add(LogEntry{Rev: last + 6}, recentLogBytes+1)
	if r.n != 0 || r.bytes != 0 {
		t.Fatalf("after an oversize entry: %d entries, %d bytes", r.n, r.bytes)
	}
	r.add(LogEntry{Rev: last + 7}, 10)
	if got, ok := r.read(last+7, last+7, 10, 10); !ok || len(got) != 1 {
		t.Fatalf("after restarting: %v, %v", revs(got), ok)
	}
}

func TestRecentLogByteBudget(t *testing.T) {
	var r recentLog
	const size = recentLogBytes / 4
	for rev := int64(1); rev <= 10; rev++ {
		r.add(LogEntry{Rev: rev}, size)
	}
	if r.n != 4 || r.bytes != 4*size {
		t.Fatalf("held %d entries, %d bytes; want 4 within the budget", r.n, r.bytes)
	}
	if got, ok := r.read(7, 10, 100, 1<<30); !ok || !reflect.DeepEqual(revs(got), []int64{7, 8, 9, 10}) {
		t.Fatalf("read = %v, %v", revs(got), ok)
	}
}

// TestReadLogFromMemoryMatchesPebble: the entries watchers get from the
// recent log are those stored in Pebble, event for event, for every
// window; compaction still refuses old revisions; after a restore the
// recent log holds nothing of the replaced history.
func TestReadLogFromMemoryMatchesPebble(t *testing.T) {
	f := openFSM(t, "")
	var cmds []Command
	for i := range 300 {
		ops := []wire.Op{put(fmt.Sprintf("k%03d", i%37), fmt.Sprint(i))}
		if i%5 == 0 {
			ops = append(ops, del(fmt.Sprintf("k%03d", (i+3)%37)), put("ttl", "x"))
			ops[len(ops)-1].TTL = 60
		}
		cmds = append(cmds, txns(int64(i+1), wire.Txn{Then: ops}))
	}
	// Several batches, as Raft hands them over.
	for i := 0; i < len(cmds); i += 64 {
		apply(t, f, logs(uint64(i+1), cmds[i:min(i+64, len(cmds))]...))
	}
	cur, _ := f.Revision()
	for _, w := range [][2]int64{{1, cur}, {1, 1}, {17, 90}, {cur - 3, cur + 10}, {cur, cur}} {
		mem, ok, err := f.readRecentLog(w[0], w[1])
		if err != nil || !ok {
			t.Fatalf("recent log for %v: ok %v, %v", w, ok, err)
		}
		disk, err := f.readStoredLog(w[0], w[1])
		if err != nil {
			t.Fatal(err)
		}
		if len(mem) == 0 || !reflect.DeepEqual(mem, disk) {
			t.Fatalf("window %v: memory %v\npebble %v", w, revs(mem), revs(disk))
		}
	}

	apply(t, f, logs(301, Command{Kind: CmdCompact, Revision: 50}))
	if _, err := f.ReadLog(49, 60); err == nil {
		t.Fatal("compacted revision served")
	}
	if got, err := f.ReadLog(50, 52); err != nil || !reflect.DeepEqual(revs(got), []int64{50, 51, 52}) {
		t.Fatalf("above compaction: %v, %v", revs(got), err)
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := openFSM(t, "")
	for i := range 20 { // a history of its own, which the restore replaces
		apply(t, g, logs(uint64(i+1), txns(1, wire.Txn{Then: []wire.Op{put("other", fmt.Sprint(i))}})))
	}
	if err := g.Restore(readCloser(sink.Bytes())); err != nil {
		t.Fatal(err)
	}
	if g.recent.n != 0 {
		t.Fatalf("recent log keeps %d entries across a restore", g.recent.n)
	}
	got, err := g.ReadLog(60, 62)
	want, _ := f.readStoredLog(60, 62)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after restore: %v, %v; want %v", revs(got), err, revs(want))
	}
}

// BenchmarkReadLog is one watcher's read of the change just applied, as
// every watcher makes after every applied batch: from the recent log in
// memory, and from Pebble (a snapshot, the meta record and an iterator),
// which is where every read went before the recent log. The state holds
// 100,000 older revisions, flushed and compacted into sstables.
func BenchmarkReadLog(b *testing.B) {
	for _, src := range []string{"memory", "pebble"} {
		b.Run("from="+src, func(b *testing.B) {
			f := openFSM(b, "")
			value := make([]byte, 600)
			idx := uint64(0)
			applyOne := func(key []byte) {
				idx++
				c := txns(1, wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: key, Value: value}}})
				f.ApplyBatch(logs(idx, c))
			}
			for i := range 100_000 {
				applyOne(fmt.Appendf(nil, "\x00old/%d", i))
			}
			if err := f.db.Compact(b.Context(), []byte{0}, []byte{0xff}, true); err != nil {
				b.Fatal(err)
			}
			read := f.ReadLog
			if src == "pebble" {
				read = f.readStoredLog
			}
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				applyOne(fmt.Appendf(nil, "\x00new/%d", i))
				b.StartTimer()
				rev, _ := f.Revision()
				if es, err := read(rev, rev); err != nil || len(es) != 1 {
					b.Fatalf("read %d: %d entries, %v", rev, len(es), err)
				}
			}
		})
	}
}
