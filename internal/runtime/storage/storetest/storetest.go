// Package storetest is a conformance suite for storage.Store: the
// semantics every implementation must share (revisions, transactions,
// limits, watches, compaction, Close), written against the interface so it
// runs against the embedded store (pebblestore) and against flaredb alike.
//
// Revisions are store-wide, so the suite compares them relative to the
// revision at the start of each test: several fresh stores may share one
// backing store (for example one flaredb cluster with a namespace per test),
// as long as nothing else writes while a test runs.
//
// RunCrash is the crash suite: a child process writes until SIGKILL, and
// every write it acknowledged must survive, with a history that replays to
// the state (crash.go).
//
// It owns test scenarios only; it must not depend on any implementation.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// Harness opens stores for the suite.
type Harness struct {
	// New returns a fresh, empty store. The suite closes it (or registers
	// a cleanup that tolerates storage.ErrClosed).
	New func(t *testing.T) storage.Store
	// Quick skips the slowest scenarios (large concurrency).
	Quick bool
}

// Run runs every scenario as a subtest.
func Run(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"GetPutRange", testGetPutRange},
		{"TxnCompareAndSwap", testTxnCompareAndSwap},
		{"TxnCreateIfMissing", testTxnCreateIfMissing},
		{"TxnMultiOpAndDeleteResults", testTxnMultiOp},
		{"RevisionsAdvanceByOne", testRevisionsAdvanceByOne},
		{"LimitsRejected", testLimitsRejected},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentCAS", testConcurrentCAS},
		{"GroupSeesEarlierTxns", testGroupSeesEarlierTxns},
		{"RangeEmptyCompare", testRangeEmptyCompare},
		{"RangeEmptyInvalid", testRangeEmptyInvalid},
		{"RangeEmptyVersusExists", testRangeEmptyVersusExists},
		{"RangeEmptySeesConcurrentDeletes", testRangeEmptySeesConcurrentDeletes},
		{"Compact", testCompact},
		{"WatchOrderingAndPrefix", testWatchOrderingAndPrefix},
		{"WatchResumeAndErrors", testWatchResumeAndErrors},
		{"WatchSlowReaderGetsEverything", testWatchSlowReader},
		{"WatchEnds", testWatchEnds},
		{"Close", testClose},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

