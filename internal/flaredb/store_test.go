package flaredb

import (
	"fmt"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestStoreSemantics runs the storage.Store suite through the client-backed
// Store against a 1-member and a 3-member cluster. Each scenario gets a
// fresh namespace on the shared cluster.
func TestStoreSemantics(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", n), func(t *testing.T) {
			c := newTestCluster(t, n, nil)
			c.startAll()
			cl := c.client()
			seq := 0
			storetest.Run(t, storetest.Harness{
				Quick: n == 3,
				New: func(t *testing.T) storage.Store {
					seq++
					s, err := client.NewStore(cl, fmt.Sprintf("suite-%d", seq))
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
			})
		})
	}
}
