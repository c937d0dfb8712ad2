package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

func openFSM(t testing.TB, dir string) *FSM {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// logs builds raft log entries for commands, starting at index first.
func logs(first uint64, cmds ...Command) []*raft.Log {
	out := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		out[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: c.Encode()}
	}
	return out
}

func put(k, v string) wire.Op { return wire.Op{Type: wire.OpPut, Key: []byte(k), Value: []byte(v)} }
func del(k string) wire.Op    { return wire.Op{Type: wire.OpDelete, Key: []byte(k)} }

func txns(ts int64, ts2 ...wire.Txn) Command {
	return Command{Kind: CmdTxns, Timestamp: ts, Txns: ts2}
}

func apply(t testing.TB, f *FSM, ls []*raft.Log) []any {
	t.Helper()
	resps := f.ApplyBatch(ls)
	for i, r := range resps {
		if err, ok := r.(error); ok {
			t.Fatalf("log %d: %v", ls[i].Index, err)
		}
	}
	return resps
}

func getValue(t testing.TB, f *FSM, k string, rev int64) (string, bool) {
	t.Helper()
	kv, found, _, err := f.Get([]byte(k), rev)
	if err != nil {
		t.Fatalf("get %s@%d: %v", k, rev, err)
	}
	return string(kv.Value), found
}

func TestApplyRevisionsAndMVCC(t *testing.T) {
	f := openFSM(t, "")
	resps := apply(t, f, logs(1,
		txns(1000, wire.Txn{Then: []wire.Op{put("a", "1")}}, wire.Txn{Then: []wire.Op{put("b", "1")}}),
		txns(1001,
			wire.Txn{If: []wire.Compare{{Key: []byte("a"), Target: wire.CompareMissing}}, Then: []wire.Op{put("a", "x")}, Else: []wire.Op{{Type: wire.OpGet, Key: []byte("a")}}},
			wire.Txn{Then: []wire.Op{put("a", "2"), del("b")}},
			wire.Txn{Then: []wire.Op{del("nope")}},
		),
	))
	r1 := resps[0].(*TxnsResult).Results
	r2 := resps[1].(*TxnsResult).Results
	if r1[0].Revision != 1 || r1[1].Revision != 2 || r2[0].Revision != 2 || r2[0].Succeeded || r2[1].Revision != 3 || r2[2].Revision != 3 {
		t.Fatalf("revisions: %+v %+v", r1, r2)
	}
	if cur, _ := f.Revision(); cur != 3 || f.AppliedIndex() != 2 {
		t.Fatalf("revision %d applied %d", cur, f.AppliedIndex())
	}
	for _, c := range []struct {
		k     string
		rev   int64
		want  string
		found bool
	}{{"a", 1, "1", true}, {"a", 2, "1", true}, {"a", 3, "2", true}, {"b", 1, "", false}, {"b", 2, "1", true}, {"b", 3, "", false}, {"a", 0, "2", true}} {
		if v, ok := getValue(t, f, c.k, c.rev); v != c.want || ok != c.found {
			t.Errorf("%s@%d = %q %v", c.k, c.rev, v, ok)
		}
	}
	kvs, rev, _, err := f.Range(context.Background(), []byte("a"), nil, RangeOptions{Revision: 2})
	if err != nil || rev != 2 || len(kvs) != 2 {
		t.Fatalf("range at 2 = %v %d %v", kvs, rev, err)
	}
	kvs, _, _, _ = f.Range(context.Background(), []byte("a"), nil, RangeOptions{Revision: 2, Reverse: true, Limit: 1})
	if len(kvs) != 1 || string(kvs[0].Key) != "b" {
		t.Fatalf("reverse range at 2 = %v", kvs)
	}
	if _, _, _, err := f.Get([]byte("a"), 4); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("future get: %v", err)
	}
	entries, err := f.ReadLog(1, 3)
	if err != nil || len(entries) != 3 || len(entries[2].Events(nil)) != 2 {
		t.Fatalf("log = %+v %v", entries, err)
	}
}

