package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// authBodyLimit bounds the bodies of iam's own endpoints.
const authBodyLimit = 8 << 10

// Mount registers iam's endpoints on mux: OIDC discovery and JWKS (no
// authentication), login, token and logout (their own credentials), and
// whoami, password, signing-key rotation and audit queries (bearer
// tokens). Mutating endpoints go through the API's audit wrapper.
func (c *Component) Mount(mux *http.ServeMux) {
	a := c.api
	mux.HandleFunc("GET "+iamv1.WellKnownOpenIDConfiguration, c.handleDiscovery)
	mux.HandleFunc("GET "+iamv1.JWKSPath, c.handleJWKS)
	mux.Handle("POST "+iamv1.LoginPath, a.Audited(http.HandlerFunc(c.handleLogin)))
	mux.Handle("POST "+iamv1.TokenPath, a.Audited(http.HandlerFunc(c.handleToken)))
	mux.Handle("POST "+iamv1.LogoutPath, a.Audited(http.HandlerFunc(c.handleLogout)))
	mux.Handle("GET "+iamv1.WhoAmIPath, a.Authenticated(c.handleWhoAmI))
	mux.Handle("POST "+iamv1.RotateSigningKeyPath, a.Audited(a.Authenticated(c.handleRotate)))
	mux.Handle("POST /v1/users/{name}/"+iamv1.PasswordSubresource, a.Audited(a.Authenticated(c.handleSetPassword)))
	mux.Handle("GET "+iamv1.AuditPath, a.Authenticated(c.handleAudit))
}

func (c *Component) fail(w http.ResponseWriter, r *http.Request, err error) {
	apiserver.WriteError(w, r, c.log, err)
}

// openIDConfiguration is the OIDC discovery document: enough for standard
// OIDC libraries to verify our access tokens as they would ID tokens.
type openIDConfiguration struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	TokenEndpoint                    string   `json:"token_endpoint"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	GrantTypesSupported              []string `json:"grant_types_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

func (c *Component) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	iss := c.cfg.issuer()
	w.Header().Set("Cache-Control", "public, max-age=300")
	apiserver.WriteJSON(w, http.StatusOK, openIDConfiguration{
		Issuer: iss, JWKSURI: iss + iamv1.JWKSPath, TokenEndpoint: iss + iamv1.TokenPath,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{apiserver.SigningAlgorithm},
		GrantTypesSupported:              []string{"password", iamv1.GrantTypeRefreshToken, iamv1.GrantTypeAccessKey},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "uid", "akid"},
	})
}

func (c *Component) handleJWKS(w http.ResponseWriter, r *http.Request) {
	// Short caching: a verifier seeing an unknown key ID refetches anyway.
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(c.keys.JWKS())
}

// tooMany is the 429 for rate-limited authentication attempts.
func tooMany(w http.ResponseWriter, wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	return apiserver.Errorf(http.StatusTooManyRequests, api.CodeTooManyRequests,
		"too many authentication attempts; retry in %ds", max(secs, 1))
}

// badLogin is the one answer to every failed password login, whatever the
// reason, so it reveals nothing about which users exist.
func badLogin() error {
	return apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "invalid username or password, or the user is disabled")
}

