package metadata

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

var loopback = netip.MustParseAddr("127.0.0.1")

var vm1 = Instance{
	Project: "acme", Port: "vm1-eth0", OwnerKind: "VirtualMachine", OwnerName: "vm1",
	MAC: "02:00:00:00:00:01", Addr: loopback,
}

// seen is one request as the upstream received it.
type seen struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

// recorder is an upstream that records what reaches it and answers with
// the handler the test sets (by default 200 "ok").
type recorder struct {
	mu   sync.Mutex
	reqs []seen
	srv  *httptest.Server
}

func newUpstream(t *testing.T, h http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)})
		rec.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

func (r *recorder) url(t *testing.T, path string) *url.URL {
	t.Helper()
	u, err := url.Parse(r.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// syncBuffer collects the proxy's logs from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lookupOf(m map[netip.Addr]Instance) func(netip.Addr) (Instance, bool) {
	return func(a netip.Addr) (Instance, bool) {
		i, ok := m[a]
		return i, ok
	}
}

func loopbackListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// running starts p.Run, waits until it listens and returns its base URL;
// at cleanup it stops p and checks that Run returned nil.
func running(t *testing.T, p *Proxy) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("proxy Run returned before listening: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("proxy not listening within 5s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy Run after cancel: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("proxy Run did not return within 10s of cancel")
		}
	})
	return "http://" + p.Addr().String()
}

func newProxy(t *testing.T, o Options) *Proxy {
	t.Helper()
	if o.Network == "" {
		o.Network = "net-1"
	}
	if o.Listen == nil {
		o.Listen = loopbackListen
	}
	if o.Lookup == nil {
		o.Lookup = lookupOf(map[netip.Addr]Instance{loopback: vm1})
	}
	p, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func do(t *testing.T, method, u string, hdr http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs // as given, not canonicalised
	}
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp, string(b)
}

func TestForwardedRequestKeepsPathQueryAndNamesTheInstance(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "answer for "+r.URL.Path)
	})
	p := newProxy(t, Options{Upstream: up.url(t, "/v1/metadata/")})
	base := running(t, p)

	paths := []string{
		"/latest/meta-data/instance-id",
		"/latest/meta-data/",
		"/latest/user-data",
		"/openstack/latest/meta_data.json",
		"/openstack/latest/user_data",
		"/openstack/latest/network_data.json",
		"/",
	}
	for _, path := range paths {
		resp, body := do(t, http.MethodGet, base+path+"?a=1&b=%2F", nil, nil)
		if resp.StatusCode != http.StatusTeapot || body != "answer for /v1/metadata"+path || resp.Header.Get("X-Upstream") != "yes" {
			t.Errorf("GET %s: %d %q X-Upstream=%q, want the upstream's 418, body and header", path, resp.StatusCode, body, resp.Header.Get("X-Upstream"))
		}
	}
	reqs := up.requests()
	if len(reqs) != len(paths) {
		t.Fatalf("upstream saw %d requests, want %d", len(reqs), len(paths))
	}
	for i, r := range reqs {
		if r.Method != http.MethodGet || r.Path != "/v1/metadata"+paths[i] || r.Query != "a=1&b=%2F" {
			t.Errorf("upstream saw %s %s?%s, want GET /v1/metadata%s?a=1&b=%%2F", r.Method, r.Path, r.Query, paths[i])
		}
		want := map[string]string{
			HeaderNetwork: "net-1", HeaderSourceIP: "127.0.0.1", HeaderProject: "acme",
			HeaderPort: "vm1-eth0", HeaderOwner: "VirtualMachine/vm1", HeaderMAC: "02:00:00:00:00:01",
		}
		for k, v := range want {
			if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
				t.Errorf("upstream header %s = %q, want [%q]", k, got, v)
			}
		}
	}
}

