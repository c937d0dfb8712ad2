package flaredb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/raftlog"
	"github.com/ultracloud/ultracloud/internal/flaredb/raftnet"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// Errors of the server component.
var (
	// ErrNotRunning: the server is not running (before Run, or after it
	// returned).
	ErrNotRunning = errors.New("flaredb: server not running")
	// ErrDataDirMismatch: the data directory belongs to another cluster or
	// member.
	ErrDataDirMismatch = errors.New("flaredb: data directory belongs to another cluster or member")
)

// Options are the server's dependencies.
type Options struct {
	// Logger receives the server's logs (Raft's too); nil discards them.
	Logger *slog.Logger
	// RaftListener and APIListener, when set, are used instead of
	// listening on Config.RaftAddress and Config.APIAddress (tests, socket
	// activation). The server closes them.
	RaftListener net.Listener
	APIListener  net.Listener
	// Now is the clock for TTL timestamps; nil means time.Now.
	Now func() time.Time
}

// Server is one flaredb member as a component: Raft, the state machine and
// the client API. Build it with New; Run does the work.
type Server struct {
	component.Readiness
	cfg  Config
	opts Options
	log  *slog.Logger

	node atomic.Pointer[node]
	// tls is the member's TLS material (nil without TLS), loaded once.
	tlsMu sync.Mutex
	tls   *memberTLS
	// transfers counts leadership transfers on shutdown (kept across runs).
	transfers atomic.Uint64
}

var _ component.Component = (*Server)(nil)

// New returns a server for cfg. It validates cfg and has no side effects.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{cfg: cfg, opts: opts, log: opts.Logger.With("component", "flaredb", "member", cfg.ID)}, nil
}

// Name implements component.Component.
func (s *Server) Name() string { return "flaredb" }

// Config returns the validated configuration.
func (s *Server) Config() Config { return s.cfg }

// running returns the running node or ErrNotRunning.
func (s *Server) running() (*node, error) {
	n := s.node.Load()
	if n == nil {
		return nil, ErrNotRunning
	}
	return n, nil
}

// APIAddr returns the address the API listens on (useful with port 0); it
// is valid once Run has started the listener.
func (s *Server) APIAddr() string {
	if n := s.node.Load(); n != nil {
		return n.apiLn.Addr().String()
	}
	return ""
}

// Run starts the member and serves until ctx ends, then stops in order (see
// the package doc) and returns nil. It returns an error if the member cannot
// start or fails (for example the state machine hit an I/O error).
func (s *Server) Run(ctx context.Context) (err error) {
	n, err := s.start()
	if err != nil {
		return err
	}
	s.node.Store(n)
	defer s.node.Store(nil)

	n.goFunc(func() { n.waitReady(s) })
	select {
	case <-ctx.Done():
	case <-n.fsm.Failed():
		err = fmt.Errorf("flaredb: state machine failed: %w", n.fsm.Err())
	case ferr := <-n.fatal:
		err = ferr
	}
	return errors.Join(err, n.stop())
}

// memberGuard is stored in the data directory on first start.
type memberGuard struct {
	ClusterID string `json:"clusterID"`
	ID        string `json:"id"`
}

const guardFile = "flaredb-member.json"

