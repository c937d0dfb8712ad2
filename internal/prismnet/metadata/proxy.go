package metadata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Errors returned by New and Run.
var (
	// ErrInvalidOptions wraps every problem New finds in its Options.
	ErrInvalidOptions = errors.New("metadata: invalid options")
	// ErrAlreadyRun is returned by a second call of Run.
	ErrAlreadyRun = errors.New("metadata: proxy already run")
)

// Identity headers the proxy sets on every forwarded request. Any header
// of the workload's request with the X-UltraCloud- prefix is dropped.
const (
	HeaderNetwork  = "X-UltraCloud-Network"
	HeaderSourceIP = "X-UltraCloud-Source-IP"
	HeaderProject  = "X-UltraCloud-Project"
	HeaderPort     = "X-UltraCloud-Port"
	HeaderOwner    = "X-UltraCloud-Owner"
	HeaderMAC      = "X-UltraCloud-MAC"
)

// TokenPath is the one path that accepts PUT: the IMDSv2 session token.
const TokenPath = "/latest/api/token"

// Instance is what the agent knows about the port owning a source address
// on the proxy's network.
type Instance struct {
	Project   string
	Port      string // the port's name
	OwnerKind string // e.g. "VirtualMachine"; empty for a port without an owner
	OwnerName string
	MAC       string
	Addr      netip.Addr // the port's address that matched
}

// Limits bound what one workload can make the proxy do. Zero fields take
// the defaults in DefaultLimits.
type Limits struct {
	// Rate is the sustained number of requests per second one source
	// address may make; Burst how many it may make at once.
	Rate  float64
	Burst int
	// MaxRequestBody is the largest request body accepted (only the token
	// PUT carries one); a larger one gets 413.
	MaxRequestBody int64
	// UpstreamTimeout bounds one whole exchange with the upstream, from
	// sending the request to the last byte of the answer.
	UpstreamTimeout time.Duration
	// ShutdownGrace is how long Run lets requests in flight finish after its
	// context ends before closing their connections.
	ShutdownGrace time.Duration
}

// DefaultLimits are the limits used for zero fields of Options.Limits.
var DefaultLimits = Limits{
	Rate:            20,
	Burst:           50,
	MaxRequestBody:  64 << 10,
	UpstreamTimeout: 10 * time.Second,
	ShutdownGrace:   5 * time.Second,
}

// Options configure a Proxy.
type Options struct {
	// Network is the ID of the tenant network the proxy serves, sent
	// upstream as X-UltraCloud-Network.
	Network string
	// Listen opens the listening socket, called once by Run. The agent's
	// opener switches into the network's service namespace and listens on
	// 169.254.169.254:80 there.
	Listen func() (net.Listener, error)
	// Lookup maps a request's source address to the port of this network
	// owning it. It is called concurrently and must be safe for that; the
	// agent swaps its table as ports change.
	Lookup func(netip.Addr) (Instance, bool)
	// Upstream is the metadata service's base URL (http or https, no query,
	// fragment or user info); a request for /p is forwarded to
	// Upstream.Path + /p.
	Upstream *url.URL
	// Transport sends the forwarded requests: the agent's authenticated
	// transport (it carries the node's credentials, which the workload's
	// request never does). Nil uses a clone of http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// Limits bound each source; zero fields take DefaultLimits.
	Limits Limits
	// Now is the clock of the rate limit; nil is time.Now.
	Now func() time.Time
}

// Proxy is the metadata proxy of one network on one host. It is an
// http.Handler (ServeHTTP takes the source from the request's RemoteAddr)
// and Run serves it on the socket Listen opens.
type Proxy struct {
	network   string
	listen    func() (net.Listener, error)
	lookup    func(netip.Addr) (Instance, bool)
	upstream  url.URL
	transport http.RoundTripper
	log       *slog.Logger
	limits    Limits
	now       func() time.Time
	perSource *limiterSet

	// Warnings caused by workloads are themselves rate limited, so a
	// misbehaving workload cannot flood the host's log.
	logLimit   *rate.Limiter
	suppressed atomic.Int64

	started atomic.Bool
	ready   chan struct{}
	addr    net.Addr // set before ready is closed
}

