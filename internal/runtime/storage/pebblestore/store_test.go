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
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
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

func TestReopenKeepsDataAndRevisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		storetest.MustPut(t, s, fmt.Sprintf("k%02d", i), strconv.Itoa(i))
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
	if res := storetest.MustTxn(t, s, storage.Txn{Then: []storage.Op{storetest.PutOp("new", "x")}}); res.Revision != 12 {
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

// TestCompactionShowsInMetrics: the store's metrics follow a compaction
// (what compaction means is storetest's Compact).
func TestCompactionShowsInMetrics(t *testing.T) {
	s := openStore(t, "", Options{})
	for i := range 10 {
		storetest.MustPut(t, s, "k", strconv.Itoa(i))
	}
	if err := s.Compact(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if st := s.Metrics(); st.CompactedRevision != 9 || st.CurrentRevision != 10 {
		t.Fatalf("metrics = %+v", st)
	}
}

// TestCloseLeavesNothingRunning: after Close (whose semantics, with writers
// racing it, are storetest's Close), the metrics count every committed
// transaction and no watcher, and no goroutine of the store is left.
func TestCloseLeavesNothingRunning(t *testing.T) {
	ctx := context.Background()
	before := runtime.NumGoroutine()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	storetest.MustPut(t, s, "a", "1")
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var committed atomic.Int64
	for i := range 16 {
		wg.Go(func() {
			for j := 0; ; j++ {
				_, err := storage.Put(ctx, s, fmt.Appendf(nil, "w%d/%d", i, j), []byte("v"))
				switch {
				case err == nil:
					committed.Add(1)
				case errors.Is(err, storage.ErrClosed):
					return
				default:
					t.Error(err)
					return
				}
			}
		})
	}
	testkit.Eventually(t, 20*time.Second, "some writes to commit", func() bool { return committed.Load() > 10 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for range w.Events() {
	}
	w.Close()
	if st := s.Metrics(); st.Watchers != 0 || st.TxnsCommitted != uint64(committed.Load())+1 {
		t.Errorf("metrics after close = %+v", st)
	}
	testkit.EventuallyErr(t, 5*time.Second, "the store's goroutines to end", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines before Open, %d after Close\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
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
