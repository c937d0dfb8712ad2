package flaredb_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestRangeEmptyStaysInNamespace: a range compare over every possible user
// key sees only its own namespace, never the default one, a sibling, or a
// namespace its name is a prefix of.
func TestRangeEmptyStaysInNamespace(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	cl := c.Client()
	ctx := context.Background()
	stores := map[string]storage.Store{}
	for _, ns := range []string{"", "ns", "ns-a", "ns/a", "other"} {
		s, err := client.NewStore(cl, ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[ns] = s
	}
	for _, ns := range []string{"", "ns-a", "ns/a"} {
		storetest.MustPut(t, stores[ns], "\x00first", "v")
		storetest.MustPut(t, stores[ns], "m/x", "v")
	}
	everything := storage.Compare{Key: []byte{0}, Target: storage.CompareRangeEmpty, RangeEnd: bytes.Repeat([]byte{0xff}, storage.MaxKeySize)}
	for ns, want := range map[string]bool{"": false, "ns": true, "ns-a": false, "ns/a": false, "other": true} {
		for _, cmp := range []storage.Compare{everything, storetest.PrefixEmpty("m/")} {
			res, err := stores[ns].Txn(ctx, storage.Txn{If: []storage.Compare{cmp}, Then: []storage.Op{storetest.DelOp("probe")}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Succeeded != want {
				t.Errorf("namespace %q, range [%q, %q): empty = %v, want %v", ns, cmp.Key, cmp.RangeEnd[:min(4, len(cmp.RangeEnd))], res.Succeeded, want)
			}
		}
	}
}