func checkGuard(dir, clusterID, id string) error {
	path := filepath.Join(dir, guardFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b, _ = json.Marshal(memberGuard{ClusterID: clusterID, ID: id})
		if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("flaredb: writing %s: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("flaredb: reading %s: %w", path, err)
	}
	var g memberGuard
	if err := json.Unmarshal(b, &g); err != nil {
		return fmt.Errorf("flaredb: %s: %w", path, err)
	}
	if g.ClusterID != clusterID {
		return fmt.Errorf("%w: %s holds member data of cluster %q, config says flaredb.clusterID %q (fix the config or use another flaredb.dataDir)", ErrDataDirMismatch, dir, g.ClusterID, clusterID)
	}
	if g.ID != id {
		return fmt.Errorf("%w: %s holds data of member %q, config says flaredb.id %q (fix the config or use another flaredb.dataDir)", ErrDataDirMismatch, dir, g.ID, id)
	}
	return nil
}

// start opens everything in order and rolls back on failure.
func (s *Server) start() (_ *node, err error) {
	cfg := s.cfg
	var cleanup []func() error
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				err = errors.Join(err, cleanup[i]())
			}
			if s.opts.RaftListener != nil {
				s.opts.RaftListener.Close()
			}
			if s.opts.APIListener != nil {
				s.opts.APIListener.Close()
			}
		}
	}()

	if err := refuseRaftWAL(cfg.DataDir); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "raft", "snapshots")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("flaredb: creating %s: %w", d, err)
		}
	}
	if err := checkGuard(cfg.DataDir, cfg.ClusterID, cfg.ID); err != nil {
		return nil, err
	}
	mtls, err := s.loadTLS()
	if err != nil {
		return nil, err
	}

	f, err := fsm.Open(filepath.Join(cfg.DataDir, "fsm"), fsm.Options{Logger: s.log})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, f.Close)

	logs, err := raftlog.Open(filepath.Join(cfg.DataDir, "raft", "log"), s.log)
	if err != nil {
		return nil, fmt.Errorf("flaredb: opening the raft log: %w", err)
	}
	closeLog := logs.Close
	cleanup = append(cleanup, closeLog)

	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "raft", "snapshots"), cfg.SnapshotRetain, newHCLog(s.log, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("flaredb: opening the snapshot store: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("flaredb: listing snapshots: %w", err)
	}
	var latestSnap uint64
	if len(metas) > 0 {
		latestSnap = metas[0].Index
	}
	// The state machine persists its own state; Raft restores a snapshot on
	// start only if Pebble is behind it or was caught mid-restore.
	restoreOnStart := f.NeedsRestore() || f.AppliedIndex() < latestSnap
	if restoreOnStart && len(metas) == 0 {
		return nil, fmt.Errorf("flaredb: the state machine in %s was interrupted while restoring and no snapshot is left to restore from: remove the member's data directory and add it again", cfg.DataDir)
	}

	rln := s.opts.RaftListener
	if rln == nil {
		if rln, err = net.Listen("tcp", cfg.RaftAddress); err != nil {
			return nil, fmt.Errorf("flaredb: raft listener (flaredb.raftAddress): %w", err)
		}
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
	if err != nil {
		rln.Close()
		return nil, fmt.Errorf("flaredb: flaredb.raftAdvertise %q: %w", cfg.RaftAdvertise, err)
	}
	var rnOpts []raftnet.Option
	if mtls != nil {
		rnOpts = append(rnOpts, raftnet.TLS(mtls.server, mtls.client))
	}
	layer, err := raftnet.New(rln, adv, cfg.ClusterID, cfg.ID, s.log.With("subsystem", "raftnet"), rnOpts...)
	if err != nil {
		rln.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: cfg.RequestTimeout,
		Logger:  newHCLog(s.log, "raft-transport"),
	})
	cleanup = append(cleanup, trans.Close)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.ShutdownOnRemove = false
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.NoSnapshotRestoreOnStart = !restoreOnStart
	rc.Logger = newHCLog(s.log, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("flaredb: raft config: %w", err)
	}

	hasState, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return nil, fmt.Errorf("flaredb: checking raft state: %w", err)
	}
	// The log cache keeps the newest entries in memory, so replicating them
	// to followers does not read them back from the log store.
	cache, err := raft.NewLogCache(logCacheEntries, logs)
	if err != nil {
		return nil, fmt.Errorf("flaredb: raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, f, cache, logs, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("flaredb: starting raft: %w", err)
	}
	cleanup = append(cleanup, func() error { return r.Shutdown().Error() })

	bootstrap := !hasState && selfIn(cfg.InitialVoters, cfg.ID)
	if bootstrap {
		var servers []raft.Server
		for _, p := range cfg.InitialVoters {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddress)})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("flaredb: bootstrapping: %w", err)
		}
		s.log.Info("bootstrapped cluster", "cluster", cfg.ClusterID, "voters", len(servers))
	}

	aln := s.opts.APIListener
	if aln == nil {
		if aln, err = net.Listen("tcp", cfg.APIAddress); err != nil {
			return nil, fmt.Errorf("flaredb: api listener (flaredb.apiAddress): %w", err)
		}
	}
	cleanup = append(cleanup, func() error {
		if err := aln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})

	n := newNode(s, f, logs, closeLog, snaps, layer, trans, r, aln, mtls)
	n.startLoops(!hasState && !bootstrap)
	s.log.Info("flaredb member started", "cluster", cfg.ClusterID, "raft", cfg.RaftAdvertise,
		"api", aln.Addr().String(), "tls", mtls != nil, "applied_index", f.AppliedIndex(), "restore_on_start", restoreOnStart,
		"bootstrap", bootstrap, "join", !hasState && !bootstrap)
	return n, nil
}

