package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func put(k, v string) storage.Op {
	return storage.Op{Type: storage.OpPut, Key: []byte(k), Value: []byte(v)}
}
func get(k string) storage.Op { return storage.Op{Type: storage.OpGet, Key: []byte(k)} }
func del(k string) storage.Op { return storage.Op{Type: storage.OpDelete, Key: []byte(k)} }

func mustTxn(t testing.TB, s storage.Store, txn storage.Txn) storage.TxnResult {
	t.Helper()
	res, err := s.Txn(context.Background(), txn)
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	return res
}

func mustPut(t testing.TB, s storage.Store, k, v string) storage.KV {
	t.Helper()
	kv, err := storage.Put(context.Background(), s, []byte(k), []byte(v))
	if err != nil {
		t.Fatalf("Put %s: %v", k, err)
	}
	return kv
}

func checkRev(t testing.TB, s storage.Store, wantCur, wantCompacted int64) {
	t.Helper()
	cur, comp, err := s.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cur != wantCur || comp != wantCompacted {
		t.Fatalf("Revision = %d/%d, want %d/%d", cur, comp, wantCur, wantCompacted)
	}
}

func TestGetPutRange(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	checkRev(t, s, 0, 0)
	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	kvs, rev, err := s.Range(ctx, nil, nil, 0)
	if err != nil || len(kvs) != 0 || rev != 0 {
		t.Fatalf("empty Range = %v, %d, %v", kvs, rev, err)
	}

	a1 := mustPut(t, s, "a", "1")
	if a1.CreateRevision != 1 || a1.ModRevision != 1 || string(a1.Value) != "1" || string(a1.Key) != "a" {
		t.Fatalf("put a = %+v", a1)
	}
	mustPut(t, s, "b", "2")
	mustPut(t, s, "c", "")
	a2 := mustPut(t, s, "a", "11")
	if a2.CreateRevision != 1 || a2.ModRevision != 4 {
		t.Fatalf("overwrite a = %+v", a2)
	}
	got, err := s.Get(ctx, []byte("a"))
	if err != nil || string(got.Value) != "11" || got.CreateRevision != 1 || got.ModRevision != 4 {
		t.Fatalf("Get a = %+v, %v", got, err)
	}
	got, err = s.Get(ctx, []byte("c"))
	if err != nil || len(got.Value) != 0 {
		t.Fatalf("Get c = %+v, %v", got, err)
	}

	kvs, rev, err = s.Range(ctx, nil, nil, 0)
	if err != nil || rev != 4 {
		t.Fatalf("Range: rev %d, %v", rev, err)
	}
	if keys := kvKeys(kvs); keys != "a,b,c" {
		t.Fatalf("Range keys = %s", keys)
	}
	kvs, _, _ = s.Range(ctx, []byte("b"), nil, 0)
	if keys := kvKeys(kvs); keys != "b,c" {
		t.Fatalf("Range [b,) = %s", keys)
	}
	kvs, _, _ = s.Range(ctx, []byte("a"), []byte("c"), 0)
	if keys := kvKeys(kvs); keys != "a,b" {
		t.Fatalf("Range [a,c) = %s", keys)
	}
	kvs, _, _ = s.Range(ctx, nil, nil, 2)
	if keys := kvKeys(kvs); keys != "a,b" {
		t.Fatalf("Range limit 2 = %s", keys)
	}
	kvs, _, _ = s.Range(ctx, []byte("c"), []byte("a"), 0)
	if len(kvs) != 0 {
		t.Fatalf("Range inverted = %s", kvKeys(kvs))
	}

	prev, found, err := storage.Delete(ctx, s, []byte("b"))
	if err != nil || !found || string(prev.Value) != "2" || prev.ModRevision != 2 {
		t.Fatalf("Delete b = %+v, %v, %v", prev, found, err)
	}
	if _, err := s.Get(ctx, []byte("b")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get deleted: %v", err)
	}
	checkRev(t, s, 5, 0)
}

func kvKeys(kvs []storage.KV) string {
	var b bytes.Buffer
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(kv.Key)
	}
	return b.String()
}

