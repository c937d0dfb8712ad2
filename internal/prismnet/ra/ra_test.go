package ra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"golang.org/x/net/ipv6"
)

var (
	prefixA = netip.MustParsePrefix("fd00:20::/64")
	prefixB = netip.MustParsePrefix("fd00:21::/64")
	srvMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	dns6    = netip.MustParseAddr("fd00:20::53")
)

func testConfig() Config {
	return Config{Prefixes: []netip.Prefix{prefixA}, MTU: 1400, DNS: []netip.Addr{dns6}, DomainSearch: []string{"tenant.internal"}}
}

func TestAdvertisementCarriesPrefixesMTUSourceAddressAndDNSButNoRouterLifetime(t *testing.T) {
	lt := lifetimes{valid: 24 * time.Hour, preferred: 4 * time.Hour, dns: 90 * time.Second}
	cfg := testConfig()
	cfg.Prefixes = append(cfg.Prefixes, prefixB)
	m := build(cfg, nil, time.Now(), srvMAC, lt)
	// Through the wire form, as a client sees it.
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	ra := parsed.(*ndp.RouterAdvertisement)
	if ra.RouterLifetime != 0 {
		t.Errorf("router lifetime %s: the service namespace is not a router", ra.RouterLifetime)
	}
	var got []string
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.LinkLayerAddress:
			got = append(got, fmt.Sprintf("lla %v %s", o.Direction == ndp.Source, o.Addr))
		case *ndp.MTU:
			got = append(got, fmt.Sprintf("mtu %d", o.MTU))
		case *ndp.PrefixInformation:
			got = append(got, fmt.Sprintf("prefix %s/%d onlink=%v auto=%v valid=%s preferred=%s", o.Prefix, o.PrefixLength, o.OnLink, o.AutonomousAddressConfiguration, o.ValidLifetime, o.PreferredLifetime))
		case *ndp.RecursiveDNSServer:
			got = append(got, fmt.Sprintf("rdnss %v %s", o.Servers, o.Lifetime))
		case *ndp.DNSSearchList:
			got = append(got, fmt.Sprintf("dnssl %v %s", o.DomainNames, o.Lifetime))
		default:
			got = append(got, fmt.Sprintf("other %T", o))
		}
	}
	want := []string{
		"lla true 02:00:00:00:00:02",
		"mtu 1400",
		"prefix fd00:20::/64 onlink=true auto=true valid=24h0m0s preferred=4h0m0s",
		"prefix fd00:21::/64 onlink=true auto=true valid=24h0m0s preferred=4h0m0s",
		"rdnss [fd00:20::53] 1m30s",
		"dnssl [tenant.internal] 1m30s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("options:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSetRefusesBadConfigsNamingTheProblem(t *testing.T) {
	s := newTestSender(t, nil)
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"IPv4 prefix", Config{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}, "not an IPv6 prefix"},
		{"not a /64", Config{Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00::/48")}}, "not a /64"},
		{"host bits", Config{Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00::1/64")}}, "bits set past /64"},
		{"link-local", Config{Prefixes: []netip.Prefix{netip.MustParsePrefix("fe80::/64")}}, "link-local"},
		{"twice", Config{Prefixes: []netip.Prefix{prefixA, prefixA}}, "appears twice"},
		{"small MTU", Config{Prefixes: []netip.Prefix{prefixA}, MTU: 1200}, "MTU 1200"},
		{"IPv4 DNS", Config{Prefixes: []netip.Prefix{prefixA}, DNS: []netip.Addr{netip.MustParseAddr("10.0.0.53")}}, "DNS server 10.0.0.53"},
		{"bad search", Config{Prefixes: []netip.Prefix{prefixA}, DomainSearch: []string{"a_b"}}, "search domain"},
		{"too big", func() Config {
			c := Config{}
			for i := range 40 {
				c.Prefixes = append(c.Prefixes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(i)}), 64))
			}
			return c
		}(), "minimum-MTU packet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := s.Set(c.cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Set = %v, want ErrConfig naming %q", err, c.want)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	open := func() (Conn, net.HardwareAddr, error) { return nil, nil, errors.New("unused") }
	for _, o := range []Options{
		{},
		{Open: open, Interval: time.Millisecond},
		{Open: open, ValidLifetime: time.Hour, PreferredLifetime: 2 * time.Hour},
		{Open: open, Interval: time.Hour, ValidLifetime: time.Minute, PreferredLifetime: time.Minute},
	} {
		if _, err := New(o); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", o, err)
		}
	}
}

