// Package coordtest runs embedded etcd members inside a test process and
// fakes the network in front of them, for the tests of the shared runtime
// (internal/runtime/coord, internal/runtime/controller) that need a real
// etcd v3 endpoint. It is their one in-process cluster fixture: members on
// loopback ports from testkit with fast Raft timing, that a test stops and
// starts again from their data, a clientv3 client per member, and a TCP
// Proxy that delays answers, swallows traffic, or cuts and restores the
// link.
//
// It owns test fixtures only: it must not be imported by non-test code. It
// starts etcd through go.etcd.io/etcd/server/v3/embed directly and must not
// import any component (the runtime does not depend on chainfire; tests
// that need a chainfire member use internal/chainfire/chainfiretest), nor
// package coord, whose own internal tests import it.
package coordtest

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// readyWithin bounds WaitReady: three members starting together under
// -race on a loaded machine take a few seconds.
const readyWithin = 30 * time.Second

// Member is one embedded etcd member. Stop closes it; Start runs it again
// from its data directory, with the same name and URLs.
type Member struct {
	// Name is the member's etcd name (m0, m1, ...).
	Name string
	// ClientURL and PeerURL are its loopback http URLs.
	ClientURL, PeerURL string

	dir            string
	initialCluster string

	mu   sync.Mutex
	etcd *embed.Etcd // nil while stopped
}

// Start starts the member without waiting for it to be ready (members of a
// cluster must start together to elect a leader; WaitReady waits). It is
// stopped at the end of the test at the latest. Starting a running member
// fails the test.
func (m *Member) Start(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd != nil {
		t.Fatalf("coordtest: member %s is already running", m.Name)
	}
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.dir
	cu, err := url.Parse(m.ClientURL)
	if err != nil {
		t.Fatalf("coordtest: member %s client URL: %v", m.Name, err)
	}
	pu, err := url.Parse(m.PeerURL)
	if err != nil {
		t.Fatalf("coordtest: member %s peer URL: %v", m.Name, err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = m.initialCluster
	// Heartbeat 50ms, election 500ms: leaders change within a second, and
	// the minimum lease TTL is 1s.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("coordtest: starting etcd member %s: %v", m.Name, err)
	}
	m.etcd = e
	t.Cleanup(m.Stop)
}

// WaitReady waits until the member is ready to serve clients, failing the
// test after 30s or if the member fails first.
func (m *Member) WaitReady(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	e := m.etcd
	m.mu.Unlock()
	if e == nil {
		t.Fatalf("coordtest: member %s is not running", m.Name)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("coordtest: etcd member %s failed before ready: %v", m.Name, err)
	case <-time.After(readyWithin):
		t.Fatalf("coordtest: etcd member %s not ready after %s", m.Name, readyWithin)
	}
}

// Stop closes the member and waits until it has closed; its data stays
// for Start. Stopping a stopped member does nothing. Safe to call from
// any goroutine.
func (m *Member) Stop() {
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	select {
	case <-e.Server.ReadyNotify():
	default:
		e.Server.Stop() // Close hangs on a member that never became ready (etcd-io/etcd#9533)
	}
	e.Close()
}

// Server is the running member's etcd server (for its Raft state: leader,
// member ID, leadership transfer), or nil while it is stopped.
func (m *Member) Server() *etcdserver.EtcdServer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd == nil {
		return nil
	}
	return m.etcd.Server
}

// Client is a new client of this member only; it is closed at the end of
// the test.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, m.ClientURL)
}

// Cluster is a set of members with a static initial cluster.
type Cluster struct {
	Members []*Member
}

// StartCluster starts n members (m0, m1, ...) on free loopback ports, each
// with its data in a temp dir of the test, and waits until all are ready.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("coordtest: a cluster of %d members", n)
	}
	ports := testkit.FreePorts(t, 2*n)
	c := &Cluster{Members: make([]*Member, n)}
	var ic []string
	for i := range c.Members {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       t.TempDir(),
		}
		c.Members[i] = m
		ic = append(ic, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.initialCluster = strings.Join(ic, ",")
		m.Start(t)
	}
	for _, m := range c.Members {
		m.WaitReady(t)
	}
	return c
}

// StartMember starts a one-member cluster and waits until it is ready.
func StartMember(t testing.TB) *Member {
	t.Helper()
	return StartCluster(t, 1).Members[0]
}

// Endpoints are the members' client URLs, in member order.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.ClientURL
	}
	return eps
}

// NewClient is a clientv3 client of the given endpoints (member or Proxy
// URLs) with a 5s dial timeout and no logging; it is closed at the end of
// the test.
func NewClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("coordtest: etcd client of %v: %v", endpoints, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
