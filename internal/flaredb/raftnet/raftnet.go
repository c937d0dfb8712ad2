// Package raftnet is the TCP stream layer under flaredb's Raft transport
// (raft.NewNetworkTransportWithConfig). Every connection starts with a
// handshake that names the cluster: a member refuses connections from, and
// refuses to talk to, members of another cluster, so a misconfigured node can
// never vote in or replicate into the wrong cluster.
//
// It owns the listener, the handshake and the goroutines that run it. It must
// not interpret Raft messages or hold process-wide state.
//
// With TLS (Option TLS), every connection is first a TLS 1.3 session in
// which both sides present certificates signed by the cluster CA (the
// server requires and verifies the client's; the client verifies the
// server's and that it names the address dialled); the cluster handshake
// then runs inside it. A peer without such a certificate never reaches the
// cluster handshake.
//
// Handshake (client first, then server):
//
//	client: "FDBR" | version 1 | uvarint len | cluster ID | uvarint len | sender member ID
//	server: status byte (0 ok, 1 wrong cluster, 2 bad handshake) | uvarint len | message
package raftnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Sentinel errors.
var (
	ErrWrongCluster = errors.New("raftnet: peer belongs to another cluster")
	ErrHandshake    = errors.New("raftnet: bad handshake")
	ErrClosed       = errors.New("raftnet: listener closed")
)

var magic = []byte("FDBR")

const (
	version        byte = 1
	statusOK       byte = 0
	statusWrong    byte = 1
	statusBad      byte = 2
	maxIDLen            = 256
	handshakeLimit      = 10 * time.Second
	// acceptQueue bounds handshaken connections waiting for Accept.
	acceptQueue = 16
)

// Layer is a raft.StreamLayer over TCP with the cluster handshake.
type Layer struct {
	ln        net.Listener
	advertise net.Addr
	clusterID string
	localID   string
	log       *slog.Logger
	timeout   time.Duration

	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	// serverTLS and clientTLS are set with Option TLS.
	serverTLS, clientTLS *tls.Config

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections mid-handshake, closed on Close
	refused uint64
}

// Option configures a Layer.
type Option func(*Layer)

// TLS runs every connection over TLS: accepted ones with server (which
// should require and verify client certificates), dialled ones with client
// (its ServerName is set to the host of each address dialled). Both must be
// set.
func TLS(server, client *tls.Config) Option {
	return func(l *Layer) { l.serverTLS, l.clientTLS = server, client }
}

var _ raft.StreamLayer = (*Layer)(nil)

// New wraps ln (already listening). advertise is the address peers use to
// reach this member; nil means ln's address. It starts the goroutine that
// accepts and handshakes connections; Close stops it and waits.
func New(ln net.Listener, advertise net.Addr, clusterID, localID string, log *slog.Logger, opts ...Option) (*Layer, error) {
	if clusterID == "" {
		return nil, errors.New("raftnet: empty cluster ID")
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if ta, ok := advertise.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return nil, fmt.Errorf("raftnet: advertise address %s is not routable", advertise)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Layer{
		ln: ln, advertise: advertise, clusterID: clusterID, localID: localID, log: log,
		timeout: handshakeLimit,
		conns:   make(chan net.Conn, acceptQueue),
		closed:  make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	for _, o := range opts {
		o(l)
	}
	if (l.serverTLS == nil) != (l.clientTLS == nil) {
		return nil, errors.New("raftnet: TLS needs both a server and a client configuration")
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Refused counts connections refused by the handshake.
func (l *Layer) Refused() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}

func (l *Layer) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.log.Warn("raft accept failed", "err", err)
			select {
			case <-l.closed:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.mu.Lock()
		select {
		case <-l.closed:
			l.mu.Unlock()
			c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serverHandshake(c)
	}
}

func (l *Layer) serverHandshake(raw net.Conn) {
	defer l.wg.Done()
	c, ok := l.serverTLSHandshake(raw)
	if ok {
		ok = l.checkClient(c)
	}
	l.mu.Lock()
	delete(l.pending, raw)
	l.mu.Unlock()
	if !ok {
		c.Close()
		return
	}
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// serverTLSHandshake runs the TLS handshake on an accepted connection when
// the layer has TLS; a client without a certificate from the CA is refused
// here.
func (l *Layer) serverTLSHandshake(raw net.Conn) (net.Conn, bool) {
	if l.serverTLS == nil {
		return raw, true
	}
	_ = raw.SetDeadline(time.Now().Add(l.timeout))
	tc := tls.Server(raw, l.serverTLS)
	if err := tc.Handshake(); err != nil {
		l.mu.Lock()
		l.refused++
		l.mu.Unlock()
		l.log.Warn("raft connection refused: TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		return tc, false
	}
	return tc, true
}

// checkClient reads the client's hello and answers it.
func (l *Layer) checkClient(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(l.timeout))
	br := bufio.NewReaderSize(c, 512)
	cluster, peer, err := readHello(br)
	status, msg := statusOK, ""
	switch {
	case err != nil:
		status, msg = statusBad, err.Error()
	case cluster != l.clusterID:
		status, msg = statusWrong, fmt.Sprintf("member %q is in cluster %q, not %q", l.localID, l.clusterID, cluster)
	}
	if br.Buffered() > 0 && status == statusOK {
		// The client must wait for our answer before sending Raft traffic.
		status, msg = statusBad, "data sent before the handshake answer"
	}
	reply := []byte{status}
	reply = binary.AppendUvarint(reply, uint64(len(msg)))
	reply = append(reply, msg...)
	_, werr := c.Write(reply)
	if status != statusOK {
		l.mu.Lock()
		l.refused++
		l.mu.Unlock()
		l.log.Warn("raft connection refused", "remote", c.RemoteAddr().String(), "peer", peer, "reason", msg)
		return false
	}
	if werr != nil {
		return false
	}
	_ = c.SetDeadline(time.Time{})
	return true
}

func readHello(r *bufio.Reader) (cluster, peer string, err error) {
	var m [4]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return "", "", fmt.Errorf("reading magic: %w", err)
	}
	if string(m[:]) != string(magic) {
		return "", "", fmt.Errorf("not a flaredb raft connection (magic %q)", m[:])
	}
	v, err := r.ReadByte()
	if err != nil {
		return "", "", fmt.Errorf("reading version: %w", err)
	}
	if v != version {
		return "", "", fmt.Errorf("handshake version %d, want %d", v, version)
	}
	if cluster, err = readString(r); err != nil {
		return "", "", fmt.Errorf("reading cluster ID: %w", err)
	}
	if peer, err = readString(r); err != nil {
		return "", "", fmt.Errorf("reading member ID: %w", err)
	}
	return cluster, peer, nil
}

func readString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if n > maxIDLen {
		return "", fmt.Errorf("length %d exceeds %d", n, maxIDLen)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// Accept returns the next handshaken connection (net.Listener).
func (l *Layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, ErrClosed
	}
}

// Close stops accepting, closes connections mid-handshake and queued ones,
// and waits for the handshake goroutines (net.Listener).
func (l *Layer) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		err = l.ln.Close()
		l.wg.Wait()
		for {
			select {
			case c := <-l.conns:
				c.Close()
				continue
			default:
			}
			break
		}
	})
	return err
}

