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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ultracloud/ultracloud/internal/iam"
	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/compactor"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/httpserver"
	"github.com/ultracloud/ultracloud/internal/runtime/nodeid"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Node is one running ultracloud process.
type Node struct {
	cfg Config
	log *slog.Logger

	ready   chan struct{}
	apiAddr string
	token   string
	// admin is the module that can create the first admin's credentials
	// (iam), when this node runs it.
	admin adminIssuer
	mux   *httpserver.RecordingMux
}

// Routes returns every route pattern mounted on the node's listener (for
// the test that keeps /openapi.json complete); valid after Ready.
func (n *Node) Routes() []string { return n.mux.Patterns() }

// adminIssuer is what `ultracloud up` needs from iam for its client
// config.
type adminIssuer interface {
	InitialAdminPassword() string
	IssueUserTokens(ctx context.Context, user string) (*iamv1.TokenResponse, error)
}

// New returns a node for cfg, which must have passed Validate.
func New(cfg Config, log *slog.Logger) *Node {
	return &Node{cfg: cfg, log: log, ready: make(chan struct{})}
}

// Ready is closed once every component is ready.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// APIURL returns the API's base URL; valid after Ready.
func (n *Node) APIURL() string { return "http://" + n.apiAddr }

// Token returns the bootstrap admin token; valid after Ready.
func (n *Node) Token() string { return n.token }