// TestReplayIsIdempotent: after a restart Raft hands the state machine
// entries it already applied (its applied index is only known to Pebble);
// they must be skipped.
func TestReplayIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var all []*raft.Log
	for i := range 20 {
		all = append(all, logs(uint64(i+1), txns(1, wire.Txn{Then: []wire.Op{put(fmt.Sprintf("k%02d", i), "v"), put("counter", fmt.Sprint(i))}}))...)
	}
	apply(t, f, all[:12])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openFSM(t, dir)
	if f.AppliedIndex() != 12 {
		t.Fatalf("applied index after reopen = %d", f.AppliedIndex())
	}
	apply(t, f, all) // replay from index 1
	apply(t, f, all[5:15])
	if cur, _ := f.Revision(); cur != 20 || f.AppliedIndex() != 20 {
		t.Fatalf("after replay: revision %d applied %d", cur, f.AppliedIndex())
	}
	if v, _ := getValue(t, f, "counter", 0); v != "19" {
		t.Fatalf("counter = %s", v)
	}
	// Non-command entries advance the applied index too.
	apply(t, f, []*raft.Log{{Index: 21, Term: 2, Type: raft.LogConfiguration}})
	if f.AppliedIndex() != 21 {
		t.Fatalf("applied after config entry = %d", f.AppliedIndex())
	}
}

func countKeys(t testing.TB, f *FSM, lower, upper []byte) int {
	t.Helper()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

func TestCompactionKeepsReadsAboveIt(t *testing.T) {
	f := openFSM(t, "")
	var cmds []Command
	for i := range 30 {
		ops := []wire.Op{put("hot", fmt.Sprint(i))}
		if i%10 == 0 {
			ops = append(ops, put(fmt.Sprintf("cold%d", i), "c"))
		}
		if i == 15 {
			ops = append(ops, del("cold0"))
		}
		cmds = append(cmds, txns(1, wire.Txn{Then: ops}))
	}
	apply(t, f, logs(1, cmds...))
	versionsBefore := countKeys(t, f, versionLower, versionUpper)
	resps := f.ApplyBatch(logs(31, Command{Kind: CmdCompact, Revision: 31}))
	if err, _ := resps[0].(error); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("compact future: %v", resps[0])
	}
	apply(t, f, logs(32, Command{Kind: CmdCompact, Revision: 21}))
	if _, comp := f.Revision(); comp != 20 {
		t.Fatalf("compacted = %d", comp)
	}
	for rev := int64(21); rev <= 30; rev++ {
		if v, ok := getValue(t, f, "hot", rev); !ok || v != fmt.Sprint(rev-1) {
			t.Fatalf("hot@%d = %q %v", rev, v, ok)
		}
	}
	if v, ok := getValue(t, f, "cold10", 21); !ok || v != "c" {
		t.Fatalf("cold10@21 = %q %v", v, ok)
	}
	if _, ok := getValue(t, f, "cold0", 21); ok {
		t.Fatal("cold0 (deleted at 16) visible at 21")
	}
	if _, _, _, err := f.Get([]byte("hot"), 20); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("get at compacted: %v", err)
	}
	if _, err := f.ReadLog(20, 30); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("log at compacted: %v", err)
	}
	versionsAfter := countKeys(t, f, versionLower, versionUpper)
	// hot keeps 20..30 (11), cold10 and cold20 keep one each; cold0's
	// tombstone and older versions are gone.
	if versionsAfter != 13 {
		t.Fatalf("versions %d -> %d, want 13", versionsBefore, versionsAfter)
	}
	kvs, _, _, err := f.Range(context.Background(), []byte("c"), []byte("d"), RangeOptions{Revision: 21})
	if err != nil || len(kvs) != 2 {
		t.Fatalf("range cold@21 = %v %v", kvs, err)
	}
}