func TestPortWithoutOwnerSendsNoOwnerHeader(t *testing.T) {
	up := newUpstream(t, nil)
	inst := vm1
	inst.OwnerKind, inst.OwnerName = "", ""
	p := newProxy(t, Options{Upstream: up.url(t, ""), Lookup: lookupOf(map[netip.Addr]Instance{loopback: inst})})
	base := running(t, p)
	if resp, _ := do(t, http.MethodGet, base+"/latest/meta-data/", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	r := up.requests()[0]
	if _, ok := r.Header[http.CanonicalHeaderKey(HeaderOwner)]; ok {
		t.Errorf("upstream got %s = %q for a port without owner, want none", HeaderOwner, r.Header.Get(HeaderOwner))
	}
	if r.Header.Get(HeaderPort) != "vm1-eth0" {
		t.Errorf("port header %q, want vm1-eth0", r.Header.Get(HeaderPort))
	}
}

func TestWorkloadCannotClaimAnotherIdentityOrPassCredentials(t *testing.T) {
	up := newUpstream(t, nil)
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	base := running(t, p)

	hdr := http.Header{
		"X-UltraCloud-Project":   {"victim"},
		"x-ultracloud-port":      {"victim-port"},
		"X-ULTRACLOUD-OWNER":     {"VirtualMachine/victim"},
		"X-UltraCloud-Source-IP": {"10.9.9.9"},
		"X-UltraCloud-Network":   {"other-net"},
		"X-UltraCloud-MAC":       {"02:00:00:00:00:99"},
		"X-UltraCloud-Anything":  {"x"},
		"X_UltraCloud_Project":   {"victim"},
		"Authorization":          {"Bearer stolen"},
		"Proxy-Authorization":    {"Basic c3RvbGVu"},
		"Cookie":                 {"session=stolen"},
		"X-Forwarded-For":        {"10.9.9.9"},
		"Forwarded":              {"for=10.9.9.9"},
		"X-Real-Ip":              {"10.9.9.9"},
		"X-Custom":               {"nope"},
		"Accept":                 {"application/json"},
		"User-Agent":             {"cloud-init/24.1"},
	}
	if resp, _ := do(t, http.MethodGet, base+"/latest/meta-data/instance-id", hdr, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	r := up.requests()[0]
	own := map[string]string{
		HeaderNetwork: "net-1", HeaderSourceIP: "127.0.0.1", HeaderProject: "acme",
		HeaderPort: "vm1-eth0", HeaderOwner: "VirtualMachine/vm1", HeaderMAC: "02:00:00:00:00:01",
	}
	for k, vs := range r.Header {
		norm := strings.ReplaceAll(strings.ToLower(k), "_", "-")
		if strings.HasPrefix(norm, "x-ultracloud-") {
			want, ours := "", false
			for ok, ov := range own {
				if http.CanonicalHeaderKey(ok) == k {
					want, ours = ov, true
				}
			}
			if !ours || len(vs) != 1 || vs[0] != want {
				t.Errorf("upstream got identity header %s = %q, want only the proxy's own value", k, vs)
			}
		}
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Custom"} {
		if v := r.Header.Values(k); len(v) > 0 {
			t.Errorf("upstream got the workload's %s = %q, want it dropped", k, v)
		}
	}
	if r.Header.Get("Accept") != "application/json" || r.Header.Get("User-Agent") != "cloud-init/24.1" {
		t.Errorf("Accept %q, User-Agent %q: want the workload's values passed", r.Header.Get("Accept"), r.Header.Get("User-Agent"))
	}
}

func TestIMDSv2TokenPutAndTokenHeadersPassThrough(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
			_, _ = io.WriteString(w, "tok-123")
			return
		}
		_, _ = io.WriteString(w, "i-1")
	})
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	base := running(t, p)

	resp, tok := do(t, http.MethodPut, base+TokenPath, http.Header{"X-aws-ec2-metadata-token-ttl-seconds": {"21600"}}, strings.NewReader("ignored body"))
	if resp.StatusCode != http.StatusOK || tok != "tok-123" || resp.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "21600" {
		t.Fatalf("PUT token: %d %q ttl=%q, want 200 tok-123 21600", resp.StatusCode, tok, resp.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	}
	resp, _ = do(t, http.MethodGet, base+"/latest/meta-data/instance-id", http.Header{"X-aws-ec2-metadata-token": {tok}}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with token: %d", resp.StatusCode)
	}
	reqs := up.requests()
	if reqs[0].Method != http.MethodPut || reqs[0].Path != TokenPath || reqs[0].Body != "ignored body" ||
		reqs[0].Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "21600" {
		t.Errorf("upstream PUT: %s %s body %q ttl %q", reqs[0].Method, reqs[0].Path, reqs[0].Body, reqs[0].Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
	}
	if reqs[1].Header.Get("X-Aws-Ec2-Metadata-Token") != "tok-123" {
		t.Errorf("upstream GET token header %q, want tok-123", reqs[1].Header.Get("X-Aws-Ec2-Metadata-Token"))
	}
}

func TestUnknownSourceGets404AndIsLogged(t *testing.T) {
	up := newUpstream(t, nil)
	var logs syncBuffer
	p := newProxy(t, Options{
		Upstream: up.url(t, ""),
		Lookup:   lookupOf(nil),
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	base := running(t, p)
	resp, body := do(t, http.MethodGet, base+"/latest/meta-data/instance-id", nil, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "127.0.0.1") || len(body) > 200 {
		t.Errorf("unknown source: %d %q, want 404 with a short body naming the address", resp.StatusCode, body)
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests from an unknown source, want 0", n)
	}
	if l := logs.String(); !strings.Contains(l, "unknown source") || !strings.Contains(l, "source=127.0.0.1") {
		t.Errorf("log does not record the unknown source:\n%s", l)
	}
}

func TestOnlyGetHeadAndTokenPutAreAllowed(t *testing.T) {
	up := newUpstream(t, nil)
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	base := running(t, p)
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/latest/meta-data/", "GET, HEAD"},
		{http.MethodDelete, "/latest/meta-data/instance-id", "GET, HEAD"},
		{http.MethodPatch, "/openstack/latest/meta_data.json", "GET, HEAD"},
		{http.MethodPut, "/latest/user-data", "GET, HEAD"},
		{http.MethodOptions, "/", "GET, HEAD"},
		{http.MethodPost, TokenPath, "GET, HEAD, PUT"},
	} {
		resp, _ := do(t, c.method, base+c.path, nil, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow=%q, want 405 Allow=%q", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), c.allow)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Fatalf("upstream saw %d refused requests, want 0", n)
	}
	resp, body := do(t, http.MethodHead, base+"/latest/meta-data/instance-id", nil, nil)
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD: %d %q, want 200 and no body", resp.StatusCode, body)
	}
	if r := up.requests(); len(r) != 1 || r[0].Method != http.MethodHead {
		t.Errorf("upstream saw %+v, want one HEAD", r)
	}
}

func TestPathsThatCouldLeaveTheBaseAreRefused(t *testing.T) {
	up := newUpstream(t, nil)
	p := newProxy(t, Options{Upstream: up.url(t, "/v1/metadata")})
	for _, target := range []string{
		"/latest/../../v1/iam/users",
		"/..",
		"/latest/%2e%2e/%2e%2e/v1/iam",
		"/latest/..%2f..%2fv1",
		"/./latest",
		"//latest",
		"/latest//meta-data",
		"/latest/meta-data/%5c..",
		"/latest/%00",
	} {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		p.ServeHTTP(w, req)
		if w.Code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", target, w.Code)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream saw %d requests with bad paths: %+v", n, up.requests())
	}
}

func TestUpstreamDownGives502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := url.Parse("http://" + ln.Addr().String())
	_ = ln.Close() // nothing listens there any more
	p := newProxy(t, Options{Upstream: dead})
	base := running(t, p)
	resp, body := do(t, http.MethodGet, base+"/latest/meta-data/", nil, nil)
	if resp.StatusCode != http.StatusBadGateway || body != "metadata: upstream unavailable\n" {
		t.Errorf("upstream down: %d %q, want 502 with a short body", resp.StatusCode, body)
	}
}

