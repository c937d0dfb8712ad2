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

	"github.com/go-jose/go-jose/v4"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// authBodyLimit bounds the bodies of iam's own endpoints.
const authBodyLimit = 8 << 10

// endpoints declares iam's non-resource endpoints on a: OIDC discovery
// and JWKS (public), login, token, node enrollment and logout (public:
// they take their own credentials), whoami (any principal), signing-key rotation and audit
// queries (permissions). The password sub-resource of users is an action
// of the User kind (userKind).
func (c *Component) endpoints(a *apiserver.API) error {
	rotate, _ := ParsePermission(iamv1.PermissionRotateSigningKey)
	audit, _ := ParsePermission(iamv1.PermissionAuditList)
	for _, e := range []apiserver.Endpoint{
		{Method: http.MethodGet, Path: iamv1.WellKnownOpenIDConfiguration, OperationID: "getOpenIDConfiguration",
			Summary: "OIDC discovery: the issuer and where its keys are", Access: apiserver.AccessPublic,
			Handler: apiserver.JSON(c.discovery)},
		{Method: http.MethodGet, Path: iamv1.JWKSPath, OperationID: "getJWKS",
			Summary: "the public keys that verify access tokens", Access: apiserver.AccessPublic,
			Handler: apiserver.JSON(c.jwks).WithMediaType("application/jwk-set+json")},
		{Method: http.MethodPost, Path: iamv1.LoginPath, OperationID: "login",
			Summary: "exchange a user name and password for tokens", Access: apiserver.AccessPublic,
			Collection: iamv1.UserCollection, AuditVerb: iamv1.AuditVerbLogin, MaxBody: authBodyLimit,
			Handler: apiserver.JSON(c.login)},
		{Method: http.MethodPost, Path: iamv1.TokenPath, OperationID: "token",
			Summary: "exchange a refresh token, an access key or a node key for tokens", Access: apiserver.AccessPublic,
			AuditVerb: iamv1.AuditVerbToken, MaxBody: authBodyLimit, Handler: apiserver.JSON(c.token)},
		{Method: http.MethodPost, Path: iamv1.NodeEnrollPath, OperationID: "enrollNode",
			Summary: "exchange a node credential's one-time join token for its node key", Access: apiserver.AccessPublic,
			Collection: iamv1.NodeCredentialCollection, AuditVerb: iamv1.AuditVerbEnroll, MaxBody: authBodyLimit,
			Handler: apiserver.JSON(c.enrollNode)},
		{Method: http.MethodPost, Path: iamv1.LogoutPath, OperationID: "logout",
			Summary: "revoke a refresh token", Access: apiserver.AccessPublic,
			AuditVerb: iamv1.AuditVerbLogout, MaxBody: authBodyLimit, Handler: apiserver.JSON(c.logout)},
		{Method: http.MethodGet, Path: iamv1.WhoAmIPath, OperationID: "whoAmI",
			Summary: "the caller's principal and roles", Access: apiserver.AccessAuthenticated,
			Handler: apiserver.JSON(c.whoAmI)},
		{Method: http.MethodPost, Path: iamv1.RotateSigningKeyPath, OperationID: "rotateSigningKey",
			Summary: "sign with a new key from now on", Collection: rotate.Collection, Verb: rotate.Verb,
			AuditVerb: iamv1.AuditVerbRotateSigningKey, Handler: apiserver.JSON(c.rotate)},
		{Method: http.MethodGet, Path: iamv1.AuditPath, OperationID: "listAuditRecords",
			Summary: "audit records, oldest first", Collection: audit.Collection, Verb: audit.Verb,
			Project: auditProject, Query: []string{"since", "until", "principal", "project", "limit", "continue"},
			Handler: apiserver.JSON(c.auditRecords)},
	} {
		if err := a.Handle("iam", e); err != nil {
			return err
		}
	}
	return nil
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

func (c *Component) discovery(call *apiserver.Call, _ *apiserver.NoBody) (*openIDConfiguration, error) {
	iss := c.cfg.issuer()
	call.Header().Set("Cache-Control", "public, max-age=300")
	return &openIDConfiguration{
		Issuer: iss, JWKSURI: iss + iamv1.JWKSPath, TokenEndpoint: iss + iamv1.TokenPath,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{apiserver.SigningAlgorithm},
		GrantTypesSupported:              []string{"password", iamv1.GrantTypeRefreshToken, iamv1.GrantTypeAccessKey, iamv1.GrantTypeNodeKey},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "uid", "akid"},
	}, nil
}

