package flaredb_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
)

// TestStoreSemantics runs the storage.Store suite through the client-backed
// Store against a 1-member and a 3-member cluster. Each scenario gets a
// fresh namespace on the shared cluster.
func TestStoreSemantics(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", n), func(t *testing.T) {
			c := flaredbtest.StartCluster(t, n, flaredbtest.Options{})
			cl := c.Client()
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

// TestStoreSemanticsInProcess runs the suite through a client that calls
// member 0 in-process (Server.Call, as the node wiring does) and the other
// members over HTTP: whether member 0 leads or follows, every semantic
// holds (writes it cannot serve go to the leader named in its answer).
func TestStoreSemanticsInProcess(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", n), func(t *testing.T) {
			c := flaredbtest.StartCluster(t, n, flaredbtest.Options{})
			var eps []string
			for _, m := range c.Members {
				eps = append(eps, m.APIAddr)
			}
			local := c.Members[0]
			cl, err := client.New(client.Config{Endpoints: eps, ClusterID: c.ID, RequestTimeout: 20 * time.Second,
				Local: local.Server.Call, LocalWatch: local.Server.Watch, LocalEndpoint: local.APIAddr})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			seq := 0
			storetest.Run(t, storetest.Harness{
				Quick: n == 3,
				New: func(t *testing.T) storage.Store {
					seq++
					s, err := client.NewStore(cl, fmt.Sprintf("local-%d", seq))
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
			})
		})
	}
}

// Server.Call refuses what the HTTP API refuses, with the same codes.
func TestCallErrors(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	srv := c.Members[0].Server
	ctx := t.Context()
	if _, err := srv.Call(ctx, "/nope", nil); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("unknown path: %v", err)
	}
	if _, err := srv.Call(ctx, wire.PathTxn, []byte{wire.Version, 0xff, 0x01}); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("garbage body: %v", err)
	}
	if _, err := srv.Call(ctx, wire.PathTxn, make([]byte, wire.MaxRequestBytes+1)); !errors.Is(err, wire.ErrRequestTooLarge) {
		t.Fatalf("oversize body: %v", err)
	}
	c.Stop(0)
	if _, err := srv.Call(ctx, wire.PathRevision, nil); !errors.Is(err, wire.ErrShuttingDown) {
		t.Fatalf("stopped member: %v", err)
	}
}

// An in-process watch whose reader stopped reading must not hold the
// member up: it stops promptly, and a closed stream ends its sender.
func TestInProcessWatchEnds(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	srv := c.Members[0].Server
	req := (&wire.WatchRequest{Prefix: []byte("w")}).Encode()
	closed, err := srv.Watch(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	stalled, err := srv.Watch(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	cl := c.Client()
	for i := range 300 {
		mustWrite(t, cl, fmt.Sprintf("w%03d", i), strings.Repeat("v", 1000))
	}
	start := time.Now()
	c.Stop(0)
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("stopping took %s with a stalled in-process watch", d)
	}
	if _, err := srv.Watch(t.Context(), req); !errors.Is(err, wire.ErrShuttingDown) {
		t.Fatalf("watch on a stopped member: %v", err)
	}
}