func open(t *testing.T, h Harness) storage.Store {
	t.Helper()
	s := h.New(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// PutOp, GetOp and DelOp build transaction operations on string keys.
func PutOp(k, v string) storage.Op {
	return storage.Op{Type: storage.OpPut, Key: []byte(k), Value: []byte(v)}
}

// GetOp reads k in a transaction.
func GetOp(k string) storage.Op { return storage.Op{Type: storage.OpGet, Key: []byte(k)} }

// DelOp deletes k in a transaction.
func DelOp(k string) storage.Op { return storage.Op{Type: storage.OpDelete, Key: []byte(k)} }

// MustTxn runs txn and fails t on an error.
func MustTxn(t testing.TB, s storage.Store, txn storage.Txn) storage.TxnResult {
	t.Helper()
	res, err := s.Txn(context.Background(), txn)
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	return res
}

// MustPut puts k=v and fails t on an error.
func MustPut(t testing.TB, s storage.Store, k, v string) storage.KV {
	t.Helper()
	kv, err := storage.Put(context.Background(), s, []byte(k), []byte(v))
	if err != nil {
		t.Fatalf("Put %s: %v", k, err)
	}
	return kv
}

func revs(t testing.TB, s storage.Store) (cur, compacted int64) {
	t.Helper()
	cur, compacted, err := s.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cur, compacted
}

// checkRev checks the current revision is base+delta.
func checkRev(t testing.TB, s storage.Store, base, delta int64) {
	t.Helper()
	if cur, _ := revs(t, s); cur != base+delta {
		t.Fatalf("Revision = %d, want base %d + %d", cur, base, delta)
	}
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

func testGetPutRange(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	kvs, rev, err := s.Range(ctx, nil, nil, 0)
	if err != nil || len(kvs) != 0 || rev != b {
		t.Fatalf("empty Range = %v, %d, %v", kvs, rev, err)
	}
	a1 := MustPut(t, s, "a", "1")
	if a1.CreateRevision != b+1 || a1.ModRevision != b+1 || string(a1.Value) != "1" || string(a1.Key) != "a" {
		t.Fatalf("put a = %+v", a1)
	}
	MustPut(t, s, "b", "2")
	MustPut(t, s, "c", "")
	a2 := MustPut(t, s, "a", "11")
	if a2.CreateRevision != b+1 || a2.ModRevision != b+4 {
		t.Fatalf("overwrite a = %+v", a2)
	}
	got, err := s.Get(ctx, []byte("a"))
	if err != nil || string(got.Value) != "11" || got.CreateRevision != b+1 || got.ModRevision != b+4 {
		t.Fatalf("Get a = %+v, %v", got, err)
	}
	got, err = s.Get(ctx, []byte("c"))
	if err != nil || len(got.Value) != 0 {
		t.Fatalf("Get c = %+v, %v", got, err)
	}
	kvs, rev, err = s.Range(ctx, nil, nil, 0)
	if err != nil || rev != b+4 {
		t.Fatalf("Range: rev %d, %v", rev, err)
	}
	if keys := kvKeys(kvs); keys != "a,b,c" {
		t.Fatalf("Range keys = %s", keys)
	}
	for _, c := range []struct {
		start, end string
		limit      int
		want       string
	}{
		{"b", "", 0, "b,c"}, {"a", "c", 0, "a,b"}, {"", "", 2, "a,b"}, {"c", "a", 0, ""},
	} {
		var start, end []byte
		if c.start != "" {
			start = []byte(c.start)
		}
		if c.end != "" {
			end = []byte(c.end)
		}
		kvs, _, err := s.Range(ctx, start, end, c.limit)
		if err != nil || kvKeys(kvs) != c.want {
			t.Fatalf("Range [%s,%s) limit %d = %s, %v, want %s", c.start, c.end, c.limit, kvKeys(kvs), err, c.want)
		}
	}
	prev, found, err := storage.Delete(ctx, s, []byte("b"))
	if err != nil || !found || string(prev.Value) != "2" || prev.ModRevision != b+2 {
		t.Fatalf("Delete b = %+v, %v, %v", prev, found, err)
	}
	if _, err := s.Get(ctx, []byte("b")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get deleted: %v", err)
	}
	checkRev(t, s, b, 5)
}

func testTxnCompareAndSwap(t *testing.T, h Harness) {
	s := open(t, h)
	b, _ := revs(t, s)
	kv := MustPut(t, s, "k", "v1")
	res := MustTxn(t, s, storage.Txn{
		If:   []storage.Compare{{Key: []byte("k"), Target: storage.CompareModRevision, Revision: kv.ModRevision}},
		Then: []storage.Op{PutOp("k", "v2")},
		Else: []storage.Op{GetOp("k")},
	})
	if !res.Succeeded || res.Revision != b+2 || res.Results[0].KV.ModRevision != b+2 || !res.Results[0].Found {
		t.Fatalf("CAS 1 = %+v", res)
	}
	res = MustTxn(t, s, storage.Txn{
		If:   []storage.Compare{{Key: []byte("k"), Target: storage.CompareModRevision, Revision: kv.ModRevision}},
		Then: []storage.Op{PutOp("k", "v3")},
		Else: []storage.Op{GetOp("k"), GetOp("missing")},
	})
	if res.Succeeded || res.Revision != b+2 || len(res.Results) != 2 {
		t.Fatalf("CAS 2 = %+v", res)
	}
	if r := res.Results[0]; !r.Found || string(r.KV.Value) != "v2" || r.KV.ModRevision != b+2 || r.KV.CreateRevision != b+1 {
		t.Fatalf("else get = %+v", r)
	}
	if r := res.Results[1]; r.Found {
		t.Fatalf("else get missing = %+v", r)
	}
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
		res := MustTxn(t, s, storage.Txn{If: []storage.Compare{c.cmp}})
		if res.Succeeded != c.want || res.Revision != b+2 {
			t.Errorf("compare %d: %+v", i, res)
		}
	}
	res = MustTxn(t, s, storage.Txn{
		If:   []storage.Compare{{Key: []byte("k"), Target: storage.CompareExists}, {Key: []byte("k"), Target: storage.CompareMissing}},
		Then: []storage.Op{PutOp("z", "1")},
	})
	if res.Succeeded || res.Revision != b+2 || len(res.Results) != 0 {
		t.Fatalf("mixed compares = %+v", res)
	}
	checkRev(t, s, b, 2)
}

func testTxnCreateIfMissing(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	kv, created, err := storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("me"))
	if err != nil || !created || kv.CreateRevision != b+1 {
		t.Fatalf("first create = %+v, %v, %v", kv, created, err)
	}
	kv, created, err = storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("you"))
	if err != nil || created || string(kv.Value) != "me" || kv.ModRevision != b+1 {
		t.Fatalf("second create = %+v, %v, %v", kv, created, err)
	}
	checkRev(t, s, b, 1)
	if _, _, err := storage.Delete(ctx, s, []byte("lock")); err != nil {
		t.Fatal(err)
	}
	kv, created, err = storage.CreateIfAbsent(ctx, s, []byte("lock"), []byte("again"))
	if err != nil || !created || kv.CreateRevision != b+3 || kv.ModRevision != b+3 {
		t.Fatalf("recreate = %+v, %v, %v", kv, created, err)
	}
}

