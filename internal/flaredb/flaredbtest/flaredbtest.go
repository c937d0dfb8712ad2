// Package flaredbtest runs flaredb clusters inside a test process: n
// members on loopback listeners with fast Raft timing, each with a data
// directory of its own, that a test starts, stops, restarts and asks for a
// client. It is the one in-process cluster fixture for flaredb, used by
// flaredb's own tests (from package flaredb_test, since this package
// imports flaredb) and by any package that needs a real cluster.
//
// It owns test fixtures only: it must not be imported by non-test code,
// and it reaches flaredb only through its exported API.
package flaredbtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// Options tune a cluster; the zero value is a plaintext loopback cluster
// with FastConfig's timing.
type Options struct {
	// ClusterID is the cluster's ID; "" derives one from the test's name.
	ClusterID string
	// Tweak changes every member's config after FastConfig (nil: none).
	Tweak func(*flaredb.Config)
	// Now is the members' TTL clock (flaredb.Options.Now); nil: time.Now.
	Now func() time.Time
}

// Cluster is a set of members in this process. Members keep their
// addresses and data directories for the life of the test, so a stopped
// member restarts where it was.
type Cluster struct {
	ID      string
	Members []*Member

	t    testing.TB
	opts Options
}

// Member is one member of a Cluster.
type Member struct {
	ID                string
	Dir               string
	RaftAddr, APIAddr string
	// Server is the running server; nil while the member is stopped.
	Server *flaredb.Server

	cancel context.CancelFunc
	done   chan error
}

// FastConfig sets the test timing: short enough for quick failovers, long
// enough that a loaded 2-core machine (race detector, parallel packages)
// does not see spurious elections; plaintext, since members listen on
// loopback.
func FastConfig(c *flaredb.Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 400 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.RequestTimeout = 5 * time.Second
	c.ExpireInterval = 50 * time.Millisecond
	c.ShutdownTransferTimeout = 3 * time.Second
	c.AllowPlaintext = true
}

// Logger discards the members' logs unless FLAREDB_TEST_LOG is set (then
// they go to stderr at debug level). Members log from their own goroutines,
// also after a test ends, so t.Log is not used.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("FLAREDB_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// ClusterID derives a valid cluster ID from the test's name.
func ClusterID(t testing.TB) string {
	id := "test-" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	if len(id) > 100 {
		id = id[:100]
	}
	return id
}

// New prepares n members (not started) with free loopback addresses and
// data directories under t.TempDir(). Running members are stopped at the
// end of the test.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	base := t.TempDir()
	layout := Layout{ClusterID: opts.ClusterID}
	if layout.ClusterID == "" {
		layout.ClusterID = ClusterID(t)
	}
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		layout.Members = append(layout.Members, LayoutMember{
			ID: id, Dir: filepath.Join(base, id),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
			APIAddr:  fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		})
	}
	return FromLayout(t, layout, opts)
}

// StartCluster is New followed by StartAll: n members bootstrapped as the
// initial voters, all ready when it returns.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := New(t, n, opts)
	c.StartAll()
	return c
}

// Layout is where a cluster's members live: enough to run the same
// cluster again, for example in a child process that is then killed
// (storetest's crash suite). It marshals to JSON.
type Layout struct {
	ClusterID string
	Members   []LayoutMember
}

// LayoutMember is one member's ID, data directory and addresses.
type LayoutMember struct{ ID, Dir, RaftAddr, APIAddr string }

// Layout returns the cluster's layout.
func (c *Cluster) Layout() Layout {
	l := Layout{ClusterID: c.ID}
	for _, m := range c.Members {
		l.Members = append(l.Members, LayoutMember{ID: m.ID, Dir: m.Dir, RaftAddr: m.RaftAddr, APIAddr: m.APIAddr})
	}
	return l
}

// FromLayout returns a cluster (not started) of the members in l.
func FromLayout(t testing.TB, l Layout, opts Options) *Cluster {
	c := &Cluster{ID: l.ClusterID, t: t, opts: opts}
	for _, m := range l.Members {
		c.Members = append(c.Members, &Member{ID: m.ID, Dir: m.Dir, RaftAddr: m.RaftAddr, APIAddr: m.APIAddr})
	}
	t.Cleanup(c.StopAll)
	return c
}

// Voters returns every member as an initial voter.
func (c *Cluster) Voters() []flaredb.Peer {
	var ps []flaredb.Peer
	for _, m := range c.Members {
		ps = append(ps, flaredb.Peer{ID: m.ID, RaftAddress: m.RaftAddr, APIAddress: m.APIAddr})
	}
	return ps
}

// Config is member i's config with initial voters and join addresses
// (members added later join instead of bootstrapping), FastConfig and the
// cluster's Tweak applied.
func (c *Cluster) Config(i int, initial []flaredb.Peer, join []string) flaredb.Config {
	m := c.Members[i]
	cfg := flaredb.Default()
	cfg.ID = m.ID
	cfg.ClusterID = c.ID
	cfg.DataDir = m.Dir
	cfg.RaftAddress = m.RaftAddr
	cfg.APIAddress = m.APIAddr
	cfg.InitialVoters = initial
	cfg.Join = join
	FastConfig(&cfg)
	if c.opts.Tweak != nil {
		c.opts.Tweak(&cfg)
	}
	return cfg
}

