package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPrecedence: defaults < file < env < flags reach the core and the
// component sections of the aggregate config.
func TestPrecedence(t *testing.T) {
	c := Default()
	p := writeFile(t, "node: n1\ndataDir: /tmp/x\napi:\n  listen: 127.0.0.1:8000\nlog:\n  level: debug\nshutdownGrace: 20s\niam:\n  auditRetention: 48h\n")
	if err := config.LoadFile(&c, p); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ULTRACLOUD_API_LISTEN": "127.0.0.1:9000", "ULTRACLOUD_ROLES": "iam", "ULTRACLOUD_STORAGE_RETAIN_REVISIONS": "5000",
		"ULTRACLOUD_STORAGE_ENDPOINTS": "127.0.0.1:7711,127.0.0.2:7711", "ULTRACLOUD_FLAREDB_CLUSTER_ID": "prod", "ULTRACLOUD_FLAREDB_ALLOW_PLAINTEXT": "true"}
	if err := config.LoadEnv(&c, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := config.Set(&c, "log.level", "warn"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Node != "n1" || c.API.Listen != "127.0.0.1:9000" || c.Log.Level != "warn" || c.ShutdownGrace != 20*time.Second ||
		len(c.Roles) != 1 || c.Storage.RetainRevisions != 5000 || c.API.TokenFile != "/tmp/x/admin-token" ||
		len(c.Storage.Endpoints) != 2 || c.FlareDB.ClusterID != "prod" || !c.FlareDB.AllowPlaintext ||
		c.IAM.AuditRetention != 48*time.Hour || c.IAM.EncryptionKeyFile != "/tmp/x/iam-encryption-key" {
		t.Fatalf("merged config wrong: %+v", c)
	}
}

func TestUnknownKeyNamed(t *testing.T) {
	c := Default()
	err := config.LoadFile(&c, writeFile(t, "node: n1\nchainfire:\n  lisen: 1.2.3.4:5\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

// TestValidateNamesFields: every problem names the full field path in the
// one form "config: <path>: ", whichever section reported it.
func TestValidateNamesFields(t *testing.T) {
	cases := map[string]func(*Config){
		"api.listen":              func(c *Config) { c.API.Listen = "nonsense" },
		"roles[0]":                func(c *Config) { c.Roles = []string{"bogus"} },
		"log.level":               func(c *Config) { c.Log.Level = "loud" },
		"log.format":              func(c *Config) { c.Log.Format = "xml" },
		"dataDir":                 func(c *Config) { c.DataDir = "" },
		"shutdownGrace":           func(c *Config) { c.ShutdownGrace = 0 },
		"storage.retainRevisions": func(c *Config) { c.Storage.RetainRevisions = 1 },
		"storage.backend":         func(c *Config) { c.Storage.Backend = "etcd" },
		"storage.endpoints":       func(c *Config) { c.Roles = []string{"iam"}; c.FlareDB.ClusterID = "prod" },
		"storage.endpoints[0]": func(c *Config) {
			c.Roles, c.FlareDB.ClusterID, c.Storage.Endpoints = []string{"iam"}, "prod", []string{"nohost"}
		},
		"flaredb.clusterID": func(c *Config) { c.Roles, c.Storage.Endpoints = []string{"iam"}, []string{"10.0.0.1:7711"} },
		// A client-only node needs a flaredb client certificate, or
		// plaintext on loopback only.
		"flaredb.tls": func(c *Config) {
			c.Roles, c.FlareDB.ClusterID, c.Storage.Endpoints = []string{"iam"}, "prod", []string{"10.0.0.1:7711"}
			c.FlareDB.AllowPlaintext = false
		},
		"storage.endpoints[1]": func(c *Config) {
			c.Roles, c.FlareDB.ClusterID, c.FlareDB.AllowPlaintext = []string{"iam"}, "prod", true
			c.Storage.Endpoints = []string{"127.0.0.1:7711", "10.0.0.1:7711"}
		},
		"chainfire.name":           func(c *Config) { c.Chainfire.Name = "no spaces" },
		"chainfire.clientURL":      func(c *Config) { c.Chainfire.ClientURL = "ftp://x" },
		"flaredb.initialVoters":    func(c *Config) { c.FlareDB.ClusterID = "prod" },
		"flaredb.raftAddress":      func(c *Config) { c.FlareDB.RaftAddress = "x" },
		"iam.issuer":               func(c *Config) { c.IAM.Issuer = "ftp://x/" },
		"iam.accessTokenLifetime":  func(c *Config) { c.IAM.AccessTokenLifetime = time.Second },
		"iam.signingKeyRotation":   func(c *Config) { c.IAM.SigningKeyRotation = time.Minute },
		"iam.auditRetention":       func(c *Config) { c.IAM.AuditRetention = time.Minute },
		"iam.refreshTokenLifetime": func(c *Config) { c.IAM.RefreshTokenLifetime = time.Second },
		"chainfire.tls.autoCAFile": func(c *Config) { c.Chainfire.TLS.AutoCAFile = "/x" },
		"flaredb.initialVoters[0].id": func(c *Config) {
			c.FlareDB.ClusterID = "p"
			c.FlareDB.InitialVoters = []flaredb.Peer{{RaftAddress: "127.0.0.1:1", APIAddress: "127.0.0.1:2"}}
		},
		"chainfire.heartbeatInterval":    func(c *Config) { c.Chainfire.HeartbeatInterval = 0 },
		"flaredb.tls.autoCAFile":         func(c *Config) { c.FlareDB.TLS.AutoCAFile = "/x" },
		"flaredb.maxAppendEntries":       func(c *Config) { c.FlareDB.MaxAppendEntries = 0 },
		"chainfire.defragMinFreePercent": func(c *Config) { c.Chainfire.DefragMinFreePercent = 101 },
		// A node running iam is the control plane; it enrolls nowhere.
		"controlPlane.endpoints": func(c *Config) { c.ControlPlane.Endpoints = []string{"http://10.0.0.1:7700"} },
		"controlPlane.endpoints[0]": func(c *Config) {
			c.Roles, c.ControlPlane.Endpoints = []string{"flaredb"}, []string{"10.0.0.1:7700"}
		},
	}
	for field, mutate := range cases {
		c := SingleNodeDefault("/tmp/d")
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "config: "+field+":") {
			t.Errorf("%s: err = %v", field, err)
		}
	}
	// A worker: no iam, a control plane, the join token file derived.
	w := SingleNodeDefault("/tmp/d")
	w.Roles, w.ControlPlane.Endpoints = []string{"flaredb"}, []string{"https://10.0.0.1:7700"}
	if err := w.Validate(); err != nil || w.ControlPlane.JoinTokenFile != "/tmp/d/join-token" {
		t.Fatalf("worker config: %v (joinTokenFile %q)", err, w.ControlPlane.JoinTokenFile)
	}
	// A section of a role the node does not run is not checked.
	c := SingleNodeDefault("/tmp/d")
	c.Roles, c.Chainfire.Name, c.Storage.Backend = []string{"iam"}, "no spaces", config.BackendLocal
	if err := c.Validate(); err != nil {
		t.Fatalf("chainfire checked without the role: %v", err)
	}
}

// The single-node profile: a flaredb member with nothing configured forms
// a one-member group named after the node, and keeps resources in it.
func TestFlareDBSingleNodeDefaults(t *testing.T) {
	c := SingleNodeDefault("/tmp/d")
	c.Node = "n1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	f := c.FlareDB
	if f.ID != "n1" || f.ClusterID != "n1" || f.DataDir != "/tmp/d/flaredb" || len(f.InitialVoters) != 1 ||
		f.InitialVoters[0].RaftAddress != f.RaftAddress || f.InitialVoters[0].APIAddress != f.APIAddress || c.Storage.Backend != config.BackendFlareDB {
		t.Fatalf("flaredb defaults wrong: %+v", f)
	}
	if c.Chainfire.Name != "n1" || c.Chainfire.DataDir != "/tmp/d/chainfire" {
		t.Fatalf("chainfire defaults wrong: %+v", c.Chainfire)
	}
	// Without tls the member must be told plaintext is meant.
	c = Default()
	c.Node, c.DataDir, c.Chainfire.AllowPlaintext = "n1", "/tmp/d", true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "config: flaredb.tls:") || !strings.Contains(err.Error(), "allowPlaintext: true") {
		t.Fatalf("err = %v, want it to ask for flaredb.tls or allowPlaintext", err)
	}
	// A cluster ID without voters or join is a cluster member that was not
	// told its peers: an error, not a silent group of one.
	c = SingleNodeDefault("/tmp/d")
	c.FlareDB.ClusterID = "prod"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "config: flaredb.initialVoters:") {
		t.Fatalf("err = %v, want it to ask for flaredb.initialVoters", err)
	}
	// The local backend needs no flaredb at all.
	c = Default()
	c.Node, c.DataDir, c.Roles, c.Storage.Backend = "n1", "/tmp/d", []string{"iam"}, config.BackendLocal
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestFlagsCoverListeners: every flag names a real field, and every
// listener a component declares has a flag (so tests can move it).
func TestFlagsCoverListeners(t *testing.T) {
	c := Default()
	seen := map[string]bool{}
	listeners := 0
	for _, f := range Flags() {
		if seen[f.Name] {
			t.Errorf("flag --%s declared twice", f.Name)
		}
		seen[f.Name] = true
		if err := config.Set(&c, f.Field, "x"); err != nil && strings.Contains(err.Error(), "no field") {
			t.Errorf("flag --%s: %v", f.Name, err)
		}
		if f.Listener != "" {
			listeners++
		}
	}
	if listeners != 5 {
		t.Errorf("%d listener flags, want 5 (api, chainfire client and peer, flaredb raft and api)", listeners)
	}
}
