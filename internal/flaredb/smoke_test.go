package flaredb_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

func TestSmoke(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(map[int]string{1: "one", 3: "three"}[n], func(t *testing.T) {
			c := flaredbtest.StartCluster(t, n, flaredbtest.Options{})
			cl := c.Client()
			ctx := context.Background()
			res, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte("a"), Value: []byte("1")}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("put: %+v", res)
			kv, found, rev, err := cl.Get(ctx, "", []byte("a"), client.ReadOptions{})
			if err != nil || !found || string(kv.Value) != "1" {
				t.Fatalf("get = %+v %v %d %v", kv, found, rev, err)
			}
			t.Logf("get: %+v rev %d", kv, rev)
		})
	}
}

func TestCollector(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Members[0].Server.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
	}
	for _, name := range []string{"flaredb_is_leader", "flaredb_revision", "flaredb_events_total"} {
		if !found[name] {
			t.Errorf("metric %s missing (have %v)", name, found)
		}
	}
}