func TestSlowUpstreamIsCutOffAtTheTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	p := newProxy(t, Options{Upstream: up.url(t, ""), Limits: Limits{UpstreamTimeout: 200 * time.Millisecond}})
	base := running(t, p)
	start := time.Now()
	resp, body := do(t, http.MethodGet, base+"/latest/meta-data/", nil, nil)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "timed out") {
		t.Errorf("slow upstream: %d %q, want 504", resp.StatusCode, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("answer took %v with a 200ms upstream timeout", took)
	}
}

func TestAnswerIsStreamedAsItArrives(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	base := running(t, p)

	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/latest/user-data")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line := make(chan string, 1)
	go func() {
		s, _ := br.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s != "first\n" {
			t.Fatalf("first line %q, want %q", s, "first\n")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first chunk not delivered while the upstream was still answering: the proxy buffers")
	}
	unblock()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v; want %q", rest, err, "second\n")
	}
}

func TestRequestBodyIsLimited(t *testing.T) {
	up := newUpstream(t, nil)
	p := newProxy(t, Options{Upstream: up.url(t, ""), Limits: Limits{MaxRequestBody: 1024}})
	base := running(t, p)
	big := strings.Repeat("x", 1025)
	if resp, _ := do(t, http.MethodPut, base+TokenPath, nil, strings.NewReader(big)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT with Content-Length 1025: %d, want 413", resp.StatusCode)
	}
	// Without a length (chunked) the limit holds while reading.
	if resp, _ := do(t, http.MethodPut, base+TokenPath, nil, io.MultiReader(strings.NewReader(big))); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked PUT of 1025 bytes: %d, want 413", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodPut, base+TokenPath, nil, strings.NewReader(big[:1024])); resp.StatusCode != http.StatusOK {
		t.Errorf("PUT of exactly the limit: %d, want 200", resp.StatusCode)
	}
	if n := len(up.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want only the one within the limit", n)
	}
}

