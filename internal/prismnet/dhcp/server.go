package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// ErrConfig is wrapped by New's errors for a configuration it refuses.
var ErrConfig = errors.New("dhcp: invalid config")

// Config is what one server needs; the agent builds one per tenant network
// present on the host.
type Config struct {
	// ServerID is the subnet's service address, the address of the
	// service namespace's interface: the server identifier (option 54)
	// and the source of every reply.
	ServerID netip.Addr
	// Open returns the server's socket: UDP port 67, bound to the service
	// namespace's interface (SO_BINDTODEVICE) so broadcasts leave through
	// it, with SO_BROADCAST. The agent calls Listen inside the namespace.
	// Run calls Open once and closes what it returns.
	Open func() (net.PacketConn, error)
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server answers DHCPv4 on one service-namespace interface from the lease
// table it is given. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	leases atomic.Pointer[Table]
}

// New checks cfg and returns a server with an empty table (it answers
// nobody until SetLeases). It opens nothing: Run does.
func New(cfg Config) (*Server, error) {
	if !cfg.ServerID.Is4() || cfg.ServerID.IsUnspecified() {
		return nil, fmt.Errorf("%w: server identifier %q is not an IPv4 address", ErrConfig, cfg.ServerID)
	}
	if cfg.Open == nil {
		return nil, fmt.Errorf("%w: no socket opener", ErrConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("server_id", cfg.ServerID)}
	s.leases.Store(&Table{})
	return s, nil
}

// SetLeases replaces the whole lease table at once; requests already being
// answered finish with the table they started with. On error the previous
// table stays.
func (s *Server) SetLeases(leases []Lease) error {
	t, err := NewTable(leases)
	if err != nil {
		return err
	}
	s.leases.Store(t)
	s.log.Debug("dhcp leases set", "leases", t.Len())
	return nil
}

// Run opens the socket and answers requests until ctx ends, then closes the
// socket and returns nil. It returns an error if the socket cannot be
// opened or fails while reading.
func (s *Server) Run(ctx context.Context) error {
	conn, err := s.cfg.Open()
	if err != nil {
		return fmt.Errorf("dhcp: open socket: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Closing the socket is what unblocks the read below when ctx ends.
	wg.Go(func() {
		<-ctx.Done()
		conn.Close()
	})
	defer wg.Wait()
	defer cancel()

	s.log.Info("dhcp server started", "local", conn.LocalAddr().String())
	buf := make([]byte, 1500)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				s.log.Info("dhcp server stopped")
				return nil
			}
			return fmt.Errorf("dhcp: read: %w", err)
		}
		s.serve(conn, peer, buf[:n])
	}
}

// serve answers one datagram.
func (s *Server) serve(conn net.PacketConn, peer net.Addr, b []byte) {
	d := DecideBytes(s.cfg.ServerID, s.leases.Load(), b)
	log := s.log.With("outcome", string(d.Outcome), "why", d.Why, "peer", peer.String())
	if d.Reply != nil {
		log = log.With("mac", d.Reply.ClientHWAddr.String(), "xid", d.Reply.TransactionID.String())
	}
	if d.Addr.IsValid() {
		log = log.With("addr", d.Addr.String())
	}
	switch d.Outcome {
	case OutcomeNak, OutcomeRelease:
		log.Info("dhcp request")
	case OutcomeDecline:
		log.Warn("dhcp request")
	default:
		log.Debug("dhcp request")
	}
	if d.Reply == nil {
		return
	}
	if _, err := conn.WriteTo(d.Reply.ToBytes(), net.UDPAddrFromAddrPort(d.To)); err != nil {
		log.Warn("dhcp reply not sent", "to", d.To.String(), "err", err)
	}
}

// Listen opens a DHCP server socket on ifname: UDP 0.0.0.0:67, bound to the
// interface, broadcast allowed. It must be called from a thread inside the
// service namespace (a socket keeps the namespace it was created in); the
// caller passes a func doing that as Config.Open.
func Listen(ifname string) (net.PacketConn, error) {
	conn, err := server4.NewIPv4UDPConn(ifname, &net.UDPAddr{Port: ServerPort})
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s: %w", ifname, err)
	}
	return conn, nil
}