func selfIn(peers []Peer, id string) bool {
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

// node is a running member. It exists from a successful start until stop.
type node struct {
	s    *Server
	cfg  Config
	log  *slog.Logger
	fsm  *fsm.FSM
	logs *raftlog.Store
	// closeLog closes the log and its metadata database.
	closeLog func() error
	snaps    *raft.FileSnapshotStore
	layer    *raftnet.Layer
	trans    *raft.NetworkTransport
	raft     *raft.Raft
	apiLn    net.Listener
	// scheme is how other members' APIs are reached: https with TLS.
	scheme string
	// callable are the API calls Server.Call serves in-process.
	callable map[string]handler
	http     *http.Server
	peers    *http.Client
	// tls is the member's TLS material; nil runs plaintext (h2c).
	tls *memberTLS

	// ctx ends the background loops; streams ends watch streams.
	ctx           context.Context
	cancel        context.CancelFunc
	streams       context.Context
	cancelStreams context.CancelFunc
	wg            sync.WaitGroup
	fatal         chan error

	stopping atomic.Bool

	// proposals
	propCtx    context.Context
	propCancel context.CancelFunc
	proposeCh  chan *proposal
	inflight   chan *inflightBatch
	slots      chan struct{} // one per outstanding entry (maxOutstandingEntries)
	propDone   chan struct{}
	compDone   chan struct{}

	// reads
	readCh chan *readWaiter

	// leadership
	lead leadership

	stats counters
}

// counters are the server's statistics.
type counters struct {
	proposals, entries, forwarded, readRounds, readWaiters, expired atomic.Uint64
}

func newNode(s *Server, f *fsm.FSM, logs *raftlog.Store, closeLog func() error, snaps *raft.FileSnapshotStore, layer *raftnet.Layer,
	trans *raft.NetworkTransport, r *raft.Raft, aln net.Listener, mtls *memberTLS) *node {
	n := &node{
		s: s, cfg: s.cfg, log: s.log, fsm: f, logs: logs, closeLog: closeLog, snaps: snaps, layer: layer, trans: trans, raft: r, apiLn: aln,
		fatal:     make(chan error, 1),
		proposeCh: make(chan *proposal),
		inflight:  make(chan *inflightBatch, maxOutstandingEntries),
		slots:     make(chan struct{}, maxOutstandingEntries),
		propDone:  make(chan struct{}),
		compDone:  make(chan struct{}),
		readCh:    make(chan *readWaiter),
		tls:       mtls,
	}
	if mtls != nil {
		n.peers, n.scheme = newTLSPeerClient(s.cfg.RequestTimeout, mtls.client), "https"
	} else {
		n.peers, n.scheme = newPeerClient(s.cfg.RequestTimeout), "http"
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.streams, n.cancelStreams = context.WithCancel(context.Background())
	n.propCtx, n.propCancel = context.WithCancel(context.Background())
	n.lead.init()
	n.callable = n.handlers()
	return n
}

// goFunc runs fn as a goroutine owned by the node.
func (n *node) goFunc(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

func (n *node) startLoops(join bool) {
	n.http = n.newHTTPServer()
	serve := n.http.Serve
	if n.tls != nil {
		serveTLS(n.http, n.tls)
		serve = func(ln net.Listener) error { return n.http.ServeTLS(ln, "", "") }
	}
	n.goFunc(func() {
		if err := serve(n.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case n.fatal <- fmt.Errorf("flaredb: api server: %w", err):
			default:
			}
		}
	})
	n.goFunc(n.runProposer)
	n.goFunc(n.runCompleter)
	n.goFunc(n.runReadIndex)
	n.goFunc(n.runLeadership)
	n.goFunc(n.runReadvertise)
	if n.tls != nil {
		n.goFunc(func() {
			pki.KeepRenewed(n.ctx, n.log, n.tls.files.CertFile, memberCertRenewal(n.cfg), pki.RenewalCheckInterval)
		})
	}
	if join {
		n.goFunc(n.runJoin)
	}
}

// waitReady marks the server ready once the member can serve a
// linearizable read: it is in a cluster with a leader and has caught up.
func (n *node) waitReady(s *Server) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(n.ctx, time.Second)
		err := n.linearize(ctx)
		cancel()
		if err == nil {
			s.MarkReady()
			n.log.Info("flaredb member ready", "applied_index", n.fsm.AppliedIndex())
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stop shuts the member down in order:
//
//  1. refuse new requests (ErrShuttingDown: clients retry elsewhere) and
//     stop taking proposals; proposals already handed to Raft finish;
//  2. if leader, hand leadership to the most up-to-date follower so the
//     cluster does not wait an election timeout;
//  3. end watch streams and stop the API server, letting requests drain;
//  4. stop the background loops (while Raft still runs, so every future
//     they wait on is answered);
//  5. shut Raft down, then close the transport, the log and the state
//     machine.
func (n *node) stop() error {
	n.stopping.Store(true)
	n.propCancel()
	<-n.propDone
	select {
	case <-n.compDone:
	case <-time.After(n.cfg.RequestTimeout):
		n.log.Warn("proposals still in flight at shutdown", "timeout", n.cfg.RequestTimeout)
	}

	if n.raft.State() == raft.Leader && n.cfg.ShutdownTransferTimeout > 0 && n.otherVoters() > 0 {
		// Raft bounds the transfer by its election timeout.
		start := time.Now()
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer on shutdown failed", "err", err)
		} else {
			n.s.transfers.Add(1)
			n.log.Info("leadership transferred on shutdown", "took", time.Since(start))
		}
	}

	n.cancelStreams()
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
	err := n.http.Shutdown(sctx)
	cancel()
	if err != nil {
		n.log.Warn("api server did not drain in time; closing connections", "err", err)
		err = n.http.Close()
	}

	// Loops wait on Raft futures, which Raft answers only while it runs:
	// stop them before Raft.
	n.cancel()
	n.wg.Wait()
	shutdownErr := n.raft.Shutdown().Error()
	errs := []error{err, shutdownErr, n.trans.Close(), n.closeLog(), n.fsm.Close()}
	n.peers.CloseIdleConnections()
	if e := errors.Join(errs...); e != nil {
		return fmt.Errorf("flaredb: stopping: %w", e)
	}
	n.log.Info("flaredb member stopped")
	return nil
}

func (n *node) otherVoters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != n.cfg.ID {
			c++
		}
	}
	return c
}

