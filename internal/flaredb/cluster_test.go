package flaredb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
)

// testCluster runs flaredb members in this process on loopback listeners.
type testCluster struct {
	t         testing.TB
	clusterID string
	tweak     func(*Config)
	members   []*testMember
}

type testMember struct {
	id       string
	dir      string
	raftAddr string
	apiAddr  string
	srv      *Server
	cancel   context.CancelFunc
	done     chan error
}

// testLogger logs to the test output when FLAREDB_TEST_LOG is set.
func testLogger(t testing.TB, id string) *slog.Logger {
	if os.Getenv("FLAREDB_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// freeListener listens on addr, or on a free loopback port when addr is "".
// Free ports come from below the kernel's ephemeral range, so an outgoing
// connection can never take a member's port while it restarts. A port still
// held by a stopping member is retried until a deadline.
func freeListener(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		for range 1000 {
			port := testPortBase + int(testPortNext.Add(1))%testPortSpan
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				return ln
			}
		}
		t.Fatal("no free loopback port")
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // port still held by a closing member
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return ln
}

// Test ports: [testPortBase, testPortBase+testPortSpan) is below Linux's
// default ephemeral range (32768-60999). The start is randomized per process
// so parallel test binaries rarely probe the same ports.
const (
	testPortBase = 20000
	testPortSpan = 12000
)

var testPortNext = func() *atomic.Int64 {
	var v atomic.Int64
	v.Store(rand.Int64N(testPortSpan))
	return &v
}()

func fastConfig(c *Config) {
	// Short enough for quick failovers, long enough that a loaded 2-core
	// machine (race detector, parallel packages) does not see spurious
	// elections.
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 400 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.RequestTimeout = 5 * time.Second
	c.ExpireInterval = 50 * time.Millisecond
	c.ShutdownTransferTimeout = 3 * time.Second
	// Test members listen on loopback; tls_test.go covers TLS.
	c.AllowPlaintext = true
}

// newTestCluster prepares n members (not started). Each gets fixed
// loopback addresses for its life, so restarts reuse them.
func newTestCluster(t testing.TB, n int, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, clusterID: "test-" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"), tweak: tweak}
	if len(c.clusterID) > 100 {
		c.clusterID = c.clusterID[:100]
	}
	base := t.TempDir()
	for i := range n {
		rl, al := freeListener(t, ""), freeListener(t, "")
		m := &testMember{id: fmt.Sprintf("m%d", i), dir: filepath.Join(base, fmt.Sprintf("m%d", i)),
			raftAddr: rl.Addr().String(), apiAddr: al.Addr().String()}
		rl.Close()
		al.Close()
		c.members = append(c.members, m)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *testCluster) voters() []Peer {
	var ps []Peer
	for _, m := range c.members {
		ps = append(ps, Peer{ID: m.id, RaftAddress: m.raftAddr, APIAddress: m.apiAddr})
	}
	return ps
}

// config builds member i's config. Members beyond the initial voters join.
func (c *testCluster) config(i int, initial []Peer, join []string) Config {
	m := c.members[i]
	cfg := Default()
	cfg.ID = m.id
	cfg.ClusterID = c.clusterID
	cfg.DataDir = m.dir
	cfg.RaftAddress = m.raftAddr
	cfg.APIAddress = m.apiAddr
	cfg.InitialVoters = initial
	cfg.Join = join
	fastConfig(&cfg)
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return cfg
}

// startAll bootstraps every member as an initial voter and waits until all
// are ready.
func (c *testCluster) startAll() {
	voters := c.voters()
	for i := range c.members {
		c.startWith(i, c.config(i, voters, nil))
	}
	for i := range c.members {
		c.waitReady(i)
	}
}

func (c *testCluster) startWith(i int, cfg Config) {
	c.t.Helper()
	m := c.members[i]
	if m.srv != nil {
		c.t.Fatalf("member %s already running", m.id)
	}
	srv, err := New(cfg, Options{
		Logger:       testLogger(c.t, m.id),
		RaftListener: freeListener(c.t, m.raftAddr),
		APIListener:  freeListener(c.t, m.apiAddr),
	})
	if err != nil {
		c.t.Fatalf("New %s: %v", m.id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.srv, m.cancel, m.done = srv, cancel, make(chan error, 1)
	go func() { m.done <- srv.Run(ctx) }()
}

// restart starts a stopped member again from its data (no bootstrap).
func (c *testCluster) restart(i int) {
	c.startWith(i, c.config(i, c.voters(), nil))
}

func (c *testCluster) waitReady(i int) {
	c.t.Helper()
	m := c.members[i]
	select {
	case <-m.srv.Ready():
	case err := <-m.done:
		c.t.Fatalf("member %s exited before ready: %v", m.id, err)
	case <-time.After(30 * time.Second):
		c.t.Fatalf("member %s not ready after 30s", m.id)
	}
}

// stop stops member i gracefully and waits for Run to return.
func (c *testCluster) stop(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.srv == nil {
		return
	}
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil {
			c.t.Errorf("member %s Run: %v", m.id, err)
		}
	case <-time.After(60 * time.Second):
		c.t.Fatalf("member %s did not stop in 60s", m.id)
	}
	m.srv, m.cancel, m.done = nil, nil, nil
}

func (c *testCluster) stopAll() {
	for i := range c.members {
		c.stop(i)
	}
}

// waitLeader waits until the running members agree on one established
// leader and returns its index.
func (c *testCluster) waitLeader() int {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		leader := -1
		agree := true
		for i, m := range c.members {
			if m.srv == nil {
				continue
			}
			st, err := m.srv.Status()
			if err != nil {
				agree = false
				break
			}
			if st.State == raft.Leader.String() {
				if n := m.srv.node.Load(); n != nil {
					if term, _ := n.lead.get(); term == st.Term {
						leader = i
					}
				}
			}
			if last = st.Leader.ID; last == "" {
				agree = false
			}
		}
		if agree && leader >= 0 {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no established leader after 30s (last seen %q)", last)
	return -1
}

// client returns a client over the given members (all when none given).
func (c *testCluster) client(idx ...int) *client.Client {
	c.t.Helper()
	if len(idx) == 0 {
		for i := range c.members {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, c.members[i].apiAddr)
	}
	cl, err := client.New(client.Config{Endpoints: eps, ClusterID: c.clusterID, RequestTimeout: 20 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if err := cl.Close(); err != nil && !errors.Is(err, client.ErrClosed) {
			c.t.Errorf("client Close: %v", err)
		}
	})
	return cl
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