func TestTTLExpiry(t *testing.T) {
	f := openFSM(t, "")
	resps := apply(t, f, logs(1, txns(10_000, wire.Txn{Then: []wire.Op{
		{Type: wire.OpPut, Key: []byte("short"), Value: []byte("x"), TTL: 1},
		{Type: wire.OpPut, Key: []byte("long"), Value: []byte("x"), TTL: 100},
		{Type: wire.OpPut, Key: []byte("renewed"), Value: []byte("x"), TTL: 1},
	}})))
	if e := resps[0].(*TxnsResult).Results[0].Results[0].KV.ExpiresAt; e != 11_000 {
		t.Fatalf("expiresAt = %d", e)
	}
	apply(t, f, logs(2, txns(10_500, wire.Txn{Then: []wire.Op{put("renewed", "y")}})))
	keys, err := f.ExpiredKeys(11_000, 10)
	if err != nil || len(keys) != 1 || string(keys[0].Key) != "short" || keys[0].Mod != 1 {
		t.Fatalf("expired = %+v %v", keys, err)
	}
	// An expire whose mod revision is stale (the key changed) does nothing.
	apply(t, f, logs(3, Command{Kind: CmdExpire, Timestamp: 11_000, Expire: []ExpireKey{{Key: []byte("renewed"), Mod: 1}}}))
	if cur, _ := f.Revision(); cur != 2 {
		t.Fatalf("stale expire wrote: revision %d", cur)
	}
	apply(t, f, logs(4, Command{Kind: CmdExpire, Timestamp: 11_000, Expire: keys}))
	if _, ok := getValue(t, f, "short", 0); ok {
		t.Fatal("short survived its expiry")
	}
	entries, err := f.ReadLog(3, 3)
	if err != nil || len(entries) != 1 || entries[0].Events(nil)[0].Type != wire.EventDelete {
		t.Fatalf("expire log = %+v %v", entries, err)
	}
	if keys, _ := f.ExpiredKeys(200_000, 10); len(keys) != 1 || string(keys[0].Key) != "long" {
		t.Fatalf("remaining expiries = %+v", keys)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.canceled = true; return nil }

func dump(t testing.TB, f *FSM) []string {
	t.Helper()
	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: allLower, UpperBound: allUpper})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		out = append(out, fmt.Sprintf("%q=%q", it.Key(), it.Value()))
	}
	return out
}

// TestLaterTxnsSeeEarlierOnesInOneBatch: transactions applied in one
// ApplyBatch (in one entry and across entries) see each other's writes and
// deletes, as if applied one by one.
func TestLaterTxnsSeeEarlierOnesInOneBatch(t *testing.T) {
	f := openFSM(t, "")
	apply(t, f, logs(1, txns(1, wire.Txn{Then: []wire.Op{put("gone", "x")}})))
	ifValue := func(k, v string) []wire.Compare {
		return []wire.Compare{{Key: []byte(k), Target: wire.CompareValue, Value: []byte(v)}}
	}
	resps := apply(t, f, append(
		logs(2, txns(1,
			wire.Txn{Then: []wire.Op{put("k", "1"), del("gone")}},
			wire.Txn{If: ifValue("k", "1"), Then: []wire.Op{put("k", "2")}},
			wire.Txn{If: []wire.Compare{{Key: []byte("gone"), Target: wire.CompareExists}}, Then: []wire.Op{put("wrong", "gone still seen")}},
		)),
		logs(3, txns(1,
			wire.Txn{If: ifValue("k", "2"), Then: []wire.Op{put("k", "3")}, Else: []wire.Op{put("wrong", "k not 2")}},
		))...))
	first := resps[0].(*TxnsResult).Results
	if !first[1].Succeeded || first[2].Succeeded || !resps[1].(*TxnsResult).Results[0].Succeeded {
		t.Fatalf("results: %+v then %+v", first, resps[1])
	}
	if v, _ := getValue(t, f, "k", 0); v != "3" {
		t.Fatalf("k = %q, want 3", v)
	}
	if v, ok := getValue(t, f, "wrong", 0); ok {
		t.Fatalf("wrong = %q", v)
	}
}