func TestTxnCompareAndSwap(t *testing.T) {
	s := openStore(t, "", Options{})
	kv := mustPut(t, s, "k", "v1")

	// CAS on ModRevision succeeds once.
	res := mustTxn(t, s, storage.Txn{
		If:   []storage.Compare{{Key: []byte("k"), Target: storage.CompareModRevision, Revision: kv.ModRevision}},
		Then: []storage.Op{put("k", "v2")},
		Else: []storage.Op{get("k")},
	})
	if !res.Succeeded || res.Revision != 2 || res.Results[0].KV.ModRevision != 2 || !res.Results[0].Found {
		t.Fatalf("CAS 1 = %+v", res)
	}
	// The same CAS now fails and the else branch reads the current value.
	res = mustTxn(t, s, storage.Txn{
		If:   []storage.Compare{{Key: []byte("k"), Target: storage.CompareModRevision, Revision: kv.ModRevision}},
		Then: []storage.Op{put("k", "v3")},
		Else: []storage.Op{get("k"), get("missing")},
	})
	if res.Succeeded || res.Revision != 2 || len(res.Results) != 2 {
		t.Fatalf("CAS 2 = %+v", res)
	}
	if r := res.Results[0]; !r.Found || string(r.KV.Value) != "v2" || r.KV.ModRevision != 2 || r.KV.CreateRevision != 1 {
		t.Fatalf("else get = %+v", r)
	}
	if r := res.Results[1]; r.Found {
		t.Fatalf("else get missing = %+v", r)
	}
	// CompareValue, CompareExists, CompareMissing, ModRevision 0.
	for i, c := range []struct {
		cmp  storage.Compare
		want bool
	}{
		{storage.Compare{Key: []byte("k"), Target: storage.CompareValue, Value: []byte("v2")}, true},
		{storage.Compare{Key: []byte("k"), Target: storage.CompareValue, Value: []byte("v1")}, false},
		{storage.Compare{Key: []byte("x"), Target: storage.CompareValue, Value: nil}, false},
		{storage.Compare{Key: []byte("k"), Target: storage.CompareExists}, true},
		{storage.Compare{Key: []byte("x"), Target: storage.CompareExists}, false},
		{storage.Compare{Key: []byte("x"), Target: storage.CompareMissing}, true},
		{storage.Compare{Key: []byte("k"), Target: storage.CompareMissing}, false},
		{storage.Compare{Key: []byte("x"), Target: storage.CompareModRevision, Revision: 0}, true},
		{storage.Compare{Key: []byte("k"), Target: storage.CompareModRevision, Revision: 0}, false},
	} {
		res := mustTxn(t, s, storage.Txn{If: []storage.Compare{c.cmp}})
		if res.Succeeded != c.want || res.Revision != 2 {
			t.Errorf("compare %d: %+v", i, res)
		}
	}
	// All compares must hold.
	res = mustTxn(t, s, storage.Txn{
		If: []storage.Compare{
			{Key: []byte("k"), Target: storage.CompareExists},
			{Key: []byte("k"), Target: storage.CompareMissing},
		},
		Then: []storage.Op{put("z", "1")},
	})
	if res.Succeeded || res.Revision != 2 || len(res.Results) != 0 {
		t.Fatalf("mixed compares = %+v", res)
	}
	checkRev(t, s, 2, 0)
}

func TestTxnCreateIfMissing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	kv, created, err := storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("me"))
	if err != nil || !created || kv.CreateRevision != 1 {
		t.Fatalf("first create = %+v, %v, %v", kv, created, err)
	}
	kv, created, err = storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("you"))
	if err != nil || created || string(kv.Value) != "me" || kv.ModRevision != 1 {
		t.Fatalf("second create = %+v, %v, %v", kv, created, err)
	}
	checkRev(t, s, 1, 0)
	// Deleting and recreating resets CreateRevision.
	if _, _, err := storage.Delete(ctx, s, []byte("lock")); err != nil {
		t.Fatal(err)
	}
	kv, created, err = storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("again"))
	if err != nil || !created || kv.CreateRevision != 3 || kv.ModRevision != 3 {
		t.Fatalf("recreate = %+v, %v, %v", kv, created, err)
	}
}

