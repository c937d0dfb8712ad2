// Package iam is the identity and access component: projects (the tenant
// boundary), users, service accounts, roles, role bindings, access keys and
// node credentials as resources; password login, node enrollment and
// access-key and node-key exchange for short-lived
// ES256 access tokens plus rotating refresh tokens; signing-key rotation
// and OIDC discovery (/.well-known/openid-configuration, JWKS); the
// Authenticator, Authorizer and Auditor the shared API framework enforces
// on every request; and the append-only audit log.
//
// It owns identity, credentials and policy. It must not know how other
// components store or serve their kinds: it sees them only as
// (component, collection, verb, project) permissions.
package iam

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// Options are iam's settings that are not node.yaml fields: what the node
// derives for it and the knobs tests turn. Zero values take defaults.
type Options struct {
	// Issuer returns the token issuer URL (iss, and the base of OIDC
	// discovery) when the section sets none. A function because a node
	// may learn its address only once it listens. Required then.
	Issuer func() string
	// Audience is the aud of access tokens (iamv1.DefaultAudience if "").
	Audience string
	// EncryptionKey is the 32-byte at-rest key sealing access key secrets
	// and signing keys (Build reads it from the section's
	// encryptionKeyFile).
	EncryptionKey []byte
	// Leeway tolerates clock skew between nodes when checking tokens (30s).
	Leeway time.Duration
	// LoginPerUser and LoginPerIP limit authentication attempts (defaults:
	// 10 at once then one per 6s per user; 30 at once then one per second
	// per source address).
	LoginPerUser, LoginPerIP RateLimit
	// Argon2 are the password hashing costs (DefaultArgon2 if zero).
	Argon2 Argon2Params
	// DecisionTTL bounds cached authorization decisions (10s if 0).
	DecisionTTL time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// settings is the section and options together, defaults applied, as the
// component's parts use them.
type settings struct {
	Config
	Options
	// Node names this node in audit records; BootstrapToken is the
	// break-glass admin token ("" disables it).
	Node, BootstrapToken string
	// issuer is the section's issuer if set, else Options.Issuer.
	issuer func() string
}

func newSettings(cfg Config, node component.Identity, o Options) settings {
	d := Default()
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.AccessTokenLifetime, d.AccessTokenLifetime}, {&cfg.RefreshTokenLifetime, d.RefreshTokenLifetime},
		{&cfg.SigningKeyRotation, d.SigningKeyRotation}, {&cfg.AuditRetention, d.AuditRetention},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	issuer := o.Issuer
	if cfg.Issuer != "" {
		iss := cfg.Issuer
		issuer = func() string { return iss }
	}
	if o.Audience == "" {
		o.Audience = iamv1.DefaultAudience
	}
	if o.Leeway == 0 {
		o.Leeway = 30 * time.Second
	}
	if o.LoginPerUser.Burst == 0 {
		o.LoginPerUser = RateLimit{Burst: 10, Per: 6 * time.Second}
	}
	if o.LoginPerIP.Burst == 0 {
		o.LoginPerIP = RateLimit{Burst: 30, Per: time.Second}
	}
	if o.Argon2 == (Argon2Params{}) {
		o.Argon2 = DefaultArgon2()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := settings{Config: cfg, Options: o, Node: node.Name, BootstrapToken: node.BootstrapToken, issuer: issuer}
	if s.Node == "" {
		s.Node = "node"
	}
	return s
}

// Component is the iam component.
type Component struct {
	component.Readiness
	cfg   settings
	store storage.Store
	log   *slog.Logger

	sealer    *Sealer
	hasher    *Hasher
	policy    *Policy
	keys      *KeyManager
	tokens    *tokenService
	verifier  *apiserver.JWTVerifier
	bootstrap apiserver.TokenAuthenticator
	audit     *auditLog
	limiter   *loginLimiter

	mu              sync.Mutex
	initialPassword string
}

var (
	_ component.Component     = (*Component)(nil)
	_ apiserver.Authenticator = (*Component)(nil)
)

// New builds the iam component over deps.Store from its section (zero
// fields take Default's values) and options. It touches nothing: Run loads
// state and starts the background work.
func New(section Config, deps component.Deps, opts Options) (*Component, error) {
	cfg := newSettings(section, deps.Node, opts)
	if cfg.issuer == nil {
		return nil, errors.New("iam: no token issuer: set the section's issuer or Options.Issuer")
	}
	store, log := deps.Store, deps.Logger
	sealer, err := NewSealer(cfg.EncryptionKey)
	if err != nil {
		return nil, err
	}
	hasher, err := NewHasher(cfg.Argon2, max(2, runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "iam")
	c := &Component{cfg: cfg, store: store, log: log, sealer: sealer, hasher: hasher,
		bootstrap: apiserver.TokenAuthenticator{Token: cfg.BootstrapToken},
		limiter:   newLoginLimiter(cfg.LoginPerUser, cfg.LoginPerIP)}
	c.policy = NewPolicy(store, log, cfg.Now, cfg.DecisionTTL)
	c.keys = NewKeyManager(store, sealer, log, cfg.Now, cfg.SigningKeyRotation, cfg.AccessTokenLifetime+cfg.Leeway)
	c.tokens = &tokenService{keys: c.keys, store: store, issuer: cfg.issuer, audience: cfg.Audience,
		accessTTL: cfg.AccessTokenLifetime, refreshTTL: cfg.RefreshTokenLifetime, grace: time.Minute, now: cfg.Now}
	c.verifier = apiserver.NewJWTVerifier(c.keys, apiserver.JWTOptions{Issuer: cfg.issuer, Audience: cfg.Audience, Leeway: cfg.Leeway, Now: cfg.Now})
	c.audit = newAuditLog(store, log, cfg.Node, cfg.Now)
	return c, nil
}

// Collectors implements component.MetricsSource: the audit log's counters.
func (c *Component) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.audit.written, c.audit.dropped}
}