// TestCrashAfterSnapshot simulates a crash (an in-memory file system that
// drops everything not synced) after a snapshot and more applies: the state
// machine has no WAL, so it comes back as of the snapshot's flush, not
// later and never earlier, and replaying the Raft log from the snapshot
// index rebuilds the same state as a run without the crash.
func TestCrashAfterSnapshot(t *testing.T) {
	fs := vfs.NewCrashableMem()
	f, err := Open("fsm", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	var all []*raft.Log
	for i := range 40 {
		all = append(all, logs(uint64(i+1), txns(1, wire.Txn{Then: []wire.Op{put(fmt.Sprintf("k%02d", i%9), fmt.Sprint(i)), put("counter", fmt.Sprint(i))}}))...)
	}
	apply(t, f, all[:25])
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v (closed %v)", err, sink.closed)
	}
	snap.Release()
	apply(t, f, all[25:])
	want := dump(t, f)

	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // exactly what was synced
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f, err = Open("fsm", Options{FS: crashed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if got := f.AppliedIndex(); got != 25 {
		t.Fatalf("applied index after the crash = %d, want 25 (the snapshot's)", got)
	}
	apply(t, f, all[25:]) // what Raft replays from the snapshot index
	if got := dump(t, f); !slices.Equal(got, want) {
		t.Fatalf("state after replay differs from the state before the crash:\n got %d records\nwant %d records", len(got), len(want))
	}
}

func TestSnapshotRestore(t *testing.T) {
	a := openFSM(t, "")
	var cmds []Command
	for i := range 50 {
		cmds = append(cmds, txns(5, wire.Txn{Then: []wire.Op{put(fmt.Sprintf("k%02d", i%7), fmt.Sprint(i)), {Type: wire.OpPut, Key: []byte("t"), Value: []byte("x"), TTL: 60}}}))
	}
	cmds = append(cmds, Command{Kind: CmdCompact, Revision: 20}, Command{Kind: CmdSetMember, MemberID: "m1", APIAddr: "a:1"})
	apply(t, a, logs(1, cmds...))
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v", err)
	}
	snap.Release()

	b := openFSM(t, "")
	apply(t, b, logs(1, txns(1, wire.Txn{Then: []wire.Op{put("junk", "j")}})))
	if err := b.Restore(readCloser(sink.Bytes())); err != nil {
		t.Fatal(err)
	}
	da, db := dump(t, a), dump(t, b)
	if fmt.Sprint(da) != fmt.Sprint(db) {
		t.Fatalf("restored state differs:\n%v\n%v", da, db)
	}
	if b.AppliedIndex() != a.AppliedIndex() || b.Stats().Restores != 1 {
		t.Fatalf("applied %d/%d restores %d", a.AppliedIndex(), b.AppliedIndex(), b.Stats().Restores)
	}
	if m, _ := b.Members(); m["m1"] != "a:1" {
		t.Fatalf("members = %v", m)
	}

	// Corrupt or truncated streams are refused; the member fails and, on
	// reopen, knows its state is incomplete.
	for name, bad := range map[string][]byte{
		"flipped":   flip(sink.Bytes(), len(sink.Bytes())/2),
		"truncated": sink.Bytes()[:len(sink.Bytes())-7],
		"no magic":  sink.Bytes()[3:],
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Restore(readCloser(bad))
			if err == nil {
				t.Fatal("corrupt snapshot restored")
			}
			if name != "no magic" && c.Err() == nil {
				t.Fatal("FSM not failed after a bad restore")
			}
			c.Close()
			c = openFSM(t, dir)
			if name != "no magic" && !c.NeedsRestore() {
				t.Fatal("interrupted restore not detected on reopen")
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}

type rc struct{ *bytes.Reader }

func (rc) Close() error { return nil }

func readCloser(b []byte) rc { return rc{bytes.NewReader(b)} }

func TestVersionKeyOrder(t *testing.T) {
	keys := [][]byte{{0}, {0, 0}, {0, 1}, []byte("a"), []byte("a\x00"), []byte("a\x00b"), []byte("a\x01"), []byte("ab"), []byte("b")}
	var prev []byte
	for _, k := range keys {
		for _, rev := range []int64{1, 2, 1 << 40} {
			vk := versionKey(k, rev)
			if prev != nil && bytes.Compare(prev, vk) >= 0 {
				t.Fatalf("version keys out of order at %q@%d", k, rev)
			}
			prev = vk
			raw, r, err := parseVersionKey(vk)
			if err != nil || !bytes.Equal(raw, k) || r != rev {
				t.Fatalf("parse %x = %q %d %v", vk, raw, r, err)
			}
		}
		if bytes.Compare(versionKey(k, 1<<62), versionKeyAfter(k)) >= 0 {
			t.Fatalf("versionKeyAfter(%q) not after its versions", k)
		}
	}
}

// FuzzDecodeCommand: Raft log payloads never panic the decoder, and what it
// accepts round-trips.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		txns(5, wire.Txn{If: []wire.Compare{{Key: []byte("a"), Target: wire.CompareExists}}, Then: []wire.Op{put("a", "1")}, Else: []wire.Op{del("b")}}),
		txns(6, wire.Txn{If: []wire.Compare{{Key: []byte("m/"), Target: wire.CompareRangeEmpty, RangeEnd: []byte("m0")}}, Then: []wire.Op{del("n")}}),
		{Kind: CmdCompact, Revision: 9},
		{Kind: CmdExpire, Timestamp: 3, Expire: []ExpireKey{{Key: []byte("k"), Mod: 2}}},
		{Kind: CmdSetMember, MemberID: "m", APIAddr: "h:1"},
		{Kind: CmdRemoveMember, MemberID: "m"},
	} {
		f.Add(c.Encode())
	}
	f.Add([]byte{1, 1, 0, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			return
		}
		again, err := DecodeCommand(c.Encode())
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if fmt.Sprintf("%+v", again) != fmt.Sprintf("%+v", c) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, again)
		}
	})
}

