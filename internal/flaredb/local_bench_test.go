package flaredb_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// BenchmarkLocalPutGet is the store cost the node's API pays in the
// single-node profile: a one-member group reached in-process (Server.Call
// through the client, as internal/node wires it), 32 goroutines each
// putting a new 600-byte value (the size of a small resource) and reading
// it back linearizably. With watchers=3, three in-process watch streams
// follow every change meanwhile, as a node's API, IAM and project
// controller do; cpu-us/op is the process's CPU time per pair.
func BenchmarkLocalPutGet(b *testing.B) {
	for _, watchers := range []int{0, 3} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) { benchLocalPutGet(b, watchers) })
	}
}

func benchLocalPutGet(b *testing.B, watchers int) {
	c := flaredbtest.StartCluster(b, 1, flaredbtest.Options{})
	m := c.Members[0]
	cl, err := client.New(client.Config{Endpoints: []string{m.APIAddr}, ClusterID: c.ID, RequestTimeout: 20 * time.Second,
		Local: m.Server.Call, LocalWatch: m.Server.Watch, LocalEndpoint: m.APIAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var seen atomic.Int64
	var following sync.WaitGroup
	for range watchers {
		w, err := cl.Watch(b.Context(), "r", nil, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		following.Go(func() {
			for range w.Events() {
				seen.Add(1)
			}
		})
	}
	var seq atomic.Int64
	val := make([]byte, 600)
	b.SetParallelism(32)
	cpu0 := processCPUTime(b)
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
	// Count the watchers' work in: wait until they have every change.
	want := int64(watchers) * seq.Load()
	for deadline := time.Now().Add(time.Minute); seen.Load() < want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if got := seen.Load(); got < want {
		b.Fatalf("watchers saw %d events, want %d", got, want)
	}
	b.ReportMetric(float64((processCPUTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
}

// processCPUTime is the user and system CPU time of this process so far.
func processCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