// Authorizer returns the policy the API framework asks on every request.
func (c *Component) Authorizer() apiserver.Authorizer { return c.policy }

// Auditor returns the audit log the API framework records mutations in.
func (c *Component) Auditor() apiserver.Auditor { return c.audit }

// Policy returns the policy (for tests and benchmarks).
func (c *Component) Policy() *Policy { return c.policy }

// Keys returns the signing key manager (for tests and benchmarks).
func (c *Component) Keys() *KeyManager { return c.keys }

// Verifier returns the access token verifier.
func (c *Component) Verifier() *apiserver.JWTVerifier { return c.verifier }

// Register adds iam's kinds and endpoints to a; call it once before a
// mounts its routes.
func (c *Component) Register(a *apiserver.API) error {
	for _, reg := range []func() error{
		func() error { return apiserver.Register(a, "iam", c.projectKind()) },
		func() error { return apiserver.Register(a, "iam", c.userKind()) },
		func() error { return apiserver.Register(a, "iam", c.serviceAccountKind()) },
		func() error { return apiserver.Register(a, "iam", c.roleKind()) },
		func() error { return apiserver.Register(a, "iam", c.roleBindingKind()) },
		func() error { return apiserver.Register(a, "iam", c.clusterRoleBindingKind()) },
		func() error { return apiserver.Register(a, "iam", c.accessKeyKind()) },
		func() error { return apiserver.Register(a, "iam", c.nodeCredentialKind()) },
		func() error { return c.endpoints(a) },
	} {
		if err := reg(); err != nil {
			return fmt.Errorf("iam: %w", err)
		}
	}
	return nil
}

// Name implements component.Component.
func (c *Component) Name() string { return "iam" }