func TestTxnMultiOpAndDeleteResults(t *testing.T) {
	s := openStore(t, "", Options{})
	mustPut(t, s, "a", "A")
	res := mustTxn(t, s, storage.Txn{Then: []storage.Op{
		put("n", "N"), get("n"), // sees its own put
		del("a"), get("a"), // sees its own delete
		del("nope"),             // delete of a missing key
		put("t", "1"), del("t"), // created and removed in one txn
		put("a", "A2"), // recreated
	}})
	if res.Revision != 2 || !res.Succeeded {
		t.Fatalf("res = %+v", res)
	}
	r := res.Results
	if !r[1].Found || string(r[1].KV.Value) != "N" || r[1].KV.CreateRevision != 2 {
		t.Errorf("get own put = %+v", r[1])
	}
	if !r[2].Found || string(r[2].KV.Value) != "A" || r[2].KV.ModRevision != 1 || r[2].KV.CreateRevision != 1 {
		t.Errorf("delete a = %+v", r[2])
	}
	if r[3].Found {
		t.Errorf("get after own delete = %+v", r[3])
	}
	if r[4].Found {
		t.Errorf("delete missing = %+v", r[4])
	}
	if !r[6].Found || string(r[6].KV.Value) != "1" || r[6].KV.ModRevision != 2 {
		t.Errorf("delete own put = %+v", r[6])
	}
	if r[7].Found || r[7].KV.CreateRevision != 2 {
		t.Errorf("recreate a = %+v", r[7])
	}
	kvs, rev, err := s.Range(context.Background(), nil, nil, 0)
	if err != nil || rev != 2 || kvKeys(kvs) != "a,n" {
		t.Fatalf("Range = %s @%d, %v", kvKeys(kvs), rev, err)
	}

	// A write branch that changes nothing is read-only.
	res = mustTxn(t, s, storage.Txn{Then: []storage.Op{del("nope")}})
	if res.Revision != 2 || res.Results[0].Found {
		t.Fatalf("no-op delete = %+v", res)
	}
	checkRev(t, s, 2, 0)
	if st := s.Metrics(); st.TxnsCommitted != 2 {
		t.Fatalf("TxnsCommitted = %d", st.TxnsCommitted)
	}
}

func TestRevisionsAdvanceByOne(t *testing.T) {
	s := openStore(t, "", Options{})
	for i := 1; i <= 20; i++ {
		res := mustTxn(t, s, storage.Txn{Then: []storage.Op{put("a", "x"), put("b"+strconv.Itoa(i), "y")}})
		if res.Revision != int64(i) {
			t.Fatalf("txn %d at revision %d", i, res.Revision)
		}
		// Read-only transactions, including statically writing ones whose
		// else branch ran, see the current revision and don't advance it.
		ro := mustTxn(t, s, storage.Txn{Then: []storage.Op{get("a")}})
		if ro.Revision != int64(i) || ro.Results[0].KV.ModRevision != int64(i) {
			t.Fatalf("read-only after %d = %+v", i, ro)
		}
		ro = mustTxn(t, s, storage.Txn{
			If:   []storage.Compare{{Key: []byte("a"), Target: storage.CompareMissing}},
			Then: []storage.Op{put("a", "z")},
			Else: []storage.Op{get("a")},
		})
		if ro.Succeeded || ro.Revision != int64(i) {
			t.Fatalf("failed CAS after %d = %+v", i, ro)
		}
	}
	checkRev(t, s, 20, 0)
}

func TestLimitsRejected(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	big := make([]byte, storage.MaxValueSize+1)
	bigKey := bytes.Repeat([]byte("k"), storage.MaxKeySize+1)
	many := make([]storage.Op, storage.MaxTxnOps+1)
	for i := range many {
		many[i] = put("m"+strconv.Itoa(i), "v")
	}
	for name, c := range map[string]struct {
		txn  storage.Txn
		want error
	}{
		"empty key":        {storage.Txn{Then: []storage.Op{put("ok", "v"), put("", "v")}}, storage.ErrEmptyKey},
		"empty else key":   {storage.Txn{Else: []storage.Op{del("")}}, storage.ErrEmptyKey},
		"empty get key":    {storage.Txn{Then: []storage.Op{put("ok", "v"), get("")}}, storage.ErrEmptyKey},
		"empty compare":    {storage.Txn{If: []storage.Compare{{Target: storage.CompareExists}}, Then: []storage.Op{put("ok", "v")}}, storage.ErrEmptyKey},
		"key too large":    {storage.Txn{Then: []storage.Op{put("ok", "v"), {Type: storage.OpPut, Key: bigKey}}}, storage.ErrKeyTooLarge},
		"value too large":  {storage.Txn{Then: []storage.Op{put("ok", "v"), {Type: storage.OpPut, Key: []byte("x"), Value: big}}}, storage.ErrValueTooLarge},
		"too many ops":     {storage.Txn{Then: many}, storage.ErrTooManyOps},
		"too many else":    {storage.Txn{Else: many}, storage.ErrTooManyOps},
		"too many compare": {storage.Txn{If: make([]storage.Compare, storage.MaxTxnOps+1), Then: []storage.Op{put("ok", "v")}}, storage.ErrTooManyOps},
	} {
		if _, err := s.Txn(ctx, c.txn); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{{Type: 99, Key: []byte("x")}}}); err == nil {
		t.Error("unknown op type accepted")
	}
	if _, err := s.Get(ctx, nil); !errors.Is(err, storage.ErrEmptyKey) {
		t.Errorf("Get empty key: %v", err)
	}
	if _, err := s.Get(ctx, bigKey); !errors.Is(err, storage.ErrKeyTooLarge) {
		t.Errorf("Get big key: %v", err)
	}
	checkRev(t, s, 0, 0)
	if kvs, _, _ := s.Range(ctx, nil, nil, 0); len(kvs) != 0 {
		t.Fatalf("rejected txns wrote %s", kvKeys(kvs))
	}
	// Exactly at the limits is fine.
	ok := many[:storage.MaxTxnOps]
	ok[0] = storage.Op{Type: storage.OpPut, Key: bytes.Repeat([]byte("k"), storage.MaxKeySize), Value: big[:storage.MaxValueSize]}
	res := mustTxn(t, s, storage.Txn{Then: ok})
	if res.Revision != 1 || len(res.Results) != storage.MaxTxnOps {
		t.Fatalf("txn at the limits = rev %d, %d results", res.Revision, len(res.Results))
	}
}

