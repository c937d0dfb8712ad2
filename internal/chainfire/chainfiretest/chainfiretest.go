// Package chainfiretest runs chainfire members (embedded etcd) inside a
// test process: loopback URLs on free ports, fast Raft timing, members
// that a test starts, stops and waits for. It is the one in-process
// cluster fixture for chainfire, used by chainfire's own tests (from
// package chainfire_test, since this package imports chainfire) and by
// any package that needs a real chainfire cluster.
//
// It owns test fixtures only: it must not be imported by non-test code,
// and it reaches chainfire only through its exported API.
package chainfiretest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// Logger discards logs unless CHAINFIRE_TEST_LOG is set (then etcd's and
// chainfire's messages go to stderr). etcd logs from its own goroutines,
// also after a test ends, so t.Log is not used.
func Logger() *slog.Logger {
	if os.Getenv("CHAINFIRE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Spec is one member's name and loopback URLs.
type Spec struct {
	Name                 string
	ClientURL, PeerURL   string
	ClientPort, PeerPort int
}

// Specs returns a Spec per name with free loopback ports and URLs of the
// given scheme ("http" or "https").
func Specs(t testing.TB, scheme string, names ...string) []Spec {
	t.Helper()
	ports := testkit.FreePorts(t, 2*len(names))
	out := make([]Spec, len(names))
	for i, n := range names {
		cp, pp := ports[2*i], ports[2*i+1]
		out[i] = Spec{
			Name:       n,
			ClientPort: cp, PeerPort: pp,
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp),
			PeerURL:   fmt.Sprintf("%s://127.0.0.1:%d", scheme, pp),
		}
	}
	return out
}

// InitialCluster is the static initialCluster of the members in ms.
func InitialCluster(ms []Spec) []string {
	var ic []string
	for _, m := range ms {
		ic = append(ic, m.Name+"="+m.PeerURL)
	}
	return ic
}

// Config is a loopback plaintext member config for m with fast Raft
// timing (heartbeat 50ms, election 500ms), data in dir.
func Config(dir string, m Spec, initialCluster []string) chainfire.Config {
	c := chainfire.Default()
	c.Name = m.Name
	c.DataDir = dir
	c.ClientURL, c.PeerURL = m.ClientURL, m.PeerURL
	c.InitialCluster = initialCluster
	c.AllowPlaintext = true
	c.HeartbeatInterval = 50 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.StartTimeout = 30 * time.Second
	c.ClusterToken = "test-token"
	return c
}

// Member is a running (or stopped) chainfire Server in a test.
type Member struct {
	Server *chainfire.Server

	cancel context.CancelFunc
	done   chan error
	err    error
	exited bool
}

// Start runs cfg's member in the background, without waiting for it to be
// ready; it is stopped at the end of the test.
func Start(t testing.TB, cfg chainfire.Config) *Member {
	t.Helper()
	srv, err := chainfire.New(cfg, Logger())
	if err != nil {
		t.Fatalf("chainfiretest: New(%s): %v", cfg.Name, err)
	}
	return Run(t, srv)
}

// Run runs srv (made by the test with chainfire.New) in the background; it
// is stopped at the end of the test.
func Run(t testing.TB, srv *chainfire.Server) *Member {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Member{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- srv.Run(ctx) }() // waited for by Stop, at the latest at cleanup
	t.Cleanup(func() { m.Stop(t) })
	return m
}

// StartReady starts the member and waits until it is ready.
func StartReady(t testing.TB, cfg chainfire.Config) *Member {
	t.Helper()
	m := Start(t, cfg)
	m.WaitReady(t)
	return m
}

// Name is the member's name.
func (m *Member) Name() string { return m.Server.Config().Name }

// WaitReady waits (45s at most) until the member is ready; it fails the
// test if the member exits first.
func (m *Member) WaitReady(t testing.TB) {
	t.Helper()
	select {
	case <-m.Server.Ready():
	case err := <-m.done:
		m.exited, m.err = true, err
		t.Fatalf("chainfiretest: member %s exited before ready: %v", m.Name(), err)
	case <-time.After(45 * time.Second):
		t.Fatalf("chainfiretest: member %s not ready after 45s", m.Name())
	}
}

// Stop cancels the member and waits for Run to return; it returns Run's
// error. Stopping twice is fine.
func (m *Member) Stop(t testing.TB) error {
	t.Helper()
	if m.exited {
		return m.err
	}
	m.cancel()
	select {
	case m.err = <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("chainfiretest: member %s did not stop within 30s of cancel", m.Name())
	}
	m.exited = true
	return m.err
}

// WaitExit waits for Run to return by itself, within the given time.
func (m *Member) WaitExit(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case m.err = <-m.done:
		m.exited = true
		return m.err
	case <-time.After(within):
		t.Fatalf("chainfiretest: member %s still running after %s", m.Name(), within)
		return nil
	}
}

// Cluster is a plaintext loopback cluster started by StartCluster.
type Cluster struct {
	Specs   []Spec
	Members []*Member
}

// Options tune StartCluster.
type Options struct {
	// Names are the members' names (default m0, m1, ...); if set, there
	// must be n of them.
	Names []string
	// Tweak changes every member's config after Config (nil: none).
	Tweak func(*chainfire.Config)
}

// StartCluster starts n plaintext members with a static initial cluster
// and waits until all are ready.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	names := opts.Names
	if names == nil {
		for i := range n {
			names = append(names, fmt.Sprintf("m%d", i))
		}
	}
	if len(names) != n {
		t.Fatalf("chainfiretest: %d names for %d members", len(names), n)
	}
	c := &Cluster{Specs: Specs(t, "http", names...)}
	ic := InitialCluster(c.Specs)
	for _, s := range c.Specs {
		cfg := Config(t.TempDir(), s, ic)
		if opts.Tweak != nil {
			opts.Tweak(&cfg)
		}
		c.Members = append(c.Members, Start(t, cfg))
	}
	for _, m := range c.Members {
		m.WaitReady(t)
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, s := range c.Specs {
		eps = append(eps, s.ClientURL)
	}
	return eps
}