// Run loads the signing keys and the policy, creates the first admin on a
// new cluster, then serves until ctx ends: it follows key and policy
// changes, rotates keys, writes audit records and sweeps expired state.
// It returns after the audit queue is flushed.
func (c *Component) Run(ctx context.Context) error {
	if err := c.keys.EnsureCurrent(ctx); err != nil {
		return err
	}
	revs, err := c.policy.Load(ctx)
	if err != nil {
		return err
	}
	if err := c.bootstrapAdmin(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAudit()
	wg.Go(func() { _ = c.audit.run(auditCtx) })
	wg.Go(func() { _ = c.policy.Follow(ctx, revs) })
	wg.Go(func() { _ = c.keys.Follow(ctx) })
	wg.Go(func() { c.maintain(ctx) })
	// The policy must reflect what Load saw before the API serves.
	c.MarkReady()
	<-ctx.Done()
	// The HTTP server stopped before us (it depends on iam), so no request
	// can enqueue audit records any more: flush them and stop the writer.
	stopAudit()
	return nil
}

// maintain rotates signing keys when due and sweeps expired refresh tokens
// and audit records past retention.
func (c *Component) maintain(ctx context.Context) {
	keyTick := time.NewTicker(min(c.cfg.SigningKeyRotation/4, time.Minute))
	defer keyTick.Stop()
	sweepTick := time.NewTicker(time.Hour)
	defer sweepTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keyTick.C:
			if err := c.keys.EnsureCurrent(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("signing key maintenance failed", "err", err)
			}
		case <-sweepTick.C:
			if n, err := c.tokens.sweep(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("sweeping refresh tokens failed", "err", err)
			} else if n > 0 {
				c.log.Info("expired refresh tokens deleted", "count", n)
			}
			if n, err := c.audit.prune(ctx, c.cfg.Now().Add(-c.cfg.AuditRetention)); err != nil && ctx.Err() == nil {
				c.log.Error("pruning audit records failed", "err", err)
			} else if n > 0 {
				c.log.Info("audit records past retention deleted", "count", n)
			}
		}
	}
}

// Authenticate implements apiserver.Authenticator: an access token signed
// by a published key for a principal that still exists and is enabled, or
// the break-glass bootstrap token.
func (c *Component) Authenticate(r *http.Request) (apiserver.Principal, error) {
	tok := apiserver.BearerToken(r)
	if tok == "" {
		return apiserver.Principal{}, apiserver.ErrNoToken()
	}
	if strings.Count(tok, ".") == 2 {
		p, err := c.verifier.Verify(r.Context(), tok)
		if err != nil {
			return apiserver.Principal{}, err
		}
		if err := c.policy.Active(p); err != nil {
			return apiserver.Principal{}, &apiserver.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthenticated,
				Detail: "the credentials behind this token were revoked (user or service account deleted or disabled, access key or node credential removed)", Err: err}
		}
		if node, ok := strings.CutPrefix(p.Name, iamv1.PrincipalNode+":"); ok {
			p.Node = node // confined to its node on node-bound kinds
		}
		return p, nil
	}
	if c.bootstrap.Matches(tok) {
		return apiserver.Principal{Name: apiserver.BootstrapPrincipal, Superuser: true}, nil
	}
	return apiserver.Principal{}, apiserver.ErrBadToken()
}

// Store keys of the bootstrap.
const bootstrapKey = "/iam/bootstrap"

// BootstrapAdmin is the first administrator's user name, and
// BootstrapBinding the cluster role binding that makes it one.
const (
	BootstrapAdmin   = "admin"
	BootstrapBinding = "bootstrap-admin"
)