func TestCanceledContext(t *testing.T) {
	s := openStore(t, "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{put("a", "1")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Txn: %v", err)
	}
	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := s.Watch(ctx, nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch: %v", err)
	}
	checkRev(t, s, 0, 0)
}

func TestConcurrentCAS(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	const (
		workers  = 64
		counters = 4
		attempts = 40
	)
	var successes [counters]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range attempts {
				c := (w + i) % counters
				key := []byte("counter/" + strconv.Itoa(c))
				var n int64
				var mod int64
				kv, err := s.Get(ctx, key)
				switch {
				case err == nil:
					n, _ = strconv.ParseInt(string(kv.Value), 10, 64)
					mod = kv.ModRevision
				case !errors.Is(err, storage.ErrNotFound):
					t.Error(err)
					return
				}
				res, err := s.Txn(ctx, storage.Txn{
					If:   []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: mod}},
					Then: []storage.Op{{Type: storage.OpPut, Key: key, Value: []byte(strconv.FormatInt(n+1, 10))}},
				})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Succeeded {
					successes[c].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	var total int64
	for c := range counters {
		kv, err := s.Get(ctx, []byte("counter/"+strconv.Itoa(c)))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(kv.Value), strconv.FormatInt(successes[c].Load(), 10); got != want {
			t.Errorf("counter %d = %s, acknowledged successes %s", c, got, want)
		}
		total += successes[c].Load()
	}
	st := s.Metrics()
	t.Logf("%d successful CAS of %d, %d batches, revision %d", total, workers*attempts, st.BatchesCommitted, st.CurrentRevision)
	if st.TxnsCommitted != uint64(total) || st.CurrentRevision != total {
		t.Errorf("metrics %+v, want %d write txns", st, total)
	}
	if st.BatchesCommitted >= st.TxnsCommitted {
		t.Errorf("group commit did not batch: %d batches for %d txns", st.BatchesCommitted, st.TxnsCommitted)
	}
}

// TestGroupSeesEarlierTxns checks that transactions evaluated in one group
// see each other's writes: concurrent blind increments through a
// read-modify-write inside the writer would lose updates otherwise.
func TestGroupSeesEarlierTxns(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{MaxBatch: 8})
	const n = 200
	var wg sync.WaitGroup
	var created atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every txn creates the same key if missing; exactly one wins.
			_, ok, err := storage.CreateIfAbsent(ctx, s, []byte("once"), []byte(strconv.Itoa(i)))
			if err != nil {
				t.Error(err)
			}
			if ok {
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 {
		t.Fatalf("%d creators won", created.Load())
	}
	checkRev(t, s, 1, 0)
}

func TestReopenKeepsDataAndRevisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustPut(t, s, fmt.Sprintf("k%02d", i), strconv.Itoa(i))
	}
	if _, _, err := storage.Delete(ctx, s, []byte("k03")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	checkRev(t, s, 11, 4)
	kvs, rev, err := s.Range(ctx, nil, nil, 0)
	if err != nil || rev != 11 || len(kvs) != 9 {
		t.Fatalf("Range after reopen: %d keys @%d, %v", len(kvs), rev, err)
	}
	kv, err := s.Get(ctx, []byte("k07"))
	if err != nil || string(kv.Value) != "7" || kv.ModRevision != 8 {
		t.Fatalf("k07 = %+v, %v", kv, err)
	}
	if res := mustTxn(t, s, storage.Txn{Then: []storage.Op{put("new", "x")}}); res.Revision != 12 {
		t.Fatalf("first txn after reopen at %d", res.Revision)
	}
	if _, err := s.Watch(ctx, nil, 4); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("Watch at compacted after reopen: %v", err)
	}
	w, err := s.Watch(ctx, nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	evs := collect(t, w, 8) // revisions 5..12
	if evs[0].KV.ModRevision != 5 || evs[7].KV.ModRevision != 12 {
		t.Fatalf("replay after reopen: %v", evs)
	}
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	for i := range 10 {
		mustPut(t, s, "k", strconv.Itoa(i))
	}
	if err := s.Compact(ctx, 11); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("Compact future: %v", err)
	}
	if err := s.Compact(ctx, 6); err != nil {
		t.Fatal(err)
	}
	checkRev(t, s, 10, 5)
	if err := s.Compact(ctx, 3); err != nil { // no-op
		t.Fatal(err)
	}
	if err := s.Compact(ctx, 6); err != nil { // no-op
		t.Fatal(err)
	}
	checkRev(t, s, 10, 5)
	if err := s.Compact(ctx, 10); err != nil {
		t.Fatal(err)
	}
	checkRev(t, s, 10, 9)
	if kv, err := s.Get(ctx, []byte("k")); err != nil || string(kv.Value) != "9" {
		t.Fatalf("current value lost: %+v %v", kv, err)
	}
	if st := s.Metrics(); st.CompactedRevision != 9 || st.CurrentRevision != 10 {
		t.Fatalf("metrics = %+v", st)
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	before := runtime.NumGoroutine()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "a", "1")
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}

	// Writers racing with Close either commit or get ErrClosed, nothing else.
	var wg sync.WaitGroup
	var committed, closed atomic.Int64
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				_, err := storage.Put(ctx, s, fmt.Appendf(nil, "w%d/%d", i, j), []byte("v"))
				switch {
				case err == nil:
					committed.Add(1)
				case errors.Is(err, storage.ErrClosed):
					closed.Add(1)
					return
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("%d committed before Close, %d writers saw ErrClosed", committed.Load(), closed.Load())

	// The watcher ends cleanly.
	for range w.Events() {
	}
	if err := w.Err(); err != nil {
		t.Fatalf("watcher Err after Close = %v", err)
	}
	w.Close()

	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Get: %v", err)
	}
	if _, _, err := s.Range(ctx, nil, nil, 0); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Range: %v", err)
	}
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{put("a", "2")}}); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Txn: %v", err)
	}
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{get("a")}}); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("read-only Txn: %v", err)
	}
	if _, err := s.Watch(ctx, nil, 0); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Watch: %v", err)
	}
	if _, _, err := s.Revision(ctx); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Revision: %v", err)
	}
	if err := s.Compact(ctx, 1); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Compact: %v", err)
	}
	if err := s.Close(); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if st := s.Metrics(); st.Watchers != 0 || st.TxnsCommitted != uint64(committed.Load())+1 {
		t.Errorf("metrics after close = %+v", st)
	}

	// No goroutine outlives the store.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before Open, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLargeGroupSplitsBatches writes more than maxBatchBytes from concurrent
// transactions, so groups must be split into several Pebble batches.
func TestLargeGroupSplitsBatches(t *testing.T) {
	ctx := context.Background()
	const n, size, limit = 32, 64 << 10, 256 << 10
	s := openStore(t, "", Options{maxBatchBytes: limit})
	value := bytes.Repeat([]byte("v"), size)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := storage.Put(ctx, s, fmt.Appendf(nil, "big/%02d", i), value); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Deletes carry the previous value into the log, so they are as large.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev, found, err := storage.Delete(ctx, s, fmt.Appendf(nil, "big/%02d", i))
			if err != nil || !found || len(prev.Value) != size {
				t.Errorf("delete %d: found %v, %d bytes, %v", i, found, len(prev.Value), err)
			}
		}()
	}
	wg.Wait()
	checkRev(t, s, 2*n, 0)
	if kvs, _, err := s.Range(ctx, nil, nil, 0); err != nil || len(kvs) != 0 {
		t.Fatalf("Range = %d keys, %v", len(kvs), err)
	}
	st := s.Metrics()
	t.Logf("%d txns in %d batches", st.TxnsCommitted, st.BatchesCommitted)
	if st.TxnsCommitted != 2*n || st.BatchesCommitted < 2*n*size/limit {
		t.Fatalf("metrics = %+v", st)
	}
}