func testTxnMultiOp(t *testing.T, h Harness) {
	s := open(t, h)
	b, _ := revs(t, s)
	MustPut(t, s, "a", "A")
	res := MustTxn(t, s, storage.Txn{Then: []storage.Op{
		PutOp("n", "N"), GetOp("n"),
		DelOp("a"), GetOp("a"),
		DelOp("nope"),
		PutOp("t", "1"), DelOp("t"),
		PutOp("a", "A2"),
	}})
	if res.Revision != b+2 || !res.Succeeded {
		t.Fatalf("res = %+v", res)
	}
	r := res.Results
	if !r[1].Found || string(r[1].KV.Value) != "N" || r[1].KV.CreateRevision != b+2 {
		t.Errorf("get own put = %+v", r[1])
	}
	if !r[2].Found || string(r[2].KV.Value) != "A" || r[2].KV.ModRevision != b+1 || r[2].KV.CreateRevision != b+1 {
		t.Errorf("delete a = %+v", r[2])
	}
	if r[3].Found {
		t.Errorf("get after own delete = %+v", r[3])
	}
	if r[4].Found {
		t.Errorf("delete missing = %+v", r[4])
	}
	if !r[6].Found || string(r[6].KV.Value) != "1" || r[6].KV.ModRevision != b+2 {
		t.Errorf("delete own put = %+v", r[6])
	}
	if r[7].Found || r[7].KV.CreateRevision != b+2 {
		t.Errorf("recreate a = %+v", r[7])
	}
	kvs, rev, err := s.Range(context.Background(), nil, nil, 0)
	if err != nil || rev != b+2 || kvKeys(kvs) != "a,n" {
		t.Fatalf("Range = %s @%d, %v", kvKeys(kvs), rev, err)
	}
	res = MustTxn(t, s, storage.Txn{Then: []storage.Op{DelOp("nope")}})
	if res.Revision != b+2 || res.Results[0].Found {
		t.Fatalf("no-op delete = %+v", res)
	}
	checkRev(t, s, b, 2)
}

