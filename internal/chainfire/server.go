package chainfire

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/chainfire/client"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// Server is one chainfire member as a component.
type Server struct {
	component.Readiness

	cfg  Config
	log  *slog.Logger
	zlog *zap.Logger // etcd's logger, routed to log
	// closing is set when shutdown begins (see slogCore).
	closing *atomic.Bool

	mu        sync.Mutex
	etcd      *embed.Etcd // set while the member serves
	clientTLS *tls.Config // for in-process clients; nil for http

	// defrag counts the defragmentation policy's work (defrag.go).
	defrag defragStats
	// defragHook, if set (by tests, before Run), is called while the
	// defragmentation lock is held, just before defragmenting.
	defragHook func(lockCtx context.Context)
	// coord is the coordination client handed to the node's components.
	coord *coordSource
}

var _ component.Component = (*Server)(nil)

// New validates cfg and returns a member that starts when Run is called.
// It has no side effects.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	level, _ := zapLevel(cfg.LogLevel)
	log := logger.With("component", "chainfire", "member", cfg.Name)
	closing := new(atomic.Bool)
	s := &Server{
		cfg:     cfg,
		log:     log,
		zlog:    newZapLogger(log.With("source", "etcd"), level, closing),
		closing: closing,
	}
	s.coord = &coordSource{s: s}
	return s, nil
}

// Name implements component.Component.
func (s *Server) Name() string { return "chainfire" }

// Config returns the validated configuration.
func (s *Server) Config() Config { return s.cfg }

// Endpoints are the member's client URLs, for clientv3 and etcdctl.
func (s *Server) Endpoints() []string { return []string{s.cfg.ClientURL} }

// tlsPaths are the files the member serves with, after tls.auto issued
// them. Empty fields mean plaintext.
type tlsPaths struct {
	clientCA, clientCert, clientKey string
	peerCA, peerCert, peerKey       string
}

// Run starts the member, marks it ready once it has joined the cluster and
// serves clients, and blocks until ctx ends (then closes the member and
// returns nil) or the member fails. Run is called once per Server; to
// restart a member, build a new Server from the same Config.
func (s *Server) Run(ctx context.Context) error {
	paths, err := s.prepare()
	if err != nil {
		return err
	}
	ec, err := s.embedConfig(paths)
	if err != nil {
		return err
	}
	clientTLS, err := s.clientTLSConfig(paths)
	if err != nil {
		return err
	}

	s.log.Info("starting member", "client_url", s.cfg.ClientURL, "peer_url", s.cfg.PeerURL,
		"initial_state", s.cfg.InitialState, "data_dir", s.cfg.DataDir)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("chainfire: starting member %s (client %s, peer %s): %w", s.cfg.Name, s.cfg.ClientURL, s.cfg.PeerURL, err)
	}

	ready, err := s.waitReady(ctx, e)
	if err != nil || !ready {
		s.close(e)
		return err
	}

	if err := confirmGuard(s.cfg.DataDir, s.cfg.ClusterToken, s.cfg.Name,
		e.Server.Cluster().ID().String(), e.Server.MemberID().String()); err != nil {
		s.close(e)
		return err
	}

	s.mu.Lock()
	s.etcd, s.clientTLS = e, clientTLS
	s.mu.Unlock()
	s.MarkReady()
	s.log.Info("member ready", "cluster_id", e.Server.Cluster().ID().String(),
		"member_id", e.Server.MemberID().String(), "members", len(e.Server.Cluster().Members()))

	// The defragmentation policy and certificate renewal run while the
	// member serves and end before it closes.
	dctx, dcancel := context.WithCancel(ctx)
	ddone := make(chan struct{})
	go func() {
		defer close(ddone)
		var wg sync.WaitGroup
		wg.Go(func() { s.defragLoop(dctx, e) })
		wg.Go(func() { s.keepCertsRenewed(dctx, paths) })
		wg.Wait()
	}()
	shutdown := func() {
		dcancel()
		<-ddone
		s.coord.close()
		s.stop(e)
	}

	for {
		select {
		case <-ctx.Done():
			shutdown()
			return nil
		case err := <-e.Err():
			if err == nil {
				continue // a serving goroutine ended without error
			}
			shutdown()
			return fmt.Errorf("chainfire: member %s failed: %w", s.cfg.Name, err)
		case <-e.Server.StopNotify():
			shutdown()
			return fmt.Errorf("%w: member %s was stopped by etcd (removed from the cluster, or a fatal storage error logged above)", ErrStopped, s.cfg.Name)
		}
	}
}

