package controller

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestBackoff(t *testing.T) {
	base, maxDelay := 50*time.Millisecond, time.Second
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for n, w := range want {
		if got := backoff(base, maxDelay, n); got != w*time.Millisecond {
			t.Errorf("backoff after %d failures = %s, want %s", n, got, w*time.Millisecond)
		}
	}
	if got := backoff(base, maxDelay, 1000); got != maxDelay {
		t.Errorf("backoff after 1000 failures = %s, want the cap", got)
	}
}

func newTestQueue() *queue {
	return newQueue(time.Hour, time.Hour, rate.NewLimiter(rate.Inf, 1), func(int) {})
}

func readyKeys(q *queue) []Key {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Key(nil), q.ready...)
}

// TestQueueDedupAndDirty drives the queue by hand: a key is queued once, a
// key being reconciled is not handed out again but is requeued after.
func TestQueueDedupAndDirty(t *testing.T) {
	q := newTestQueue()
	a, b := Key{"p", "a"}, Key{"p", "b"}
	q.add(a, 5)
	q.add(b, 6)
	q.add(a, 7)
	if got := readyKeys(q); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("ready = %v, want [a b]", got)
	}
	k, ok := q.get()
	if !ok || k != a {
		t.Fatalf("get = %v %v", k, ok)
	}
	q.add(a, 8) // changes while being reconciled
	if got := readyKeys(q); len(got) != 1 || got[0] != b {
		t.Fatalf("ready = %v: a key being reconciled was queued again", got)
	}
	q.succeeded(a, 0)
	if got := readyKeys(q); len(got) != 2 || got[1] != a {
		t.Fatalf("ready = %v: a dirty key was not requeued after its reconcile", got)
	}
	k, _ = q.get() // b
	q.succeeded(k, 0)
	k, _ = q.get() // a again
	if k != a {
		t.Fatalf("got %v, want a", k)
	}
	q.succeeded(a, 0)
	q.mu.Lock()
	n := len(q.entries)
	q.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries left after every key succeeded", n)
	}
}

// TestQueueCheckpointBookkeeping checks the checkpoint rule: min(complete,
// earliest outstanding revision - 1).
func TestQueueCheckpointBookkeeping(t *testing.T) {
	q := newTestQueue()
	if cp := q.checkpoint(); cp != -1 {
		t.Fatalf("checkpoint before start = %d, want -1", cp)
	}
	a, b := Key{"p", "a"}, Key{"p", "b"}
	q.observe(10) // resumed from 10
	if cp := q.checkpoint(); cp != 10 {
		t.Fatalf("checkpoint = %d, want 10", cp)
	}
	q.add(a, 11)
	q.observe(11)
	q.add(b, 12)
	q.observe(12)
	if cp := q.checkpoint(); cp != 10 {
		t.Fatalf("checkpoint with a@11 b@12 outstanding = %d, want 10", cp)
	}
	ka, _ := q.get()
	q.add(a, 13) // a changes again while reconciled: 11 is in flight, 13 waits
	q.observe(13)
	if cp := q.checkpoint(); cp != 10 {
		t.Fatalf("checkpoint with a in flight = %d, want 10", cp)
	}
	q.succeeded(ka, 0) // covers 11 but not 13
	if cp := q.checkpoint(); cp != 11 {
		t.Fatalf("checkpoint after a@11 = %d, want 11 (b@12 outstanding)", cp)
	}
	kb, _ := q.get()
	if kb != b {
		t.Fatalf("got %v, want b", kb)
	}
	if _, n := q.failed(kb); n != 1 {
		t.Fatalf("failures = %d, want 1", n)
	}
	if cp := q.checkpoint(); cp != 11 {
		t.Fatalf("checkpoint after b failed = %d, want 11", cp)
	}
	ka, _ = q.get() // a@13
	q.succeeded(ka, 0)
	if cp := q.checkpoint(); cp != 11 {
		t.Fatalf("checkpoint = %d, want 11 while b@12 waits for its retry", cp)
	}
	q.add(b, 14) // a change to a waiting key goes ahead at once
	kb, _ = q.get()
	q.succeeded(kb, 0)
	if cp := q.checkpoint(); cp != 13 {
		t.Fatalf("checkpoint with nothing outstanding = %d, want complete (13)", cp)
	}
	q.observe(20) // bookmark
	if cp := q.checkpoint(); cp != 20 {
		t.Fatalf("checkpoint after bookmark = %d, want 20", cp)
	}
	// RequeueAfter keeps the key around without holding the checkpoint back.
	q.add(a, 21)
	q.observe(21)
	ka, _ = q.get()
	q.succeeded(ka, time.Hour)
	if cp := q.checkpoint(); cp != 21 {
		t.Fatalf("checkpoint with a scheduled requeue = %d, want 21", cp)
	}
}

func TestQueueFailureBackoffGrowsAndResets(t *testing.T) {
	q := newQueue(10*time.Millisecond, 50*time.Millisecond, rate.NewLimiter(rate.Inf, 1), func(int) {})
	k := Key{"p", "k"}
	var delays []time.Duration
	for range 5 {
		q.add(k, 1) // stands in for the timer's promotion
		got, _ := q.get()
		d, _ := q.failed(got)
		delays = append(delays, d)
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i := range want {
		if delays[i] != want[i]*time.Millisecond {
			t.Fatalf("delays = %v, want %v ms", delays, want)
		}
	}
	q.add(k, 1)
	got, _ := q.get()
	q.succeeded(got, 0)
	q.add(k, 2)
	got, _ = q.get()
	if d, n := q.failed(got); d != 10*time.Millisecond || n != 1 {
		t.Fatalf("after a success: delay %s failures %d, want 10ms and 1", d, n)
	}
}

func TestQueueRetryRateLimit(t *testing.T) {
	// One token per hour, burst 1: the second retry waits for the bucket.
	q := newQueue(time.Millisecond, time.Millisecond, rate.NewLimiter(rate.Every(time.Hour), 1), func(int) {})
	for i, name := range []string{"a", "b"} {
		q.add(Key{"p", name}, int64(i+1))
		k, _ := q.get()
		d, _ := q.failed(k)
		if i == 0 && d != time.Millisecond {
			t.Fatalf("first retry delay %s, want the key's backoff", d)
		}
		if i == 1 && d < 59*time.Minute {
			t.Fatalf("second retry delay %s, want the rate limiter's ~1h", d)
		}
	}
}
