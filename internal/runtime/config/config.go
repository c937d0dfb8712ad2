// Package config is the node configuration: its fields and defaults, loading
// from a YAML file, environment variables and flags (defaults < file < env <
// flags), and validation that names the bad field and how to fix it.
//
// The field comments below are the user documentation of node.yaml. The
// package only describes and checks configuration; it starts nothing.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/flaredb"
)

// Config is a node's configuration (node.yaml).
type Config struct {
	// Node is this node's name, unique in the cluster (default: host name).
	Node string `yaml:"node"`
	// DataDir holds every piece of the node's persistent state.
	DataDir string `yaml:"dataDir"`
	// Roles lists the components this node runs; empty means all of them.
	Roles []string `yaml:"roles"`
	// API is the node's HTTP API listener.
	API API `yaml:"api"`
	// Log selects log level and format.
	Log Log `yaml:"log"`
	// Storage tunes the embedded store.
	Storage Storage `yaml:"storage"`
	// IAM configures identity, tokens and secrets at rest.
	IAM IAM `yaml:"iam"`
	// Chainfire configures this node's chainfire member (role chainfire).
	// name defaults to node, dataDir to <dataDir>/chainfire.
	Chainfire chainfire.Config `yaml:"chainfire"`
	// FlareDB configures this node's flaredb member (role flaredb). id
	// defaults to node and dataDir to <dataDir>/flaredb. With neither
	// clusterID, initialVoters nor join set, the member bootstraps a
	// one-member group of its own with clusterID = node (the single-node
	// profile). Nodes without the role read clusterID from here to reach
	// the cluster given by storage.endpoints.
	FlareDB flaredb.Config `yaml:"flaredb"`
	// ShutdownGrace is how long each component may take to stop.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
}