// waitReady waits until the member has joined the cluster and serves
// clients (true), ctx ends (false, nil), or start-up fails or exceeds
// StartTimeout (an error saying what did not come up).
func (s *Server) waitReady(ctx context.Context, e *embed.Etcd) (bool, error) {
	timer := time.NewTimer(s.cfg.StartTimeout)
	defer timer.Stop()
	for {
		select {
		case <-e.Server.ReadyNotify():
			return true, nil
		case err := <-e.Err():
			if err == nil {
				continue
			}
			return false, fmt.Errorf("chainfire: member %s failed while starting: %w", s.cfg.Name, err)
		case <-e.Server.StopNotify():
			return false, fmt.Errorf("%w: member %s stopped while starting (see the etcd messages logged before; was it removed from the cluster?)", ErrStopped, s.cfg.Name)
		case <-timer.C:
			return false, fmt.Errorf("%w: member %s not ready after %s: %s", ErrStartTimeout, s.cfg.Name, s.cfg.StartTimeout, s.notReadyReason(e))
		case <-ctx.Done():
			return false, nil
		}
	}
}

// stop is the ordered shutdown: stop answering Status and Client, then
// close etcd (client listeners drain, raft stops, peers close).
func (s *Server) stop(e *embed.Etcd) {
	s.mu.Lock()
	s.etcd, s.clientTLS = nil, nil
	s.mu.Unlock()
	s.log.Info("stopping member")
	s.close(e)
	s.log.Info("member stopped")
}

func (s *Server) close(e *embed.Etcd) {
	s.closing.Store(true)
	select {
	case <-e.Server.ReadyNotify():
	default:
		// Not ready: etcd's client serving goroutines still wait for
		// readiness or for the server to stop, and Close waits for them
		// before it stops the server (etcd-io/etcd#9533). Stop the server
		// first so they return.
		e.Server.Stop()
	}
	e.Close()
	// Close waited for etcd's goroutines and closed the error channel;
	// drain what they reported while stopping.
	for err := range e.Err() {
		if err != nil {
			s.log.Debug("error while closing member", "err", err)
		}
	}
}

// prepare creates the data directory, applies the data directory guard and
// issues tls.auto certificates.
func (s *Server) prepare() (tlsPaths, error) {
	var p tlsPaths
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return p, fmt.Errorf("chainfire: creating data directory: %w", err)
	}
	// The directory holds keys and the whole store: owner only.
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return p, fmt.Errorf("chainfire: restricting data directory to its owner: %w", err)
	}
	if err := checkGuard(s.cfg.DataDir, s.cfg.ClusterToken, s.cfg.Name); err != nil {
		return p, err
	}
	t := s.cfg.TLS
	if !t.Auto {
		p = tlsPaths{
			clientCA: t.Client.CAFile, clientCert: t.Client.CertFile, clientKey: t.Client.KeyFile,
			peerCA: t.Peer.CAFile, peerCert: t.Peer.CertFile, peerKey: t.Peer.KeyFile,
		}
		return p, nil
	}
	caCert, cert, key, err := s.issueAutoCert()
	if err != nil {
		return p, err
	}
	if isHTTPS(s.cfg.ClientURL) {
		p.clientCA, p.clientCert, p.clientKey = caCert, cert, key
	}
	if isHTTPS(s.cfg.PeerURL) {
		p.peerCA, p.peerCert, p.peerKey = caCert, cert, key
	}
	return p, nil
}

// issueAutoCert issues the tls.auto member certificate into
// DataDir/tls, creating the CA there first for a member without
// autoCAFile, and returns the CA certificate and the pair.
func (s *Server) issueAutoCert() (caCert, cert, key string, err error) {
	t := s.cfg.TLS
	dir := filepath.Join(s.cfg.DataDir, tlsDirName)
	caCert, caKey := t.AutoCAFile, t.AutoCAKeyFile
	if caCert == "" {
		if caCert, caKey, err = GenerateCA(dir, "chainfire CA "+s.cfg.ClusterToken); err != nil {
			return "", "", "", err
		}
	}
	var hosts []string
	for _, raw := range []string{s.cfg.ClientURL, s.cfg.PeerURL} {
		if u, err := url.Parse(raw); err == nil {
			hosts = append(hosts, u.Hostname())
		}
	}
	cert, key, err = issueMemberCert(caCert, caKey, dir, s.cfg.Name, hosts)
	if err != nil {
		return "", "", "", err
	}
	return caCert, cert, key, nil
}