// Addr is the advertised address (net.Listener).
func (l *Layer) Addr() net.Addr { return l.advertise }

// Dial connects to a peer and runs the handshake (raft.StreamLayer). A peer
// in another cluster yields an error wrapping ErrWrongCluster.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	if l.clientTLS != nil {
		if c, err = l.clientTLSHandshake(c, string(address), timeout); err != nil {
			return nil, fmt.Errorf("raftnet: dial %s: %w", address, err)
		}
	}
	if err := l.clientHandshake(c, timeout); err != nil {
		c.Close()
		return nil, fmt.Errorf("raftnet: dial %s: %w", address, err)
	}
	return c, nil
}

// clientTLSHandshake wraps a dialled connection in TLS, verifying that the
// server's certificate names the host of address. In TLS 1.3 the server
// judges our certificate after this returns; a refusal then surfaces as
// the TLS alert when reading its answer to the cluster handshake.
func (l *Layer) clientTLSHandshake(raw net.Conn, address string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > l.timeout {
		timeout = l.timeout
	}
	cfg := l.clientTLS.Clone()
	if host, _, err := net.SplitHostPort(address); err == nil {
		cfg.ServerName = host
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
	}
	return tc, nil
}

func (l *Layer) clientHandshake(c net.Conn, timeout time.Duration) error {
	if timeout <= 0 || timeout > l.timeout {
		timeout = l.timeout
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	hello := append([]byte(nil), magic...)
	hello = append(hello, version)
	hello = binary.AppendUvarint(hello, uint64(len(l.clusterID)))
	hello = append(hello, l.clusterID...)
	hello = binary.AppendUvarint(hello, uint64(len(l.localID)))
	hello = append(hello, l.localID...)
	if _, err := c.Write(hello); err != nil {
		return fmt.Errorf("sending handshake: %w", err)
	}
	// Read the answer byte by byte so no Raft bytes are consumed.
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		return fmt.Errorf("%w: no answer: %v", ErrHandshake, err)
	}
	status := one[0]
	var n uint64
	for shift := 0; ; shift += 7 {
		if _, err := io.ReadFull(c, one); err != nil {
			return fmt.Errorf("%w: answer truncated: %v", ErrHandshake, err)
		}
		n |= uint64(one[0]&0x7f) << shift
		if one[0] < 0x80 {
			break
		}
		if shift > 21 {
			return fmt.Errorf("%w: answer length overflows", ErrHandshake)
		}
	}
	if n > 4096 {
		return fmt.Errorf("%w: answer of %d bytes", ErrHandshake, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c, msg); err != nil {
		return fmt.Errorf("%w: answer truncated: %v", ErrHandshake, err)
	}
	switch status {
	case statusOK:
		_ = c.SetDeadline(time.Time{})
		return nil
	case statusWrong:
		return fmt.Errorf("%w: %s", ErrWrongCluster, msg)
	default:
		return fmt.Errorf("%w: %s", ErrHandshake, msg)
	}
}
