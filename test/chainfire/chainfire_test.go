//go:build linux

// Package chainfire_test runs chainfire as a 3-member cluster across three
// network-namespace hosts of the multi-host harness (Spec.Chainfire) and
// checks the replication guarantees of issue 4 with real clientv3 clients
// dialing through the hosts' namespaces. The tests need root, like every
// harness test (harness.Require: skipped on a laptop without root, a
// failure with CI set).
package chainfire_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/test/harness"
)

// Raft timings of the test clusters: chainfire's defaults.
const electionTimeout = time.Second

// startCluster starts three hosts forming one chainfire cluster.
func startCluster(t *testing.T) *harness.Cluster {
	t.Helper()
	return harness.Start(t, harness.Spec{
		Hosts:     3,
		LogLevel:  "warn",
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}},
	})
}

type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// newClient returns a clientv3 client of endpoints (host:port) that
// verifies the members with the cluster CA and opens its connections with
// dial (inside a host's or the switch namespace).
func newClient(t *testing.T, c *harness.Cluster, dial dialFunc, endpoints ...string) *clientv3.Client {
	t.Helper()
	pem, err := os.ReadFile(c.ChainfireCAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", c.ChainfireCAFile())
	}
	cl, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatalf("client of %v: %v", endpoints, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// memberClients returns, per member host, a client of that member alone,
// dialing from inside the member's own namespace (so partitions apply).
func memberClients(t *testing.T, c *harness.Cluster) map[*harness.Host]*clientv3.Client {
	t.Helper()
	m := map[*harness.Host]*clientv3.Client{}
	for _, h := range c.ChainfireMembers() {
		m[h] = newClient(t, c, h.Dial, h.ChainfireEndpoint())
	}
	return m
}

// allClient is a client of every member from the switch namespace.
func allClient(t *testing.T, c *harness.Cluster) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, h := range c.ChainfireMembers() {
		eps = append(eps, h.ChainfireEndpoint())
	}
	return newClient(t, c, c.Dial, eps...)
}

// leader waits until the members reachable through cls agree on a leader
// among them and returns its host.
func leader(t *testing.T, ctx context.Context, cls map[*harness.Host]*clientv3.Client, timeout time.Duration) *harness.Host {
	t.Helper()
	var found *harness.Host
	err := harness.WaitFor(ctx, timeout, "a chainfire leader", func(ctx context.Context) (bool, string) {
		var states []string
		for h, cl := range cls {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cl.Status(sctx, h.ChainfireEndpoint())
			cancel()
			if err != nil {
				states = append(states, fmt.Sprintf("%s: %v", h.Name(), err))
				continue
			}
			states = append(states, fmt.Sprintf("%s: id %x leader %x", h.Name(), st.Header.MemberId, st.Leader))
			if st.Leader != 0 && st.Leader == st.Header.MemberId {
				found = h
				return true, ""
			}
		}
		return false, strings.Join(states, "; ")
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// waitCaughtUp waits until member h serves (serializable, from its own
// store) at least revision rev.
func waitCaughtUp(t *testing.T, ctx context.Context, h *harness.Host, cl *clientv3.Client, rev int64, timeout time.Duration) {
	t.Helper()
	err := harness.WaitFor(ctx, timeout, fmt.Sprintf("%s to reach revision %d", h.Name(), rev), func(ctx context.Context) (bool, string) {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := cl.Get(gctx, "\x00", clientv3.WithSerializable())
		if err != nil {
			return false, err.Error()
		}
		return resp.Header.Revision >= rev, fmt.Sprintf("revision %d", resp.Header.Revision)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkKeys checks that member h holds every key of want with its value,
// reading its local store (serializable).
func checkKeys(t *testing.T, ctx context.Context, h *harness.Host, cl *clientv3.Client, prefix string, want map[string]string) {
	t.Helper()
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.Get(gctx, prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("%s: get %s*: %v", h.Name(), prefix, err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	missing := 0
	for k, v := range want {
		if got[k] != v {
			if missing < 5 {
				t.Errorf("%s: acknowledged key %s = %q, want %q", h.Name(), k, got[k], v)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%s: %d of %d acknowledged keys lost or wrong", h.Name(), missing, len(want))
	}
}

// acks records acknowledged writes from concurrent clients.
type acks struct {
	mu   sync.Mutex
	kv   map[string]string
	errs int
	last error
}

func (a *acks) add(k, v string) {
	a.mu.Lock()
	a.kv[k] = v
	a.mu.Unlock()
}

func (a *acks) fail(err error) {
	a.mu.Lock()
	a.errs++
	a.last = err
	a.mu.Unlock()
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.kv)
}

func (a *acks) snapshot() (map[string]string, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]string, len(a.kv))
	for k, v := range a.kv {
		m[k] = v
	}
	return m, a.errs, a.last
}

// TestLeaderKillNoAckedWriteLost: concurrent clients write while the
// leader's process is SIGKILLed; writes continue after the election, and
// after the killed member restarts, every acknowledged write is on every
// member.
func TestLeaderKillNoAckedWriteLost(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	ctx := t.Context()
	cls := memberClients(t, c)
	old := leader(t, ctx, cls, 15*time.Second)
	t.Logf("leader before the kill: %s", old.Name())

	const writers = 8
	a := &acks{kv: map[string]string{}}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range writers {
		cl := allClient(t, c)
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				k, v := fmt.Sprintf("ack/w%d/%06d", w, i), fmt.Sprintf("v%d-%d", w, i)
				pctx, cancel := context.WithTimeout(wctx, 2*time.Second)
				_, err := cl.Put(pctx, k, v)
				cancel()
				if err != nil {
					a.fail(err) // outcome unknown: not counted as acknowledged
					continue
				}
				a.add(k, v)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	waitAcks := func(n int, what string) {
		t.Helper()
		err := harness.WaitFor(ctx, 20*time.Second, what, func(context.Context) (bool, string) {
			got := a.count()
			return got >= n, fmt.Sprintf("%d acknowledged writes", got)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitAcks(200, "200 acknowledged writes before the kill")
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt, before := time.Now(), a.count()
	t.Logf("SIGKILLed %s with %d writes acknowledged", old.Name(), before)

	rest := map[*harness.Host]*clientv3.Client{}
	for h, cl := range cls {
		if h != old {
			rest[h] = cl
		}
	}
	next := leader(t, ctx, rest, 10*time.Second)
	waitAcks(before+200, "200 more acknowledged writes after the kill")
	t.Logf("new leader %s; 200 more writes acknowledged %s after the kill", next.Name(), time.Since(killedAt).Round(time.Millisecond))

	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	waitAcks(a.count()+50, "50 more acknowledged writes after the restart")
	stop()
	wg.Wait()
	want, errs, last := a.snapshot()
	t.Logf("%d writes acknowledged, %d failed or unknown (last: %v)", len(want), errs, last)

	// The revision every member must reach: the leader's, read linearizably.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cls[next].Get(rctx, "\x00")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	for h, cl := range cls {
		waitCaughtUp(t, ctx, h, cl, resp.Header.Revision, 20*time.Second)
		checkKeys(t, ctx, h, cl, "ack/", want)
	}
}

// TestPartitionedMinorityRefusesWrites: a member cut off from the other
// two neither accepts writes nor serves linearizable reads, while the
// majority accepts writes; after the heal the minority catches up to the
// same revision and keys.
func TestPartitionedMinorityRefusesWrites(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	ctx := t.Context()
	cls := memberClients(t, c)
	hosts := c.ChainfireMembers()
	// Cut off the current leader, the harder case: it must step down.
	minority := leader(t, ctx, cls, 15*time.Second)
	var majority []*harness.Host
	for _, h := range hosts {
		if h != minority {
			majority = append(majority, h)
		}
	}
	if _, err := cls[minority].Put(ctx, "before", "partition"); err != nil {
		t.Fatal(err)
	}
	if err := c.Partition([]*harness.Host{minority}, majority); err != nil {
		t.Fatal(err)
	}
	t.Logf("partitioned leader %s from %s, %s", minority.Name(), majority[0].Name(), majority[1].Name())

	// The majority elects a leader among itself and accepts writes.
	maj := cls[majority[0]]
	err := harness.WaitFor(ctx, 15*time.Second, "the majority to accept a write", func(ctx context.Context) (bool, string) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := maj.Put(pctx, "majority/first", "ok")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}

	// The minority refuses writes and linearizable reads.
	for i := range 3 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cls[minority].Put(pctx, fmt.Sprintf("minority/%d", i), "must not commit")
		cancel()
		if err == nil {
			t.Fatalf("partitioned minority %s acknowledged a write", minority.Name())
		}
		t.Logf("minority put %d refused: %v", i, err)
	}
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = cls[minority].Get(gctx, "before")
	cancel()
	if err == nil {
		t.Fatalf("partitioned minority %s served a linearizable read", minority.Name())
	}
	t.Logf("minority linearizable get refused: %v", err)

	want := map[string]string{"majority/first": "ok"}
	for i := range 100 {
		k, v := fmt.Sprintf("majority/%03d", i), fmt.Sprintf("v%d", i)
		cl := cls[majority[i%2]]
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cl.Put(pctx, k, v)
		cancel()
		if err != nil {
			t.Fatalf("majority put %s: %v", k, err)
		}
		want[k] = v
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := maj.Get(rctx, "\x00")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision

	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, minority, cls[minority], rev, 20*time.Second)
	checkKeys(t, ctx, minority, cls[minority], "majority/", want)
	// Same data as the majority at that revision: compare the whole keyspace.
	for _, h := range hosts {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := cls[h].Get(gctx, "", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev))
		cancel()
		if err != nil {
			t.Fatalf("%s: get at revision %d: %v", h.Name(), rev, err)
		}
		var ks []string
		for _, kv := range r.Kvs {
			if strings.HasPrefix(string(kv.Key), coord.KeyPrefix) {
				continue // the nodes' own election keys (see keyspace)
			}
			ks = append(ks, string(kv.Key)+"="+string(kv.Value))
			if strings.HasPrefix(string(kv.Key), "minority/") {
				t.Errorf("%s: refused minority write %s is in the store", h.Name(), kv.Key)
			}
		}
		if len(ks) != len(want)+1 {
			t.Errorf("%s at revision %d: %d keys, want %d", h.Name(), rev, len(ks), len(want)+1)
		}
	}
	// Healed, the former minority accepts writes again.
	err = harness.WaitFor(ctx, 15*time.Second, "the healed member to accept a write", func(ctx context.Context) (bool, string) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := cls[minority].Put(pctx, "after", "heal"); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMemberRestartFromData: a member stopped with SIGKILL misses writes,
// restarts from its own data directory as the same member (same ID, no
// re-join) and catches up.
func TestMemberRestartFromData(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	ctx := t.Context()
	cls := memberClients(t, c)
	ldr := leader(t, ctx, cls, 15*time.Second)
	var follower *harness.Host
	for _, h := range c.ChainfireMembers() {
		if h != ldr {
			follower = h
			break
		}
	}
	st, err := cls[follower].Status(ctx, follower.ChainfireEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	id := st.Header.MemberId

	want := map[string]string{}
	put := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			k, v := fmt.Sprintf("%s/%03d", prefix, i), fmt.Sprintf("%s-%d", prefix, i)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cls[ldr].Put(pctx, k, v)
			cancel()
			if err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
			want[k] = v
		}
	}
	put("k/before", 50)
	if err := follower.Kill(); err != nil {
		t.Fatal(err)
	}
	put("k/down", 50)
	if err := follower.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	put("k/after", 10)
	resp, err := cls[ldr].Get(ctx, "\x00")
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, follower, cls[follower], resp.Header.Revision, 20*time.Second)
	checkKeys(t, ctx, follower, cls[follower], "k/", want)

	st, err = cls[follower].Status(ctx, follower.ChainfireEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	if st.Header.MemberId != id {
		t.Errorf("%s restarted as member %x, want its old ID %x", follower.Name(), st.Header.MemberId, id)
	}
	ml, err := cls[ldr].MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 3 {
		t.Errorf("member list has %d members after the restart, want 3: %v", len(ml.Members), ml.Members)
	}
}