// keepCertsRenewed re-issues the tls.auto certificate once two thirds of
// its validity have passed, or warns from then on about supplied ones,
// until ctx ends. etcd reads the certificate files at every handshake, so
// a renewed certificate needs no restart.
func (s *Server) keepCertsRenewed(ctx context.Context, p tlsPaths) {
	if s.cfg.TLS.Auto {
		cert := p.peerCert
		if cert == "" {
			cert = p.clientCert
		}
		if cert == "" {
			return
		}
		pki.KeepRenewed(ctx, s.log, cert, func() error {
			_, _, _, err := s.issueAutoCert()
			return err
		}, pki.RenewalCheckInterval)
		return
	}
	var wg sync.WaitGroup
	for _, cert := range slices.Compact([]string{p.clientCert, p.peerCert}) {
		if cert != "" {
			wg.Go(func() { pki.KeepRenewed(ctx, s.log, cert, nil, pki.RenewalCheckInterval) })
		}
	}
	wg.Wait()
}

func isHTTPS(raw string) bool { return strings.HasPrefix(raw, "https://") }

// embedConfig translates the configuration for etcd.
func (s *Server) embedConfig(p tlsPaths) (*embed.Config, error) {
	c := s.cfg
	clientURL, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("chainfire: clientURL: %w", err)
	}
	peerURL, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("chainfire: peerURL: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = c.DataDir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = initialClusterString(c.InitialCluster)
	ec.InitialClusterToken = c.ClusterToken
	ec.ClusterState = c.InitialState
	ec.TickMs = uint(c.HeartbeatInterval / time.Millisecond)
	ec.ElectionMs = uint(c.ElectionTimeout / time.Millisecond)
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "0"
	if c.AutoCompactionRetention > 0 {
		ec.AutoCompactionRetention = c.AutoCompactionRetention.String()
	}
	ec.QuotaBackendBytes = c.QuotaBackendBytes
	ec.SnapshotCount = uint64(c.SnapshotCount)
	ec.Logger = "zap"
	ec.LogLevel = c.LogLevel
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(s.zlog)
	// Clients speak gRPC (clientv3, etcdctl). The JSON gateway is off: it
	// would let any web page a local browser visits post to a loopback
	// member, and nothing of ours needs it. /health and /metrics stay.
	ec.EnableGRPCGateway = false
	// No cross-origin access, and plaintext HTTP requests only under the
	// names the member is reached by (DNS rebinding protection).
	ec.CORS = map[string]struct{}{clientURL.Scheme + "://" + clientURL.Host: {}}
	if clientURL.Scheme == "http" {
		ec.HostWhitelist = map[string]struct{}{
			"localhost": {}, "127.0.0.1": {}, "::1": {}, clientURL.Hostname(): {},
		}
	}
	if p.clientCert != "" {
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile:       p.clientCert,
			KeyFile:        p.clientKey,
			ClientCertAuth: c.TLS.ClientCertAuth,
		}
		// etcd requires client certificates whenever it has a trusted
		// CA for the client listener, so give it one only with
		// clientCertAuth.
		if c.TLS.ClientCertAuth {
			ec.ClientTLSInfo.TrustedCAFile = p.clientCA
		}
	}
	if p.peerCert != "" {
		ec.PeerTLSInfo = transport.TLSInfo{
			CertFile:       p.peerCert,
			KeyFile:        p.peerKey,
			TrustedCAFile:  p.peerCA,
			ClientCertAuth: true,
		}
	}
	return ec, nil
}

// clientTLSConfig is what in-process clients use: the client CA, and the
// member's certificate as client certificate (it is issued for client use
// too by tls.auto; supplied certificates need the clientAuth usage when
// clientCertAuth is on).
func (s *Server) clientTLSConfig(p tlsPaths) (*tls.Config, error) {
	if p.clientCert == "" {
		return nil, nil
	}
	info := transport.TLSInfo{TrustedCAFile: p.clientCA}
	if s.cfg.TLS.ClientCertAuth {
		info.CertFile, info.KeyFile = p.clientCert, p.clientKey
	}
	if info.TrustedCAFile == "" {
		// Supplied server certificate without a client CA file: trust
		// the system roots.
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("chainfire: client TLS config: %w", err)
	}
	return cfg, nil
}

