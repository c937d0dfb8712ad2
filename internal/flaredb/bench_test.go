package flaredb_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// BenchmarkCluster measures a 3-member in-process cluster on loopback
// through the client API: single-put write transactions and linearizable
// point reads with 256-byte values, from 16 and 64 concurrent clients (each
// its own client, so its own connections). Writes go to the leader; readers
// are spread over the members (followers get a read index from the leader
// and serve locally), or all sent to the leader (op=read-leader). It
// reports throughput and p50/p99 latency. All
// members and clients share this machine's CPUs, so the numbers are a
// floor for a real 3-node cluster.
func BenchmarkCluster(b *testing.B) {
	c := flaredbtest.StartCluster(b, 3, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
		cfg.HeartbeatTimeout = time.Second
		cfg.ElectionTimeout = time.Second
		cfg.LeaderLeaseTimeout = 500 * time.Millisecond
		cfg.CommitTimeout = 10 * time.Millisecond
		cfg.RequestTimeout = 10 * time.Second
	}})
	const keys = 10_000
	value := make([]byte, 256)
	loader := c.Client()
	ctx := context.Background()
	for i := 0; i < keys; i += 100 {
		ops := make([]wire.Op, 0, 100)
		for j := i; j < i+100; j++ {
			ops = append(ops, wire.Op{Type: wire.OpPut, Key: fmt.Appendf(nil, "bench/%06d", j), Value: value})
		}
		if _, err := loader.Txn(ctx, "", wire.Txn{Then: ops}); err != nil {
			b.Fatal(err)
		}
	}
	leader := c.WaitLeader()

	// read: readers spread over all members; read-leader: all at the leader.
	for _, op := range []string{"write", "read", "read-leader"} {
		for _, clients := range []int{16, 64} {
			b.Run(fmt.Sprintf("op=%s/clients=%d", op, clients), func(b *testing.B) {
				cls := make([]*client.Client, clients)
				for i := range cls {
					// Rotate the endpoints so readers start on different members.
					idx := []int{i % 3, (i + 1) % 3, (i + 2) % 3}
					if op == "read-leader" {
						idx = []int{leader}
					}
					cls[i] = c.Client(idx...)
					if _, _, _, err := cls[i].Get(ctx, "", []byte("bench/000000"), client.ReadOptions{}); err != nil {
						b.Fatal(err)
					}
				}
				before := c.Members[leader].Server.Stats()
				var next atomic.Int64
				lat := make([][]time.Duration, clients)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cl := cls[w]
						key := make([]byte, 0, 32)
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							t0 := time.Now()
							var err error
							if op == "write" {
								key = fmt.Appendf(key[:0], "w/%d/%012d", w, i)
								_, err = cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: key, Value: value}}})
							} else {
								key = fmt.Appendf(key[:0], "bench/%06d", (i*7919)%keys)
								_, _, _, err = cl.Get(ctx, "", key, client.ReadOptions{})
							}
							if err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				slices.Sort(all)
				if len(all) == 0 {
					return
				}
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
				b.ReportMetric(float64(all[len(all)*50/100].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(all[min(len(all)*99/100, len(all)-1)].Microseconds())/1000, "p99-ms")
				after := c.Members[leader].Server.Stats()
				if op == "write" && after.Entries > before.Entries {
					b.ReportMetric(float64(after.Proposals-before.Proposals)/float64(after.Entries-before.Entries), "txns/entry")
				}
				if op != "write" && after.ReadRounds > before.ReadRounds {
					b.ReportMetric(float64(after.ReadWaiters-before.ReadWaiters)/float64(after.ReadRounds-before.ReadRounds), "reads/round")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkPropose measures the write path without the API: goroutines on
// the leader's process propose single-put transactions directly, so the
// result is Raft + log store + state machine (of every member) only.
// Compare with BenchmarkCluster/op=write to see what the HTTP layer costs.
func BenchmarkPropose(b *testing.B) {
	for _, members := range []int{1, 3} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("members=%d/writers=%d", members, writers), func(b *testing.B) {
				c := flaredbtest.StartCluster(b, members, flaredbtest.Options{Tweak: func(cfg *flaredb.Config) {
					cfg.HeartbeatTimeout = time.Second
					cfg.ElectionTimeout = time.Second
					cfg.LeaderLeaseTimeout = 500 * time.Millisecond
				}})
				srv := c.Members[c.WaitLeader()].Server
				propose := flaredb.Proposer(srv)
				value := make([]byte, 256)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							txn := wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: wire.RawKey("", fmt.Appendf(nil, "w/%d/%d", w, i)), Value: value}}}
							if _, err := propose(context.Background(), txn, 300); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "txns/s")
				if st := srv.Stats(); st.Entries > 0 {
					b.ReportMetric(float64(st.Proposals)/float64(st.Entries), "txns/entry")
				}
			})
		}
	}
}
