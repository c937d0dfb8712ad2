package coordtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

// Proxy forwards TCP from its own loopback address to an upstream (a
// member's client URL) and fakes what a network does to a client:
//
//   - DelayAnswers: answers (upstream to client) arrive late, in order —
//     a link whose answers lag behind the server.
//   - SwallowRequests: everything clients send is dropped from then on,
//     while answers already under way still arrive.
//   - Partition: every byte in both directions is dropped and connections
//     stay open, new ones are accepted and never answered — requests hang
//     as on a real partition (no reset, no refusal).
//   - Cut and Restore: the listener and every connection close (the client
//     sees the server vanish), then the proxy listens again on the same
//     address. Delay and swallowing survive a Cut.
//
// Its goroutines are waited for by Cut, which also runs at the end of the
// test.
type Proxy struct {
	upstream string // host:port
	addr     string // host:port, kept across Cut and Restore

	delay      atomic.Int64 // nanoseconds
	swallowReq atomic.Bool
	partition  atomic.Bool

	mu    sync.Mutex
	ln    net.Listener // the serving listener; nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to upstreamURL (http://host:port).
func NewProxy(t testing.TB, upstreamURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil || u.Host == "" {
		t.Fatalf("coordtest: proxy upstream %q is not a URL with a host (%v)", upstreamURL, err)
	}
	// Restore listens on this address again: testkit's ports are outside
	// the ephemeral range, so no outgoing connection takes it meanwhile.
	ln := testkit.Listen(t)
	p := &Proxy{upstream: u.Host, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

// URL is the proxy's client URL, to give a client instead of the member's.
func (p *Proxy) URL() string { return "http://" + p.addr }

// DelayAnswers delivers every answer chunk d after it arrived from
// upstream (0: no delay), in order.
func (p *Proxy) DelayAnswers(d time.Duration) { p.delay.Store(int64(d)) }

// SwallowRequests drops everything clients send from now on; answers
// already under way still arrive (late, with DelayAnswers).
func (p *Proxy) SwallowRequests() { p.swallowReq.Store(true) }

// Partition drops every byte in both directions from now on and keeps the
// connections open; new connections are held open and never answered.
func (p *Proxy) Partition() { p.partition.Store(true) }

// Cut closes the listener and every connection and waits for the proxy's
// goroutines. Cutting a cut proxy does nothing.
func (p *Proxy) Cut() {
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

// Restore listens again on the proxy's address after Cut (waiting up to
// 20s for the address to be free).
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	serving := p.ln != nil
	p.mu.Unlock()
	if serving {
		t.Fatalf("coordtest: Restore of proxy %s, which is not cut", p.addr)
	}
	var ln net.Listener
	testkit.Eventually(t, 20*time.Second, "the proxy address to be free again", func() bool {
		var err error
		ln, err = net.Listen("tcp", p.addr)
		return err == nil
	})
	p.serve(ln)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() { p.accept(ln) })
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if p.partition.Load() {
			if p.track(ln, c) { // held open, never answered
				p.wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
			}
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(ln, c, up) {
			continue
		}
		p.wg.Go(func() { p.requests(up, c) })
		p.wg.Go(func() { p.answers(c, up) })
	}
}

// track remembers cs for Cut if ln is still the serving listener;
// otherwise (a Cut came between Accept and now) it closes them and says
// false.
func (p *Proxy) track(ln net.Listener, cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != ln {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// requests copies client bytes upstream unless swallowing them. When the
// client side ends, the upstream side is closed too, unless partitioned
// (the upstream must not learn of it).
func (p *Proxy) requests(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.swallowReq.Load() && !p.partition.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !p.partition.Load() {
				dst.Close()
			}
			return
		}
	}
}

// answers copies upstream bytes to the client, each chunk the current
// delay after it arrived, unless partitioned. A second goroutine writes,
// so reading upstream never waits for the delay.
func (p *Proxy) answers(dst, src net.Conn) {
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
			time.Sleep(time.Until(c.at.Add(time.Duration(p.delay.Load())))) // the delay itself, not a wait
			if p.partition.Load() {
				continue
			}
			if _, err := dst.Write(c.b); err != nil {
				failed = true
			}
		}
		if !p.partition.Load() {
			dst.Close()
		}
	})
	defer close(ch)
	for {
		buf := make([]byte, 32<<10) // handed to the writer: one per chunk
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{buf[:n], time.Now()}
		}
		if err != nil {
			return
		}
	}
}