func testRevisionsAdvanceByOne(t *testing.T, h Harness) {
	s := open(t, h)
	b, _ := revs(t, s)
	for i := int64(1); i <= 20; i++ {
		res := MustTxn(t, s, storage.Txn{Then: []storage.Op{PutOp("a", "x"), PutOp("b"+strconv.FormatInt(i, 10), "y")}})
		if res.Revision != b+i {
			t.Fatalf("txn %d at revision %d", i, res.Revision-b)
		}
		ro := MustTxn(t, s, storage.Txn{Then: []storage.Op{GetOp("a")}})
		if ro.Revision != b+i || ro.Results[0].KV.ModRevision != b+i {
			t.Fatalf("read-only after %d = %+v", i, ro)
		}
		ro = MustTxn(t, s, storage.Txn{
			If:   []storage.Compare{{Key: []byte("a"), Target: storage.CompareMissing}},
			Then: []storage.Op{PutOp("a", "z")},
			Else: []storage.Op{GetOp("a")},
		})
		if ro.Succeeded || ro.Revision != b+i {
			t.Fatalf("failed CAS after %d = %+v", i, ro)
		}
	}
	checkRev(t, s, b, 20)
}

func testLimitsRejected(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	big := make([]byte, storage.MaxValueSize+1)
	bigKey := bytes.Repeat([]byte("k"), storage.MaxKeySize+1)
	many := make([]storage.Op, storage.MaxTxnOps+1)
	for i := range many {
		many[i] = PutOp("m"+strconv.Itoa(i), "v")
	}
	for name, c := range map[string]struct {
		txn  storage.Txn
		want error
	}{
		"empty key":        {storage.Txn{Then: []storage.Op{PutOp("ok", "v"), PutOp("", "v")}}, storage.ErrEmptyKey},
		"empty else key":   {storage.Txn{Else: []storage.Op{DelOp("")}}, storage.ErrEmptyKey},
		"empty get key":    {storage.Txn{Then: []storage.Op{PutOp("ok", "v"), GetOp("")}}, storage.ErrEmptyKey},
		"empty compare":    {storage.Txn{If: []storage.Compare{{Target: storage.CompareExists}}, Then: []storage.Op{PutOp("ok", "v")}}, storage.ErrEmptyKey},
		"key too large":    {storage.Txn{Then: []storage.Op{PutOp("ok", "v"), {Type: storage.OpPut, Key: bigKey}}}, storage.ErrKeyTooLarge},
		"value too large":  {storage.Txn{Then: []storage.Op{PutOp("ok", "v"), {Type: storage.OpPut, Key: []byte("x"), Value: big}}}, storage.ErrValueTooLarge},
		"too many ops":     {storage.Txn{Then: many}, storage.ErrTooManyOps},
		"too many else":    {storage.Txn{Else: many}, storage.ErrTooManyOps},
		"too many compare": {storage.Txn{If: make([]storage.Compare, storage.MaxTxnOps+1), Then: []storage.Op{PutOp("ok", "v")}}, storage.ErrTooManyOps},
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
	checkRev(t, s, b, 0)
	if kvs, _, _ := s.Range(ctx, nil, nil, 0); len(kvs) != 0 {
		t.Fatalf("rejected txns wrote %s", kvKeys(kvs))
	}
	ok := many[:storage.MaxTxnOps]
	ok[0] = storage.Op{Type: storage.OpPut, Key: bytes.Repeat([]byte("k"), storage.MaxKeySize), Value: big[:storage.MaxValueSize]}
	res := MustTxn(t, s, storage.Txn{Then: ok})
	if res.Revision != b+1 || len(res.Results) != storage.MaxTxnOps {
		t.Fatalf("txn at the limits = rev %d, %d results", res.Revision-b, len(res.Results))
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	s := open(t, h)
	b, _ := revs(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{PutOp("a", "1")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Txn: %v", err)
	}
	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := s.Watch(ctx, nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch: %v", err)
	}
	checkRev(t, s, b, 0)
}

func testConcurrentCAS(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	workers, counters, attempts := 32, 4, 20
	if h.Quick {
		workers, attempts = 16, 10
	}
	successes := make([]atomic.Int64, counters)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range attempts {
				c := (w + i) % counters
				key := []byte("counter/" + strconv.Itoa(c))
				var n, mod int64
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
	t.Logf("%d successful CAS of %d", total, workers*attempts)
	checkRev(t, s, b, total)
}

func testGroupSeesEarlierTxns(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	const n = 100
	var wg sync.WaitGroup
	var created atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
	checkRev(t, s, b, 1)
}

func testCompact(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	for i := range 10 {
		MustPut(t, s, "k", strconv.Itoa(i))
	}
	if err := s.Compact(ctx, b+11); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("Compact future: %v", err)
	}
	if err := s.Compact(ctx, b+6); err != nil {
		t.Fatal(err)
	}
	if cur, comp := revs(t, s); cur != b+10 || comp != b+5 {
		t.Fatalf("after Compact(b+6): %d/%d, want b+10/b+5", cur-b, comp-b)
	}
	for _, r := range []int64{3, 6} { // no-ops
		if err := s.Compact(ctx, b+r); err != nil {
			t.Fatal(err)
		}
	}
	if _, comp := revs(t, s); comp != b+5 {
		t.Fatalf("no-op compactions moved compacted to b+%d", comp-b)
	}
	if err := s.Compact(ctx, b+10); err != nil {
		t.Fatal(err)
	}
	if cur, comp := revs(t, s); cur != b+10 || comp != b+9 {
		t.Fatalf("after Compact(b+10): %d/%d", cur-b, comp-b)
	}
	if kv, err := s.Get(ctx, []byte("k")); err != nil || string(kv.Value) != "9" {
		t.Fatalf("current value lost: %+v %v", kv, err)
	}
}

// Watch helpers.

func collect(t testing.TB, w storage.Watcher, n int) []storage.Event {
	t.Helper()
	evs := make([]storage.Event, 0, n)
	timeout := time.After(20 * time.Second)
	for len(evs) < n {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended after %d of %d events: %v", len(evs), n, w.Err())
			}
			evs = append(evs, ev)
		case <-timeout:
			t.Fatalf("timed out after %d of %d events", len(evs), n)
		}
	}
	return evs
}

func expectQuiet(t testing.TB, w storage.Watcher, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		t.Fatalf("unexpected event %+v (open %v)", ev, ok)
	case <-time.After(d):
	}
}

