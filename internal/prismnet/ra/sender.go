package ra

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/time/rate"
)

// Conn is the socket the sender uses; *ndp.Conn, as Listen returns it,
// is one.
type Conn interface {
	ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error)
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	Close() error
}

var _ Conn = (*ndp.Conn)(nil)

// Options are the sender's fixed settings; the announced contents are
// set with Set.
type Options struct {
	// Open returns the socket on the service namespace's interface and
	// that interface's MAC (announced as the source link-layer address).
	// The agent passes a func calling Listen inside the namespace. Run
	// calls it again, with backoff, while it fails (the interface's
	// link-local address is unusable until duplicate address detection
	// ends) and after the socket fails.
	Open func() (Conn, net.HardwareAddr, error)
	// Logger receives the sender's logs; nil discards them.
	Logger *slog.Logger
	// Interval is the longest time between unsolicited advertisements;
	// each wait is drawn between 3/4 of it and all of it (RFC 4861 6.2.4,
	// so senders do not synchronize). Default 30s.
	Interval time.Duration
	// ValidLifetime and PreferredLifetime are announced for each prefix.
	// Long, so workloads keep their addresses while an agent restarts.
	// Defaults 24h and 4h.
	ValidLifetime, PreferredLifetime time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Timing of RFC 4861 10 for answers to solicitations.
const (
	// minDelayBetweenRAs: an answer to all-nodes sooner than this after
	// the last one is skipped; that one already reached every host.
	minDelayBetweenRAs = 3 * time.Second
	// Solicited unicast answers are limited so a workload flooding
	// solicitations cannot make the sender flood back.
	solicitedPerSecond = 10
	solicitedBurst     = 10
)

// Sender advertises one interface's prefixes. Its methods are safe for
// concurrent use.
type Sender struct {
	opts  Options
	log   *slog.Logger
	limit *rate.Limiter

	mu         sync.Mutex
	cfg        Config
	deprecated map[netip.Prefix]time.Time // removed prefixes -> end of their valid lifetime

	changed chan struct{} // one pending "send now", signalled by Set
}

// New checks opts and returns a sender with an empty configuration (it
// sends nothing until Set gives it a prefix). It opens nothing: Run does.
func New(opts Options) (*Sender, error) {
	if opts.Open == nil {
		return nil, fmt.Errorf("%w: no socket opener", ErrConfig)
	}
	if opts.Interval == 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.ValidLifetime == 0 {
		opts.ValidLifetime = 24 * time.Hour
	}
	if opts.PreferredLifetime == 0 {
		opts.PreferredLifetime = 4 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Interval < time.Second {
		return nil, fmt.Errorf("%w: interval %s is shorter than 1s", ErrConfig, opts.Interval)
	}
	if opts.PreferredLifetime > opts.ValidLifetime {
		return nil, fmt.Errorf("%w: preferred lifetime %s is longer than the valid lifetime %s", ErrConfig, opts.PreferredLifetime, opts.ValidLifetime)
	}
	if opts.ValidLifetime < opts.Interval {
		return nil, fmt.Errorf("%w: valid lifetime %s is shorter than the interval %s: addresses would expire between advertisements", ErrConfig, opts.ValidLifetime, opts.Interval)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{
		opts:       opts,
		log:        log,
		limit:      rate.NewLimiter(solicitedPerSecond, solicitedBurst),
		deprecated: map[netip.Prefix]time.Time{},
		changed:    make(chan struct{}, 1),
	}, nil
}

func (s *Sender) lifetimes() lifetimes {
	// RFC 8106 5.1: DNS lifetimes of at least three intervals, so one
	// lost advertisement does not drop the servers.
	return lifetimes{valid: s.opts.ValidLifetime, preferred: s.opts.PreferredLifetime, dns: 3 * s.opts.Interval}
}

// Set replaces what the sender announces and makes it advertise at once.
// Prefixes dropped from the configuration are announced as deprecated
// until their valid lifetime ends. On error the previous configuration
// stays.
func (s *Sender) Set(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg = cfg.clone()
	now := s.opts.Now()
	probe := build(cfg, nil, now, net.HardwareAddr{0, 0, 0, 0, 0, 0}, s.lifetimes())
	b, err := ndp.MarshalMessage(probe)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if len(b) > maxRA-32*4 {
		// Room is kept for a few deprecated prefixes besides.
		return fmt.Errorf("%w: the advertisement takes %d bytes, more than the %d that fit in a minimum-MTU packet (fewer prefixes, DNS servers or search domains)", ErrConfig, len(b), maxRA-32*4)
	}

	s.mu.Lock()
	keep := map[netip.Prefix]bool{}
	for _, p := range cfg.Prefixes {
		keep[p] = true
		delete(s.deprecated, p)
	}
	for _, p := range s.cfg.Prefixes {
		if !keep[p] {
			s.deprecated[p] = now.Add(s.opts.ValidLifetime)
		}
	}
	for p, until := range s.deprecated {
		if !until.After(now) {
			delete(s.deprecated, p)
		}
	}
	s.cfg = cfg
	s.mu.Unlock()

	select {
	case s.changed <- struct{}{}:
	default: // a send is already pending; it will carry this config
	}
	return nil
}

// advert is the current advertisement, or nil when there is nothing to
// announce.
func (s *Sender) advert(mac net.HardwareAddr) *ndp.RouterAdvertisement {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	live := len(s.cfg.Prefixes) > 0
	for _, until := range s.deprecated {
		if until.After(now) {
			live = true
		}
	}
	if !live {
		return nil
	}
	return build(s.cfg, s.deprecated, now, mac, s.lifetimes())
}

// Run advertises until ctx ends, then closes its socket and returns nil.
// It (re)opens the socket with backoff while that fails.
func (s *Sender) Run(ctx context.Context) error {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		conn, mac, err := s.opts.Open()
		if err == nil {
			backoff = minBackoff
			err = s.serve(ctx, conn, mac)
			if ctx.Err() != nil {
				s.log.Info("ra sender stopped")
				return nil
			}
			s.log.Warn("ra socket failed, reopening", "err", err)
		} else if backoff < maxBackoff {
			// Expected for a second or two after the interface comes up,
			// while its link-local address is tentative.
			s.log.Debug("ra socket not open, retrying", "err", err, "backoff", backoff)
		} else {
			s.log.Warn("ra socket not open, retrying", "err", err, "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.log.Info("ra sender stopped")
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// serve runs one socket until ctx ends or the socket fails; it closes the
// socket before returning.
func (s *Sender) serve(ctx context.Context, conn Conn, mac net.HardwareAddr) error {
	ctx, cancel := context.WithCancel(ctx)
	solicited := make(chan netip.Addr, solicitedBurst)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	// Closing the socket is what unblocks the reader when ctx ends.
	wg.Go(func() {
		<-ctx.Done()
		conn.Close()
	})
	wg.Go(func() { readErr <- s.read(ctx, conn, solicited) })
	defer wg.Wait()
	defer cancel()

	s.log.Info("ra sender started", "mac", mac.String())
	var lastMulticast time.Time
	send := func(to netip.Addr, reason string) error {
		m := s.advert(mac)
		if m == nil {
			return nil
		}
		if err := conn.WriteTo(m, nil, to); err != nil {
			return fmt.Errorf("ra: send to %s: %w", to, err)
		}
		if to == allNodes {
			lastMulticast = s.opts.Now()
		}
		s.log.Debug("router advertisement sent", "reason", reason, "to", to.String())
		return nil
	}
	// The start advertisement carries any change made before it.
	select {
	case <-s.changed:
	default:
	}
	if err := send(allNodes, "start"); err != nil {
		return err
	}
	timer := time.NewTimer(s.wait())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case <-s.changed:
			if err := send(allNodes, "change"); err != nil {
				return err
			}
			timer.Reset(s.wait())
		case <-timer.C:
			if err := send(allNodes, "interval"); err != nil {
				return err
			}
			timer.Reset(s.wait())
		case to := <-solicited:
			if to == allNodes && s.opts.Now().Sub(lastMulticast) < minDelayBetweenRAs {
				s.log.Debug("solicitation answered by a recent advertisement")
				continue
			}
			// A failed unicast answer is that host's problem, not the
			// socket's: log it and go on.
			if err := send(to, "solicited"); err != nil && to != allNodes {
				s.log.Warn("solicited advertisement not sent", "to", to.String(), "err", err)
			} else if err != nil {
				return err
			}
		}
	}
}

// wait is the time to the next unsolicited advertisement.
func (s *Sender) wait() time.Duration {
	i := s.opts.Interval
	return i*3/4 + rand.N(i/4+1)
}

// read passes valid solicitations to solicited until the socket fails.
func (s *Sender) read(ctx context.Context, conn Conn, solicited chan<- netip.Addr) error {
	b := make([]byte, 1500)
	for {
		n, cm, src, err := conn.ReadRaw(b)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ra: read: %w", err)
		}
		hop := -1
		if cm != nil {
			hop = cm.HopLimit
		}
		v := decideRS(b[:n], hop, src)
		if !v.ok {
			s.log.Debug("icmpv6 message ignored", "why", v.why, "from", src.String())
			continue
		}
		if !s.limit.Allow() {
			s.log.Debug("solicitation dropped by the rate limit", "from", src.String())
			continue
		}
		select {
		case solicited <- v.to:
		default: // answers are queued already; the periodic one follows
		}
	}
}

// Listen opens the sender's socket on ifname: ICMPv6 bound to the
// interface's link-local address (the source RFC 4861 requires), hop limit
// 255, member of all-routers (ff02::2) to hear solicitations, filtered to
// Router Solicitations, with the received hop limit reported. It must be
// called from a thread inside the service namespace; it fails while the
// link-local address is still tentative.
func Listen(ifname string) (Conn, net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("ra: interface %s: %w", ifname, err)
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, nil, fmt.Errorf("ra: listen on %s: %w", ifname, err)
	}
	fail := func(what string, err error) (Conn, net.HardwareAddr, error) {
		c.Close()
		return nil, nil, fmt.Errorf("ra: %s on %s: %w", what, ifname, err)
	}
	if err := c.JoinGroup(allRouters); err != nil {
		return fail("join ff02::2", err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		return fail("set ICMPv6 filter", err)
	}
	if err := c.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		return fail("ask for hop limits", err)
	}
	return c, ifi.HardwareAddr, nil
}
