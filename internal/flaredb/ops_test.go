package flaredb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

func putOp(k, v string) wire.Op { return wire.Op{Type: wire.OpPut, Key: []byte(k), Value: []byte(v)} }

func mustWrite(t testing.TB, cl *client.Client, k, v string) wire.TxnResult {
	t.Helper()
	res, err := cl.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{putOp(k, v)}})
	if err != nil {
		t.Fatalf("write %s: %v", k, err)
	}
	return res
}

// writeKeys writes n keys prefix/000.. and returns the revision of the last.
func writeKeys(t testing.TB, cl *client.Client, prefix string, n int) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		rev = mustWrite(t, cl, fmt.Sprintf("%s/%04d", prefix, i), strconv.Itoa(i)).Revision
	}
	return rev
}

// checkKeys reads n keys from member i's local state (stale read) and
// compares them with what writeKeys wrote.
func checkKeys(t testing.TB, c *flaredbtest.Cluster, i int, prefix string, n int) {
	t.Helper()
	cl := c.Client(i)
	kvs, _, err := cl.Range(context.Background(), "", []byte(prefix+"/"), []byte(prefix+"0"), client.RangeOptions{ReadOptions: client.ReadOptions{Stale: true}})
	if err != nil {
		t.Fatalf("range on %s: %v", c.Members[i].ID, err)
	}
	if len(kvs) != n {
		t.Fatalf("member %s has %d of %d keys under %s", c.Members[i].ID, len(kvs), n, prefix)
	}
	for j, kv := range kvs {
		if string(kv.Key) != fmt.Sprintf("%s/%04d", prefix, j) || string(kv.Value) != strconv.Itoa(j) {
			t.Fatalf("member %s key %d = %s=%s", c.Members[i].ID, j, kv.Key, kv.Value)
		}
	}
}

func TestWritesContinueAfterLeaderLoss(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) { cfg.ShutdownTransferTimeout = -1 }})
	cl := c.Client()
	writeKeys(t, cl, "before", 20)
	leader := c.WaitLeader()
	term, _ := c.Members[leader].Server.Status()

	// Writes keep running while the leader goes away without a transfer.
	var acked sync.Map
	var wg sync.WaitGroup
	var stopWriting atomic.Bool
	var ackedN atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stopWriting.Load(); i++ {
				k := fmt.Sprintf("during/%d/%04d", w, i)
				res, err := cl.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{putOp(k, k)}})
				if err == nil {
					acked.Store(k, res.Revision)
					ackedN.Add(1)
				} else if !errors.Is(err, wire.ErrUnknownOutcome) {
					t.Errorf("write %s: %v", k, err)
					return
				}
			}
		}()
	}
	// Writes flow before the failure.
	testkit.Eventually(t, 20*time.Second, "20 acknowledged writes", func() bool { return ackedN.Load() >= 20 })
	c.Stop(leader)
	newLeader := c.WaitLeader()
	st, _ := c.Members[newLeader].Server.Status()
	if st.Term <= term.Term {
		t.Fatalf("new leader term %d, old %d", st.Term, term.Term)
	}
	writeKeys(t, cl, "after", 20)
	stopWriting.Store(true)
	wg.Wait()
	n := 0
	acked.Range(func(k, v any) bool {
		kv, found, _, err := cl.Get(context.Background(), "", []byte(k.(string)), client.ReadOptions{})
		if err != nil || !found || kv.ModRevision != v.(int64) {
			t.Fatalf("acknowledged %s@%d: %+v found=%v err=%v", k, v, kv, found, err)
		}
		n++
		return true
	})
	t.Logf("leader %s stopped; %s took over in term %d; %d writes acknowledged meanwhile", c.Members[leader].ID, c.Members[newLeader].ID, st.Term, n)
	checkKeys(t, c, newLeader, "after", 20)
}