func waitEnd(t testing.TB, w storage.Watcher) error {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
		case <-timeout:
			t.Fatal("watch did not end")
		}
	}
}

func evString(ev storage.Event, base int64) string {
	typ := "put"
	if ev.Type == storage.EventDelete {
		typ = "del"
	}
	return fmt.Sprintf("%s %s=%s c%d m%d", typ, ev.KV.Key, ev.KV.Value, ev.KV.CreateRevision-base, ev.KV.ModRevision-base)
}

func testWatchOrderingAndPrefix(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	MustPut(t, s, "a/0", "before")
	wa, err := s.Watch(ctx, []byte("a/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	wall, err := s.Watch(ctx, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wall.Close()
	MustTxn(t, s, storage.Txn{Then: []storage.Op{PutOp("b/1", "x"), PutOp("a/2", "2"), PutOp("a/1", "1")}})
	MustPut(t, s, "b/2", "y")
	MustTxn(t, s, storage.Txn{Then: []storage.Op{DelOp("a/0"), PutOp("a/1", "11"), DelOp("b/1")}})
	want := []string{"put a/1=1 c2 m2", "put a/2=2 c2 m2", "del a/0=before c1 m4", "put a/1=11 c2 m4"}
	for i, ev := range collect(t, wa, len(want)) {
		if got := evString(ev, b); got != want[i] {
			t.Errorf("prefix event %d = %q, want %q", i, got, want[i])
		}
	}
	expectQuiet(t, wa, 100*time.Millisecond)
	wantAll := []string{
		"put a/1=1 c2 m2", "put a/2=2 c2 m2", "put b/1=x c2 m2",
		"put b/2=y c3 m3",
		"del a/0=before c1 m4", "put a/1=11 c2 m4", "del b/1=x c2 m4",
	}
	for i, ev := range collect(t, wall, len(wantAll)) {
		if got := evString(ev, b); got != wantAll[i] {
			t.Errorf("event %d = %q, want %q", i, got, wantAll[i])
		}
	}
	expectQuiet(t, wall, 100*time.Millisecond)
}

func testWatchResumeAndErrors(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	for i := 1; i <= 10; i++ {
		MustPut(t, s, "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	w, err := s.Watch(ctx, nil, b+6)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, ev := range collect(t, w, 5) {
		if ev.KV.ModRevision != b+int64(6+i) || string(ev.KV.Key) != "k"+strconv.Itoa(6+i) {
			t.Fatalf("event %d = %s", i, evString(ev, b))
		}
	}
	MustPut(t, s, "k11", "11")
	if ev := collect(t, w, 1)[0]; ev.KV.ModRevision != b+11 {
		t.Fatalf("live event = %s", evString(ev, b))
	}
	w2, err := s.Watch(ctx, nil, b+12)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := s.Watch(ctx, nil, b+13); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("Watch future: %v", err)
	}
	if err := s.Compact(ctx, b+5); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{b + 1, b + 4} {
		if _, err := s.Watch(ctx, nil, rev); !errors.Is(err, storage.ErrCompacted) {
			t.Fatalf("Watch from b+%d after Compact(b+5): %v", rev-b, err)
		}
	}
	w3, err := s.Watch(ctx, nil, b+5)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	if ev := collect(t, w3, 1)[0]; ev.KV.ModRevision != b+5 {
		t.Fatalf("first event after compaction = %s", evString(ev, b))
	}
	MustPut(t, s, "k12", "12")
	if ev := collect(t, w2, 1)[0]; ev.KV.ModRevision != b+12 {
		t.Fatalf("w2 event = %s", evString(ev, b))
	}
}

func testWatchSlowReader(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	w, err := s.Watch(ctx, []byte("k/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writers, per := 8, 100
	if h.Quick {
		per = 40
	}
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				if _, err := storage.Put(ctx, s, fmt.Appendf(nil, "k/%d/%03d", i, j), []byte("v")); err != nil {
					t.Error(err)
					return
				}
				if j%10 == 0 {
					if _, err := storage.Put(ctx, s, []byte("other"), []byte("noise")); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	evs := collect(t, w, writers*per)
	seen := make(map[string]bool, len(evs))
	var last int64
	for _, ev := range evs {
		if ev.KV.ModRevision <= last {
			t.Fatalf("revision went from %d to %d", last, ev.KV.ModRevision)
		}
		last = ev.KV.ModRevision
		if seen[string(ev.KV.Key)] {
			t.Fatalf("duplicate %s", ev.KV.Key)
		}
		seen[string(ev.KV.Key)] = true
	}
	expectQuiet(t, w, 100*time.Millisecond)
}

func testWatchEnds(t *testing.T, h Harness) {
	s := open(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	wctx, err := s.Watch(ctx, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := waitEnd(t, wctx); err != nil {
		t.Fatalf("ctx end: Err = %v", err)
	}
	wclose, err := s.Watch(context.Background(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		MustPut(t, s, "k", strconv.Itoa(i))
	}
	wclose.Close()
	wclose.Close()
	if err := waitEnd(t, wclose); err != nil {
		t.Fatalf("Close: Err = %v", err)
	}
	cur, _ := revs(t, s)
	wstore, err := s.Watch(context.Background(), nil, cur)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitEnd(t, wstore); err != nil {
		t.Fatalf("store Close: Err = %v", err)
	}
	wstore.Close()
}

func testClose(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.New(t)
	MustPut(t, s, "a", "1")
	var wg sync.WaitGroup
	var committed, closed atomic.Int64
	for i := range 8 {
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
	testkit.Eventually(t, 20*time.Second, "some writes to commit", func() bool { return committed.Load() > 10 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := s.Get(ctx, []byte("a")); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Get: %v", err)
	}
	if _, _, err := s.Range(ctx, nil, nil, 0); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Range: %v", err)
	}
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{PutOp("a", "2")}}); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Txn: %v", err)
	}
	if _, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{GetOp("a")}}); !errors.Is(err, storage.ErrClosed) {
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
}
