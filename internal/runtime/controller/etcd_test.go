package controller

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// The singleton tests run against real etcd members embedded in the test
// process (the controller must not depend on the chainfire component), and
// partition a client with a proxy that can swallow its traffic.

// etcdMember is one embedded etcd member.
type etcdMember struct {
	name                 string
	clientPort, peerPort int
	e                    *embed.Etcd
	stop                 func()
}

func (m *etcdMember) clientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.clientPort) }
func (m *etcdMember) peerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", m.peerPort) }

// startEtcd starts an n-member etcd cluster with fast raft timing (election
// timeout 500ms) and waits until every member is ready. Members are closed
// at cleanup, or earlier by their stop.
func startEtcd(t *testing.T, n int) []*etcdMember {
	t.Helper()
	ms := make([]*etcdMember, n)
	var initial []string
	for i := range ms {
		ms[i] = &etcdMember{name: fmt.Sprintf("m%d", i), clientPort: testkit.FreePort(t), peerPort: testkit.FreePort(t)}
		initial = append(initial, ms[i].name+"="+ms[i].peerURL())
	}
	for _, m := range ms {
		cfg := embed.NewConfig()
		cfg.Name = m.name
		cfg.Dir = t.TempDir()
		cu, _ := url.Parse(m.clientURL())
		pu, _ := url.Parse(m.peerURL())
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatalf("starting etcd member %s: %v", m.name, err)
		}
		m.e = e
		var once sync.Once
		m.stop = func() {
			once.Do(func() {
				select {
				case <-e.Server.ReadyNotify():
				default:
					e.Server.Stop() // Close hangs on a member that never became ready
				}
				e.Close()
			})
		}
		t.Cleanup(m.stop)
	}
	for _, m := range ms {
		select {
		case <-m.e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatalf("etcd member %s not ready after 30s", m.name)
		}
	}
	return ms
}

func newEtcdClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// blackhole forwards TCP to an upstream until partition is called; from
// then on it swallows every byte in both directions but keeps the
// connections open, so the client's requests hang as on a real network
// partition (no reset, no refusal). Its goroutines end at cleanup.
type blackhole struct {
	upstream string
	ln       net.Listener
	cut      atomic.Bool

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newBlackhole(t *testing.T, upstreamURL string) *blackhole {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{upstream: u.Host, ln: ln}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) url() string { return "http://" + b.ln.Addr().String() }

// partition starts swallowing traffic.
func (b *blackhole) partition() { b.cut.Store(true) }

func (b *blackhole) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if b.cut.Load() {
			if b.track(c) { // held open, never answered
				b.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
			}
			continue
		}
		up, err := net.Dial("tcp", b.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !b.track(c, up) {
			continue
		}
		b.wg.Go(func() { b.pipe(up, c) })
		b.wg.Go(func() { b.pipe(c, up) })
	}
}

// track remembers cs for close; after close it closes them and says false.
func (b *blackhole) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	b.conns = append(b.conns, cs...)
	return true
}

// pipe copies src to dst, dropping everything once partitioned.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !b.cut.Load() {
				dst.Close()
			}
			return
		}
	}
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	b.closed = true
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