func TestARemovedPrefixIsAnnouncedDeprecatedUntilItsValidLifetimeEnds(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newTestSender(t, clock)
	if err := s.Set(Config{Prefixes: []netip.Prefix{prefixA, prefixB}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(Config{Prefixes: []netip.Prefix{prefixB}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	pi := prefixes(s.advert(srvMAC))
	if got, want := pi[prefixA], "valid=23h0m0s preferred=0s"; got != want {
		t.Errorf("removed prefix announced %q, want %q", got, want)
	}
	if got, want := pi[prefixB], "valid=24h0m0s preferred=4h0m0s"; got != want {
		t.Errorf("kept prefix announced %q, want %q", got, want)
	}
	// Re-adding it makes it live again.
	if err := s.Set(Config{Prefixes: []netip.Prefix{prefixA, prefixB}}); err != nil {
		t.Fatal(err)
	}
	if got := prefixes(s.advert(srvMAC))[prefixA]; got != "valid=24h0m0s preferred=4h0m0s" {
		t.Errorf("re-added prefix announced %q", got)
	}
	// Removing everything: only the deprecated prefixes, until they end.
	if err := s.Set(Config{}); err != nil {
		t.Fatal(err)
	}
	if n := len(prefixes(s.advert(srvMAC))); n != 2 {
		t.Errorf("after removing all: %d prefixes announced, want 2 deprecated", n)
	}
	clock.Advance(24 * time.Hour)
	if m := s.advert(srvMAC); m != nil {
		t.Errorf("after every lifetime ended an advertisement is still sent: %v", prefixes(m))
	}
}

func prefixes(m *ndp.RouterAdvertisement) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	if m == nil {
		return out
	}
	for _, o := range m.Options {
		if pi, ok := o.(*ndp.PrefixInformation); ok {
			out[netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength))] = fmt.Sprintf("valid=%s preferred=%s", pi.ValidLifetime, pi.PreferredLifetime)
		}
	}
	return out
}

func newTestSender(t *testing.T, clock *testkit.Clock) *Sender {
	t.Helper()
	o := Options{Open: func() (Conn, net.HardwareAddr, error) { return nil, nil, errors.New("unused") }}
	if clock != nil {
		o.Now = clock.Now
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rsBytes(t testing.TB, opts ...ndp.Option) []byte {
	b, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRouterSolicitationValidation(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1%cli0")
	withLLA := rsBytes(t, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srvMAC})
	badCode := rsBytes(t)
	badCode[1] = 1
	for _, c := range []struct {
		name string
		b    []byte
		hop  int
		src  netip.Addr
		ok   bool
		to   netip.Addr
	}{
		{"from a link-local address", withLLA, 255, ll, true, ll.WithZone("")},
		{"from the unspecified address", rsBytes(t), 255, netip.IPv6Unspecified(), true, allNodes},
		{"unspecified with a link-layer option", withLLA, 255, netip.IPv6Unspecified(), false, netip.Addr{}},
		{"forwarded (hop limit 254)", withLLA, 254, ll, false, netip.Addr{}},
		{"hop limit unknown", withLLA, -1, ll, false, netip.Addr{}},
		{"code 1", badCode, 255, ll, false, netip.Addr{}},
		{"truncated", withLLA[:6], 255, ll, false, netip.Addr{}},
		{"multicast source", withLLA, 255, allNodes, false, netip.Addr{}},
		{"an advertisement", func() []byte {
			b, _ := ndp.MarshalMessage(&ndp.RouterAdvertisement{})
			return b
		}(), 255, ll, false, netip.Addr{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := decideRS(c.b, c.hop, c.src)
			if v.ok != c.ok || v.to != c.to {
				t.Fatalf("decideRS = %+v, want ok=%v to=%s", v, c.ok, c.to)
			}
		})
	}
}

// fakeConn records what the sender writes and feeds it solicitations.
type fakeConn struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	sent   []netip.Addr
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte, 4), closed: make(chan struct{})}
}

func (f *fakeConn) ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	select {
	case m := <-f.in:
		return copy(b, m), &ipv6.ControlMessage{HopLimit: 255}, netip.MustParseAddr("fe80::50%cli0"), nil
	case <-f.closed:
		return 0, nil, netip.Addr{}, net.ErrClosed
	}
}

func (f *fakeConn) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	if _, err := ndp.MarshalMessage(m); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, dst)
	return nil
}

func (f *fakeConn) Close() error { f.once.Do(func() { close(f.closed) }); return nil }

func (f *fakeConn) sentTo() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netip.Addr(nil), f.sent...)
}

func TestSenderAdvertisesAtStartOnChangeAndAnswersSolicitationsUnicast(t *testing.T) {
	conn := newFakeConn()
	opens := 0
	s, err := New(Options{
		Interval: time.Hour, // no periodic advertisement during the test
		Open: func() (Conn, net.HardwareAddr, error) {
			opens++
			if opens == 1 {
				return nil, nil, errors.New("link-local address still tentative")
			}
			return conn, srvMAC, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(testConfig()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = s.Run(ctx) })

	// The start announces to all-nodes (carrying the Set made before Run).
	testkit.Eventually(t, 5*time.Second, "the start advertisement after a failed open", func() bool {
		return len(conn.sentTo()) >= 1
	})
	conn.in <- rsBytes(t, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srvMAC})
	testkit.Eventually(t, 5*time.Second, "an answer to fe80::50", func() bool {
		for _, a := range conn.sentTo() {
			if a == netip.MustParseAddr("fe80::50") {
				return true
			}
		}
		return false
	})
	before := len(conn.sentTo())
	if err := s.Set(Config{Prefixes: []netip.Prefix{prefixB}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "an advertisement for the change", func() bool {
		sent := conn.sentTo()
		return len(sent) > before && sent[len(sent)-1] == allNodes
	})
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("Run = %v, want nil on cancel", runErr)
	}
	select {
	case <-conn.closed:
	default:
		t.Fatal("Run returned without closing its socket")
	}
}