// notReadyReason explains a start timeout from what the member knows.
func (s *Server) notReadyReason(e *embed.Etcd) string {
	members := slices.Sorted(slices.Values(s.cfg.InitialCluster))
	if e.Server.Leader() == 0 {
		n := len(members)
		if s.cfg.InitialState == StateExisting {
			return fmt.Sprintf("no raft leader reachable: check that this member was added with `member add` and that the running members (%s) are reachable on their peer URLs", strings.Join(members, ", "))
		}
		return fmt.Sprintf("no raft leader elected: a quorum (%d of %d) of the initial cluster must be running and reachable on their peer URLs (%s)",
			n/2+1, n, strings.Join(members, ", "))
	}
	return fmt.Sprintf("raft leader %s is known but this member has not published itself to the cluster yet (is the cluster overloaded or its quorum lost?)", e.Server.Leader())
}

// running returns the serving member or ErrNotRunning.
func (s *Server) running() (*embed.Etcd, *tls.Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd == nil {
		return nil, nil, ErrNotRunning
	}
	return s.etcd, s.clientTLS, nil
}

// ClientConfig returns a clientv3 configuration for this member's
// endpoints, with TLS (and the member's client certificate when client
// certificate authentication is on).
func (s *Server) ClientConfig() (clientv3.Config, error) {
	_, tlsCfg, err := s.running()
	if err != nil {
		return clientv3.Config{}, err
	}
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
	}
	return clientv3.Config{
		Endpoints:            s.Endpoints(),
		TLS:                  tlsCfg,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               s.zlog,
	}, nil
}

// Client returns a new client of this member for in-process users. The
// caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	cfg, err := s.ClientConfig()
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("chainfire: client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return c, nil
}

// Member is one cluster member.
type Member = client.Member

// Status is this member's view of the cluster.
type Status struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	ClusterID string `json:"clusterID"`
	// Leader is the leader's name and LeaderID its ID; both empty when no
	// leader is known.
	Leader    string   `json:"leader"`
	LeaderID  string   `json:"leaderID"`
	IsLeader  bool     `json:"isLeader"`
	IsLearner bool     `json:"isLearner,omitempty"`
	Members   []Member `json:"members"`
	// Revision is the store's current revision.
	Revision int64 `json:"revision"`
	// DBSizeBytes is the database file size; DBSizeInUseBytes the part in
	// use (the rest is reclaimed by defragmentation).
	DBSizeBytes      int64  `json:"dbSizeBytes"`
	DBSizeInUseBytes int64  `json:"dbSizeInUseBytes"`
	RaftTerm         uint64 `json:"raftTerm"`
	RaftAppliedIndex uint64 `json:"raftAppliedIndex"`
}

// Status reports the member's local view: leader, members, revision,
// database size and raft term. It reads in-process state and does not
// wait for the cluster.
func (s *Server) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	e, _, err := s.running()
	if err != nil {
		return Status{}, err
	}
	srv := e.Server
	st := Status{
		Name:             s.cfg.Name,
		ID:               srv.MemberID().String(),
		ClusterID:        srv.Cluster().ID().String(),
		IsLearner:        srv.IsLearner(),
		Revision:         srv.KV().Rev(),
		RaftTerm:         srv.Term(),
		RaftAppliedIndex: srv.AppliedIndex(),
	}
	if be := srv.Backend(); be != nil {
		st.DBSizeBytes, st.DBSizeInUseBytes = be.Size(), be.SizeInUse()
	}
	lead := srv.Leader()
	if lead != types.ID(0) {
		st.LeaderID = lead.String()
		st.IsLeader = lead == srv.MemberID()
	}
	for _, m := range srv.Cluster().Members() {
		mem := Member{
			ID:         m.ID.String(),
			Name:       m.Name,
			PeerURLs:   slices.Clone(m.PeerURLs),
			ClientURLs: slices.Clone(m.ClientURLs),
			IsLearner:  m.IsLearner,
		}
		if m.ID == lead {
			st.Leader = m.Name
		}
		st.Members = append(st.Members, mem)
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Name < st.Members[j].Name })
	return st, nil
}
