package fsm

import (
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

func rangeEmpty(key, end string) []wire.Compare {
	return []wire.Compare{{Key: []byte(key), Target: wire.CompareRangeEmpty, RangeEnd: []byte(end)}}
}

func succeeded(resps []any) []bool {
	var out []bool
	for _, r := range resps {
		for _, tr := range r.(*TxnsResult).Results {
			out = append(out, tr.Succeeded)
		}
	}
	return out
}

// TestRangeEmptySeesEarlierTxnsInOneBatch: a range compare applied in one
// ApplyBatch with other transactions (in its entry and in earlier entries)
// sees their puts and deletes, as if they were applied one by one; and a
// read-only transaction served from a snapshot agrees.
func TestRangeEmptySeesEarlierTxnsInOneBatch(t *testing.T) {
	f := openFSM(t, "")
	apply(t, f, logs(1, txns(1, wire.Txn{Then: []wire.Op{put("net", "n"), put("m/old", "p"), put("m0", "at the end"), put("m", "before")}})))
	guarded := wire.Txn{If: rangeEmpty("m/", "m0"), Then: []wire.Op{del("net")}, Else: []wire.Op{put("refused", "x")}}
	resps := apply(t, f, append(
		logs(2, txns(1,
			guarded, // m/old is there
			wire.Txn{Then: []wire.Op{del("m/old")}},
			wire.Txn{Then: []wire.Op{put("m/new", "p")}},
			guarded, // m/new was put just before
		)),
		logs(3, txns(1,
			wire.Txn{Then: []wire.Op{del("m/new")}},
			guarded, // every member deleted, in this batch
		))...))
	got := succeeded(resps)
	want := []bool{false, true, true, false, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("succeeded = %v, want %v", got, want)
		}
	}
	if _, ok := getValue(t, f, "net", 0); ok {
		t.Fatal("net survived its guarded delete")
	}
	// The deleted members left versions and log entries: they do not count.
	for _, c := range []struct {
		key, end string
		want     bool
	}{{"m/", "m0", true}, {"m", "m/", false}, {"m/", "m1", false}, {"m/old", "m/old\x00", true}} {
		res, err := f.ReadTxn(&wire.Txn{If: rangeEmpty(c.key, c.end)})
		if err != nil || res.Succeeded != c.want {
			t.Errorf("read-only [%q, %q) = %v, %v; want %v", c.key, c.end, res.Succeeded, err, c.want)
		}
	}
}

// TestRangeEmptyCountsExpiredKeysUntilExpired: a key whose TTL ran out
// counts, for a range compare as for a single-key one, until the leader's
// expire command deletes it: compares never read a clock, so replicas
// cannot disagree.
func TestRangeEmptyCountsExpiredKeysUntilExpired(t *testing.T) {
	f := openFSM(t, "")
	apply(t, f, logs(1, txns(10_000, wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte("m/lease"), Value: []byte("x"), TTL: 1}}})))
	exists := []wire.Compare{{Key: []byte("m/lease"), Target: wire.CompareExists}}
	// Applied well after the expiry time, before the expire command.
	resps := apply(t, f, logs(2, txns(20_000,
		wire.Txn{If: rangeEmpty("m/", "m0"), Then: []wire.Op{put("a", "1")}},
		wire.Txn{If: exists, Then: []wire.Op{put("b", "1")}},
	)))
	if got := succeeded(resps); got[0] || !got[1] {
		t.Fatalf("before the expire: range empty %v, key exists %v; want false, true", got[0], got[1])
	}
	keys, err := f.ExpiredKeys(20_000, 10)
	if err != nil || len(keys) != 1 {
		t.Fatalf("expired keys = %+v, %v", keys, err)
	}
	apply(t, f, logs(3, Command{Kind: CmdExpire, Timestamp: 20_000, Expire: keys}))
	resps = apply(t, f, logs(4, txns(20_001,
		wire.Txn{If: rangeEmpty("m/", "m0"), Then: []wire.Op{put("a", "2")}},
		wire.Txn{If: exists, Then: []wire.Op{put("b", "2")}},
	)))
	if got := succeeded(resps); !got[0] || got[1] {
		t.Fatalf("after the expire: range empty %v, key exists %v; want true, false", got[0], got[1])
	}
}
