// Package node is the process wiring: the one place that knows every
// component. From a validated config it opens the store, builds the chosen
// components with their dependencies, and runs them as a component.Group.
//
// Shutdown order (the reverse of start): the HTTP listener stops taking
// requests and drains (watch streams are ended first), then each component
// stops, then the store compactor, and finally the store is closed so every
// acknowledged write is on disk.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/iam"
	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/compactor"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/httpserver"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Node is one running ultracloud process.
type Node struct {
	cfg config.Config
	log *slog.Logger

	ready   chan struct{}
	apiAddr string
	token   string
	iam     *iam.Component
	// The replicated stores this node is a member of, for /v1/status.
	chainfire *chainfire.Server
	flaredb   *flaredb.Server
}

// New returns a node for cfg, which must have passed Validate.
func New(cfg config.Config, log *slog.Logger) *Node {
	return &Node{cfg: cfg, log: log, ready: make(chan struct{})}
}

// Ready is closed once every component is ready.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// APIURL returns the API's base URL; valid after Ready.
func (n *Node) APIURL() string { return "http://" + n.apiAddr }

// Token returns the bootstrap admin token; valid after Ready.
func (n *Node) Token() string { return n.token }

// Run runs the node until ctx ends or a component fails.
func (n *Node) Run(ctx context.Context) (err error) {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory %s: %w", n.cfg.DataDir, err)
	}
	unlock, err := lockDataDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	token, err := ensureToken(n.cfg.API.TokenFile)
	if err != nil {
		return err
	}
	n.token = token

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := n.openStore(reg)
	if err != nil {
		return err
	}
	n.flaredb = store.member
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the store: %w", cerr))
		}
	}()

	mux := http.NewServeMux()
	var group *component.Group
	var a *apiserver.API
	srv := httpserver.New(httpserver.Config{Addr: n.cfg.API.Listen, ShutdownGrace: n.cfg.ShutdownGrace}, mux, n.log, reg,
		func() error { return readiness(group) }, func() { a.CloseStreams() })

	roles := n.cfg.RolesOrAll()
	opts := apiserver.Options{Logger: n.log.With("component", "apiserver")}
	if slices.Contains(roles, "iam") {
		key, err := iam.LoadOrCreateKeyFile(n.cfg.IAM.EncryptionKeyFile)
		if err != nil {
			return err
		}
		n.iam, err = iam.New(iam.Config{
			Node: n.cfg.Node, Issuer: n.issuer(srv), BootstrapToken: token, EncryptionKey: key,
			AccessTokenLifetime: n.cfg.IAM.AccessTokenLifetime, RefreshTokenLifetime: n.cfg.IAM.RefreshTokenLifetime,
			SigningKeyRotation: n.cfg.IAM.SigningKeyRotation, AuditRetention: n.cfg.IAM.AuditRetention,
		}, store, n.log, reg)
		if err != nil {
			return err
		}
		opts.Authenticator, opts.Authorizer, opts.Auditor = n.iam, n.iam.Authorizer(), n.iam.Auditor()
	} else {
		// Without iam on this node only the break-glass token is accepted.
		opts.Authenticator = apiserver.TokenAuthenticator{Token: token}
	}
	a = apiserver.New(store, opts)

	// The unit named "store" (the compactor) stands for the store: what
	// uses the store depends on it, and it depends on the flaredb member
	// when this node runs one.
	units := store.units()
	storeUnit := component.Unit{Component: compactor.New(store, n.cfg.Storage.RetainRevisions, n.cfg.Storage.CompactInterval, n.log)}
	if store.member != nil {
		storeUnit.DependsOn = []string{store.member.Name()}
	}
	units = append(units, storeUnit)
	if slices.Contains(roles, "chainfire") {
		cf, err := chainfire.New(n.cfg.Chainfire, n.log)
		if err != nil {
			return err
		}
		reg.MustRegister(cf.Collector())
		n.chainfire = cf
		// chainfire needs nothing else; nothing depends on it yet either,
		// so it stops last of the components, after every client of it.
		units = append([]component.Unit{{Component: cf}}, units...)
	}
	var serving []string
	if n.iam != nil {
		if err := n.iam.Register(a); err != nil {
			return err
		}
		units = append(units, component.Unit{Component: n.iam, DependsOn: []string{"store"}})
		serving = append(serving, "iam")
	}
	units = append(units, component.Unit{Component: srv, DependsOn: append([]string{"store"}, serving...)})

	if n.iam != nil {
		pc := iam.NewProjectController(func(ctx context.Context) (string, error) {
			addr, err := srv.Addr(ctx)
			return "http://" + addr, err
		}, client.TokenFunc(n.iam.SystemTokenSource("iam-projects")),
			filepath.Join(n.cfg.DataDir, "controllers", "iam-projects.checkpoint"), n.log, reg)
		units = append(units, component.Unit{Component: pc, DependsOn: []string{"http"}})
	}

	group, err = component.NewGroup(units, component.Options{StopGrace: n.cfg.ShutdownGrace, Logger: n.log})
	if err != nil {
		return err
	}
	if err := a.Handle("node", apiserver.Endpoint{Method: http.MethodGet, Path: "/v1/status", OperationID: "getNodeStatus",
		Summary: "this node's components and stores", Collection: "status", Verb: "get",
		Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*api.NodeStatus, error) {
			addr, _ := srv.Addr(c.Context())
			st := n.status(c.Context(), group, "http://"+addr)
			return &st, nil
		})}); err != nil {
		return err
	}
	a.Mount(mux)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- group.Run(runCtx)
		cancel() // unblocks the waits below when the group fails to start
	}()

	addr, aerr := srv.Addr(runCtx)
	if aerr == nil {
		n.apiAddr = addr
		if waitAllReady(runCtx, units) {
			close(n.ready)
		}
	}
	return <-done
}

