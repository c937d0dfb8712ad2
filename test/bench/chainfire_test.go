package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// startChainfire starts three `ultracloud server` processes with only the
// chainfire role, plaintext on loopback.
func startChainfire(b *testing.B, dir string) *kvCluster {
	b.Helper()
	ports := testkit.FreePorts(b, 6)
	k := &kvCluster{name: "chainfire"}
	b.Cleanup(k.close)
	var ic []string
	for i := range 3 {
		ic = append(ic, fmt.Sprintf("cf%d=http://127.0.0.1:%d", i+1, ports[2*i+1]))
	}
	for i := range 3 {
		name := fmt.Sprintf("cf%d", i+1)
		root := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`node: %s
dataDir: %s
roles: [chainfire]
storage:
  backend: local
api:
  listen: 127.0.0.1:0
log:
  level: warn
chainfire:
  clientURL: http://127.0.0.1:%d
  peerURL: http://127.0.0.1:%d
  initialCluster: [%s]
  clusterToken: bench-chainfire
  allowPlaintext: true
  heartbeatInterval: %s
  electionTimeout: %s
  snapshotCount: %d
  autoCompactionRetention: 1h
`, name, filepath.Join(root, "data"), ports[2*i], ports[2*i+1], strings.Join(ic, ", "), kvHeartbeat, kvElection, kvSnapshots)
		k.startMember(b, root, cfg, 10*time.Second)
		k.endpoints = append(k.endpoints, fmt.Sprintf("127.0.0.1:%d", ports[2*i]))
	}
	return k
}

// dial returns n clients of the cluster's members, each with its own
// connection, once a linearizable read succeeds.
func (k *kvCluster) dial(b *testing.B, n int) []*clientv3.Client {
	b.Helper()
	var cls []*clientv3.Client
	for range n {
		cl, err := clientv3.New(clientv3.Config{
			Endpoints:   k.endpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			b.Fatalf("%s: %v", k.name, err)
		}
		cls = append(cls, cl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := nodeproc.WaitFor(ctx, 60*time.Second, k.name+" to serve linearizable reads", func() (bool, error) {
		gctx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		_, err := cls[0].Get(gctx, "ready")
		return err == nil, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return cls
}

// BenchmarkChainfireVsEtcd starts a 3-member chainfire cluster (three
// `ultracloud server` processes, role chainfire) and a 3-member Debian
// etcd-server cluster, both plaintext on loopback with the same raft
// settings, and drives both with the same clientv3 load in the same run:
// puts of 256-byte values to fresh keys, and linearizable gets of 1000
// preloaded keys, with 16 and 64 concurrent clients (4 per gRPC
// connection, connections spread over the members). b.N operations per
// sub-benchmark, split across the clients. scripts/bench-chainfire.sh
// prints the table with the chainfire/etcd ratios.
func BenchmarkChainfireVsEtcd(b *testing.B) {
	dir := b.TempDir()
	clusters := []*kvCluster{startChainfire(b, filepath.Join(dir, "chainfire")), startEtcd(b, filepath.Join(dir, "etcd"))}
	value := strings.Repeat("v", kvValueBytes)
	conns := map[string][]*clientv3.Client{}
	for _, k := range clusters {
		cls := k.dial(b, 64/kvClientsPerCn)
		b.Cleanup(func() {
			for _, cl := range cls {
				_ = cl.Close()
			}
		})
		conns[k.name] = cls
		for i := range kvRangeKeys {
			if _, err := cls[0].Put(context.Background(), fmt.Sprintf("range/%04d", i), value); err != nil {
				b.Fatalf("%s: preload: %v", k.name, err)
			}
		}
	}
	var seq atomic.Int64 // fresh put keys across runs
	runKVCases(b, clusters, []string{"put", "range"}, func(b *testing.B, k *kvCluster, op string, clients int) {
		cpu0 := k.cpu()
		runKV(b, conns[k.name], op, clients, value, &seq)
		if cpu := k.cpu() - cpu0; cpu > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "server-cpu-us/op")
		}
	})
}

// runKV runs b.N operations with clients concurrent closed-loop clients and
// reports throughput and latency percentiles.
func runKV(b *testing.B, cls []*clientv3.Client, op string, clients int, value string, seq *atomic.Int64) {
	var next atomic.Int64
	lats := make([][]time.Duration, clients)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		cl := cls[(c/kvClientsPerCn)%len(cls)]
		rng := rand.New(rand.NewPCG(uint64(c), 42))
		wg.Go(func() {
			mine := make([]time.Duration, 0, b.N/clients+1)
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				var err error
				if op == "put" {
					_, err = cl.Put(ctx, fmt.Sprintf("put/%012d", seq.Add(1)), value)
				} else {
					_, err = cl.Get(ctx, fmt.Sprintf("range/%04d", rng.IntN(kvRangeKeys)))
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			lats[c] = mine
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d operations failed; first: %v", n, b.N, firstErr.Load())
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
	b.ReportMetric(0, "ns/op")
}