func (c *Component) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req iamv1.LoginRequest
	if err := apiserver.DecodeJSON(r, &req, authBodyLimit); err != nil {
		c.fail(w, r, err)
		return
	}
	validName := apiserver.ValidateName("username", req.Username) == nil
	// The audit record names the user only if it exists: people type
	// passwords into user name fields, and those must not be recorded.
	apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) {
		e.Verb, e.Component, e.Collection = iamv1.AuditVerbLogin, "iam", iamv1.UserCollection
	})
	userKey := strings.ToLower(req.Username)
	if !validName {
		userKey = "invalid"
	}
	if ok, wait := c.limiter.allow(userKey, apiserver.SourceIP(r), c.cfg.Now()); !ok {
		c.fail(w, r, tooMany(w, wait))
		return
	}
	var user *api.Object
	var hash, passwordID string
	if validName {
		o, err := c.getObject(ctx, iamv1.UserCollection, "", req.Username)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			c.fail(w, r, err)
			return
		}
		if o != nil {
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) {
				e.Principal, e.Name = iamv1.UserPrincipal(req.Username), req.Username
			})
			rec, err := c.passwordRecord(ctx, req.Username)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			if rec != nil && rec.UID == o.Metadata.UID {
				user, hash, passwordID = o, rec.Hash, rec.ID
			}
		}
	}
	ok, err := c.hasher.Verify(ctx, hash, req.Password)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if !ok || user == nil {
		c.fail(w, r, badLogin())
		return
	}
	if spec, _ := decodeSpec[iamv1.UserSpec](user); spec.Disabled {
		c.fail(w, r, badLogin())
		return
	}
	resp, err := c.tokens.issue(ctx, iamv1.UserPrincipal(req.Username), user.Metadata.UID, "", passwordID, true)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	apiserver.WriteJSON(w, http.StatusOK, resp)
}

// passwordRecord reads a user's password record (nil if none).
func (c *Component) passwordRecord(ctx context.Context, user string) (*passwordRecord, error) {
	kv, err := c.store.Get(ctx, []byte(passwordPrefix+user))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec passwordRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("iam: decoding password record: %w", err)
	}
	return &rec, nil
}

func (c *Component) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req iamv1.TokenRequest
	if err := apiserver.DecodeJSON(r, &req, authBodyLimit); err != nil {
		c.fail(w, r, err)
		return
	}
	apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Verb, e.Component = iamv1.AuditVerbToken, "iam" })
	switch req.GrantType {
	case iamv1.GrantTypeRefreshToken:
		// Not rate limited: refresh tokens carry 256 random bits, so there
		// is nothing to guess, and every CLI process refreshes.
		resp, err := c.refresh(ctx, req.RefreshToken)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = resp.Principal })
		apiserver.WriteJSON(w, http.StatusOK, resp)
	case iamv1.GrantTypeAccessKey:
		key := "key:" + req.AccessKeyID
		if !validAccessKeyID(req.AccessKeyID) {
			key = "key:invalid"
		} else {
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Collection, e.Name = iamv1.AccessKeyCollection, req.AccessKeyID })
		}
		if ok, wait := c.limiter.allow(key, apiserver.SourceIP(r), c.cfg.Now()); !ok {
			c.fail(w, r, tooMany(w, wait))
			return
		}
		principal, uid, err := c.accessKeyPrincipal(ctx, req.AccessKeyID, req.SecretAccessKey)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = principal })
		resp, err := c.tokens.issue(ctx, principal, uid, req.AccessKeyID, "", false)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		apiserver.WriteJSON(w, http.StatusOK, resp)
	default:
		c.fail(w, r, apiserver.FieldError("grantType", "%q is not %q or %q", req.GrantType, iamv1.GrantTypeRefreshToken, iamv1.GrantTypeAccessKey))
	}
}

