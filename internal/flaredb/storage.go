package flaredb

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	fdbclient "github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// ResourceNamespace is the flaredb namespace holding every resource of the
// API (components keep apart by key prefix inside it, as in the local
// store).
const ResourceNamespace = "resources"

// Storage is a node's resource store kept in flaredb: a client of the
// cluster, plus, on a node with the flaredb role, the node's own member,
// which the client calls in-process. It is what the node asks for when
// storage.backend is flaredb; its units run in the node's group.
type Storage struct {
	storage.Store
	units []component.Unit
	close func() error
}

// OpenStorage builds the store for a node from its validated flaredb
// section: the member (built, not started) when the section configures
// one, and a client that reaches it, or the cluster at storage.endpoints.
// Nothing is dialled until the first call. With tls.auto it issues the
// certificates the client presents; a client-only node's certificate is
// then kept fresh by one of the returned units.
func OpenStorage(cfg Config, deps component.Deps) (*Storage, error) {
	s := &Storage{}
	endpoints := cfg.endpoints
	var tlsFiles TLS
	var member *Server
	if cfg.IsMember() {
		m, err := New(cfg, Options{Logger: deps.Logger})
		if err != nil {
			return nil, err
		}
		// The client presents the member's own certificate (with
		// tls.auto this issues it now; the member reuses it).
		if tlsFiles, err = m.MemberTLS(); err != nil {
			return nil, err
		}
		member = m
		s.units = append(s.units, component.Unit{Component: m})
		// The own member first: it answers stale reads and forwards the
		// rest; the others let the client find the leader if it is down.
		endpoints = []string{m.Config().APIAdvertise}
		for _, p := range cfg.InitialVoters {
			endpoints = append(endpoints, p.APIAddress)
		}
		endpoints = append(endpoints, cfg.Join...)
		endpoints = uniq(endpoints)
	} else {
		var err error
		dir := filepath.Join(deps.Node.DataDir, "flaredb-client", "tls")
		if tlsFiles, err = ClientTLSFiles(cfg, dir, deps.Node.Name); err != nil {
			return nil, err
		}
		if cfg.TLS.Enabled() {
			s.units = append(s.units, component.Unit{Component: &clientCertRenewer{cfg: cfg, dir: dir, deps: deps}})
		}
	}
	cc := fdbclient.Config{Endpoints: endpoints, ClusterID: cfg.ClusterID, Logger: deps.Logger,
		CAFile: tlsFiles.CAFile, CertFile: tlsFiles.CertFile, KeyFile: tlsFiles.KeyFile}
	if member != nil {
		// Calls to the own member skip HTTP: the leader (always, with one
		// member) serves the node's writes and reads in-process.
		cc.Local, cc.LocalWatch, cc.LocalEndpoint = member.Call, member.Watch, member.Config().APIAdvertise
	}
	c, err := fdbclient.New(cc)
	if err != nil {
		return nil, err
	}
	st, err := fdbclient.NewStore(c, ResourceNamespace)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.Store = st
	s.close = func() error { return errors.Join(st.Close(), c.Close()) }
	return s, nil
}

// Units returns the store's own components (the member first, if any);
// they run in the node's group before everything that uses the store.
func (s *Storage) Units() []component.Unit { return slices.Clone(s.units) }

// Close closes the client (not the member, which stops with the group).
func (s *Storage) Close() error { return s.close() }

// clientCertRenewer keeps a client-only node's flaredb certificate fresh
// (KeepClientCertFresh) as a unit of the node, so it is started, stopped
// and waited for like every other part.
type clientCertRenewer struct {
	component.Readiness
	cfg  Config
	dir  string
	deps component.Deps
}

func (r *clientCertRenewer) Name() string { return "flaredb-client-cert" }

func (r *clientCertRenewer) Run(ctx context.Context) error {
	r.MarkReady()
	KeepClientCertFresh(ctx, r.deps.Logger, r.cfg, r.dir, r.deps.Node.Name)
	return nil
}

// Collectors implements component.MetricsSource.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{s.Collector()} }

func uniq(s []string) []string {
	var out []string
	for _, v := range s {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

var _ component.Reporter = (*Server)(nil)

// Report implements component.Reporter: the member's endpoints, Raft
// state, leader, members, revision and indexes.
func (s *Server) Report(context.Context) component.Report {
	r := component.Report{Endpoints: map[string]string{"api": s.cfg.APIAdvertise, "raft": s.cfg.RaftAdvertise}}
	st, err := s.Status()
	if err != nil {
		r.Details = map[string]string{"error": err.Error()}
		return r
	}
	leader := st.Leader.ID
	if leader == "" {
		leader = "none"
	}
	r.Details = map[string]string{
		"state":    st.State,
		"leader":   leader,
		"members":  strconv.Itoa(len(st.Members)),
		"term":     strconv.FormatUint(st.Term, 10),
		"revision": strconv.FormatInt(st.Revision, 10),
		"applied":  strconv.FormatUint(st.AppliedIndex, 10),
		"dbSize":   strconv.FormatInt(st.DBSize, 10),
	}
	return r
}

// Flags implements config.Flagger: the member's two listeners.
func (c *Config) Flags() []config.Flag {
	return []config.Flag{
		{Name: "flaredb-raft-address", Field: "raftAddress", Usage: "flaredb Raft listen address host:port", Listener: "127.0.0.1:%d"},
		{Name: "flaredb-api-address", Field: "apiAddress", Usage: "flaredb client API listen address host:port", Listener: "127.0.0.1:%d"},
	}
}
