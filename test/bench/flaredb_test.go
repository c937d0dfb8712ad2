package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/test/bench/kvdriver"
)

const (
	flaredbCluster = "bench"
	kvGetKeys      = 1000
)

// startFlareDB starts three `ultracloud server` processes with only the
// flaredb role, plaintext on loopback (the node's own resources live in
// that cluster too, as shipped, under namespace "resources"; the benchmark
// uses the default namespace), with Raft settings comparable with the etcd
// peer: hashicorp/raft's heartbeatTimeout is how long a follower waits for
// the leader (the leader sends heartbeats every heartbeatTimeout/10, so 1s
// gives etcd's 100ms heartbeat interval), electionTimeout 1s as etcd's,
// and a snapshot every 10000 entries as etcd's --snapshot-count.
func startFlareDB(b *testing.B, dir string) *kvCluster {
	b.Helper()
	ports := testkit.FreePorts(b, 9)
	k := &kvCluster{name: "flaredb"}
	b.Cleanup(k.close)
	var voters []string
	for i := range 3 {
		voters = append(voters, fmt.Sprintf("    - {id: fdb%d, raftAddress: 127.0.0.1:%d, apiAddress: 127.0.0.1:%d}", i+1, ports[3*i+1], ports[3*i+2]))
	}
	for i := range 3 {
		name := fmt.Sprintf("fdb%d", i+1)
		root := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`node: %s
dataDir: %s
roles: [flaredb]
api:
  listen: 127.0.0.1:%d
log:
  level: warn
flaredb:
  clusterID: %s
  allowPlaintext: true
  raftAddress: 127.0.0.1:%d
  apiAddress: 127.0.0.1:%d
  heartbeatTimeout: %s
  electionTimeout: %s
  snapshotThreshold: %d
  initialVoters:
%s
`, name, filepath.Join(root, "data"), ports[3*i], flaredbCluster, ports[3*i+1], ports[3*i+2],
			10*kvHeartbeat, kvElection, kvSnapshots, strings.Join(voters, "\n"))
		k.startMember(b, root, cfg, 20*time.Second)
		k.endpoints = append(k.endpoints, fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]))
	}
	return k
}

// BenchmarkFlareDBVsEtcd starts a 3-member flaredb cluster (three
// `ultracloud server` processes, role flaredb) and a 3-member Debian
// etcd-server cluster, both plaintext on loopback with comparable raft
// settings, and drives both with the same load (package kvdriver: our
// flaredb client for flaredb, clientv3 for etcd) in the same run: puts of
// 256-byte values to fresh keys, and linearizable gets of 1000 preloaded
// keys, with 16 and 64 concurrent closed-loop clients (4 per connection,
// connections starting on different members). b.N operations per
// sub-benchmark, split across the clients. scripts/bench-flaredb.sh prints
// the table with the flaredb/etcd ratios.
func BenchmarkFlareDBVsEtcd(b *testing.B) {
	dir := b.TempDir()
	clusters := []*kvCluster{startFlareDB(b, filepath.Join(dir, "flaredb")), startEtcd(b, filepath.Join(dir, "etcd"))}
	value := kvdriver.Value(kvValueBytes)
	targets := map[string]*kvdriver.Target{}
	ctx := context.Background()
	for _, k := range clusters {
		t, err := kvdriver.Dial(ctx, kvdriver.Config{System: k.name, Endpoints: k.endpoints, ClusterID: flaredbCluster, Conns: 64 / kvClientsPerCn}, 60*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = t.Close() })
		targets[k.name] = t
		if err := t.Preload(ctx, kvGetKeys, value); err != nil {
			b.Fatalf("%s: %v", k.name, err)
		}
	}
	runKVCases(b, clusters, []string{"put", "get"}, func(b *testing.B, k *kvCluster, op string, clients int) {
		t := targets[k.name]
		cpu0 := k.cpu()
		r, err := t.Run(ctx, kvdriver.Load{Op: op, Clients: clients, Ops: b.N, Value: value, Keys: kvGetKeys, Seed: uint64(b.N)})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if r.Errors > 0 {
			b.Fatalf("%d of %d operations failed; first: %s", r.Errors, b.N, r.FirstErr)
		}
		b.ReportMetric(r.OpsPerS, "ops/s")
		b.ReportMetric(float64(r.P50.Microseconds()), "p50-us")
		b.ReportMetric(float64(r.P99.Microseconds()), "p99-us")
		if cpu := k.cpu() - cpu0; cpu > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(r.Ops), "server-cpu-us/op")
		}
		b.ReportMetric(0, "ns/op")
	})
}
