package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	fdbclient "github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
)

// resourceNamespace is the flaredb namespace holding every resource of the
// API (components keep apart by key prefix inside it, as in the local
// store).
const resourceNamespace = "resources"

// backingStore is where the node keeps its resources.
type backingStore struct {
	storage.Store
	// member is this node's flaredb member when it runs the role; it is
	// started before everything that uses the store.
	member *flaredb.Server
	close  func() error
}

// openStore opens the configured backend. For flaredb it builds (but does
// not start) the local member and a client that reaches it, or the
// cluster at storage.endpoints; nothing is dialled until the first call.
func (n *Node) openStore(reg prometheus.Registerer) (*backingStore, error) {
	if n.cfg.Storage.Backend == config.BackendLocal {
		dir := filepath.Join(n.cfg.DataDir, "store")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		s, err := pebblestore.Open(dir, pebblestore.Options{Logger: n.log})
		if err != nil {
			return nil, fmt.Errorf("opening the store in %s: %w", dir, err)
		}
		return &backingStore{Store: s, close: s.Close}, nil
	}

	// A data directory that held resources in the local store before
	// flaredb became the default: say where they are instead of starting
	// silently without them.
	if old := filepath.Join(n.cfg.DataDir, "store"); dirHasFiles(old) {
		n.log.Warn("this data directory has resources in the local store, which the flaredb backend does not read; "+
			"set storage.backend: local to keep using them", "dir", old)
	}
	fc := n.cfg.FlareDB
	b := &backingStore{}
	endpoints := n.cfg.Storage.Endpoints
	var tlsFiles flaredb.TLS
	var clientTLSDir string // set for a client node: its certificate's directory
	if slices.Contains(n.cfg.RolesOrAll(), "flaredb") {
		m, err := flaredb.New(fc, flaredb.Options{Logger: n.log})
		if err != nil {
			return nil, err
		}
		// The client presents the member's own certificate (with
		// tls.auto this issues it now; the member reuses it).
		if tlsFiles, err = m.MemberTLS(); err != nil {
			return nil, err
		}
		reg.MustRegister(m.Collector())
		b.member = m
		// The own member first: it answers stale reads and forwards the
		// rest; the others let the client find the leader if it is down.
		endpoints = []string{m.Config().APIAdvertise}
		for _, p := range fc.InitialVoters {
			endpoints = append(endpoints, p.APIAddress)
		}
		endpoints = append(endpoints, fc.Join...)
		endpoints = uniq(endpoints)
	} else {
		var err error
		tlsDir := filepath.Join(n.cfg.DataDir, "flaredb-client", "tls")
		if tlsFiles, err = flaredb.ClientTLSFiles(fc, tlsDir, n.cfg.Node); err != nil {
			return nil, err
		}
		clientTLSDir = tlsDir
	}
	cc := fdbclient.Config{Endpoints: endpoints, ClusterID: fc.ClusterID, Logger: n.log,
		CAFile: tlsFiles.CAFile, CertFile: tlsFiles.CertFile, KeyFile: tlsFiles.KeyFile}
	if b.member != nil {
		// Calls to the own member skip HTTP: the leader (always, with one
		// member) serves the node's writes and reads in-process.
		cc.Local, cc.LocalWatch, cc.LocalEndpoint = b.member.Call, b.member.Watch, b.member.Config().APIAdvertise
	}
	c, err := fdbclient.New(cc)
	if err != nil {
		return nil, err
	}
	s, err := fdbclient.NewStore(c, resourceNamespace)
	if err != nil {
		c.Close()
		return nil, err
	}
	b.Store = s
	stopRenewal := func() {}
	if clientTLSDir != "" {
		// Renew the client certificate before it expires; the client
		// reloads the files on its own.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			flaredb.KeepClientCertFresh(ctx, n.log, fc, clientTLSDir, n.cfg.Node)
		}()
		stopRenewal = func() { cancel(); <-done }
	}
	b.close = func() error {
		stopRenewal()
		return errors.Join(s.Close(), c.Close())
	}
	return b, nil
}

// Close closes the store (not the member, which stops with the group).
func (b *backingStore) Close() error { return b.close() }

// units returns the store's own components: the member, if any, first.
func (b *backingStore) units() []component.Unit {
	if b.member == nil {
		return nil
	}
	return []component.Unit{{Component: b.member}}
}

func uniq(s []string) []string {
	var out []string
	for _, v := range s {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func dirHasFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) > 0
}
