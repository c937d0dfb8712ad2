package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	c := Default()
	p := writeFile(t, "node: n1\ndataDir: /tmp/x\napi:\n  listen: 127.0.0.1:8000\nlog:\n  level: debug\nshutdownGrace: 20s\n")
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ULTRACLOUD_API_LISTEN": "127.0.0.1:9000", "ULTRACLOUD_ROLES": "iam", "ULTRACLOUD_STORAGE_RETAIN_REVISIONS": "5000",
		"ULTRACLOUD_STORAGE_ENDPOINTS": "127.0.0.1:7711,127.0.0.2:7711", "ULTRACLOUD_FLAREDB_CLUSTER_ID": "prod", "ULTRACLOUD_FLAREDB_ALLOW_PLAINTEXT": "true"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("log.level", "warn"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Node != "n1" || c.API.Listen != "127.0.0.1:9000" || c.Log.Level != "warn" || c.ShutdownGrace != 20*time.Second ||
		len(c.Roles) != 1 || c.Storage.RetainRevisions != 5000 || c.API.TokenFile != "/tmp/x/admin-token" ||
		len(c.Storage.Endpoints) != 2 || c.FlareDB.ClusterID != "prod" || !c.FlareDB.AllowPlaintext {
		t.Fatalf("merged config wrong: %+v", c)
	}
}

func TestUnknownKeyNamed(t *testing.T) {
	c := Default()
	err := c.LoadFile(writeFile(t, "node: n1\napi:\n  lisen: 1.2.3.4:5\n"))
	if err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

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
		},
		"storage.endpoints[1]": func(c *Config) {
			c.Roles, c.FlareDB.ClusterID, c.FlareDB.AllowPlaintext = []string{"iam"}, "prod", true
			c.Storage.Endpoints = []string{"127.0.0.1:7711", "10.0.0.1:7711"}
		},
	}
	for field, mutate := range cases {
		c := Default()
		c.DataDir = "/tmp/d"
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "config: "+field+":") {
			t.Errorf("%s: err = %v", field, err)
		}
	}
}

func TestBadEnvValue(t *testing.T) {
	c := Default()
	err := c.LoadEnv(func(k string) (string, bool) {
		if k == "ULTRACLOUD_SHUTDOWN_GRACE" {
			return "soon", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), "ULTRACLOUD_SHUTDOWN_GRACE") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnvNames(t *testing.T) {
	for path, want := range map[string]string{"dataDir": "ULTRACLOUD_DATA_DIR", "api.listen": "ULTRACLOUD_API_LISTEN", "api.tokenFile": "ULTRACLOUD_API_TOKEN_FILE",
		"flaredb.clusterID": "ULTRACLOUD_FLAREDB_CLUSTER_ID", "chainfire.clientURL": "ULTRACLOUD_CHAINFIRE_CLIENT_URL",
		"flaredb.apiAddress": "ULTRACLOUD_FLAREDB_API_ADDRESS", "chainfire.tls.autoCAFile": "ULTRACLOUD_CHAINFIRE_TLS_AUTO_CA_FILE"} {
		if got := EnvName(path); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", path, got, want)
		}
	}
	if len(Fields()) < 8 {
		t.Fatalf("Fields() = %v", Fields())
	}
}

// The single-node profile: a flaredb member with nothing configured forms
// a one-member group named after the node, and keeps resources in it.
func TestFlareDBSingleNodeDefaults(t *testing.T) {
	c := Default()
	c.Node, c.DataDir, c.Chainfire.AllowPlaintext, c.FlareDB.AllowPlaintext = "n1", "/tmp/d", true, true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	f := c.FlareDB
	if f.ID != "n1" || f.ClusterID != "n1" || f.DataDir != "/tmp/d/flaredb" || len(f.InitialVoters) != 1 ||
		f.InitialVoters[0].RaftAddress != f.RaftAddress || f.InitialVoters[0].APIAddress != f.APIAddress || c.Storage.Backend != BackendFlareDB {
		t.Fatalf("flaredb defaults wrong: %+v", f)
	}
	// Without tls the member must be told plaintext is meant.
	c = Default()
	c.Node, c.DataDir, c.Chainfire.AllowPlaintext = "n1", "/tmp/d", true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "config: flaredb.tls:") || !strings.Contains(err.Error(), "allowPlaintext: true") {
		t.Fatalf("err = %v, want it to ask for flaredb.tls or allowPlaintext", err)
	}
	// A cluster ID without voters or join is a cluster member that was not
	// told its peers: an error, not a silent group of one.
	c = Default()
	c.Node, c.DataDir, c.FlareDB.ClusterID, c.Chainfire.AllowPlaintext = "n1", "/tmp/d", "prod", true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "flaredb.initialVoters") {
		t.Fatalf("err = %v, want it to ask for flaredb.initialVoters", err)
	}
	// The local backend needs no flaredb at all.
	c = Default()
	c.Node, c.DataDir, c.Roles, c.Storage.Backend = "n1", "/tmp/d", []string{"iam"}, BackendLocal
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
