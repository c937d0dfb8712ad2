// Package config is the generic half of node configuration: a loader that
// merges defaults < YAML file < environment < flags into any yaml-tagged
// struct (strict: unknown keys are errors), the node's core fields every
// node has (Core), the one error form ("config: <field path>: <problem>")
// and the field checks sections share.
//
// It imports no component (a rule test says so): each component owns its
// section of node.yaml, a type with Default, Derive and Validate (Section),
// and internal/node assembles the sections into the node's config. The
// field comments below are the user documentation of node.yaml's core
// fields (docs/configuration.md is generated from them).
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Section is a component's section of node.yaml (e.g. `flaredb:`). Its
// type's field comments are its documentation and its package's Default
// function gives its defaults.
type Section interface {
	// Derive fills the defaults that follow from the core: names after
	// the node, directories under its data directory, the single-node
	// profile. It runs after loading and before Validate, on every node,
	// whether or not the node runs the component.
	Derive(core *Core)
	// Validate checks the section (filling values derived from its own
	// fields) and reports every problem as a FieldError whose path is
	// relative to the section.
	Validate() error
}

// Core is the part of node.yaml that belongs to the node rather than to a
// component.
type Core struct {
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
	// Storage chooses where resources are kept.
	Storage Storage `yaml:"storage"`
	// ShutdownGrace is how long each component may take to stop.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// ControlPlane is how a node that runs no iam (a worker with only host
	// agents) authenticates its agents to the API.
	ControlPlane ControlPlane `yaml:"controlPlane"`
}

// ControlPlane configures a worker's node identity: the node enrolls once
// with the one-time join token of its NodeCredential (`ultracloud iam
// node-credential create NODE`), keeps the node key it gets in
// <dataDir>/node-credential, and its agents act as node:NODE against these
// endpoints.
type ControlPlane struct {
	// Endpoints are API base URLs of nodes that run iam (e.g.
	// [https://10.0.0.11:7700]), tried in turn. Setting them makes the
	// node enroll and gives its agents the node's identity; a node running
	// the iam role must leave them empty.
	Endpoints []string `yaml:"endpoints"`
	// JoinTokenFile holds the join token, read only while the node has no
	// credential yet; the token works once. Default: <dataDir>/join-token.
	JoinTokenFile string `yaml:"joinTokenFile"`
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

// DefaultCore returns the core defaults: the node named after the host,
// the API on loopback, resources in flaredb. DataDir has no default here
// (the CLI picks one per command).
func DefaultCore() Core {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return Core{
		Node:          strings.ToLower(host),
		API:           API{Listen: "127.0.0.1:7700"},
		Log:           Log{Level: "info", Format: "text"},
		Storage:       Storage{Backend: BackendFlareDB, RetainRevisions: 100000, CompactInterval: 5 * time.Minute},
		ShutdownGrace: 15 * time.Second,
	}
}

// HasRole reports whether the node runs role: it is listed, or no roles
// are listed (a node then runs every component).
func (c *Core) HasRole(role string) bool {
	return len(c.Roles) == 0 || slices.Contains(c.Roles, role)
}

// Validate checks the core fields against the roles the node knows and
// fills the paths that default to places under DataDir. Field paths are
// those of node.yaml.
func (c *Core) Validate(knownRoles []string) error {
	p := &Problems{}
	if c.Node == "" {
		p.Add("node", "must not be empty (set a node name, e.g. node: node1)")
	}
	if c.DataDir == "" {
		p.Add("dataDir", "must not be empty (e.g. dataDir: /var/lib/ultracloud)")
	} else if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}
	for i, r := range c.Roles {
		if !slices.Contains(knownRoles, r) {
			p.Add(fmt.Sprintf("roles[%d]", i), "unknown role %q (known roles: %s)", r, strings.Join(knownRoles, ", "))
		}
	}
	p.AddErr("api.listen", CheckListen(c.API.Listen))
	if c.API.TokenFile == "" && c.DataDir != "" {
		c.API.TokenFile = filepath.Join(c.DataDir, "admin-token")
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		p.AddErr("log.level", err)
	}
	if f := strings.ToLower(c.Log.Format); f != "text" && f != "json" {
		p.Add("log.format", "%q is not text or json", c.Log.Format)
	}
	switch c.Storage.Backend {
	case BackendLocal:
	case BackendFlareDB:
		for i, e := range c.Storage.Endpoints {
			if err := CheckDialable(e); err != nil {
				p.Add(fmt.Sprintf("storage.endpoints[%d]", i), "%v", err)
			}
		}
	default:
		p.Add("storage.backend", "%q is not flaredb or local", c.Storage.Backend)
	}
	if c.Storage.RetainRevisions < 1000 {
		p.Add("storage.retainRevisions", "%d is too small: keep at least 1000 revisions so watches can resume", c.Storage.RetainRevisions)
	}
	p.AddErr("storage.compactInterval", CheckDuration(c.Storage.CompactInterval, time.Second, 0))
	p.AddErr("shutdownGrace", CheckDuration(c.ShutdownGrace, time.Second, 10*time.Minute))
	for i, e := range c.ControlPlane.Endpoints {
		p.AddErr(fmt.Sprintf("controlPlane.endpoints[%d]", i), CheckHTTPURL(e))
	}
	if c.ControlPlane.JoinTokenFile == "" && c.DataDir != "" {
		c.ControlPlane.JoinTokenFile = filepath.Join(c.DataDir, "join-token")
	}
	return p.Err()
}

// ParseLevel checks a log level name.
func ParseLevel(s string) (string, error) {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return s, nil
	}
	return "", fmt.Errorf("%q is not debug, info, warn or error", s)
}