// API configures the shared API listener.
type API struct {
	// Listen is the host:port of the API (default 127.0.0.1:7700).
	Listen string `yaml:"listen"`
	// TokenFile holds the bootstrap admin bearer token (mode 0600). If it
	// does not exist the node creates it with a random token.
	// Default: <dataDir>/admin-token.
	TokenFile string `yaml:"tokenFile"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error (default info).
	Level string `yaml:"level"`
	// Format is text or json (default text).
	Format string `yaml:"format"`
}

// Storage backends.
const (
	// BackendFlareDB keeps resources in flaredb: the node's own member when
	// it runs the flaredb role, else the cluster at storage.endpoints.
	BackendFlareDB = "flaredb"
	// BackendLocal keeps resources in a Pebble store private to this node
	// (<dataDir>/store): no replication; for tests and benchmarks.
	BackendLocal = "local"
)

// Storage configures where resources are stored.
type Storage struct {
	// Backend is flaredb (default) or local.
	Backend string `yaml:"backend"`
	// Endpoints are flaredb API addresses (host:port) for a node that does
	// not run the flaredb role itself. A node with the role uses its own
	// member and the members it knows from flaredb.initialVoters and
	// flaredb.join.
	Endpoints []string `yaml:"endpoints"`
	// RetainRevisions is how many revisions of change history are kept for
	// watches to resume from (default 100000).
	RetainRevisions int64 `yaml:"retainRevisions"`
	// CompactInterval is how often old history is discarded (default 5m).
	CompactInterval time.Duration `yaml:"compactInterval"`
}

// IAM configures identity and access.
type IAM struct {
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

// KnownRoles are the components a node can run, in no particular order.
var knownRoles = []string{"chainfire", "flaredb", "iam"}

// KnownRoles returns the role names Validate accepts.
func KnownRoles() []string { return slices.Clone(knownRoles) }

// Default returns the defaults for a node whose data lives in dataDir.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return Config{
		Node:    strings.ToLower(host),
		API:     API{Listen: "127.0.0.1:7700"},
		Log:     Log{Level: "info", Format: "text"},
		Storage: Storage{Backend: BackendFlareDB, RetainRevisions: 100000, CompactInterval: 5 * time.Minute},
		IAM: IAM{AccessTokenLifetime: 15 * time.Minute, RefreshTokenLifetime: 720 * time.Hour,
			SigningKeyRotation: 24 * time.Hour, AuditRetention: 90 * 24 * time.Hour},
		Chainfire:     chainfire.Default(),
		FlareDB:       flaredb.DefaultConfig(),
		ShutdownGrace: 15 * time.Second,
	}
}

// LoadFile merges the YAML file at path over c. Unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: reading %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w (see docs/configuration.md for the fields)", path, err)
	}
	return nil
}

// EnvPrefix prefixes every environment variable the config reads.
const EnvPrefix = "ULTRACLOUD_"

// EnvName returns the environment variable for a dotted field path, e.g.
// "api.listen" -> ULTRACLOUD_API_LISTEN, "dataDir" -> ULTRACLOUD_DATA_DIR.
func EnvName(path string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	upper := func(c byte) bool { return c >= 'A' && c <= 'Z' }
	lower := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '.':
			b.WriteByte('_')
		case upper(c):
			// A word starts at an upper-case letter after a lower-case one,
			// or at the last letter of an acronym that precedes a word:
			// clusterID -> CLUSTER_ID, apiAddress -> API_ADDRESS,
			// clientURL -> CLIENT_URL, caFile -> CA_FILE.
			if i > 0 && (lower(path[i-1]) || upper(path[i-1]) && i+1 < len(path) && lower(path[i+1]) && path[i+1] > '9') {
				b.WriteByte('_')
			}
			b.WriteByte(c)
		default:
			b.WriteString(strings.ToUpper(string(c)))
		}
	}
	return b.String()
}

// Fields returns the dotted paths of every settable field.
func Fields() []string {
	var out []string
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(path string, _ reflect.Value) { out = append(out, path) })
	return out
}

func walk(v reflect.Value, prefix string, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]() {
			walk(fv, path, fn)
			continue
		}
		fn(path, fv)
	}
}

// LoadEnv merges environment variables over c; lookup is os.LookupEnv in
// production and a map in tests.
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	var errs []error
	walk(reflect.ValueOf(c).Elem(), "", func(path string, fv reflect.Value) {
		name := EnvName(path)
		s, ok := lookup(name)
		if !ok {
			return
		}
		if err := setField(fv, s); err != nil {
			errs = append(errs, fmt.Errorf("config: environment %s (field %s): %w", name, path, err))
		}
	})
	return errors.Join(errs...)
}

// Set sets the field at a dotted path from a string (used for flags).
func (c *Config) Set(path, value string) error {
	var found bool
	var err error
	walk(reflect.ValueOf(c).Elem(), "", func(p string, fv reflect.Value) {
		if p == path {
			found = true
			err = setField(fv, value)
		}
	})
	if !found {
		return fmt.Errorf("config: no field %q", path)
	}
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

func setField(fv reflect.Value, s string) error {
	switch {
	case fv.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", s)
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(s)
	case fv.Kind() == reflect.Int, fv.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		fv.SetInt(n)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported field type %s", fv.Type())
	}
	return nil
}

// Validate checks every field and fills derived defaults (paths under
// DataDir). The error names the field and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Node == "" {
		bad("node", "must not be empty (set a node name, e.g. node: node1)")
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty (e.g. dataDir: /var/lib/ultracloud)")
	} else if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}
	for i, r := range c.Roles {
		if !slices.Contains(knownRoles, r) {
			bad(fmt.Sprintf("roles[%d]", i), "unknown role %q (known roles: %s)", r, strings.Join(knownRoles, ", "))
		}
	}
	if host, port, err := net.SplitHostPort(c.API.Listen); err != nil {
		bad("api.listen", "%q is not host:port (e.g. 127.0.0.1:7700)", c.API.Listen)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		bad("api.listen", "port %q is not a number from 0 to 65535", port)
	} else if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		bad("api.listen", "host %q must be an IP address or localhost", host)
	}
	if c.API.TokenFile == "" && c.DataDir != "" {
		c.API.TokenFile = filepath.Join(c.DataDir, "admin-token")
	}
	if slices.Contains(c.RolesOrAll(), "chainfire") {
		if c.Chainfire.Name == "" {
			c.Chainfire.Name = c.Node
		}
		if c.Chainfire.DataDir == "" && c.DataDir != "" {
			c.Chainfire.DataDir = filepath.Join(c.DataDir, "chainfire")
		}
		if err := c.Chainfire.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("config: chainfire section: %w", err))
		}
	}
	errs = append(errs, c.validateStorage()...)
	if c.IAM.EncryptionKeyFile == "" && c.DataDir != "" {
		c.IAM.EncryptionKeyFile = filepath.Join(c.DataDir, "iam-encryption-key")
	}
	if c.IAM.Issuer != "" {
		u, err := url.Parse(c.IAM.Issuer)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			strings.HasSuffix(c.IAM.Issuer, "/") {
			bad("iam.issuer", "%q is not an http(s) URL without query or trailing slash (e.g. https://cloud.example.com)", c.IAM.Issuer)
		}
	}
	if l := c.IAM.AccessTokenLifetime; l < 10*time.Second || l > time.Hour {
		bad("iam.accessTokenLifetime", "%s must be between 10s and 1h", l)
	}
	if l := c.IAM.RefreshTokenLifetime; l < c.IAM.AccessTokenLifetime || l > 8760*time.Hour {
		bad("iam.refreshTokenLifetime", "%s must be between accessTokenLifetime and 8760h", l)
	}
	if c.IAM.SigningKeyRotation < c.IAM.AccessTokenLifetime {
		bad("iam.signingKeyRotation", "%s must be at least accessTokenLifetime (%s)", c.IAM.SigningKeyRotation, c.IAM.AccessTokenLifetime)
	}
	if c.IAM.AuditRetention < time.Hour {
		bad("iam.auditRetention", "%s is too short (at least 1h)", c.IAM.AuditRetention)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if f := strings.ToLower(c.Log.Format); f != "text" && f != "json" {
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	if c.Storage.RetainRevisions < 1000 {
		bad("storage.retainRevisions", "%d is too small: keep at least 1000 revisions so watches can resume", c.Storage.RetainRevisions)
	}
	if c.Storage.CompactInterval < time.Second {
		bad("storage.compactInterval", "%s is too short (at least 1s)", c.Storage.CompactInterval)
	}
	if c.ShutdownGrace < time.Second || c.ShutdownGrace > 10*time.Minute {
		bad("shutdownGrace", "%s must be between 1s and 10m", c.ShutdownGrace)
	}
	return errors.Join(errs...)
}

// RolesOrAll returns the configured roles, or every known role.
func (c *Config) RolesOrAll() []string {
	if len(c.Roles) == 0 {
		return KnownRoles()
	}
	return slices.Clone(c.Roles)
}

func parseLevel(s string) (string, error) {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return s, nil
	}
	return "", fmt.Errorf("%q is not debug, info, warn or error", s)
}

// validateStorage checks the storage backend and, when this node runs
// flaredb or reaches it, the flaredb section, filling the single-node
// defaults described at Config.FlareDB.
func (c *Config) validateStorage() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	member := slices.Contains(c.RolesOrAll(), "flaredb")
	if member {
		f := &c.FlareDB
		if f.ID == "" {
			f.ID = c.Node
		}
		if f.DataDir == "" && c.DataDir != "" {
			f.DataDir = filepath.Join(c.DataDir, "flaredb")
		}
		if f.ClusterID == "" && len(f.InitialVoters) == 0 && len(f.Join) == 0 {
			// The single-node profile: a group of one, named after the node.
			f.ClusterID = c.Node
			raft, api := f.RaftAdvertise, f.APIAdvertise
			if raft == "" {
				raft = f.RaftAddress
			}
			if api == "" {
				api = f.APIAddress
			}
			f.InitialVoters = []flaredb.Peer{{ID: f.ID, RaftAddress: raft, APIAddress: api}}
		}
		if err := f.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("config: flaredb section: %w", err))
		}
	}
	switch c.Storage.Backend {
	case BackendLocal:
	case BackendFlareDB:
		if !member {
			if len(c.Storage.Endpoints) == 0 {
				bad("storage.endpoints", "this node does not run the flaredb role: list the flaredb API addresses (e.g. [10.0.0.1:7711]), add the flaredb role, or set storage.backend: local")
			}
			for i, e := range c.Storage.Endpoints {
				if _, _, err := net.SplitHostPort(e); err != nil {
					bad(fmt.Sprintf("storage.endpoints[%d]", i), "%q is not host:port (e.g. 10.0.0.1:7711)", e)
				}
			}
			if c.FlareDB.ClusterID == "" {
				bad("flaredb.clusterID", "must name the flaredb cluster that storage.endpoints reach")
			}
			// As a client: flaredb.tls (a certificate from the cluster CA),
			// or allowPlaintext with loopback endpoints only.
			if err := c.FlareDB.ValidateClient("storage.endpoints", c.Storage.Endpoints); err != nil {
				errs = append(errs, err)
			}
		}
	default:
		bad("storage.backend", "%q is not flaredb or local", c.Storage.Backend)
	}
	return errs
}