// refresh redeems a refresh token for a user that still exists with the
// same UID, is enabled, and has not changed its password since the login
// that started this chain of refresh tokens.
func (c *Component) refresh(ctx context.Context, token string) (*iamv1.TokenResponse, error) {
	invalid := apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
		"the refresh token is invalid, expired or revoked: run `ultracloud login`")
	rec, next, nextExp, err := c.tokens.redeem(ctx, token)
	if errors.Is(err, ErrRefreshInvalid) {
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	uid, err := c.principalUID(ctx, rec.Principal)
	if errors.Is(err, errPrincipalGone) || (err == nil && uid != rec.UID) {
		_ = c.tokens.revoke(ctx, next)
		return nil, invalid
	}
	if err != nil {
		return nil, err
	}
	if p, _ := iamv1.ParsePrincipal(rec.Principal); p.Kind == iamv1.PrincipalUser {
		pwID, err := c.currentPasswordID(ctx, p.Name)
		if err != nil {
			return nil, err
		}
		if pwID != rec.PasswordID {
			_ = c.tokens.revoke(ctx, next)
			return nil, invalid
		}
	}
	access, exp, err := c.tokens.issueAccess(rec.Principal, rec.UID, "")
	if err != nil {
		return nil, err
	}
	return &iamv1.TokenResponse{AccessToken: access, TokenType: iamv1.TokenTypeBearer, ExpiresAt: exp,
		ExpiresIn: int64(exp.Sub(c.cfg.Now()).Round(time.Second) / time.Second), Principal: rec.Principal,
		RefreshToken: next, RefreshExpiresAt: &nextExp}, nil
}

func (c *Component) handleLogout(w http.ResponseWriter, r *http.Request) {
	var req iamv1.LogoutRequest
	if err := apiserver.DecodeJSON(r, &req, authBodyLimit); err != nil {
		c.fail(w, r, err)
		return
	}
	apiserver.AnnotateAudit(r.Context(), func(e *apiserver.AuditEvent) { e.Verb, e.Component = iamv1.AuditVerbLogout, "iam" })
	if err := c.tokens.revoke(r.Context(), req.RefreshToken); err != nil {
		c.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Component) handleWhoAmI(w http.ResponseWriter, r *http.Request) {
	p, _ := apiserver.PrincipalFrom(r.Context())
	out := iamv1.WhoAmI{Principal: p.Name, Superuser: p.Superuser, ExpiresAt: p.ExpiresAt}
	out.ClusterRoles, out.ProjectRoles = c.policy.Bindings(p.Name)
	apiserver.WriteJSON(w, http.StatusOK, out)
}

func (c *Component) handleRotate(w http.ResponseWriter, r *http.Request) {
	apiserver.AnnotateAudit(r.Context(), func(e *apiserver.AuditEvent) {
		e.Verb, e.Component, e.Collection = iamv1.AuditVerbRotateSigningKey, "iam", "signingkeys"
	})
	perm, _ := ParsePermission(iamv1.PermissionRotateSigningKey)
	if err := c.policy.authorizeEndpoint(r, perm, ""); err != nil {
		c.fail(w, r, err)
		return
	}
	kid, err := c.keys.Rotate(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	apiserver.WriteJSON(w, http.StatusOK, map[string]string{"kid": kid})
}

// validatePassword checks a new password's length. Messages never repeat
// the password.
func validatePassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	if n < iamv1.PasswordMinLength || n > iamv1.PasswordMaxLength || !utf8.ValidString(pw) {
		return apiserver.FieldError("password", "must be %d to %d characters of valid UTF-8 (got %d characters)",
			iamv1.PasswordMinLength, iamv1.PasswordMaxLength, n)
	}
	return nil
}

// handleSetPassword sets a user's password: the user itself (proving the
// current password), or a principal allowed iam.users.setpassword
// cluster-wide. All of the user's refresh tokens stop working.
func (c *Component) handleSetPassword(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) {
		e.Verb, e.Component, e.Collection = iamv1.AuditVerbSetPassword, "iam", iamv1.UserCollection
	})
	if err := apiserver.ValidateName("name", name); err != nil {
		c.fail(w, r, err)
		return
	}
	var req iamv1.SetPasswordRequest
	if err := apiserver.DecodeJSON(r, &req, authBodyLimit); err != nil {
		c.fail(w, r, err)
		return
	}
	p, _ := apiserver.PrincipalFrom(ctx)
	perm, _ := ParsePermission(iamv1.PermissionSetPassword)
	admin := c.policy.authorizeEndpoint(r, perm, "")
	self := p.Name == iamv1.UserPrincipal(name)
	if admin != nil && !self {
		c.fail(w, r, admin)
		return
	}
	if err := validatePassword(req.Password); err != nil {
		c.fail(w, r, err)
		return
	}
	if admin != nil {
		// The user changes its own password: it must prove the current one.
		rec, err := c.passwordRecord(ctx, name)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		hash := ""
		if rec != nil && rec.UID == p.UID {
			hash = rec.Hash
		}
		ok, err := c.hasher.Verify(ctx, hash, req.CurrentPassword)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if !ok {
			c.fail(w, r, apiserver.FieldError("currentPassword", "is not your current password"))
			return
		}
	}
	hash, err := c.hasher.Hash(ctx, req.Password)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	key := apiserver.ObjectKey(iamv1.UserCollection, "", name)
	for attempt := 0; ; attempt++ {
		kv, err := c.store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			c.fail(w, r, apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "user %q not found", name))
			return
		}
		if err != nil {
			c.fail(w, r, err)
			return
		}
		o, err := apiserver.DecodeObject(kv)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		now := c.cfg.Now().UTC().Truncate(time.Millisecond)
		pw, err := json.Marshal(passwordRecord{ID: newPasswordID(), UID: o.Metadata.UID, Hash: hash, ChangedAt: now})
		if err != nil {
			c.fail(w, r, err)
			return
		}
		var st iamv1.UserStatus
		if len(o.Status) > 0 {
			_ = json.Unmarshal(o.Status, &st)
		}
		st.PasswordSet, st.PasswordChangedAt = true, &now
		if o.Status, err = json.Marshal(st); err != nil {
			c.fail(w, r, err)
			return
		}
		o.Metadata.UpdatedAt = &now
		val, err := apiserver.EncodeObject(o)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		res, err := c.store.Txn(ctx, storage.Txn{
			If: []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: kv.ModRevision}},
			Then: []storage.Op{{Type: storage.OpPut, Key: key, Value: val},
				{Type: storage.OpPut, Key: []byte(passwordPrefix + name), Value: pw}},
		})
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if res.Succeeded {
			o.Metadata.Revision = res.Revision
			c.policy.WaitFor(ctx, iamv1.UserCollection, res.Revision, 2*time.Second)
			apiserver.WriteJSON(w, http.StatusOK, o)
			return
		}
		if attempt >= 5 {
			c.fail(w, r, apiserver.Errorf(http.StatusConflict, api.CodeConflict, "user %q is being changed by others; retry", name))
			return
		}
	}
}

