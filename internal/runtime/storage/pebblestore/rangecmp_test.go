package pebblestore

import (
	"context"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestGroupCommitRangeEmptySeesEarlierTxns hands the writer's commit step
// one group directly, so the transactions are sure to share a batch: a
// range compare must see the puts and deletes of the transactions before
// it in the group, not only committed state.
func TestGroupCommitRangeEmptySeesEarlierTxns(t *testing.T) {
	s := openStore(t, "", Options{})
	storetest.MustPut(t, s, "net", "n")
	guardedDelete := storage.Txn{
		If:   []storage.Compare{storetest.PrefixEmpty("members/")},
		Then: []storage.Op{storetest.DelOp("net")},
		Else: []storage.Op{storetest.GetOp("net")},
	}
	txns := []storage.Txn{
		{Then: []storage.Op{storetest.PutOp("members/a", "1")}},
		guardedDelete, // must fail: members/a was put just before
		{Then: []storage.Op{storetest.DelOp("members/a")}},
		guardedDelete, // must succeed: members/a was deleted just before
		guardedDelete, // holds again, deletes nothing
	}
	group := make([]*request, len(txns))
	for i, txn := range txns {
		group[i] = &request{ctx: context.Background(), txn: txn, reply: make(chan reply, 1)}
	}
	before := s.Metrics().BatchesCommitted
	// The writer goroutine is idle (nothing is queued), so the test may
	// play its part for one group.
	if n := s.commitBatch(group); n != len(group) {
		t.Fatalf("one batch handled %d of %d", n, len(group))
	}
	if got := s.Metrics().BatchesCommitted - before; got != 1 {
		t.Fatalf("%d batches committed, want 1", got)
	}
	var res []storage.TxnResult
	for i, req := range group {
		r := <-req.reply
		if r.err != nil {
			t.Fatalf("txn %d: %v", i, r.err)
		}
		res = append(res, r.res)
	}
	if res[1].Succeeded || !res[1].Results[0].Found {
		t.Errorf("guarded delete after a member's put: %+v", res[1])
	}
	if !res[3].Succeeded || !res[3].Results[0].Found {
		t.Errorf("guarded delete after the member's delete: %+v", res[3])
	}
	if !res[4].Succeeded || res[4].Results[0].Found {
		t.Errorf("guarded delete of the deleted network: %+v", res[4])
	}
	if _, err := s.Get(context.Background(), []byte("net")); err == nil {
		t.Error("the network survived its guarded delete")
	}
}
