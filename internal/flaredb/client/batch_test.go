package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// holding reports whether the n-th request a scripted member receives is
// one of the calls that occupy the batcher's in-flight slots (the first
// request, n == 1, teaches the client the leader): maxBatchesInFlight of
// them, so the tests follow the constant.
func holding(n int64) bool { return n >= 2 && n < 2+maxBatchesInFlight }

// waitInflight waits until every in-flight slot of c's batcher is taken.
func waitInflight(t *testing.T, c *Client) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d calls in flight", maxBatchesInFlight), func() bool {
		c.batches.mu.Lock()
		defer c.batches.mu.Unlock()
		return c.batches.inflight == maxBatchesInFlight
	})
}

// batchOf runs calls concurrently on c: hold runs maxBatchesInFlight times
// first, occupying the batcher's in-flight slots (the member holds their
// requests, those for which holding is true, until release is closed);
// calls then start one by one, each once the one before is queued, so they
// go out together as one batch (sent when sendAtQueued calls wait, else
// when a slot frees). It returns hold's errors, then one per call.
func batchOf(t *testing.T, c *Client, release chan struct{}, hold func() error, calls []func() error) []error {
	t.Helper()
	if len(calls) > sendAtQueued {
		t.Fatalf("%d calls do not fit in one batch sent at %d queued", len(calls), sendAtQueued)
	}
	queued := func() int {
		c.batches.mu.Lock()
		defer c.batches.mu.Unlock()
		return len(c.batches.queue)
	}
	errs := make([]error, maxBatchesInFlight+len(calls))
	var wg sync.WaitGroup
	for i := range maxBatchesInFlight {
		wg.Go(func() { errs[i] = hold() })
	}
	waitInflight(t, c)
	for i, call := range calls {
		wg.Go(func() { errs[maxBatchesInFlight+i] = call() })
		if n := i + 1; n < sendAtQueued {
			testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d calls queued", n), func() bool { return queued() == n })
		}
	}
	close(release)
	wg.Wait()
	return errs
}

func getOK(v string) []byte {
	return (&wire.GetResponse{Found: true, KV: wire.KV{Key: []byte("k"), Value: []byte(v), CreateRevision: 1, ModRevision: 1}, Revision: 1}).Encode()
}

func TestBatchAnswersEachCallAndRetriesPerItem(t *testing.T) {
	release := make(chan struct{})
	var batches, singles sync.Map
	m := newMember(t, func(n int64, path string, body []byte) (int, []byte) {
		switch path {
		case wire.PathBatch:
			items, err := wire.DecodeBatch(wire.TagBatchRequest, body)
			if err != nil {
				return fail(wire.CodeMalformed, "")
			}
			batches.Store(n, len(items))
			out := make([][]byte, len(items))
			for i, it := range items {
				tag, _ := wire.PeekTag(it)
				var req wire.TxnRequest
				switch {
				case tag == wire.TagGetRequest:
					out[i] = getOK("batched")
				case req.Decode(it) == nil && string(req.Txn.Then[0].Key) == "not-applied":
					// Not applied: the client retries it on its own.
					_, out[i] = fail(wire.CodeNotLeader, "")
				case string(req.Txn.Then[0].Key) == "broken":
					_, out[i] = fail(wire.CodeUnknownOutcome, "")
				default:
					_, out[i] = ok(10 + int64(i))
				}
			}
			return 200, wire.EncodeBatch(wire.TagBatchResponse, out)
		case wire.PathTxn:
			if n == 1 {
				return ok(1) // teaches the client the leader
			}
			if holding(n) {
				<-release
			}
			singles.Store(n, path)
			return ok(99)
		}
		return fail(wire.CodeMalformed, "")
	})
	c := newClient(t, "c1", m.addr())
	if _, err := c.Txn(context.Background(), "", put); err != nil {
		t.Fatal(err)
	}
	txn := func(key string, want int64, wantErr error) func() error {
		return func() error {
			r, err := c.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte(key), Value: []byte("v")}}})
			if wantErr != nil {
				if !errors.Is(err, wantErr) {
					return fmt.Errorf("%s: err %v, want %v", key, err, wantErr)
				}
				return nil
			}
			if err != nil || (want != 0 && r.Revision != want) {
				return fmt.Errorf("%s: %+v %v, want revision %d", key, r, err, want)
			}
			return nil
		}
	}
	get := func() error {
		kv, found, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{})
		if err != nil || !found || string(kv.Value) != "batched" {
			return fmt.Errorf("get: %+v %v %v", kv, found, err)
		}
		return nil
	}
	errs := batchOf(t, c, release, txn("first", 99, nil), []func() error{
		get,
		txn("not-applied", 99, nil),
		txn("broken", 0, ErrUnknownOutcome),
	})
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	n := 0
	batches.Range(func(_, v any) bool {
		n++
		if v.(int) != 3 {
			t.Errorf("batch of %d calls, want 3", v)
		}
		return true
	})
	if n != 1 {
		t.Errorf("%d batches, want 1", n)
	}
}

func TestBatchLostInTransitFailsWritesAndRetriesReads(t *testing.T) {
	release := make(chan struct{})
	var m *member
	m = newMember(t, func(n int64, path string, body []byte) (int, []byte) {
		switch path {
		case wire.PathBatch:
			// The connection breaks after the batch was sent.
			panic(http.ErrAbortHandler)
		case wire.PathGet:
			return 200, getOK("single")
		case wire.PathTxn:
			if holding(n) {
				<-release
			}
			return ok(1)
		}
		return fail(wire.CodeMalformed, "")
	})
	c := newClient(t, "c1", m.addr())
	if _, err := c.Txn(context.Background(), "", put); err != nil {
		t.Fatal(err)
	}
	hold := func() error { _, err := c.Txn(context.Background(), "", put); return err }
	errs := batchOf(t, c, release, hold, []func() error{
		func() error {
			if _, err := c.Txn(context.Background(), "", put); !errors.Is(err, ErrUnknownOutcome) {
				return fmt.Errorf("write in a lost batch: %v, want ErrUnknownOutcome", err)
			}
			return nil
		},
		func() error {
			kv, _, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{})
			if err != nil || string(kv.Value) != "single" {
				return fmt.Errorf("read in a lost batch: %+v %v, want a retry on its own", kv, err)
			}
			return nil
		},
	})
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestQueuedCallLeavesOnCancel(t *testing.T) {
	var holders sync.WaitGroup
	defer holders.Wait()
	release := make(chan struct{})
	defer close(release) // before holders.Wait
	m := newMember(t, func(n int64, path string, body []byte) (int, []byte) {
		if holding(n) {
			<-release
		}
		return ok(1)
	})
	c := newClient(t, "c1", m.addr())
	if _, err := c.Txn(context.Background(), "", put); err != nil {
		t.Fatal(err)
	}
	for range maxBatchesInFlight { // hold every slot
		holders.Go(func() { _, _ = c.Txn(context.Background(), "", put) })
	}
	waitInflight(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Txn(ctx, "", put)
	// Still queued, so never sent: a plain deadline, not an unknown outcome.
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("err = %v", err)
	}
	c.batches.mu.Lock()
	defer c.batches.mu.Unlock()
	if len(c.batches.queue) != 0 {
		t.Fatalf("%d calls left in the queue", len(c.batches.queue))
	}
}