var _ http.Handler = (*Proxy)(nil)

// New checks opts and returns a proxy; it opens nothing.
func New(opts Options) (*Proxy, error) {
	if opts.Network == "" {
		return nil, fmt.Errorf("%w: Network is empty", ErrInvalidOptions)
	}
	if opts.Listen == nil {
		return nil, fmt.Errorf("%w: Listen is nil", ErrInvalidOptions)
	}
	if opts.Lookup == nil {
		return nil, fmt.Errorf("%w: Lookup is nil", ErrInvalidOptions)
	}
	u := opts.Upstream
	switch {
	case u == nil:
		return nil, fmt.Errorf("%w: Upstream is nil", ErrInvalidOptions)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: Upstream %q: scheme must be http or https", ErrInvalidOptions, u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("%w: Upstream %q: no host", ErrInvalidOptions, u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("%w: Upstream %q: user info not allowed (credentials belong in Transport)", ErrInvalidOptions, u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%w: Upstream %q: query and fragment not allowed", ErrInvalidOptions, u.Redacted())
	}
	lim, err := opts.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		network:   opts.Network,
		listen:    opts.Listen,
		lookup:    opts.Lookup,
		upstream:  *u,
		transport: opts.Transport,
		log:       opts.Logger,
		limits:    lim,
		now:       opts.Now,
		logLimit:  rate.NewLimiter(1, 20),
		ready:     make(chan struct{}),
	}
	p.upstream.Path = strings.TrimSuffix(u.Path, "/")
	p.upstream.RawPath = ""
	if p.transport == nil {
		p.transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("network", opts.Network)
	if p.now == nil {
		p.now = time.Now
	}
	// A host carries a few hundred ports per network at most; the bound
	// only matters against sources that anti-spoofing should have stopped.
	p.perSource = newLimiterSet(rate.Limit(lim.Rate), lim.Burst, 4096)
	return p, nil
}

func (l Limits) withDefaults() (Limits, error) {
	switch {
	case l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0):
		return l, fmt.Errorf("%w: Limits.Rate %v must be a positive number", ErrInvalidOptions, l.Rate)
	case l.Burst < 0:
		return l, fmt.Errorf("%w: Limits.Burst %d is negative", ErrInvalidOptions, l.Burst)
	case l.MaxRequestBody < 0:
		return l, fmt.Errorf("%w: Limits.MaxRequestBody %d is negative", ErrInvalidOptions, l.MaxRequestBody)
	case l.UpstreamTimeout < 0:
		return l, fmt.Errorf("%w: Limits.UpstreamTimeout %v is negative", ErrInvalidOptions, l.UpstreamTimeout)
	case l.ShutdownGrace < 0:
		return l, fmt.Errorf("%w: Limits.ShutdownGrace %v is negative", ErrInvalidOptions, l.ShutdownGrace)
	}
	d := DefaultLimits
	if l.Rate == 0 {
		l.Rate = d.Rate
	}
	if l.Burst == 0 {
		l.Burst = d.Burst
	}
	if l.MaxRequestBody == 0 {
		l.MaxRequestBody = d.MaxRequestBody
	}
	if l.UpstreamTimeout == 0 {
		l.UpstreamTimeout = d.UpstreamTimeout
	}
	if l.ShutdownGrace == 0 {
		l.ShutdownGrace = d.ShutdownGrace
	}
	return l, nil
}

// Ready is closed once Run listens.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Addr is the listening address; valid once Ready is closed.
func (p *Proxy) Addr() net.Addr {
	select {
	case <-p.ready:
		return p.addr
	default:
		return nil
	}
}

