package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// collect reads exactly n events from w, failing after a timeout.
func collect(t testing.TB, w storage.Watcher, n int) []storage.Event {
	t.Helper()
	evs := make([]storage.Event, 0, n)
	timeout := time.After(10 * time.Second)
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

// expectQuiet fails if w delivers anything within d.
func expectQuiet(t testing.TB, w storage.Watcher, d time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		t.Fatalf("unexpected event %+v (open %v)", ev, ok)
	case <-time.After(d):
	}
}

// waitEnd waits for w's channel to close and returns Err.
func waitEnd(t testing.TB, w storage.Watcher) error {
	t.Helper()
	timeout := time.After(10 * time.Second)
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

func evString(ev storage.Event) string {
	typ := "put"
	if ev.Type == storage.EventDelete {
		typ = "del"
	}
	return fmt.Sprintf("%s %s=%s c%d m%d", typ, ev.KV.Key, ev.KV.Value, ev.KV.CreateRevision, ev.KV.ModRevision)
}

func TestWatchOrderingAndPrefix(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	mustPut(t, s, "a/0", "before") // rev 1, before the watch

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

	mustTxn(t, s, storage.Txn{Then: []storage.Op{put("b/1", "x"), put("a/2", "2"), put("a/1", "1")}}) // rev 2
	mustPut(t, s, "b/2", "y")                                                                         // rev 3
	mustTxn(t, s, storage.Txn{Then: []storage.Op{del("a/0"), put("a/1", "11"), del("b/1")}})          // rev 4

	want := []string{
		"put a/1=1 c2 m2",
		"put a/2=2 c2 m2",
		"del a/0=before c1 m4",
		"put a/1=11 c2 m4",
	}
	for i, ev := range collect(t, wa, len(want)) {
		if got := evString(ev); got != want[i] {
			t.Errorf("prefix event %d = %q, want %q", i, got, want[i])
		}
	}
	expectQuiet(t, wa, 50*time.Millisecond)

	wantAll := []string{
		"put a/1=1 c2 m2", "put a/2=2 c2 m2", "put b/1=x c2 m2",
		"put b/2=y c3 m3",
		"del a/0=before c1 m4", "put a/1=11 c2 m4", "del b/1=x c2 m4",
	}
	for i, ev := range collect(t, wall, len(wantAll)) {
		if got := evString(ev); got != wantAll[i] {
			t.Errorf("event %d = %q, want %q", i, got, wantAll[i])
		}
	}
	expectQuiet(t, wall, 50*time.Millisecond)
	if st := s.Metrics(); st.Watchers != 2 {
		t.Fatalf("Watchers = %d", st.Watchers)
	}
}

func TestWatchResumeAndErrors(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	for i := 1; i <= 10; i++ {
		mustPut(t, s, "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	// Resume from a middle revision: exactly 6..10, then live events.
	w, err := s.Watch(ctx, nil, 6)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, ev := range collect(t, w, 5) {
		if ev.KV.ModRevision != int64(6+i) || string(ev.KV.Key) != "k"+strconv.Itoa(6+i) {
			t.Fatalf("event %d = %s", i, evString(ev))
		}
	}
	mustPut(t, s, "k11", "11")
	if ev := collect(t, w, 1)[0]; ev.KV.ModRevision != 11 {
		t.Fatalf("live event = %s", evString(ev))
	}

	// current+1 is allowed (same as 0), beyond is the future.
	w2, err := s.Watch(ctx, nil, 12)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := s.Watch(ctx, nil, 13); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("Watch future: %v", err)
	}
	if err := s.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{1, 4} {
		if _, err := s.Watch(ctx, nil, rev); !errors.Is(err, storage.ErrCompacted) {
			t.Fatalf("Watch from %d after Compact(5): %v", rev, err)
		}
	}
	w3, err := s.Watch(ctx, nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	if ev := collect(t, w3, 1)[0]; ev.KV.ModRevision != 5 {
		t.Fatalf("first event after compaction = %s", evString(ev))
	}
	mustPut(t, s, "k12", "12")
	if ev := collect(t, w2, 1)[0]; ev.KV.ModRevision != 12 {
		t.Fatalf("w2 event = %s", evString(ev))
	}
}

func TestWatchCompactionOvertakes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// More events than the channel and one log chunk hold, so the watcher
	// must come back to the log after we compact it away.
	const n = watchChanSize + watchChunkEntries + 100
	for i := range n {
		mustPut(t, s, "k", strconv.Itoa(i))
	}
	time.Sleep(50 * time.Millisecond) // let the watcher block on a full channel
	if err := s.Compact(ctx, n); err != nil {
		t.Fatal(err)
	}
	err = waitEnd(t, w)
	if !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("Err = %v, want ErrCompacted", err)
	}
}

func TestWatchSlowReaderGetsEverything(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "", Options{})
	w, err := s.Watch(ctx, []byte("k/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Many concurrent writers; the watcher isn't read at all meanwhile.
	const writers, per = 8, 150
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
	time.Sleep(100 * time.Millisecond)

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
	expectQuiet(t, w, 50*time.Millisecond)
}

func TestWatchEnds(t *testing.T) {
	s := openStore(t, "", Options{})

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
	// Fill the channel so the goroutine is blocked sending when we Close.
	for i := range watchChanSize + 10 {
		mustPut(t, s, "k", strconv.Itoa(i))
	}
	wclose.Close()
	wclose.Close() // idempotent
	if err := waitEnd(t, wclose); err != nil {
		t.Fatalf("Close: Err = %v", err)
	}
	if st := s.Metrics(); st.Watchers != 0 {
		t.Fatalf("Watchers = %d", st.Watchers)
	}

	wstore, err := s.Watch(context.Background(), nil, 1)
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

// TestWatchFromJustReadRevision: a revision returned by Range may be watched
// from at once, even while the writer has not yet published it.
func TestWatchFromJustReadRevision(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = storage.Put(ctx, s, []byte(fmt.Sprintf("k%d", i%50)), []byte("v"))
		}
	}()
	for i := 0; i < 2000; i++ {
		_, rev, err := s.Range(ctx, []byte("k"), nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Watch(ctx, []byte("k"), rev+1)
		if err != nil {
			t.Fatalf("watch from %d right after reading it: %v", rev+1, err)
		}
		w.Close()
	}
	cancel()
	<-done
}
