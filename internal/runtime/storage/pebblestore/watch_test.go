package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
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
		storetest.MustPut(t, s, "k", strconv.Itoa(i))
	}
	// The watcher has filled its channel and holds at most one chunk more,
	// so the rest of the log is still to be read when it is compacted.
	testkit.Eventually(t, 10*time.Second, "the watcher to fill its channel", func() bool { return len(w.Events()) == watchChanSize })
	if err := s.Compact(ctx, n); err != nil {
		t.Fatal(err)
	}
	err = waitEnd(t, w)
	if !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("Err = %v, want ErrCompacted", err)
	}
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