// Run runs the node until ctx ends or a component fails: it opens the
// store, builds every module whose role the node runs, registers their
// kinds on the shared API and runs all units as one group.
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

	mux := httpserver.NewRecordingMux()
	n.mux = mux
	var group *component.Group
	var a *apiserver.API
	srv := httpserver.New(httpserver.Config{Addr: n.cfg.API.Listen, ShutdownGrace: n.cfg.ShutdownGrace}, mux, n.log, reg,
		func() error { return readiness(group) }, func() { a.CloseStreams() })

	// Tokens for the node's system principals come from the module that
	// issues them (iam), known once the modules are built.
	var tokens func(string) client.TokenSource
	deps := component.Deps{
		Logger:  n.log,
		Metrics: reg,
		Node:    component.Identity{Name: n.cfg.Node, DataDir: n.cfg.DataDir, BootstrapToken: token, Issuer: n.issuer(srv)},
		Client: component.APIClient{
			Endpoint: func(ctx context.Context) (string, error) {
				addr, err := srv.Addr(ctx)
				return "http://" + addr, err
			},
			// Modules built before the token issuer (or all of them, at
			// build time) get a source that finds the issuer at its first
			// use, once every module is built.
			Tokens: func(principal string) client.TokenSource {
				var once sync.Once
				var src client.TokenSource
				return client.TokenFunc(func(ctx context.Context) (string, error) {
					once.Do(func() {
						if tokens != nil {
							src = tokens(principal)
						}
					})
					if src == nil {
						return "", component.ErrNoTokens
					}
					return src.Token(ctx)
				})
			},
		},
	}

	// A node without iam that names a control plane acts towards it as
	// node:NAME: every agent's API client goes there with the node's
	// tokens.
	identity, err := n.nodeIdentity()
	if err != nil {
		return err
	}
	if identity != nil {
		deps.Client.Endpoint = func(context.Context) (string, error) { return identity.Endpoint(), nil }
		tokens = func(string) client.TokenSource { return identity }
	}

	store, err := n.openStore(deps)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the store: %w", cerr))
		}
	}()
	deps.Store = store

	// The unit named "store" (the compactor) stands for the store: what
	// uses the store depends on it, and it depends on the units serving
	// it (the flaredb member when this node runs one).
	storeUnits := append([]component.Unit(nil), store.units...)
	storeUnit := component.Unit{Component: compactor.New(store, n.cfg.Storage.RetainRevisions, n.cfg.Storage.CompactInterval, n.log)}
	for _, u := range store.units {
		storeUnit.DependsOn = append(storeUnit.DependsOn, u.Component.Name())
	}
	storeUnits = append(storeUnits, storeUnit)

	var built []component.Module
	for _, m := range modules() {
		if !n.cfg.HasRole(m.role) || m.build == nil {
			continue
		}
		mod, err := m.build(&n.cfg, deps)
		if err != nil {
			return err
		}
		if mod.Coord != nil {
			deps.Coord = mod.Coord
		}
		built = append(built, mod)
	}

	opts := apiserver.Options{Logger: n.log.With("component", "apiserver"),
		// Without a module that secures the API (iam) only the
		// break-glass token is accepted.
		Authenticator: apiserver.TokenAuthenticator{Token: token}}
	apiDeps := []string{"store"}
	for _, mod := range built {
		if sec := mod.Security; sec != nil {
			opts.Authenticator, opts.Authorizer, opts.Auditor = sec.Authenticator, sec.Authorizer, sec.Auditor
		}
		if mod.Tokens != nil {
			tokens = mod.Tokens
		}
		if ia, ok := findAdmin(mod); ok {
			n.admin = ia
		}
		apiDeps = append(apiDeps, mod.APIDependsOn...)
	}
	grants := map[string][]string{}
	for _, mod := range built {
		for principal, perms := range mod.SystemGrants {
			grants[principal] = perms
		}
	}
	for _, mod := range built {
		if mod.AcceptGrants != nil {
			if err := mod.AcceptGrants(grants); err != nil {
				return err
			}
		}
	}
	a = apiserver.New(store, opts)
	// Ties in start order keep list order: the modules' units come first,
	// so chainfire, which depends on nothing and nothing on it yet,
	// starts first and stops last, after every client of it.
	var units []component.Unit
	for _, mod := range built {
		if mod.Register != nil {
			if err := mod.Register(a); err != nil {
				return err
			}
		}
		units = append(units, mod.Units...)
	}
	units = append(units, storeUnits...)
	units = append(units, component.Unit{Component: srv, DependsOn: apiDeps})
	if identity != nil {
		// Last, so the node's own API serves while it enrolls.
		units = append(units, component.Unit{Component: nodeid.NewComponent(identity)})
	}
	for _, u := range units {
		if ms, ok := u.Component.(component.MetricsSource); ok {
			if err := reg.Register(multiCollector(ms.Collectors())); err != nil {
				return fmt.Errorf("registering the metrics of %s: %w", u.Component.Name(), err)
			}
		}
	}

	group, err = component.NewGroup(units, component.Options{StopGrace: n.cfg.ShutdownGrace, Logger: n.log})
	if err != nil {
		return err
	}
	if err := a.Handle("node", apiserver.Endpoint{Method: http.MethodGet, Path: "/v1/status", OperationID: "getNodeStatus",
		Summary: "this node's components and stores", Collection: "status", Verb: "get",
		Handler: apiserver.JSON(func(c *apiserver.Call, _ *apiserver.NoBody) (*api.NodeStatus, error) {
			st := n.status(c.Context(), group, units)
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

// nodeIdentity returns the node's identity towards the control plane when
// it runs no iam and controlPlane.endpoints names one, else nil.
func (n *Node) nodeIdentity() (*nodeid.Identity, error) {
	cp := n.cfg.ControlPlane
	if n.cfg.HasRole("iam") || len(cp.Endpoints) == 0 {
		return nil, nil
	}
	return nodeid.New(nodeid.Config{Node: n.cfg.Node, DataDir: n.cfg.DataDir, Endpoints: cp.Endpoints,
		JoinTokenFile: cp.JoinTokenFile, Logger: n.log.With("component", nodeid.ComponentName)})
}

// findAdmin returns the module's unit that issues the first admin's
// credentials, if it has one.
func findAdmin(mod component.Module) (adminIssuer, bool) {
	for _, u := range mod.Units {
		if ia, ok := u.Component.(adminIssuer); ok {
			return ia, true
		}
	}
	return nil, false
}

// multiCollector registers a component's collectors as one, so a
// component's metrics are registered (and fail) together.
type multiCollector []prometheus.Collector

func (m multiCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m {
		c.Describe(ch)
	}
}

func (m multiCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m {
		c.Collect(ch)
	}
}

// issuer returns the URL clients reach the API under: http:// and the
// address the API listens on (known once it is bound; requests and token
// issuance only happen after that). iam uses it unless its section names
// an issuer.
func (n *Node) issuer(srv *httpserver.Server) func() string {
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
	if n.admin == nil {
		return ""
	}
	return n.admin.InitialAdminPassword()
}

// AdminCredentials issues tokens for the bootstrap admin user, for the
// client config `ultracloud up` writes. Valid after Ready.
func (n *Node) AdminCredentials(ctx context.Context) (*iamv1.TokenResponse, error) {
	if n.admin == nil {
		return nil, errors.New("this node does not run iam")
	}
	return n.admin.IssueUserTokens(ctx, iam.BootstrapAdmin)
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

// status reports every unit's state, with the endpoints and details of
// those that report them (component.Reporter).
func (n *Node) status(ctx context.Context, g *component.Group, units []component.Unit) api.NodeStatus {
	byName := make(map[string]component.Component, len(units))
	for _, u := range units {
		byName[u.Component.Name()] = u.Component
	}
	st := api.NodeStatus{Node: n.cfg.Node, Version: api.Version, Ready: g.Ready()}
	for _, s := range g.Statuses() {
		cs := api.ComponentStatus{Name: s.Name, State: string(s.State)}
		if s.Err != nil {
			cs.Error = s.Err.Error()
		}
		if r, ok := byName[s.Name].(component.Reporter); ok {
			rep := r.Report(ctx)
			cs.Endpoints, cs.Details = rep.Endpoints, rep.Details
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