// handleAudit serves GET /v1/audit: records oldest first, filtered by
// since/until (RFC 3339), principal and project. Reading every record needs
// iam.audit.list cluster-wide; with project=P, iam.audit.list in P suffices
// and only P's records are returned.
func (c *Component) handleAudit(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	q := auditQuery{principal: qv.Get("principal"), project: qv.Get("project"), limit: iamv1.AuditDefaultLimit}
	perm, _ := ParsePermission(iamv1.PermissionAuditList)
	if q.project != "" {
		if err := apiserver.ValidateName("project", q.project); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	if err := c.policy.authorizeEndpoint(r, perm, q.project); err != nil {
		c.fail(w, r, err)
		return
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.since}, {"until", &q.until}} {
		if s := qv.Get(f.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				c.fail(w, r, apiserver.FieldError(f.name, "%q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", s))
				return
			}
			*f.dst = t
		}
	}
	if s := qv.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			c.fail(w, r, apiserver.FieldError("limit", "limit %q must be a positive integer", s))
			return
		}
		q.limit = min(n, iamv1.AuditMaxLimit)
	}
	if s := qv.Get("continue"); s != "" {
		if !validAuditID(s) {
			c.fail(w, r, apiserver.FieldError("continue", "continue token is invalid; pass back the one from the previous page"))
			return
		}
		q.after = s
	}
	out, err := c.audit.query(r.Context(), q)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	apiserver.WriteJSON(w, http.StatusOK, out)
}
