package flaredb

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// BenchmarkLocalPutGet is the store cost the node's API pays in the
// single-node profile: a one-member group reached in-process (Server.Call
// through the client, as internal/node wires it), 32 goroutines each
// putting a new 600-byte value (the size of a small resource) and reading
// it back linearizably.
func BenchmarkLocalPutGet(b *testing.B) {
	c := newTestCluster(b, 1, nil)
	c.startAll()
	m := c.members[0]
	cl, err := client.New(client.Config{Endpoints: []string{m.apiAddr}, ClusterID: c.clusterID, RequestTimeout: 20 * time.Second,
		Local: m.srv.Call, LocalEndpoint: m.apiAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var seq atomic.Int64
	val := make([]byte, 600)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := []byte(fmt.Sprintf("k%d", seq.Add(1)))
			if _, err := cl.Txn(b.Context(), "r", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: k, Value: val}}}); err != nil {
				b.Fatal(err)
			}
			if _, _, _, err := cl.Get(b.Context(), "r", k, client.ReadOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
