package iam

import (
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

// Config is the iam section of node.yaml (role iam). The field comments are
// its user documentation; Default holds its defaults, the only place they
// are written down.
type Config struct {
	// Issuer is the iss claim of access tokens and the base URL of OIDC
	// discovery (/.well-known/openid-configuration); clients must reach the
	// API under it. Default: http:// and the API's bound address. Set it
	// when clients reach the API by another name (a load balancer,
	// apigateway), identically on every iam node.
	Issuer string `yaml:"issuer"`
	// EncryptionKeyFile holds the 32-byte key (64 hex digits, mode 0600)
	// that seals access key secrets and token signing keys in the store. It
	// is created if missing and refused if others can read it. Every iam
	// node of a cluster needs the same file.
	// Default: <dataDir>/iam-encryption-key.
	EncryptionKeyFile string `yaml:"encryptionKeyFile"`
	// AccessTokenLifetime is how long an access token is valid (default
	// 15m, 10s to 1h). It bounds how long a revoked credential can still be
	// used on a node that has not yet seen the revocation.
	AccessTokenLifetime time.Duration `yaml:"accessTokenLifetime"`
	// RefreshTokenLifetime is how long an unused refresh token stays valid
	// (default 720h); every refresh starts it again.
	RefreshTokenLifetime time.Duration `yaml:"refreshTokenLifetime"`
	// SigningKeyRotation is how long a signing key signs before a new one
	// replaces it (default 24h, at least accessTokenLifetime).
	SigningKeyRotation time.Duration `yaml:"signingKeyRotation"`
	// AuditRetention is how long audit records are kept (default 2160h,
	// i.e. 90 days; at least 1h).
	AuditRetention time.Duration `yaml:"auditRetention"`
}

var _ config.Section = (*Config)(nil)

// Default returns iam's defaults.
func Default() Config {
	return Config{
		AccessTokenLifetime:  15 * time.Minute,
		RefreshTokenLifetime: 720 * time.Hour,
		SigningKeyRotation:   24 * time.Hour,
		AuditRetention:       90 * 24 * time.Hour,
	}
}

// Derive keeps the encryption key under the node's data directory unless
// set.
func (c *Config) Derive(core *config.Core) {
	if c.EncryptionKeyFile == "" && core.DataDir != "" {
		c.EncryptionKeyFile = filepath.Join(core.DataDir, "iam-encryption-key")
	}
}

// Validate checks the section; paths are relative to it.
func (c *Config) Validate() error {
	p := &config.Problems{}
	if c.Issuer != "" {
		u, err := url.Parse(c.Issuer)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			strings.HasSuffix(c.Issuer, "/") {
			p.Add("issuer", "%q is not an http(s) URL without query or trailing slash (e.g. https://cloud.example.com)", c.Issuer)
		}
	}
	if c.EncryptionKeyFile == "" {
		p.Add("encryptionKeyFile", "must not be empty (e.g. /var/lib/ultracloud/iam-encryption-key)")
	}
	p.AddErr("accessTokenLifetime", config.CheckDuration(c.AccessTokenLifetime, 10*time.Second, time.Hour))
	if l := c.RefreshTokenLifetime; l < c.AccessTokenLifetime || l > 8760*time.Hour {
		p.Add("refreshTokenLifetime", "%s must be between accessTokenLifetime and 8760h", l)
	}
	if c.SigningKeyRotation < c.AccessTokenLifetime {
		p.Add("signingKeyRotation", "%s must be at least accessTokenLifetime (%s)", c.SigningKeyRotation, c.AccessTokenLifetime)
	}
	p.AddErr("auditRetention", config.CheckDuration(c.AuditRetention, time.Hour, 0))
	return p.Err()
}