func TestFollowerRestartCatchesUp(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	cl := c.Client()
	writeKeys(t, cl, "a", 10)
	f := c.Follower(c.WaitLeader())
	c.Stop(f)
	writeKeys(t, cl, "b", 100)
	c.Restart(f)
	c.WaitReady(f)
	checkKeys(t, c, f, "a", 10)
	checkKeys(t, c, f, "b", 100)
}

func TestNewMemberCatchesUpFromSnapshot(t *testing.T) {
	c := flaredbtest.New(t, 4, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 50 * time.Millisecond
	}})
	initial := c.Voters()[:3]
	for i := range 3 {
		c.StartWith(i, c.Config(i, initial, nil))
	}
	for i := range 3 {
		c.WaitReady(i)
	}
	cl := c.Client(0, 1, 2)
	writeKeys(t, cl, "k", 200)
	leader := c.WaitLeader()
	testkit.Eventually(t, 20*time.Second, "a snapshot that truncated the log", func() bool {
		st, err := c.Members[leader].Server.Status()
		return err == nil && st.LastSnapshotIndex > 100
	})
	// Member 3 joins through member 0's API; the leader no longer has the
	// early log, so it must send a snapshot.
	c.StartWith(3, c.Config(3, nil, []string{c.Members[0].APIAddr}))
	c.WaitReady(3)
	checkKeys(t, c, 3, "k", 200)
	if r := c.Members[3].Server.Stats().Restores; r < 1 {
		t.Fatalf("new member restored %d snapshots, want >= 1", r)
	}
	st, err := c.Members[3].Server.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 4 {
		t.Fatalf("members = %+v", st.Members)
	}
	// The new member serves linearizable reads and its writes go through.
	cl3 := c.Client(3)
	mustWrite(t, cl3, "from-new", "x")
	if kv, found, _, err := cl3.Get(context.Background(), "", []byte("from-new"), client.ReadOptions{}); err != nil || !found || string(kv.Value) != "x" {
		t.Fatalf("read back on new member: %+v %v %v", kv, found, err)
	}
}

func TestRemoveMember(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	cl := c.Client()
	leader := c.WaitLeader()
	f := c.Follower(leader)
	if err := cl.RemoveMember(context.Background(), c.Members[f].ID); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "2 members in the leader's configuration", func() bool {
		st, err := c.Members[leader].Server.Status()
		return err == nil && len(st.Members) == 2
	})
	if err := cl.RemoveMember(context.Background(), c.Members[f].ID); !errors.Is(err, wire.ErrUnknownMember) {
		t.Fatalf("removing again: %v", err)
	}
	c.Stop(f)
	// Two voters left: both needed, both running.
	writeKeys(t, c.Client(leader), "after-remove", 10)
}

func TestLeaderTransferOnGracefulShutdown(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	cl := c.Client()
	writeKeys(t, cl, "k", 10)
	leader := c.WaitLeader()
	srv := c.Members[leader].Server
	before, _ := srv.Status()
	c.Stop(leader)
	if got := srv.Stats().Transfers; got != 1 {
		t.Fatalf("leadership transfers on shutdown = %d, want 1", got)
	}
	next := c.WaitLeader()
	st, _ := c.Members[next].Server.Status()
	t.Logf("leadership moved from %s (term %d) to %s (term %d)", before.ID, before.Term, st.ID, st.Term)
	writeKeys(t, cl, "after", 10)
}

func TestFollowerForwardsWrites(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	leader := c.WaitLeader()
	f := c.Follower(leader)
	cl := c.Client(f) // knows only the follower
	res := mustWrite(t, cl, "fwd", "1")
	if got := c.Members[f].Server.Stats().Forwarded; got < 1 {
		t.Fatalf("follower forwarded %d requests", got)
	}
	if cl.Leader() != c.Members[leader].APIAddr {
		t.Fatalf("client did not learn the leader from the forwarded answer: %q", cl.Leader())
	}
	kv, found, _, err := c.Client(leader).Get(context.Background(), "", []byte("fwd"), client.ReadOptions{})
	if err != nil || !found || kv.ModRevision != res.Revision {
		t.Fatalf("leader read %+v %v %v", kv, found, err)
	}
	// A request already forwarded once is not forwarded again: the
	// follower answers not-leader with a hint.
	body := (&wire.TxnRequest{Txn: wire.Txn{Then: []wire.Op{putOp("twice", "x")}}}).Encode()
	status, out := rawPost(t, c.Members[f].APIAddr, wire.PathTxn, c.ID, body, map[string]string{wire.HeaderForwarded: "m9"})
	we, err := wire.DecodeError(out)
	if err != nil || status != 421 || we.Code != wire.CodeNotLeader || we.Leader != c.Members[leader].APIAddr {
		t.Fatalf("forwarded-twice answer: %d %+v %v", status, we, err)
	}
}

