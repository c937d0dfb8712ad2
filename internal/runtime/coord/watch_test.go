package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/ultracloud/ultracloud/internal/runtime/coord/coordtest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// collector gathers watch events from a background Watch.
type collector struct {
	mu     sync.Mutex
	events []Event
	last   int64
	done   chan error
	cancel context.CancelFunc
}

func watchAsync(t *testing.T, w Watcher, prefix string, from int64) *collector {
	ctx, cancel := context.WithCancel(context.Background())
	col := &collector{done: make(chan error, 1), cancel: cancel}
	go func() {
		col.done <- w.Watch(ctx, prefix, from, func(b Batch) error {
			col.mu.Lock()
			defer col.mu.Unlock()
			if b.Revision < col.last {
				return fmt.Errorf("batch revision %d went back from %d", b.Revision, col.last)
			}
			col.last = b.Revision
			col.events = append(col.events, b.Events...)
			return nil
		})
	}()
	t.Cleanup(func() { col.stop(t) })
	return col
}

func (c *collector) stop(t *testing.T) {
	c.cancel()
	select {
	case err, ok := <-c.done:
		if ok && err != nil {
			t.Errorf("watch returned %v", err)
		}
		close(c.done)
	case <-time.After(10 * time.Second):
		t.Error("watch did not return within 10s of cancel")
	}
}

func (c *collector) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ks []string
	for _, e := range c.events {
		ks = append(ks, e.Type.String()+" "+e.Key+"="+string(e.Value))
	}
	return ks
}

func (c *collector) waitKeys(t *testing.T, want []string) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, fmt.Sprintf("watch events %q", want), func() bool { return len(c.keys()) >= len(want) })
	if got := c.keys(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watch events = %q, want %q", got, want)
	}
}

// TestWatchFromRevisionResumesAcrossDisconnects: a watch from a past
// revision replays from it; when its connection breaks, changes made
// meanwhile arrive after reconnecting, each exactly once.
func TestWatchFromRevisionResumesAcrossDisconnects(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	p := coordtest.NewProxy(t, ep)
	watcher, _ := newCoord(t, p.URL())
	_, raw := newCoord(t, ep)

	var revs []int64
	for i := 1; i <= 5; i++ {
		r, err := raw.Put(ctxT(t, 5*time.Second), fmt.Sprintf("/w/k%d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
	}
	if _, err := raw.Put(ctxT(t, 5*time.Second), "/other", "x"); err != nil {
		t.Fatal(err)
	}
	col := watchAsync(t, watcher, "/w/", revs[2]) // from k3's revision
	col.waitKeys(t, []string{"PUT /w/k3=3", "PUT /w/k4=4", "PUT /w/k5=5"})

	p.Cut()
	if _, err := raw.Put(ctxT(t, 5*time.Second), "/w/k6", "6"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctxT(t, 5*time.Second), "/w/k1"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the watcher's connection to drop", func() bool {
		return watcher.Raw().ActiveConnection().GetState() != connectivity.Ready
	})
	p.Restore(t)
	if _, err := raw.Put(ctxT(t, 5*time.Second), "/w/k7", "7"); err != nil {
		t.Fatal(err)
	}
	col.waitKeys(t, []string{"PUT /w/k3=3", "PUT /w/k4=4", "PUT /w/k5=5", "PUT /w/k6=6", "DELETE /w/k1=", "PUT /w/k7=7"})

	// A watch "from now" sees only later changes.
	now := watchAsync(t, watcher, "/w/", 0)
	testkit.Eventually(t, 20*time.Second, "the from-now watch to start", func() bool {
		if _, err := raw.Put(ctxT(t, 5*time.Second), "/w/probe", "p"); err != nil {
			return false
		}
		return len(now.keys()) > 0
	})
	for _, k := range now.keys() {
		if k != "PUT /w/probe=p" {
			t.Fatalf("from-now watch saw %q", k)
		}
	}
}

// TestWatchReportsCompaction: asking for compacted history is an error
// naming the compaction revision, not a silent gap.
func TestWatchReportsCompaction(t *testing.T) {
	ep := coordtest.StartMember(t).ClientURL
	c, raw := newCoord(t, ep)
	var revs []int64
	for i := range 4 {
		r, err := raw.Put(ctxT(t, 5*time.Second), fmt.Sprintf("/c/k%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
	}
	if _, err := raw.Compact(ctxT(t, 5*time.Second), revs[2]); err != nil {
		t.Fatal(err)
	}
	err := c.Watch(ctxT(t, 10*time.Second), "/c/", revs[0], func(Batch) error {
		t.Error("events delivered from compacted history")
		return nil
	})
	var ce *CompactedError
	if !errors.Is(err, ErrCompacted) || !errors.As(err, &ce) || ce.Requested != revs[0] || ce.Compacted != revs[2] {
		t.Fatalf("err = %v (%+v), want CompactedError requested %d compacted %d", err, ce, revs[0], revs[2])
	}

	// From the compaction revision on, the watch works and fn's error
	// ends it as is.
	stop := errors.New("enough")
	err = c.Watch(ctxT(t, 10*time.Second), "/c/", revs[2], func(b Batch) error {
		if len(b.Events) == 0 || b.Events[0].Key != "/c/k2" {
			return fmt.Errorf("first batch %+v", b)
		}
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want fn's error", err)
	}
}

// TestWatchResumesAfterLeaderLoss: the watcher's member loses its leader
// (the other two members stop), so the member cancels its watch streams;
// Watch retries until a leader is back and then delivers what was written
// meanwhile, each change once.
func TestWatchResumesAfterLeaderLoss(t *testing.T) {
	ms := coordtest.StartCluster(t, 3).Members
	log, messages := newRecordingLogger()
	watcher := New(coordtest.NewClient(t, ms[0].ClientURL), log) // only m0
	col := watchAsync(t, watcher, "/r/", 0)
	writer := coordtest.NewClient(t, ms[1].ClientURL, ms[2].ClientURL)
	testkit.Eventually(t, 10*time.Second, "the watch to see a first write", func() bool {
		if _, err := writer.Put(ctxT(t, 2*time.Second), "/r/a", "1"); err != nil {
			return false
		}
		return len(col.keys()) > 0
	})

	var stopping sync.WaitGroup
	for _, m := range ms[1:] {
		stopping.Go(m.Stop)
	}
	stopping.Wait()
	testkit.Eventually(t, 15*time.Second, "the watch stream to be cut for lack of a leader", func() bool {
		for _, m := range messages() {
			if m == "watch interrupted; resuming" {
				return true
			}
		}
		return false
	})
	ms[1].Start(t)
	ms[2].Start(t)
	ms[1].WaitReady(t)
	ms[2].WaitReady(t)
	testkit.Eventually(t, 15*time.Second, "a write after the cluster healed", func() bool {
		_, err := writer.Put(ctxT(t, 2*time.Second), "/r/b", "2")
		return err == nil
	})
	testkit.Eventually(t, 15*time.Second, "the watch to deliver /r/b", func() bool {
		for _, k := range col.keys() {
			if k == "PUT /r/b=2" {
				return true
			}
		}
		return false
	})
	// Changes arrived in order: the probes of /r/a, then /r/b (a write
	// retried after a timeout may have landed twice, each is one event).
	ks := col.keys()
	seenB := false
	for _, k := range ks {
		switch {
		case k == "PUT /r/b=2":
			seenB = true
		case k != "PUT /r/a=1" || seenB:
			t.Fatalf("events = %q", ks)
		}
	}
}