// issuer returns the token issuer: the configured one, else http:// and
// the address the API listens on (known once it is bound; requests and
// token issuance only happen after that).
func (n *Node) issuer(srv *httpserver.Server) func() string {
	if n.cfg.IAM.Issuer != "" {
		iss := n.cfg.IAM.Issuer
		return func() string { return iss }
	}
	var bound atomic.Pointer[string]
	return func() string {
		if s := bound.Load(); s != nil {
			return *s
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addr, err := srv.Addr(ctx)
		if err != nil {
			return "http://" + n.cfg.API.Listen
		}
		s := "http://" + addr
		bound.Store(&s)
		return s
	}
}

// InitialAdminPassword returns the first admin's password when this start
// created it (once per cluster), else "". Valid after Ready.
func (n *Node) InitialAdminPassword() string {
	if n.iam == nil {
		return ""
	}
	return n.iam.InitialAdminPassword()
}

// AdminCredentials issues tokens for the bootstrap admin user, for the
// client config `ultracloud up` writes. Valid after Ready.
func (n *Node) AdminCredentials(ctx context.Context) (*iamv1.TokenResponse, error) {
	if n.iam == nil {
		return nil, errors.New("this node does not run iam")
	}
	return n.iam.IssueUserTokens(ctx, iam.BootstrapAdmin)
}

func waitAllReady(ctx context.Context, units []component.Unit) bool {
	for _, u := range units {
		select {
		case <-u.Component.Ready():
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func readiness(g *component.Group) error {
	if g == nil {
		return errors.New("starting")
	}
	var notReady []string
	for _, s := range g.Statuses() {
		if s.State != component.StateReady {
			notReady = append(notReady, s.Name+"="+string(s.State))
		}
	}
	if len(notReady) > 0 {
		return errors.New(strings.Join(notReady, ", "))
	}
	return nil
}

func (n *Node) status(ctx context.Context, g *component.Group, url string) api.NodeStatus {
	st := api.NodeStatus{Node: n.cfg.Node, Version: api.Version, Ready: g.Ready()}
	for _, s := range g.Statuses() {
		cs := api.ComponentStatus{Name: s.Name, State: string(s.State)}
		if s.Err != nil {
			cs.Error = s.Err.Error()
		}
		if s.Name == "http" {
			cs.Endpoints = map[string]string{"api": url, "metrics": url + "/metrics", "openapi": url + "/openapi.json"}
		}
		if s.Name == "chainfire" {
			cs.Endpoints = map[string]string{"etcd": n.cfg.Chainfire.ClientURL}
			cs.Details = n.chainfireDetails(ctx)
		}
		if s.Name == "flaredb" {
			cs.Endpoints = map[string]string{"api": n.cfg.FlareDB.APIAdvertise, "raft": n.cfg.FlareDB.RaftAdvertise}
			cs.Details = n.flaredbDetails()
		}
		st.Components = append(st.Components, cs)
	}
	return st
}

// ensureToken reads the admin token file, creating it (0600) with a random
// token when missing. A token file others can read is refused.
func ensureToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", fmt.Errorf("generating admin token: %w", err)
		}
		tok := hex.EncodeToString(raw[:])
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("creating admin token file: %w", err)
		}
		if _, err := f.WriteString(tok + "\n"); err != nil {
			f.Close()
			return "", fmt.Errorf("writing admin token file: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return "", fmt.Errorf("writing admin token file: %w", err)
		}
		return tok, f.Close()
	}
	if err != nil {
		return "", fmt.Errorf("reading admin token file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("admin token file %s has mode %o; it must not be readable by others (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("admin token file %s holds a token shorter than 16 characters; delete it to generate a new one", path)
	}
	return tok, nil
}
