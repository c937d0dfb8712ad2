package coord

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
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

// The tests run against a real single-member etcd embedded in the test
// process (coord must not depend on the chainfire component, so it starts
// embed directly), and fake the network with a TCP proxy that can be cut.

func testLogger() *slog.Logger {
	if os.Getenv("COORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startEtcd runs a one-member etcd with fast raft timing (election 500ms,
// so the minimum lease TTL is 1s) and returns its client endpoint.
func startEtcd(t *testing.T) string {
	t.Helper()
	m := etcdMember{name: "coord-test", dir: t.TempDir(), clientPort: testkit.FreePort(t), peerPort: testkit.FreePort(t)}
	m.initialCluster = m.name + "=" + m.peerURL()
	m.start(t)
	return m.clientURL()
}

// etcdMember is one embedded etcd member that can be stopped and started
// again from its data directory.
type etcdMember struct {
	name                 string
	dir                  string
	clientPort, peerPort int
	initialCluster       string

	e     *embed.Etcd
	close func()
}

func (m *etcdMember) clientURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.clientPort) }
func (m *etcdMember) peerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", m.peerPort) }

// start starts the member without waiting for it to be ready; it is closed
// at cleanup (or by stop).
func (m *etcdMember) startAsync(t *testing.T) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cu, _ := url.Parse(m.clientURL())
	pu, _ := url.Parse(m.peerURL())
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = m.initialCluster
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("starting etcd member %s: %v", m.name, err)
	}
	var once sync.Once
	m.e = e
	m.close = func() {
		once.Do(func() {
			select {
			case <-e.Server.ReadyNotify():
			default:
				e.Server.Stop() // see etcd-io/etcd#9533: Close hangs before ready otherwise
			}
			e.Close()
		})
	}
	t.Cleanup(m.close)
}

func (m *etcdMember) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-m.e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatalf("etcd member %s not ready after 20s", m.name)
	}
}

func (m *etcdMember) start(t *testing.T) {
	t.Helper()
	m.startAsync(t)
	m.waitReady(t)
}

func (m *etcdMember) stop() { m.close() }

// startCluster starts n members with a static initial cluster.
func startCluster(t *testing.T, n int) []*etcdMember {
	t.Helper()
	ms := make([]*etcdMember, n)
	var ic []string
	for i := range ms {
		ms[i] = &etcdMember{name: fmt.Sprintf("m%d", i), dir: t.TempDir(), clientPort: testkit.FreePort(t), peerPort: testkit.FreePort(t)}
		ic = append(ic, ms[i].name+"="+ms[i].peerURL())
	}
	for _, m := range ms {
		m.initialCluster = strings.Join(ic, ",")
		m.startAsync(t)
	}
	for _, m := range ms {
		m.waitReady(t)
	}
	return ms
}

// recordingHandler keeps the messages of every log record, for tests that
// check a code path was taken.
type recordingHandler struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newRecordingLogger() (*slog.Logger, func() []string) {
	h := recordingHandler{mu: &sync.Mutex{}, msgs: &[]string{}}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.msgs...)
	}
}

func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

func newRawClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newCoord(t *testing.T, endpoint string) (*Client, *clientv3.Client) {
	raw := newRawClient(t, endpoint)
	return New(raw, testLogger()), raw
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitDone waits for ctx to end within d and returns its cause.
func waitDone(t *testing.T, ctx context.Context, d time.Duration, what string) error {
	t.Helper()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		t.Fatalf("%s: context not cancelled within %s", what, d)
		return nil
	}
}

// proxy forwards TCP to upstream until cut; restore listens again on the
// same address. All its goroutines are waited for by cut and cleanup.
type proxy struct {
	upstream string
	addr     string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, upstreamURL string) *proxy {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{upstream: u.Host, conns: map[net.Conn]struct{}{}}
	// restore listens on this address again: testkit's ports are outside
	// the ephemeral range, so no outgoing connection takes it meanwhile.
	ln := testkit.Listen(t)
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) url() string { return "http://" + p.addr }

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
}

// cut closes the listener and every connection: the client sees the
// server vanish.
func (p *proxy) cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// restore listens again on the proxy's address.
func (p *proxy) restore(t *testing.T) {
	t.Helper()
	var ln net.Listener
	testkit.Eventually(t, 20*time.Second, "the proxy address to be free again", func() bool {
		var err error
		ln, err = net.Listen("tcp", p.addr)
		return err == nil
	})
	p.serve(ln)
}

// slowProxy forwards TCP to upstream; answers (upstream to client) are
// delivered setDelay late, in order, and dropRequests makes it swallow
// everything the client sends from then on while late answers still
// arrive. It models a link whose answers lag behind the server.
type slowProxy struct {
	upstream string
	ln       net.Listener
	delay    atomic.Int64 // nanoseconds
	drop     atomic.Bool

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newSlowProxy(t *testing.T, upstreamURL string) *slowProxy {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{upstream: u.Host, ln: ln}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *slowProxy) url() string              { return "http://" + p.ln.Addr().String() }
func (p *slowProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }
func (p *slowProxy) dropRequests()            { p.drop.Store(true) }
func (p *slowProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.conns = append(p.conns, cs...)
	return true
}

func (p *slowProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			continue
		}
		p.wg.Go(func() { p.requests(up, c) })
		p.wg.Go(func() { p.answers(c, up) })
	}
}

// requests copies client bytes upstream unless dropping.
func (p *slowProxy) requests(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.drop.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// answers copies upstream bytes to the client, each chunk delay after it
// arrived.
func (p *slowProxy) answers(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1024)
	p.wg.Go(func() {
		failed := false
		for c := range ch { // drained to the end, so the reader never blocks
			if failed {
				continue
			}
			time.Sleep(time.Until(c.at.Add(time.Duration(p.delay.Load()))))
			if _, err := dst.Write(c.b); err != nil {
				failed = true
			}
		}
	})
	defer close(ch)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{buf[:n], time.Now()}
		}
		if err != nil {
			return
		}
	}
}

func (p *slowProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