// StartAll starts every member with every member as an initial voter (a
// bootstrap the first time, a restart from the data after) and waits
// until all are ready.
func (c *Cluster) StartAll() {
	c.t.Helper()
	voters := c.Voters()
	for i := range c.Members {
		c.StartWith(i, c.Config(i, voters, nil))
	}
	for i := range c.Members {
		c.WaitReady(i)
	}
}

// Restart starts stopped member i again from its data; it does not wait
// for it to be ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.StartWith(i, c.Config(i, c.Voters(), nil))
}

// StartWith starts member i with cfg, on listeners at its addresses; it
// does not wait for it to be ready.
func (c *Cluster) StartWith(i int, cfg flaredb.Config) {
	c.t.Helper()
	m := c.Members[i]
	if m.Server != nil {
		c.t.Fatalf("flaredbtest: member %s already running", m.ID)
	}
	srv, err := flaredb.New(cfg, flaredb.Options{
		Logger:       Logger(c.t),
		Now:          c.opts.Now,
		RaftListener: Listen(c.t, m.RaftAddr),
		APIListener:  Listen(c.t, m.APIAddr),
	})
	if err != nil {
		c.t.Fatalf("flaredbtest: New %s: %v", m.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.Server, m.cancel, m.done = srv, cancel, make(chan error, 1)
	go func() { m.done <- srv.Run(ctx) }() // waited for by Stop, at the latest at cleanup
}

// WaitReady waits (30s at most) until member i is ready; it fails the test
// if the member exits first.
func (c *Cluster) WaitReady(i int) {
	c.t.Helper()
	m := c.Members[i]
	select {
	case <-m.Server.Ready():
	case err := <-m.done:
		c.t.Fatalf("flaredbtest: member %s exited before ready: %v", m.ID, err)
	case <-time.After(30 * time.Second):
		c.t.Fatalf("flaredbtest: member %s not ready after 30s", m.ID)
	}
}

// Stop stops member i gracefully and waits for its Run to return, which
// must be without an error. Stopping a stopped member does nothing.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Server == nil {
		return
	}
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil {
			c.t.Errorf("flaredbtest: member %s Run: %v", m.ID, err)
		}
	case <-time.After(60 * time.Second):
		c.t.Fatalf("flaredbtest: member %s did not stop in 60s", m.ID)
	}
	m.Server, m.cancel, m.done = nil, nil, nil
}

// StopAll stops every running member.
func (c *Cluster) StopAll() {
	c.t.Helper()
	for i := range c.Members {
		c.Stop(i)
	}
}

// WaitLeader waits (30s at most) until one running member leads with its
// leadership established and every running member names it as leader, and
// returns its index.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	leader := -1
	testkit.EventuallyErr(c.t, 30*time.Second, "an established leader all members agree on", func() error {
		leader = -1
		for i, m := range c.Members {
			if m.Server != nil && m.Server.Leading() {
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("no member leads with its leadership established")
		}
		for _, m := range c.Members {
			if m.Server == nil {
				continue
			}
			st, err := m.Server.Status()
			if err != nil {
				return fmt.Errorf("status of %s: %w", m.ID, err)
			}
			if st.Leader.ID != c.Members[leader].ID {
				return fmt.Errorf("%s names leader %q, %s leads", m.ID, st.Leader.ID, c.Members[leader].ID)
			}
			if m == c.Members[leader] && st.State != raft.Leader.String() {
				return fmt.Errorf("%s is %s", m.ID, st.State)
			}
		}
		return nil
	})
	return leader
}

// Follower returns the index of a running member other than leader, or -1.
func (c *Cluster) Follower(leader int) int {
	for i, m := range c.Members {
		if i != leader && m.Server != nil {
			return i
		}
	}
	return -1
}

// Endpoints returns the API addresses of the given members (all when none
// given).
func (c *Cluster) Endpoints(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.Members {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, c.Members[i].APIAddr)
	}
	return eps
}

// Client returns a plaintext client of the given members (all when none
// given), closed at the end of the test.
func (c *Cluster) Client(idx ...int) *client.Client {
	c.t.Helper()
	return c.ClientWith(client.Config{}, idx...)
}

// ClientWith is Client with cfg's settings (TLS, timeouts); Endpoints and
// ClusterID are filled in, and RequestTimeout defaults to 20s.
func (c *Cluster) ClientWith(cfg client.Config, idx ...int) *client.Client {
	c.t.Helper()
	cfg.Endpoints, cfg.ClusterID = c.Endpoints(idx...), c.ID
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 20 * time.Second
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatalf("flaredbtest: client: %v", err)
	}
	c.t.Cleanup(func() {
		if err := cl.Close(); err != nil && !errors.Is(err, client.ErrClosed) {
			c.t.Errorf("flaredbtest: client Close: %v", err)
		}
	})
	return cl
}

// Listen listens on addr, retrying for up to 5s while the port is still
// held by a member that is closing (a restart reuses its addresses).
func Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
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
		t.Fatalf("flaredbtest: listen %s: %v", addr, err)
	}
	return ln
}