// Run opens the listener and serves HTTP/1.1 on it until ctx ends, then
// lets requests in flight finish for Limits.ShutdownGrace and closes the
// rest. It returns nil after a clean stop.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	ln, err := p.listen()
	if err != nil {
		return fmt.Errorf("metadata: network %s: listen: %w", p.network, err)
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 5 * time.Second,
		// The only body is the token PUT's, at most MaxRequestBody.
		ReadTimeout:    10 * time.Second,
		WriteTimeout:   p.limits.UpstreamTimeout + 5*time.Second,
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.addr = ln.Addr()
	close(p.ready)
	p.log.Info("metadata proxy started", "listen", ln.Addr().String(), "upstream", p.upstream.Redacted())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }() // waited for below on every path
	select {
	case err := <-errc:
		_ = srv.Close()
		return fmt.Errorf("metadata: network %s: serve: %w", p.network, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.limits.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		p.log.Warn("metadata proxy: requests still running at shutdown, closing them", "err", err)
		_ = srv.Close()
	}
	<-errc // http.ErrServerClosed
	p.log.Info("metadata proxy stopped")
	return nil
}

// ServeHTTP handles one workload request: rate limit, identity, method and
// path checks, then the exchange with the upstream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src, err := sourceAddr(r.RemoteAddr)
	if err != nil {
		// Only a listener that is not TCP/IP gets here.
		p.warn("metadata request without a source address", "remote", r.RemoteAddr)
		http.Error(w, "metadata: no source address", http.StatusBadRequest)
		return
	}
	if ok, wait := p.perSource.allow(src, p.now()); !ok {
		p.warn("metadata request over the rate limit", "source", src.String())
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		http.Error(w, "metadata: too many requests", http.StatusTooManyRequests)
		return
	}
	inst, ok := p.lookup(src)
	if !ok {
		p.warn("metadata request from an unknown source", "source", src.String(), "method", r.Method, "path", r.URL.Path)
		http.Error(w, "metadata: no instance on this network has source address "+src.String(), http.StatusNotFound)
		return
	}
	log := p.log.With("source", src.String(), "port", inst.Project+"/"+inst.Port)
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
	case r.Method == http.MethodPut && r.URL.Path == TokenPath:
	default:
		allow := "GET, HEAD"
		if r.URL.Path == TokenPath {
			allow = "GET, HEAD, PUT"
		}
		p.warn("metadata request with a method not allowed", "source", src.String(), "method", r.Method, "path", r.URL.Path)
		w.Header().Set("Allow", allow)
		http.Error(w, "metadata: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	fwdPath, ok := upstreamPath(p.upstream.Path, r.URL.Path)
	if !ok {
		p.warn("metadata request with a path not forwarded", "source", src.String(), "path", r.URL.Path)
		http.Error(w, "metadata: path must be absolute, without empty, '.' or '..' segments", http.StatusBadRequest)
		return
	}

	var body io.Reader
	if r.Method == http.MethodPut {
		max := p.limits.MaxRequestBody
		if r.ContentLength > max {
			http.Error(w, "metadata: request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			http.Error(w, "metadata: request body unreadable", http.StatusBadRequest)
			return
		}
		if int64(len(b)) > max {
			http.Error(w, "metadata: request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		body = bytes.NewReader(b)
	}

	ctx, cancel := context.WithTimeout(r.Context(), p.limits.UpstreamTimeout)
	defer cancel()
	u := p.upstream
	u.Path = fwdPath
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		log.Warn("metadata request not built", "err", err)
		http.Error(w, "metadata: bad request", http.StatusBadRequest)
		return
	}
	copyAllowedHeaders(out.Header, r.Header)
	out.Header.Set(HeaderNetwork, p.network)
	out.Header.Set(HeaderSourceIP, src.String())
	out.Header.Set(HeaderProject, inst.Project)
	out.Header.Set(HeaderPort, inst.Port)
	if inst.OwnerKind != "" || inst.OwnerName != "" {
		out.Header.Set(HeaderOwner, inst.OwnerKind+"/"+inst.OwnerName)
	}
	if inst.MAC != "" {
		out.Header.Set(HeaderMAC, inst.MAC)
	}

	start := p.now()
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			log.Debug("metadata request abandoned by the client", "path", r.URL.Path)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			p.warnWith(log, "metadata upstream timed out", "path", r.URL.Path, "timeout", p.limits.UpstreamTimeout)
			http.Error(w, "metadata: upstream timed out", http.StatusGatewayTimeout)
		default:
			p.warnWith(log, "metadata upstream failed", "path", r.URL.Path, "err", err)
			http.Error(w, "metadata: upstream unavailable", http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	copyResponseHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		if err := stream(w, resp.Body); err != nil {
			// The status is out: end the connection abruptly so the client
			// sees a truncated answer, not a complete-looking short one.
			p.warnWith(log, "metadata answer cut off", "path", r.URL.Path, "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	log.Debug("metadata request forwarded", "method", r.Method, "path", r.URL.Path, "status", resp.StatusCode, "took", p.now().Sub(start))
}

// sourceAddr is the IP address of a RemoteAddr, IPv4-mapped IPv6 addresses
// unmapped (a dual-stack listener reports IPv4 clients that way).
func sourceAddr(remote string) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("metadata: remote address %q: %w", remote, err)
	}
	return ap.Addr().Unmap().WithZone(""), nil
}

// upstreamPath joins the upstream's base path (no trailing slash) and a
// request path, or reports that the request path is not forwarded. The
// request path must be absolute, and no segment may be empty, "." or ".."
// (a last empty segment, the trailing slash cloud-init uses to list a
// directory, is fine): so the joined path never climbs out of the base on
// the upstream, whose API also serves other things. Backslashes and control
// characters are refused as well, as some servers treat them specially.
func upstreamPath(base, p string) (string, bool) {
	if p == "" || p[0] != '/' {
		return "", false
	}
	rest := p[1:]
	for {
		seg, after, more := strings.Cut(rest, "/")
		if (seg == "" && more) || seg == "." || seg == ".." {
			return "", false
		}
		if !more {
			break
		}
		rest = after
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "", false
		}
	}
	return base + p, true
}

// forwardedHeaders are the request headers a metadata client needs; every
// other header stays with the proxy. An allow-list rather than a deny-list
// because the upstream may be the control plane's API, which has its own
// idea of credentials and forwarding headers that a workload must not reach.
var forwardedHeaders = map[string]bool{
	"Accept":              true,
	"Accept-Encoding":     true,
	"Accept-Language":     true,
	"Cache-Control":       true,
	"Content-Type":        true,
	"If-Match":            true,
	"If-Modified-Since":   true,
	"If-None-Match":       true,
	"If-Range":            true,
	"If-Unmodified-Since": true,
	"Range":               true,
	"User-Agent":          true,
}

// tokenHeaderPrefix covers X-aws-ec2-metadata-token (the IMDSv2 session
// token) and X-aws-ec2-metadata-token-ttl-seconds (its requested lifetime).
const tokenHeaderPrefix = "x-aws-ec2-metadata-token"

func copyAllowedHeaders(dst, src http.Header) {
	for k, vs := range src {
		ck := http.CanonicalHeaderKey(k)
		if !forwardedHeaders[ck] && !hasPrefixFold(k, tokenHeaderPrefix) {
			continue
		}
		for _, v := range vs {
			dst.Add(ck, v)
		}
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// hopHeaders belong to one connection and are not relayed.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyResponseHeaders(dst, src http.Header) {
	skip := map[string]bool{}
	for _, h := range hopHeaders {
		skip[h] = true
	}
	for _, v := range src.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				skip[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	for k, vs := range src {
		if skip[http.CanonicalHeaderKey(k)] {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// stream copies the answer to the workload as it arrives, flushing after
// every read, so a slow or large answer is not held in the proxy.
func stream(w http.ResponseWriter, body io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write to client: %w", werr)
			}
			if ferr := rc.Flush(); ferr != nil {
				return fmt.Errorf("flush to client: %w", ferr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read from upstream: %w", err)
		}
	}
}

// warn logs a warning caused by a workload, subject to the log rate limit.
func (p *Proxy) warn(msg string, args ...any) { p.warnWith(p.log, msg, args...) }

func (p *Proxy) warnWith(log *slog.Logger, msg string, args ...any) {
	if !p.logLimit.AllowN(p.now(), 1) {
		p.suppressed.Add(1)
		return
	}
	if n := p.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_before", n)
	}
	log.Warn(msg, args...)
}
