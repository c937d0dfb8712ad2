package flaredb_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestBatchedCallsThroughOneClient drives one client from many goroutines,
// so its calls are coalesced into batches (wire.PathBatch), against a
// cluster whose leader changes halfway: every acknowledged write must be
// read back by the goroutine that made it (read-your-writes through
// linearizable reads), and the final state must hold every acknowledged
// write.
func TestBatchedCallsThroughOneClient(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	leader := c.WaitLeader()
	follower := (leader + 1) % 3
	// Start at a follower: the first write learns the leader from it.
	cl := c.Client(follower, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const writers, rounds = 24, 40
	acked := make([][][]byte, writers)
	var ackedN, ackedAfter atomic.Int64
	// The writers stop at three quarters of their rounds until leadership
	// has moved (the transfer starts after a quarter of the writes), so the
	// change happens while writes are in flight and some come after it.
	moved := make(chan struct{})
	var closeMoved sync.Once
	defer closeMoved.Do(func() { close(moved) }) // if the test fails first
	var wg sync.WaitGroup
	defer wg.Wait()
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				if i == rounds*3/4 {
					select {
					case <-moved:
					case <-ctx.Done():
						return
					}
				}
				key := fmt.Appendf(nil, "batch/%02d/%03d", w, i)
				val := fmt.Appendf(nil, "v%d-%d", w, i)
				_, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: key, Value: val}}})
				if err != nil {
					// Leadership moves during the test: a write may fail
					// with an error that says so, but must not be lost if
					// it was acknowledged.
					continue
				}
				acked[w] = append(acked[w], key)
				if ackedN.Add(1); i >= rounds*3/4 {
					ackedAfter.Add(1)
				}
				kv, found, _, err := cl.Get(ctx, "", key, client.ReadOptions{})
				if err != nil {
					continue
				}
				if !found || !bytes.Equal(kv.Value, val) {
					errs <- fmt.Errorf("writer %d: read of its acknowledged write %s = %q found=%v", w, key, kv.Value, found)
					return
				}
			}
		})
	}
	// Move leadership while the writers run, and see that it moved.
	testkit.Eventually(t, 30*time.Second, "a quarter of the writes", func() bool { return ackedN.Load() >= writers*rounds/4 })
	old := c.Members[leader]
	testkit.EventuallyErr(t, 30*time.Second, "leadership to move from "+old.ID, func() error {
		if !old.Server.Leading() {
			return nil
		}
		return old.Server.TransferLeadership(ctx, "")
	})
	testkit.Eventually(t, 30*time.Second, "a new leader other than "+old.ID, func() bool { return c.WaitLeader() != leader })
	closeMoved.Do(func() { close(moved) })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	for w := range writers {
		for _, key := range acked[w] {
			n++
			if _, found, _, err := cl.Get(ctx, "", key, client.ReadOptions{}); err != nil || !found {
				t.Errorf("acknowledged write %s: found=%v err=%v", key, found, err)
			}
		}
	}
	if n < writers*rounds/2 {
		t.Errorf("only %d of %d writes acknowledged", n, writers*rounds)
	}
	if ackedAfter.Load() == 0 {
		t.Errorf("no write acknowledged after the leader change")
	}
}

// TestConcurrentWritesShareEntries checks group commit: with one entry in
// Raft at a time, writers that arrive while it commits all go into the
// next one, so many concurrent writers need far fewer entries (and fsyncs)
// than writes. Every write must still get its own result.
func TestConcurrentWritesShareEntries(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	srv := c.Members[c.WaitLeader()].Server
	propose := flaredb.Proposer(srv)
	before := srv.Stats()
	const writers, rounds = 48, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range rounds {
				txn := wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: wire.RawKey("", fmt.Appendf(nil, "share/%02d/%02d", w, i)), Value: []byte("v")}}}
				res, err := propose(context.Background(), txn, 64)
				if err != nil {
					errs <- fmt.Errorf("writer %d write %d: %w", w, i, err)
					return
				}
				if !res.Succeeded || res.Revision == 0 {
					errs <- fmt.Errorf("writer %d write %d: result %+v", w, i, res)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := srv.Stats()
	txns, entries := after.Proposals-before.Proposals, after.Entries-before.Entries
	if txns != writers*rounds {
		t.Fatalf("%d transactions proposed, want %d", txns, writers*rounds)
	}
	// 48 writers and one entry in flight: each entry after the first
	// carries the writers that waited, about all of them. 4 per entry
	// leaves room for a slow machine and the race detector.
	if per := float64(txns) / float64(entries); per < 4 {
		t.Errorf("%d transactions in %d entries (%.1f per entry): concurrent writes do not share entries", txns, entries, per)
	} else {
		t.Logf("%d transactions in %d entries (%.1f per entry)", txns, entries, per)
	}
}