// BenchmarkApply measures applying single-put transactions (256-byte
// values, new keys), two per log entry and two entries per batch.
// BenchmarkApply applies puts of fresh keys to a store that already holds
// 100k keys compacted into sstables, as a running store does: each put first
// looks up the key's previous state, which misses.
func BenchmarkApply(b *testing.B) {
	f := openFSM(b, "")
	value := make([]byte, 256)
	idx := uint64(0)
	for i := 0; i < 100_000; i += 100 {
		var ts []wire.Txn
		for j := range 100 {
			ts = append(ts, wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: fmt.Appendf(nil, "\x00old/%d", i+j), Value: value}}})
		}
		idx++
		c := txns(1, ts...)
		f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: c.Encode()}})
	}
	if err := f.db.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += 4 {
		var ls []*raft.Log
		for j := 0; j < 2; j++ {
			idx++
			c := txns(1,
				wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: fmt.Appendf(nil, "\x00a/%d", i+j), Value: value}}},
				wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: fmt.Appendf(nil, "\x00b/%d", i+j), Value: value}}})
			ls = append(ls, &raft.Log{Index: idx, Type: raft.LogCommand, Data: c.Encode()})
		}
		f.ApplyBatch(ls)
	}
	// A low hit rate means the block cache holds no blocks (see cacheSize).
	if c := f.db.Metrics().BlockCache; c.Hits+c.Misses > 0 {
		b.ReportMetric(100*float64(c.Hits)/float64(c.Hits+c.Misses), "cache-hit-%")
	}
}

// evalTxn converts wire compares to storage ones by number.
func TestCompareTargetsMatchStorage(t *testing.T) {
	for w, s := range map[wire.CompareTarget]storage.CompareTarget{
		wire.CompareModRevision: storage.CompareModRevision, wire.CompareValue: storage.CompareValue,
		wire.CompareExists: storage.CompareExists, wire.CompareMissing: storage.CompareMissing,
		wire.CompareRangeEmpty: storage.CompareRangeEmpty,
	} {
		if int(w) != int(s) {
			t.Errorf("wire target %d is storage target %d", w, s)
		}
	}
}