// now is the leader clock in unix ms.
func (n *node) now() int64 { return n.s.opts.Now().UnixMilli() }

// leaderAPI returns the leader's ID and API address as far as this member
// knows ("" if unknown).
func (n *node) leaderAPI() (id, api string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	return string(lid), n.apiAddrOf(string(lid))
}

// apiAddrOf resolves a member's API address from the replicated registry,
// falling back to the bootstrap configuration.
func (n *node) apiAddrOf(id string) string {
	if id == n.cfg.ID {
		return n.cfg.APIAdvertise
	}
	if m, err := n.fsm.Members(); err == nil {
		if a, ok := m[id]; ok {
			return a
		}
	}
	for _, p := range n.cfg.InitialVoters {
		if p.ID == id {
			return p.APIAddress
		}
	}
	return ""
}

// notLeader builds the error for a request this member cannot serve as
// leader, with a hint when the leader is known.
func (n *node) notLeader() *wire.Error {
	id, api := n.leaderAPI()
	if id == "" {
		return wire.Errorf(wire.CodeNoLeader, "member %q knows no leader", n.cfg.ID)
	}
	return &wire.Error{Code: wire.CodeNotLeader, Message: fmt.Sprintf("%s: member %q is not the leader; %q is", wire.ErrNotLeader, n.cfg.ID, id), Leader: api}
}

// refuseRaftWAL stops a member whose data directory still has the Raft log
// of earlier versions (raft-wal, in raft/wal): it is not read any more (see
// package raftlog for why), and starting without it would lose the log.
func refuseRaftWAL(dataDir string) error {
	old := filepath.Join(dataDir, "raft", "wal")
	entries, err := os.ReadDir(old)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("flaredb: reading %s: %w", old, err)
	}
	return fmt.Errorf("%w: %s holds a Raft log in the raft-wal format of an earlier version, which this version does not read: "+
		"take a snapshot from a running member (ultracloud flaredb snapshot save) and rebuild this member with "+
		"`ultracloud flaredb snapshot restore`, or remove it from the cluster and let it rejoin with an empty flaredb.dataDir", ErrDataDirMismatch, old)
}