func TestStaleReadOnlyWhenAsked(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) { cfg.RequestTimeout = time.Second }})
	cl := c.Client()
	mustWrite(t, cl, "k", "v")
	leader := c.WaitLeader()
	keep := c.Follower(leader)
	// Wait until the follower applied the write, then take away its quorum.
	testkit.Eventually(t, 10*time.Second, "follower to apply", func() bool {
		_, found, _, err := c.Client(keep).Get(context.Background(), "", []byte("k"), client.ReadOptions{Stale: true})
		return err == nil && found
	})
	for i := range c.Members {
		if i != keep {
			c.Stop(i)
		}
	}
	lone := c.Client(keep)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, _, err := lone.Get(ctx, "", []byte("k"), client.ReadOptions{}); err == nil {
		t.Fatal("linearizable read succeeded without a quorum")
	}
	kv, found, _, err := lone.Get(context.Background(), "", []byte("k"), client.ReadOptions{Stale: true})
	if err != nil || !found || string(kv.Value) != "v" {
		t.Fatalf("stale read = %+v %v %v", kv, found, err)
	}
}

func TestWatchAcrossLeaderChange(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) { cfg.ShutdownTransferTimeout = -1 }})
	cl := c.Client()
	s, err := client.NewStore(cl, "watched")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	w, err := s.Watch(ctx, []byte("k/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	var mu sync.Mutex
	acked := map[string]int64{}
	maybe := map[string]bool{}
	var stopWriting atomic.Bool
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stopWriting.Load(); i++ {
				k := fmt.Sprintf("k/%d/%05d", g, i)
				kv, err := storage.Put(ctx, s, []byte(k), []byte(k))
				mu.Lock()
				switch {
				case err == nil:
					acked[k] = kv.ModRevision
				case errors.Is(err, wire.ErrUnknownOutcome):
					maybe[k] = true
				default:
					t.Errorf("put %s: %v", k, err)
				}
				mu.Unlock()
				if err != nil && !errors.Is(err, wire.ErrUnknownOutcome) {
					return
				}
			}
		}()
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	// Writes are acknowledged before the leader goes, and after the next
	// one took over.
	testkit.Eventually(t, 20*time.Second, "20 acknowledged writes", func() bool { return ackedCount() >= 20 })
	leader := c.WaitLeader()
	c.Stop(leader)
	c.WaitLeader()
	before := ackedCount()
	testkit.Eventually(t, 20*time.Second, "20 writes acknowledged by the new leader", func() bool { return ackedCount() >= before+20 })
	stopWriting.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	seen := map[string]int64{}
	var last int64
	deadline := time.After(20 * time.Second)
	for len(seenAcked(seen, acked)) < len(acked) {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended: %v", w.Err())
			}
			k := string(ev.KV.Key)
			if ev.KV.ModRevision <= last {
				t.Fatalf("revision went from %d to %d at %s", last, ev.KV.ModRevision, k)
			}
			last = ev.KV.ModRevision
			if _, dup := seen[k]; dup {
				t.Fatalf("%s delivered twice", k)
			}
			seen[k] = ev.KV.ModRevision
			if rev, ok := acked[k]; ok && rev != ev.KV.ModRevision {
				t.Fatalf("%s acknowledged at %d, watched at %d", k, rev, ev.KV.ModRevision)
			}
			if _, ok := acked[k]; !ok && !maybe[k] {
				t.Fatalf("watched %s, which was never written", k)
			}
		case <-deadline:
			t.Fatalf("watch delivered %d of %d acknowledged writes", len(seenAcked(seen, acked)), len(acked))
		}
	}
	t.Logf("%d acknowledged writes (%d with unknown outcome) watched in order across the loss of %s", len(acked), len(maybe), c.Members[leader].ID)
}