// bootstrapAdmin creates, once per cluster, the user "admin" with a random
// password and a cluster-wide admin binding. The password is kept in
// memory for InitialAdminPassword and never logged or stored in the clear.
func (c *Component) bootstrapAdmin(ctx context.Context) error {
	if _, err := c.store.Get(ctx, []byte(bootstrapKey)); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("iam: reading bootstrap state: %w", err)
	}
	password := rand.Text()
	hash, err := c.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	now := c.cfg.Now().UTC().Truncate(time.Millisecond)
	uid := uuid.NewString()
	userSpec, _ := json.Marshal(iamv1.UserSpec{DisplayName: "Bootstrap administrator"})
	userStatus, _ := json.Marshal(iamv1.UserStatus{PasswordSet: true, PasswordChangedAt: &now})
	user, err := apiserver.EncodeObject(&api.Object{Kind: iamv1.UserKind,
		Metadata: api.ObjectMeta{Name: BootstrapAdmin, UID: uid, CreatedAt: &now, UpdatedAt: &now}, Spec: userSpec, Status: userStatus})
	if err != nil {
		return err
	}
	bindSpec, _ := json.Marshal(iamv1.RoleBindingSpec{Role: iamv1.BuiltinRoleAdmin, Principal: iamv1.UserPrincipal(BootstrapAdmin)})
	binding, err := apiserver.EncodeObject(&api.Object{Kind: iamv1.ClusterRoleBindingKind,
		Metadata: api.ObjectMeta{Name: BootstrapBinding, UID: uuid.NewString(), CreatedAt: &now, UpdatedAt: &now}, Spec: bindSpec})
	if err != nil {
		return err
	}
	pw, err := json.Marshal(passwordRecord{ID: newPasswordID(), UID: uid, Hash: hash, ChangedAt: now})
	if err != nil {
		return err
	}
	userKey := apiserver.ObjectKey(iamv1.UserCollection, "", BootstrapAdmin)
	bindingKey := apiserver.ObjectKey(iamv1.ClusterRoleBindingCollection, "", BootstrapBinding)
	res, err := c.store.Txn(ctx, storage.Txn{
		If: []storage.Compare{{Key: []byte(bootstrapKey), Target: storage.CompareMissing},
			{Key: userKey, Target: storage.CompareMissing}, {Key: bindingKey, Target: storage.CompareMissing}},
		Then: []storage.Op{
			{Type: storage.OpPut, Key: []byte(bootstrapKey), Value: []byte(now.Format(time.RFC3339))},
			{Type: storage.OpPut, Key: userKey, Value: user},
			{Type: storage.OpPut, Key: []byte(passwordPrefix + BootstrapAdmin), Value: pw},
			{Type: storage.OpPut, Key: bindingKey, Value: binding},
		},
	})
	if err != nil {
		return fmt.Errorf("iam: creating the first admin: %w", err)
	}
	if !res.Succeeded {
		// Another node bootstrapped, or someone made these by hand: leave
		// them alone and never try again.
		_, _, err := storage.CreateIfAbsent(ctx, c.store, []byte(bootstrapKey), []byte(now.Format(time.RFC3339)))
		return err
	}
	// Make the new user and binding visible to the policy before serving.
	if _, err := c.policy.Load(ctx); err != nil {
		return err
	}
	c.log.Info("first admin user created", "user", BootstrapAdmin)
	c.mu.Lock()
	c.initialPassword = password
	c.mu.Unlock()
	return nil
}

// InitialAdminPassword returns the bootstrap admin's password if this
// process created it (once per cluster), else "". The caller shows it once.
func (c *Component) InitialAdminPassword() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initialPassword
}

// IssueUserTokens issues access and refresh tokens for an enabled user,
// without a password: for `ultracloud up`, which writes them into the
// local client config.
func (c *Component) IssueUserTokens(ctx context.Context, user string) (*iamv1.TokenResponse, error) {
	principal := iamv1.UserPrincipal(user)
	uid, err := c.principalUID(ctx, principal)
	if err != nil {
		return nil, fmt.Errorf("iam: issuing tokens for %s: %w", principal, err)
	}
	pwID, err := c.currentPasswordID(ctx, user)
	if err != nil {
		return nil, err
	}
	return c.tokens.issue(ctx, principal, uid, "", pwID, true)
}

// SystemTokenSource returns a function yielding access tokens for a
// built-in system principal (e.g. "iam-projects" for the project
// controller), renewed a minute before they expire.
func (c *Component) SystemTokenSource(name string) func(context.Context) (string, error) {
	principal := iamv1.PrincipalSystem + ":" + name
	var mu sync.Mutex
	var tok string
	var exp time.Time
	return func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if tok != "" && c.cfg.Now().Before(exp.Add(-min(time.Minute, c.cfg.AccessTokenLifetime/2))) {
			return tok, nil
		}
		if !c.policy.isSystem(principal) {
			return "", fmt.Errorf("iam: %s is not a system principal (components declare theirs in Module.SystemGrants)", principal)
		}
		t, e, err := c.tokens.issueAccess(principal, "", "")
		if err != nil {
			return "", err
		}
		tok, exp = t, e
		return tok, nil
	}
}
