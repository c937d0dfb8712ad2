package iam

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// kidOf returns the key ID in a JWT's header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

// claimsFor returns valid claims for principal as iam would issue them.
func (e *testEnv) claimsFor(principal, uid string) apiserver.AccessClaims {
	now := e.clock.Now()
	return apiserver.AccessClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: e.url, Subject: principal, Audience: jwt.ClaimStrings{iamv1.DefaultAudience},
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
	}, UID: uid}
}

func (e *testEnv) userUID(name string) string {
	o, err := e.admin.Resources(iamv1.UserCollection, "").Get(e.ctx(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return o.Metadata.UID
}

// TestTokensRejected: expired, tampered, wrong-audience, wrong-issuer,
// wrong-key, unsigned and otherwise malformed tokens all get 401; the same
// claims signed properly get through.
func TestTokensRejected(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "p", iamv1.ProjectSpec{})
	e.user("alice", "alice-password-1")
	e.bind("alice", "admin", "user:alice", "p")
	_, tr := e.login("alice", "alice-password-1")
	get := func(tok string) response { return e.do("GET", "/v1/projects/p/widgets", tok, "") }
	if r := get(tr.AccessToken); r.code != 200 {
		t.Fatalf("valid token: %d %s", r.code, r.body)
	}
	uid := e.userUID("alice")
	sign := func(c jwt.Claims) string {
		s, err := e.iam.keys.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := e.claimsFor("user:alice", uid)
	if r := get(sign(good)); r.code != 200 {
		t.Fatalf("properly signed claims: %d %s", r.code, r.body)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signWith := func(m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tamper := func(tok string) string {
		parts := strings.Split(tok, ".")
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		b = []byte(strings.Replace(string(b), "user:alice", "user:admin", 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(b)
		return strings.Join(parts, ".")
	}
	flipSig := func(tok string) string {
		b := []byte(tok)
		i := len(b) - 5
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	with := func(f func(*apiserver.AccessClaims)) apiserver.AccessClaims {
		c := e.claimsFor("user:alice", uid)
		f(&c)
		return c
	}
	active := e.iam.keys.ActiveKid()
	cases := map[string]string{
		"tampered payload":      tamper(tr.AccessToken),
		"tampered signature":    flipSig(tr.AccessToken),
		"wrong audience":        sign(with(func(c *apiserver.AccessClaims) { c.Audience = jwt.ClaimStrings{"someone-else"} })),
		"no audience":           sign(with(func(c *apiserver.AccessClaims) { c.Audience = nil })),
		"wrong issuer":          sign(with(func(c *apiserver.AccessClaims) { c.Issuer = "https://evil.example" })),
		"no expiry":             sign(with(func(c *apiserver.AccessClaims) { c.ExpiresAt = nil })),
		"not yet valid":         sign(with(func(c *apiserver.AccessClaims) { c.NotBefore = jwt.NewNumericDate(e.clock.Now().Add(time.Hour)) })),
		"wrong key, same kid":   signWith(jwt.SigningMethodES256, otherKey, active, good),
		"wrong key, other kid":  signWith(jwt.SigningMethodES256, otherKey, "some-other-kid", good),
		"no kid":                signWith(jwt.SigningMethodES256, otherKey, "", good),
		"HS256 with public key": signWith(jwt.SigningMethodHS256, []byte("secret"), active, good),
		"alg none":              signWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, active, good),
		"unknown principal":     sign(e.claimsFor("user:mallory", "x")),
		"wrong uid":             sign(e.claimsFor("user:alice", "not-alices-uid")),
		"unbound system":        sign(e.claimsFor("system:root", "")),
		"garbage":               "eyJ.eyJ.sig",
		"huge":                  strings.Repeat("a", 10000) + ".b.c",
	}
	for name, tok := range cases {
		r := get(tok)
		if r.code != http.StatusUnauthorized || r.problem().Code != api.CodeUnauthenticated {
			t.Errorf("%s: %d %s, want 401", name, r.code, r.body)
		}
		if strings.Contains(r.body, tok) {
			t.Errorf("%s: the 401 repeats the token", name)
		}
	}
	// Expiry, with the clock.
	e.clock.Advance(15*time.Minute + 31*time.Second)
	r := get(tr.AccessToken)
	if r.code != http.StatusUnauthorized || !strings.Contains(r.problem().Detail, "expired") {
		t.Errorf("expired token: %d %s", r.code, r.body)
	}
}

// TestKeyRotation: after a rotation, tokens signed by the old key stay
// valid until they expire and no longer; the old key is published in JWKS
// exactly as long as a token it signed can be valid; rotation also happens
// by itself after signingKeyRotation.
func TestKeyRotation(t *testing.T) {
	e := newTestEnv(t, func(c *Config, _ *Options) { c.SigningKeyRotation = 2 * time.Hour })
	e.create(iamv1.ProjectCollection, "", "p", iamv1.ProjectSpec{})
	e.user("alice", "alice-password-1")
	e.bind("alice", "viewer", "user:alice", "p")
	get := func(tok string) int { return e.do("GET", "/v1/projects/p/widgets", tok, "").code }
	jwks := func() []string {
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.Unmarshal([]byte(e.do("GET", iamv1.JWKSPath, "", "").body), &set); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	_, t1 := e.login("alice", "alice-password-1")
	k1 := kidOf(t, t1.AccessToken)
	kid2, err := iamclient.New(e.admin).RotateSigningKey(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if kid2 == k1 || e.iam.keys.ActiveKid() != kid2 {
		t.Fatalf("rotation: old %s new %s active %s", k1, kid2, e.iam.keys.ActiveKid())
	}
	if got := jwks(); !slices.Contains(got, k1) || !slices.Contains(got, kid2) {
		t.Fatalf("JWKS after rotation %v, want both %s and %s", got, k1, kid2)
	}
	if c := get(t1.AccessToken); c != 200 {
		t.Fatalf("old-key token right after rotation: %d", c)
	}
	e.clock.Advance(10 * time.Minute)
	_, t2 := e.login("alice", "alice-password-1")
	if kidOf(t, t2.AccessToken) != kid2 {
		t.Fatalf("new token signed by %s, want %s", kidOf(t, t2.AccessToken), kid2)
	}
	e.clock.Advance(4*time.Minute + 59*time.Second) // t1 is 14m59s old
	if c := get(t1.AccessToken); c != 200 {
		t.Fatalf("old-key token before its expiry: %d", c)
	}
	if err := e.iam.keys.EnsureCurrent(e.ctx()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(jwks(), k1) {
		t.Fatal("old key withdrawn while a token it signed is still valid")
	}
	e.clock.Advance(32 * time.Second) // past t1's expiry and the leeway
	if c := get(t1.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("old-key token after its expiry: %d, want 401", c)
	}
	if c := get(t2.AccessToken); c != 200 {
		t.Fatalf("new-key token: %d", c)
	}
	if err := e.iam.keys.EnsureCurrent(e.ctx()); err != nil {
		t.Fatal(err)
	}
	if got := jwks(); slices.Contains(got, k1) || !slices.Contains(got, kid2) {
		t.Fatalf("JWKS after the old key's last token expired: %v, want only %s", got, kid2)
	}
	// A token the withdrawn key signed (replayed with a fresh exp would
	// need the key; here the old token itself) stays refused.
	if c := get(t1.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a withdrawn key: %d", c)
	}
	// Automatic rotation after signingKeyRotation.
	e.clock.Advance(2 * time.Hour)
	if err := e.iam.keys.EnsureCurrent(e.ctx()); err != nil {
		t.Fatal(err)
	}
	if k3 := e.iam.keys.ActiveKid(); k3 == kid2 || k3 == "" {
		t.Fatalf("no automatic rotation: active %s", k3)
	}
}

// TestOIDCDiscovery: a standard OIDC client (go-oidc) finds our keys
// through discovery and verifies our access tokens, including after a
// rotation, and refuses them for another audience.
func TestOIDCDiscovery(t *testing.T) {
	e := newTestEnv(t)
	e.user("alice", "alice-password-1")
	_, tr := e.login("alice", "alice-password-1")
	ctx := oidc.ClientContext(e.ctx(), e.hc)
	provider, err := oidc.NewProvider(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	v := provider.Verifier(&oidc.Config{ClientID: iamv1.DefaultAudience, Now: e.clock.Now, SupportedSigningAlgs: []string{oidc.ES256}})
	idt, err := v.Verify(ctx, tr.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "user:alice" || idt.Issuer != e.url {
		t.Fatalf("verified token: sub %q iss %q", idt.Subject, idt.Issuer)
	}
	var claims struct {
		UID string `json:"uid"`
	}
	if err := idt.Claims(&claims); err != nil || claims.UID != e.userUID("alice") {
		t.Fatalf("uid claim %q %v", claims.UID, err)
	}
	other := provider.Verifier(&oidc.Config{ClientID: "another-app", Now: e.clock.Now})
	if _, err := other.Verify(ctx, tr.AccessToken); err == nil {
		t.Fatal("token verified for another audience")
	}
	if _, err := iamclient.New(e.admin).RotateSigningKey(e.ctx()); err != nil {
		t.Fatal(err)
	}
	_, tr2 := e.login("alice", "alice-password-1")
	if _, err := v.Verify(ctx, tr2.AccessToken); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if _, err := v.Verify(ctx, tr.AccessToken); err != nil {
		t.Fatalf("token of the old key before expiry: %v", err)
	}
	// Our own remote key set (for components where iam does not run)
	// agrees.
	rv := apiserver.NewJWTVerifier(apiserver.NewRemoteKeySet(e.url+iamv1.JWKSPath, e.hc, time.Millisecond, nil),
		apiserver.JWTOptions{Issuer: func() string { return e.url }, Audience: iamv1.DefaultAudience, Now: e.clock.Now})
	for _, tok := range []string{tr.AccessToken, tr2.AccessToken} {
		if p, err := rv.Verify(e.ctx(), tok); err != nil || p.Name != "user:alice" {
			t.Fatalf("remote key set: %+v %v", p, err)
		}
	}
}

// TestRevocation: deleting or disabling a user, service account or access
// key, or recreating a user under the same name, stops its tokens at once
// on this node (the documented bound elsewhere is the token lifetime), and
// its refresh tokens stop too.
func TestRevocation(t *testing.T) {
	e := newTestEnv(t)
	e.create(iamv1.ProjectCollection, "", "p", iamv1.ProjectSpec{})
	e.user("alice", "alice-password-1")
	e.bind("alice", "viewer", "user:alice", "p")
	get := func(tok string) int { return e.do("GET", "/v1/projects/p/widgets", tok, "").code }
	_, tr := e.login("alice", "alice-password-1")
	users := e.admin.Resources(iamv1.UserCollection, "")

	e.update(iamv1.UserCollection, "", "alice", iamv1.UserSpec{Disabled: true})
	if c := get(tr.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a disabled user: %d", c)
	}
	if _, err := iamclient.New(e.clientWith("")).Refresh(e.ctx(), tr.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("refresh of a disabled user: %v", err)
	}
	if _, err := iamclient.New(e.clientWith("")).Login(e.ctx(), "alice", "alice-password-1"); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("login of a disabled user: %v", err)
	}
	e.update(iamv1.UserCollection, "", "alice", iamv1.UserSpec{})
	_, tr = e.login("alice", "alice-password-1")
	if _, err := users.Delete(e.ctx(), "alice", 0); err != nil {
		t.Fatal(err)
	}
	if c := get(tr.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a deleted user: %d", c)
	}
	// Recreated under the same name: the old token and refresh token are
	// not the new user's, and the old password is gone.
	e.create(iamv1.UserCollection, "", "alice", iamv1.UserSpec{})
	if c := get(tr.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("old token of a recreated user: %d", c)
	}
	if _, err := iamclient.New(e.clientWith("")).Refresh(e.ctx(), tr.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("old refresh token of a recreated user: %v", err)
	}
	if _, err := iamclient.New(e.clientWith("")).Login(e.ctx(), "alice", "alice-password-1"); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("old password of a recreated user: %v", err)
	}

	// Service accounts and their keys.
	e.create(iamv1.ServiceAccountCollection, "p", "ci", iamv1.ServiceAccountSpec{})
	e.bind("ci", "viewer", "serviceaccount:p/ci", "p")
	ak := e.create(iamv1.AccessKeyCollection, "p", "k1", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	var st iamv1.AccessKeyStatus
	_ = json.Unmarshal(ak.Status, &st)
	sat, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), st.AccessKeyID, st.SecretAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	if sat.Principal != "serviceaccount:p/ci" || sat.RefreshToken != "" {
		t.Fatalf("access key token %+v", sat)
	}
	if c := get(sat.AccessToken); c != 200 {
		t.Fatalf("service account token: %d", c)
	}
	e.update(iamv1.AccessKeyCollection, "p", "k1", iamv1.AccessKeySpec{ServiceAccount: "ci", Disabled: true})
	if c := get(sat.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a disabled key: %d", c)
	}
	if _, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), st.AccessKeyID, st.SecretAccessKey); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("exchange of a disabled key: %v", err)
	}
	e.update(iamv1.AccessKeyCollection, "p", "k1", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	if c := get(sat.AccessToken); c != 200 {
		t.Fatalf("token of a re-enabled key: %d", c)
	}
	if _, err := e.admin.Resources(iamv1.AccessKeyCollection, "p").Delete(e.ctx(), "k1", 0); err != nil {
		t.Fatal(err)
	}
	if c := get(sat.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a deleted key: %d", c)
	}
	if _, err := e.store.Get(e.ctx(), []byte(accessKeyPrefix+st.AccessKeyID)); err == nil {
		t.Fatal("the deleted key's sealed secret is still stored")
	}
	ak2 := e.create(iamv1.AccessKeyCollection, "p", "k2", iamv1.AccessKeySpec{ServiceAccount: "ci"})
	_ = json.Unmarshal(ak2.Status, &st)
	sat, err = iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), st.AccessKeyID, st.SecretAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	e.update(iamv1.ServiceAccountCollection, "p", "ci", iamv1.ServiceAccountSpec{Disabled: true})
	if c := get(sat.AccessToken); c != http.StatusUnauthorized {
		t.Fatalf("token of a disabled service account: %d", c)
	}
}

// TestRefreshTokens: refresh tokens rotate (the old one works for a grace
// minute, then never), expire when idle, die with logout and with a
// password change; the SDK refreshes by itself when the server refuses an
// expired access token.
func TestRefreshTokens(t *testing.T) {
	e := newTestEnv(t)
	e.user("alice", "alice-password-1")
	anon := e.clientWith("")
	_, t1 := e.login("alice", "alice-password-1")
	t2, err := iamclient.New(anon).Refresh(e.ctx(), t1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if t2.RefreshToken == t1.RefreshToken || t2.AccessToken == "" || t2.Principal != "user:alice" {
		t.Fatalf("refresh response %+v", t2)
	}
	if _, err := iamclient.New(anon).Refresh(e.ctx(), t1.RefreshToken); err != nil {
		t.Fatalf("reuse within the grace period: %v", err)
	}
	e.clock.Advance(61 * time.Second)
	if _, err := iamclient.New(anon).Refresh(e.ctx(), t1.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("reuse after the grace period: %v", err)
	}
	t3, err := iamclient.New(anon).Refresh(e.ctx(), t2.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// The SDK: the server considers the access token expired; the client
	// gets a 401, refreshes, saves the new credentials, and retries.
	var saved []iamclient.Credentials
	ts, err := iamclient.NewRefreshingTokenSource(e.url, e.hc, iamclient.CredentialsFrom(t3), func(c iamclient.Credentials) { saved = append(saved, c) })
	if err != nil {
		t.Fatal(err)
	}
	sdk, err := client.New(client.Config{Endpoint: e.url, TokenSource: ts})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(16 * time.Minute)
	me, err := iamclient.New(sdk).WhoAmI(e.ctx())
	if err != nil || me.Principal != "user:alice" {
		t.Fatalf("whoami after expiry: %+v %v", me, err)
	}
	if len(saved) != 1 || saved[0].RefreshToken == t3.RefreshToken {
		t.Fatalf("refreshed credentials saved %d times", len(saved))
	}
	// Logout revokes.
	cur := ts.Credentials()
	if err := iamclient.New(anon).Logout(e.ctx(), cur.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := iamclient.New(anon).Refresh(e.ctx(), cur.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("refresh after logout: %v", err)
	}
	// A password change ends every session.
	_, t4 := e.login("alice", "alice-password-1")
	if _, err := iamclient.New(e.admin).SetPassword(e.ctx(), "alice", "alice-password-2", ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Millisecond)
	if _, err := iamclient.New(anon).Refresh(e.ctx(), t4.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("refresh after a password change: %v", err)
	}
	// Idle expiry.
	_, t5 := e.login("alice", "alice-password-2")
	e.clock.Advance(721 * time.Hour)
	if _, err := iamclient.New(anon).Refresh(e.ctx(), t5.RefreshToken); !client.HasCode(err, api.CodeUnauthenticated) {
		t.Fatalf("refresh of an idle-expired token: %v", err)
	}
	n, err := e.iam.tokens.sweep(e.ctx())
	if err != nil || n == 0 {
		t.Fatalf("sweep deleted %d: %v", n, err)
	}
}

// TestPasswords: users change their own password by proving the current
// one; only administrators set others'; weak passwords are refused.
func TestPasswords(t *testing.T) {
	e := newTestEnv(t)
	e.user("alice", "alice-password-1")
	e.user("bob", "bob-password-123")
	alice, _ := e.login("alice", "alice-password-1")
	if _, err := iamclient.New(alice).SetPassword(e.ctx(), "alice", "alice-password-2", "wrong-current-pw"); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("own change with a wrong current password: %v", err)
	}
	if _, err := iamclient.New(alice).SetPassword(e.ctx(), "alice", "alice-password-2", ""); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("own change without the current password: %v", err)
	}
	if _, err := iamclient.New(alice).SetPassword(e.ctx(), "alice", "short", "alice-password-1"); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("short password: %v", err)
	}
	if _, err := iamclient.New(alice).SetPassword(e.ctx(), "alice", "alice-password-2", "alice-password-1"); err != nil {
		t.Fatalf("own change: %v", err)
	}
	if _, err := iamclient.New(alice).SetPassword(e.ctx(), "bob", "bob-password-999", ""); !client.HasCode(err, api.CodeForbidden) {
		t.Fatalf("changing someone else's password: %v", err)
	}
	e.login("alice", "alice-password-2")
	o, err := e.admin.Resources(iamv1.UserCollection, "").Get(e.ctx(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	var st iamv1.UserStatus
	if json.Unmarshal(o.Status, &st); !st.PasswordSet || st.PasswordChangedAt == nil {
		t.Fatalf("user status %s", o.Status)
	}
	if strings.Contains(string(o.Spec)+string(o.Status), "argon2") {
		t.Fatal("the API returns the password hash")
	}
	// Status is server-owned.
	if _, err := e.admin.Resources(iamv1.UserCollection, "").UpdateStatus(e.ctx(), &api.Object{Metadata: api.ObjectMeta{Name: "alice"}, Status: json.RawMessage(`{"passwordSet":false}`)}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("writing user status: %v", err)
	}
}

// TestLoginRateLimit: attempts are limited per user and per source
// address with 429 problem+json and Retry-After, whether the password is
// right or not, and recover with time.
func TestLoginRateLimit(t *testing.T) {
	e := newTestEnv(t, func(_ *Config, c *Options) {
		c.LoginPerUser = RateLimit{Burst: 3, Per: time.Minute}
		c.LoginPerIP = RateLimit{Burst: 6, Per: time.Minute}
	})
	e.user("alice", "alice-password-1")
	login := func(user, pw string) response {
		b, _ := json.Marshal(iamv1.LoginRequest{Username: user, Password: pw})
		return e.do("POST", iamv1.LoginPath, "", string(b))
	}
	for i := 0; i < 3; i++ {
		if r := login("alice", "wrong-password-x"); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d %s", i, r.code, r.body)
		}
	}
	r := login("alice", "alice-password-1")
	if r.code != http.StatusTooManyRequests || r.problem().Code != api.CodeTooManyRequests ||
		r.header.Get("Retry-After") == "" || r.header.Get("Content-Type") != api.ProblemContentType {
		t.Fatalf("4th attempt for alice: %d %v %s", r.code, r.header, r.body)
	}
	// Another user from the same address is not limited by alice's bucket.
	if r := login("bob", "whatever-pass"); r.code != http.StatusUnauthorized {
		t.Fatalf("bob: %d", r.code)
	}
	// The address's own bucket (6) runs out too.
	login("carol", "whatever-pass")
	if r := login("dave", "whatever-pass"); r.code != http.StatusTooManyRequests {
		t.Fatalf("7th attempt from one address: %d %s", r.code, r.body)
	}
	e.clock.Advance(time.Minute)
	if r := login("alice", "alice-password-1"); r.code != 200 {
		t.Fatalf("after a minute: %d %s", r.code, r.body)
	}
	// Access key exchanges share the limits.
	e.clock.Advance(10 * time.Minute)
	for i := 0; i < 3; i++ {
		if _, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), "UCAKAAAAAAAAAAAAAAAA", "nope"); !client.HasCode(err, api.CodeUnauthenticated) {
			t.Fatalf("bad key %d: %v", i, err)
		}
	}
	if _, err := iamclient.New(e.clientWith("")).ExchangeAccessKey(e.ctx(), "UCAKAAAAAAAAAAAAAAAA", "nope"); !client.HasCode(err, api.CodeTooManyRequests) {
		t.Fatalf("4th bad key: %v", err)
	}
}