// countingTransport answers every request itself, counting them.
type countingTransport struct {
	mu sync.Mutex
	n  int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

func (c *countingTransport) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestRateLimitIsPerSource(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tr := &countingTransport{}
	a, b := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")
	p := newProxy(t, Options{
		Upstream:  &url.URL{Scheme: "http", Host: "upstream.invalid"},
		Transport: tr,
		Lookup:    lookupOf(map[netip.Addr]Instance{a: vm1, b: vm1}),
		Now:       func() time.Time { return now },
		Limits:    Limits{Rate: 20, Burst: 50},
	})
	get := func(src netip.Addr) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/latest/meta-data/", nil)
		req.RemoteAddr = netip.AddrPortFrom(src, 40000).String()
		w := httptest.NewRecorder()
		p.ServeHTTP(w, req)
		return w
	}
	for i := range 50 {
		if w := get(a); w.Code != http.StatusOK {
			t.Fatalf("request %d of the burst: %d, want 200", i+1, w.Code)
		}
	}
	w := get(a)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("request 51 at once: %d Retry-After=%q, want 429 with Retry-After 1", w.Code, w.Header().Get("Retry-After"))
	}
	if w := get(b); w.Code != http.StatusOK {
		t.Fatalf("another source while the first is limited: %d, want 200", w.Code)
	}
	now = now.Add(time.Second) // 20 tokens regained
	ok := 0
	for range 30 {
		if get(a).Code == http.StatusOK {
			ok++
		}
	}
	if ok != 20 {
		t.Errorf("one second later %d requests passed, want 20 (the rate)", ok)
	}
	if n := tr.count(); n != 50+1+20 {
		t.Errorf("upstream got %d requests, want %d: limited ones must not reach it", n, 50+1+20)
	}
}

func TestRunStopsCleanlyAndRunsOnce(t *testing.T) {
	up := newUpstream(t, nil)
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not listening within 5s")
	}
	addr := p.Addr().String()
	if err := p.Run(ctx); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run: %v, want ErrAlreadyRun", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("still accepting on %s after Run returned", addr)
	}
}

func TestListenFailureIsReturned(t *testing.T) {
	boom := errors.New("no namespace")
	p := newProxy(t, Options{
		Upstream: &url.URL{Scheme: "http", Host: "upstream.invalid"},
		Listen:   func() (net.Listener, error) { return nil, boom },
	})
	if err := p.Run(context.Background()); !errors.Is(err, boom) || !strings.Contains(err.Error(), "net-1") {
		t.Errorf("Run with a failing opener: %v, want it wrapped, naming the network", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := func() Options {
		return Options{
			Network:  "net-1",
			Listen:   loopbackListen,
			Lookup:   lookupOf(nil),
			Upstream: &url.URL{Scheme: "https", Host: "api:8443", Path: "/v1/metadata"},
		}
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for _, c := range []struct {
		name, want string
		mod        func(*Options)
	}{
		{"no network", "Network", func(o *Options) { o.Network = "" }},
		{"no opener", "Listen", func(o *Options) { o.Listen = nil }},
		{"no lookup", "Lookup", func(o *Options) { o.Lookup = nil }},
		{"no upstream", "Upstream is nil", func(o *Options) { o.Upstream = nil }},
		{"ftp upstream", "scheme", func(o *Options) { o.Upstream.Scheme = "ftp" }},
		{"no host", "no host", func(o *Options) { o.Upstream.Host = "" }},
		{"user info", "user info", func(o *Options) { o.Upstream.User = url.UserPassword("a", "b") }},
		{"query", "query", func(o *Options) { o.Upstream.RawQuery = "x=1" }},
		{"negative rate", "Rate", func(o *Options) { o.Limits.Rate = -1 }},
		{"negative burst", "Burst", func(o *Options) { o.Limits.Burst = -1 }},
		{"negative body", "MaxRequestBody", func(o *Options) { o.Limits.MaxRequestBody = -1 }},
		{"negative timeout", "UpstreamTimeout", func(o *Options) { o.Limits.UpstreamTimeout = -time.Second }},
	} {
		o := good()
		c.mod(&o)
		_, err := New(o)
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalidOptions naming %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "b@") {
			t.Errorf("%s: error shows the password: %v", c.name, err)
		}
	}
}

func TestAnswerCutOffUpstreamIsCutOffForTheWorkload(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream drops the connection mid-answer
	})
	p := newProxy(t, Options{Upstream: up.url(t, "")})
	base := running(t, p)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/latest/user-data")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read %q and a clean end, want an error: a cut-off answer must not look complete", b)
	}
}