// jwkSet is the JWKS document (RFC 7517) as served.
type jwkSet struct {
	Keys []publicJWK `json:"keys"`
}

// publicJWK is one public signing key. It is encoded by go-jose; its
// fields only document what that encoding holds for our EC keys.
type publicJWK struct {
	Use string `json:"use" jsonschema:"enum=sig"`
	Kty string `json:"kty" jsonschema:"enum=EC"`
	Kid string `json:"kid"`
	Crv string `json:"crv" jsonschema:"enum=P-256"`
	Alg string `json:"alg" jsonschema:"enum=ES256"`
	X   string `json:"x"`
	Y   string `json:"y"`
	key jose.JSONWebKey
}

// MarshalJSON encodes the key as go-jose does.
func (k publicJWK) MarshalJSON() ([]byte, error) { return k.key.MarshalJSON() }

func (c *Component) jwks(call *apiserver.Call, _ *apiserver.NoBody) (*jwkSet, error) {
	// Short caching: a verifier seeing an unknown key ID refetches anyway.
	call.Header().Set("Cache-Control", "public, max-age=60")
	set := c.keys.JWKS()
	out := &jwkSet{Keys: make([]publicJWK, len(set.Keys))}
	for i, k := range set.Keys {
		out.Keys[i].key = k
	}
	return out, nil
}

// tooMany is the 429 for rate-limited authentication attempts.
func tooMany(h http.Header, wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	h.Set("Retry-After", strconv.Itoa(max(secs, 1)))
	return apiserver.Errorf(http.StatusTooManyRequests, api.CodeTooManyRequests,
		"too many authentication attempts; retry in %ds", max(secs, 1))
}

// badLogin is the one answer to every failed password login, whatever the
// reason, so it reveals nothing about which users exist.
func badLogin() error {
	return apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "invalid username or password, or the user is disabled")
}

// login serves POST /v1/auth/login. The audit record (verb login, users)
// names the user only if it exists: people type passwords into user name
// fields, and those must not be recorded.
func (c *Component) login(call *apiserver.Call, req *iamv1.LoginRequest) (*iamv1.TokenResponse, error) {
	ctx := call.Context()
	validName := apiserver.ValidateName("username", req.Username) == nil
	userKey := strings.ToLower(req.Username)
	if !validName {
		userKey = "invalid"
	}
	if ok, wait := c.limiter.allow(userKey, apiserver.SourceIP(call.Request), c.cfg.Now()); !ok {
		return nil, tooMany(call.Header(), wait)
	}
	var user *api.Object
	var hash, passwordID string
	if validName {
		o, err := c.getObject(ctx, iamv1.UserCollection, "", req.Username)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if o != nil {
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) {
				e.Principal, e.Name = iamv1.UserPrincipal(req.Username), req.Username
			})
			rec, err := c.passwordRecord(ctx, req.Username)
			if err != nil {
				return nil, err
			}
			if rec != nil && rec.UID == o.Metadata.UID {
				user, hash, passwordID = o, rec.Hash, rec.ID
			}
		}
	}
	ok, err := c.hasher.Verify(ctx, hash, req.Password)
	if err != nil {
		return nil, err
	}
	if !ok || user == nil {
		return nil, badLogin()
	}
	if spec, _ := decodeSpec[iamv1.UserSpec](user); spec.Disabled {
		return nil, badLogin()
	}
	return c.tokens.issue(ctx, iamv1.UserPrincipal(req.Username), user.Metadata.UID, "", passwordID, true)
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