func seenAcked(seen, acked map[string]int64) []string {
	var out []string
	for k := range acked {
		if _, ok := seen[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

func TestMVCCAndTTL(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	cl := c.Client()
	ctx := context.Background()
	r1 := mustWrite(t, cl, "k", "v1").Revision
	r2 := mustWrite(t, cl, "k", "v2").Revision
	mustWrite(t, cl, "other", "o")
	r3, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpDelete, Key: []byte("k")}}})
	if err != nil {
		t.Fatal(err)
	}
	r4 := mustWrite(t, cl, "k", "v3").Revision
	for _, c := range []struct {
		rev   int64
		want  string
		found bool
	}{{r1, "v1", true}, {r2, "v2", true}, {r2 + 1, "v2", true}, {r3.Revision, "", false}, {r4, "v3", true}, {0, "v3", true}} {
		kv, found, rev, err := cl.Get(ctx, "", []byte("k"), client.ReadOptions{Revision: c.rev})
		if err != nil || found != c.found || string(kv.Value) != c.want {
			t.Fatalf("get at %d = %+v %v %v", c.rev, kv, found, err)
		}
		if c.rev != 0 && rev != c.rev {
			t.Fatalf("get at %d read at %d", c.rev, rev)
		}
		if found && c.rev != 0 && kv.CreateRevision > c.rev {
			t.Fatalf("get at %d: create %d", c.rev, kv.CreateRevision)
		}
	}
	kvs, _, err := cl.Range(ctx, "", nil, nil, client.RangeOptions{ReadOptions: client.ReadOptions{Revision: r2}})
	if err != nil || len(kvs) != 1 || string(kvs[0].Value) != "v2" {
		t.Fatalf("range at r2 = %+v %v", kvs, err)
	}
	kvs, _, err = cl.Range(ctx, "", nil, nil, client.RangeOptions{ReadOptions: client.ReadOptions{Revision: r3.Revision}})
	if err != nil || len(kvs) != 1 || string(kvs[0].Key) != "other" {
		t.Fatalf("range at r3 = %+v %v", kvs, err)
	}
	kvs, _, err = cl.Range(ctx, "", nil, nil, client.RangeOptions{Reverse: true, Limit: 1})
	if err != nil || len(kvs) != 1 || string(kvs[0].Key) != "other" {
		t.Fatalf("reverse range = %+v %v", kvs, err)
	}
	if _, _, _, err := cl.Get(ctx, "", []byte("k"), client.ReadOptions{Revision: r4 + 100}); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("future read: %v", err)
	}
	if err := cl.Compact(ctx, r2+1); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := cl.Get(ctx, "", []byte("k"), client.ReadOptions{Revision: r1}); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("compacted read: %v", err)
	}
	if kv, found, _, err := cl.Get(ctx, "", []byte("k"), client.ReadOptions{Revision: r2 + 1}); err != nil || !found || string(kv.Value) != "v2" {
		t.Fatalf("read at the compaction point = %+v %v %v", kv, found, err)
	}

	// TTL: the leader deletes expired keys with a normal, watched delete.
	w, err := cl.Watch(ctx, "", []byte("ttl/"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	res, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{
		{Type: wire.OpPut, Key: []byte("ttl/short"), Value: []byte("x"), TTL: 1},
		{Type: wire.OpPut, Key: []byte("ttl/renewed"), Value: []byte("x"), TTL: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Results[0].KV.ExpiresAt; e == 0 {
		t.Fatalf("no expiry on %+v", res.Results[0].KV)
	}
	// Overwriting without a TTL removes the expiry.
	mustWrite(t, cl, "ttl/renewed", "y")
	testkit.Eventually(t, 10*time.Second, "ttl/short to expire", func() bool {
		_, found, _, err := cl.Get(ctx, "", []byte("ttl/short"), client.ReadOptions{})
		return err == nil && !found
	})
	var del *wire.Event
	for del == nil {
		select {
		case ev := <-w.Events():
			if ev.Type == wire.EventDelete {
				del = &ev
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no delete event for the expired key")
		}
	}
	if string(del.KV.Key) != "ttl/short" {
		t.Fatalf("delete event for %s", del.KV.Key)
	}
	// ttl/renewed had the same expiry as ttl/short: the scan that expired
	// ttl/short would have expired it in the same command, so the read
	// (linearizable, after that command) sees whether the overwrite removed
	// its expiry. No need to wait past the old expiry.
	if kv, found, _, err := cl.Get(ctx, "", []byte("ttl/renewed"), client.ReadOptions{}); err != nil || !found || string(kv.Value) != "y" || kv.ExpiresAt != 0 {
		t.Fatalf("renewed key = %+v %v %v", kv, found, err)
	}
}

func TestNamespacesIsolate(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	cl := c.Client()
	ctx := context.Background()
	for _, ns := range []string{"iam", "iam/projects/p-1", ""} {
		if _, err := cl.Txn(ctx, ns, wire.Txn{Then: []wire.Op{putOp("k", ns)}}); err != nil {
			t.Fatalf("put in %q: %v", ns, err)
		}
	}
	for _, ns := range []string{"iam", "iam/projects/p-1", ""} {
		kvs, _, err := cl.Range(ctx, ns, nil, nil, client.RangeOptions{})
		if err != nil || len(kvs) != 1 || string(kvs[0].Value) != ns || string(kvs[0].Key) != "k" {
			t.Fatalf("range in %q = %+v %v", ns, kvs, err)
		}
	}
	for _, bad := range []string{"IAM", "a//b", "-a", "a/b/c/d/e", "a\x00b", string(bytes.Repeat([]byte("a"), 64))} {
		if _, err := cl.Txn(ctx, bad, wire.Txn{Then: []wire.Op{putOp("k", "v")}}); !errors.Is(err, wire.ErrBadNamespace) {
			t.Fatalf("namespace %q: %v", bad, err)
		}
	}
}

// TestMemberRebuildsLostStateMachine removes a stopped member's Pebble state
// machine entirely: on restart it is rebuilt from the Raft log (replay from
// index 1) or, once the log was truncated, from its latest local snapshot
// plus the log after it. This is the recovery path the NoSync state machine
// relies on.
func TestMemberRebuildsLostStateMachine(t *testing.T) {
	for _, snapshots := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshots=%v", snapshots), func(t *testing.T) {
			c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
				if snapshots {
					cfg.SnapshotThreshold = 32
					cfg.TrailingLogs = 8
					cfg.SnapshotInterval = 50 * time.Millisecond
				}
			}})
			cl := c.Client()
			writeKeys(t, cl, "k", 100)
			f := c.Follower(c.WaitLeader())
			testkit.Eventually(t, 10*time.Second, "follower to apply", func() bool {
				st, err := c.Members[f].Server.Status()
				return err == nil && st.Revision >= 100
			})
			if snapshots {
				if err := c.Members[f].Server.TakeSnapshot(); err != nil {
					t.Fatal(err)
				}
			}
			c.Stop(f)
			if err := os.RemoveAll(filepath.Join(c.Members[f].Dir, "fsm")); err != nil {
				t.Fatal(err)
			}
			writeKeys(t, cl, "more", 20)
			c.Restart(f)
			c.WaitReady(f)
			checkKeys(t, c, f, "k", 100)
			checkKeys(t, c, f, "more", 20)
			if restores := c.Members[f].Server.Stats().Restores; snapshots != (restores > 0) {
				t.Fatalf("restores = %d with snapshots=%v", restores, snapshots)
			}
		})
	}
}