// token serves POST /v1/auth/token (audit verb token).
func (c *Component) token(call *apiserver.Call, req *iamv1.TokenRequest) (*iamv1.TokenResponse, error) {
	ctx := call.Context()
	switch req.GrantType {
	case iamv1.GrantTypeRefreshToken:
		// Not rate limited: refresh tokens carry 256 random bits, so there
		// is nothing to guess, and every CLI process refreshes.
		resp, err := c.refresh(ctx, req.RefreshToken)
		if err != nil {
			return nil, err
		}
		apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = resp.Principal })
		return resp, nil
	case iamv1.GrantTypeAccessKey:
		key := "key:" + req.AccessKeyID
		if !validAccessKeyID(req.AccessKeyID) {
			key = "key:invalid"
		} else {
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Collection, e.Name = iamv1.AccessKeyCollection, req.AccessKeyID })
		}
		if ok, wait := c.limiter.allow(key, apiserver.SourceIP(call.Request), c.cfg.Now()); !ok {
			return nil, tooMany(call.Header(), wait)
		}
		principal, uid, err := c.accessKeyPrincipal(ctx, req.AccessKeyID, req.SecretAccessKey)
		if err != nil {
			return nil, err
		}
		apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = principal })
		return c.tokens.issue(ctx, principal, uid, req.AccessKeyID, "", false)
	case iamv1.GrantTypeNodeKey:
		// Limited like access keys, per node name and source address.
		if ok, wait := c.limiter.allow(nodeLimitKey(req.Node), apiserver.SourceIP(call.Request), c.cfg.Now()); !ok {
			return nil, tooMany(call.Header(), wait)
		}
		if apiserver.ValidateName("node", req.Node) == nil {
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Collection, e.Name = iamv1.NodeCredentialCollection, req.Node })
		}
		principal, uid, err := c.nodeKeyPrincipal(ctx, req.Node, req.NodeKey)
		if err != nil {
			return nil, err
		}
		apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = principal })
		return c.tokens.issue(ctx, principal, uid, "", "", false)
	}
	return nil, apiserver.FieldError("grantType", "%q is not %q, %q or %q", req.GrantType,
		iamv1.GrantTypeRefreshToken, iamv1.GrantTypeAccessKey, iamv1.GrantTypeNodeKey)
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

// logout serves POST /v1/auth/logout (audit verb logout): 204.
func (c *Component) logout(call *apiserver.Call, req *iamv1.LogoutRequest) (*apiserver.NoBody, error) {
	return nil, c.tokens.revoke(call.Context(), req.RefreshToken)
}

func (c *Component) whoAmI(call *apiserver.Call, _ *apiserver.NoBody) (*iamv1.WhoAmI, error) {
	p := call.Principal
	out := &iamv1.WhoAmI{Principal: p.Name, Superuser: p.Superuser, ExpiresAt: p.ExpiresAt}
	out.ClusterRoles, out.ProjectRoles = c.policy.Bindings(p.Name)
	return out, nil
}

// rotated is the answer of a signing-key rotation.
type rotated struct {
	Kid string `json:"kid"`
}

// rotate serves POST /v1/auth/signing-keys/rotate (permission
// iam.signingkeys.update, audit verb rotatesigningkey).
func (c *Component) rotate(call *apiserver.Call, _ *apiserver.NoBody) (*rotated, error) {
	kid, err := c.keys.Rotate(call.Context())
	if err != nil {
		return nil, err
	}
	return &rotated{Kid: kid}, nil
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

// passwordAction is the password sub-resource of users: POST
// /v1/users/{name}/password sets a user's password, for a principal
// allowed iam.users.setpassword cluster-wide or for the user itself
// (proving its current password). All of the user's refresh tokens stop
// working.
func (c *Component) passwordAction() apiserver.Action {
	perm, _ := ParsePermission(iamv1.PermissionSetPassword)
	return apiserver.Action{
		Name: iamv1.PasswordSubresource, Method: http.MethodPost, Verb: perm.Verb,
		OperationID: "setUserPassword", Summary: "set a user's password", MaxBody: authBodyLimit,
		Allow: func(call *apiserver.Call) bool {
			return call.Principal.Name == iamv1.UserPrincipal(call.Name)
		},
		Handler: apiserver.JSON(c.setPassword),
	}
}

func (c *Component) setPassword(call *apiserver.Call, req *iamv1.SetPasswordRequest) (*api.Object, error) {
	ctx := call.Context()
	name := call.Name
	if err := validatePassword(req.Password); err != nil {
		return nil, err
	}
	if !call.Granted {
		// The user changes its own password: it must prove the current one.
		rec, err := c.passwordRecord(ctx, name)
		if err != nil {
			return nil, err
		}
		hash := ""
		if rec != nil && rec.UID == call.Principal.UID {
			hash = rec.Hash
		}
		ok, err := c.hasher.Verify(ctx, hash, req.CurrentPassword)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, apiserver.FieldError("currentPassword", "is not your current password")
		}
	}
	hash, err := c.hasher.Hash(ctx, req.Password)
	if err != nil {
		return nil, err
	}
	key := apiserver.ObjectKey(iamv1.UserCollection, "", name)
	for attempt := 0; ; attempt++ {
		kv, err := c.store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "user %q not found", name)
		}
		if err != nil {
			return nil, err
		}
		o, err := apiserver.DecodeObject(kv)
		if err != nil {
			return nil, err
		}
		now := c.cfg.Now().UTC().Truncate(time.Millisecond)
		pw, err := json.Marshal(passwordRecord{ID: newPasswordID(), UID: o.Metadata.UID, Hash: hash, ChangedAt: now})
		if err != nil {
			return nil, err
		}
		var st iamv1.UserStatus
		if len(o.Status) > 0 {
			_ = json.Unmarshal(o.Status, &st)
		}
		st.PasswordSet, st.PasswordChangedAt = true, &now
		if o.Status, err = json.Marshal(st); err != nil {
			return nil, err
		}
		o.Metadata.UpdatedAt = &now
		val, err := apiserver.EncodeObject(o)
		if err != nil {
			return nil, err
		}
		res, err := c.store.Txn(ctx, storage.Txn{
			If: []storage.Compare{{Key: key, Target: storage.CompareModRevision, Revision: kv.ModRevision}},
			Then: []storage.Op{{Type: storage.OpPut, Key: key, Value: val},
				{Type: storage.OpPut, Key: []byte(passwordPrefix + name), Value: pw}},
		})
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			o.Metadata.Revision = res.Revision
			c.policy.WaitFor(ctx, iamv1.UserCollection, res.Revision, 2*time.Second)
			return o, nil
		}
		if attempt >= 5 {
			return nil, apiserver.Errorf(http.StatusConflict, api.CodeConflict, "user %q is being changed by others; retry", name)
		}
	}
}

// auditProject is the project an audit query reads, in which it needs
// iam.audit.list ("" for all records, which needs it cluster-wide).
func auditProject(r *http.Request) (string, error) {
	p := r.URL.Query().Get("project")
	if p != "" {
		if err := apiserver.ValidateName("project", p); err != nil {
			return "", err
		}
	}
	return p, nil
}

// auditRecords serves GET /v1/audit: records oldest first, filtered by
// since/until (RFC 3339), principal and project. Reading every record needs
// iam.audit.list cluster-wide; with project=P, iam.audit.list in P suffices
// and only P's records are returned.
func (c *Component) auditRecords(call *apiserver.Call, _ *apiserver.NoBody) (*iamv1.AuditList, error) {
	qv := call.Request.URL.Query()
	q := auditQuery{principal: qv.Get("principal"), project: call.Project, limit: iamv1.AuditDefaultLimit}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &q.since}, {"until", &q.until}} {
		if s := qv.Get(f.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return nil, apiserver.FieldError(f.name, "%q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", s)
			}
			*f.dst = t
		}
	}
	if s := qv.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, apiserver.FieldError("limit", "limit %q must be a positive integer", s)
		}
		q.limit = min(n, iamv1.AuditMaxLimit)
	}
	if s := qv.Get("continue"); s != "" {
		if !validAuditID(s) {
			return nil, apiserver.FieldError("continue", "continue token is invalid; pass back the one from the previous page")
		}
		q.after = s
	}
	return c.audit.query(call.Context(), q)
}
