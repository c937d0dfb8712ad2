package flaredb

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// testCA is a cluster CA shared by the config tests.
var testCA struct {
	once      sync.Once
	cert, key string
	err       error
}

func sharedCA(t *testing.T) (cert, key string) {
	t.Helper()
	testCA.once.Do(func() {
		dir, err := os.MkdirTemp("", "flaredb-config-ca-")
		if err != nil {
			testCA.err = err
			return
		}
		testCA.cert, testCA.key, testCA.err = pki.GenerateCA(dir, "config test CA")
	})
	if testCA.err != nil {
		t.Fatal(testCA.err)
	}
	return testCA.cert, testCA.key
}

func validConfig(t *testing.T) Config {
	c := Default()
	cert, key := sharedCA(t)
	c.TLS = TLS{Auto: true, AutoCAFile: cert, AutoCAKeyFile: key}
	c.ID = "n1"
	c.ClusterID = "prod"
	c.DataDir = "/var/lib/ultracloud/flaredb"
	c.RaftAddress = "10.0.0.1:7710"
	c.APIAddress = "10.0.0.1:7711"
	c.InitialVoters = []Peer{
		{ID: "n1", RaftAddress: "10.0.0.1:7710", APIAddress: "10.0.0.1:7711"},
		{ID: "n2", RaftAddress: "10.0.0.2:7710", APIAddress: "10.0.0.2:7711"},
		{ID: "n3", RaftAddress: "10.0.0.3:7710", APIAddress: "10.0.0.3:7711"},
	}
	return c
}

func TestConfigValidate(t *testing.T) {
	c := validConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RaftAdvertise != c.RaftAddress || c.APIAdvertise != c.APIAddress {
		t.Fatalf("advertise defaults: %+v", c)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no id", func(c *Config) { c.ID = "" }, "config: id"},
		{"no cluster", func(c *Config) { c.ClusterID = "" }, "config: clusterID"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "config: dataDir"},
		{"bad raft address", func(c *Config) { c.RaftAddress = "nope" }, "config: raftAddress"},
		{"wildcard without advertise", func(c *Config) { c.RaftAddress = "0.0.0.0:7710" }, "config: raftAdvertise"},
		{"api wildcard", func(c *Config) { c.APIAddress = ":7711" }, "config: apiAdvertise"},
		{"even voters", func(c *Config) { c.InitialVoters = c.InitialVoters[:2] }, "config: initialVoters"},
		{"self missing", func(c *Config) { c.ID = "n9" }, "config: initialVoters"},
		{"self address differs", func(c *Config) { c.InitialVoters[0].RaftAddress = "10.0.0.9:7710" }, "config: initialVoters[0].raftAddress"},
		{"duplicate voter", func(c *Config) { c.InitialVoters[2].ID = "n2" }, "config: initialVoters[2].id"},
		{"voter without api", func(c *Config) { c.InitialVoters[1].APIAddress = "" }, "config: initialVoters[1].apiAddress"},
		{"no voters no join", func(c *Config) { c.InitialVoters = nil }, "config: initialVoters"},
		{"bad join", func(c *Config) { c.InitialVoters = nil; c.Join = []string{"x"} }, "config: join[0]"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "config: leaderLeaseTimeout"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = time.Millisecond }, "config: electionTimeout"},
		{"zero threshold", func(c *Config) { c.SnapshotThreshold = 0 }, "config: snapshotThreshold"},
		{"huge batch", func(c *Config) { c.MaxBatchTxns = 1 << 20 }, "config: maxBatchTxns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %v does not name %s", err, tc.field)
			}
		})
	}
	// Joining needs no initial voters.
	j := validConfig(t)
	j.InitialVoters, j.Join = nil, []string{"10.0.0.1:7711"}
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigSecurity(t *testing.T) {
	caCert, caKey := sharedCA(t)
	dir := t.TempDir()
	cert, key, err := pki.IssueCert(caCert, caKey, dir, "n1", []string{"10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	loopback := func(c *Config) {
		c.TLS = TLS{}
		c.AllowPlaintext = true
		c.RaftAddress, c.APIAddress = "127.0.0.1:7710", "localhost:7711"
		c.InitialVoters = []Peer{{ID: "n1", RaftAddress: "127.0.0.1:7710", APIAddress: "[::1]:7711"}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" means valid
		msg   string
	}{
		{"auto with shared CA", func(c *Config) {}, "", ""},
		{"files", func(c *Config) { c.TLS = TLS{CAFile: caCert, CertFile: cert, KeyFile: key} }, "", ""},
		{"tls wins over allowPlaintext", func(c *Config) { c.AllowPlaintext = true }, "", ""},
		{"plaintext on loopback", loopback, "", ""},
		{"lone auto member makes its CA", func(c *Config) {
			c.TLS = TLS{Auto: true}
			c.InitialVoters = c.InitialVoters[:1]
		}, "", ""},

		{"no tls", func(c *Config) { c.TLS = TLS{} }, "config: tls", "allowPlaintext: true"},
		{"plaintext off loopback", func(c *Config) { c.TLS = TLS{}; c.AllowPlaintext = true }, "config: raftAddress", "is not a loopback address"},
		{"plaintext api advertise", func(c *Config) { loopback(c); c.APIAdvertise = "10.0.0.1:7711" }, "config: apiAdvertise", "plaintext is allowed only on loopback"},
		{"plaintext wildcard", func(c *Config) { loopback(c); c.APIAddress = "0.0.0.0:7711"; c.APIAdvertise = "127.0.0.1:7711" }, "config: apiAddress", "configure flaredb.tls"},
		{"plaintext voter", func(c *Config) {
			loopback(c)
			c.InitialVoters = append(c.InitialVoters, Peer{ID: "n2", RaftAddress: "10.0.0.2:7710", APIAddress: "127.0.0.2:7711"}, Peer{ID: "n3", RaftAddress: "127.0.0.3:7710", APIAddress: "127.0.0.3:7711"})
		}, "config: initialVoters[1].raftAddress", "not a loopback address"},
		{"plaintext join", func(c *Config) { loopback(c); c.InitialVoters = nil; c.Join = []string{"db.example:7711"} }, "config: join[0]", "not a loopback address"},
		{"auto without CA in a cluster", func(c *Config) { c.TLS = TLS{Auto: true} }, "config: tls.autoCAFile", "same tls.autoCAFile"},
		{"auto CA key missing", func(c *Config) { c.TLS.AutoCAKeyFile = "" }, "config: tls.autoCAFile", "go together"},
		{"auto CA file unreadable", func(c *Config) { c.TLS.AutoCAFile = missing }, "config: tls.autoCAFile", "cannot read"},
		{"auto and files", func(c *Config) { c.TLS.CertFile = cert }, "config: tls.auto", "remove tls.caFile"},
		{"auto CA without auto", func(c *Config) { c.TLS = TLS{AutoCAFile: caCert, AutoCAKeyFile: caKey} }, "config: tls.autoCAFile", "only with tls.auto"},
		{"cert without key", func(c *Config) { c.TLS = TLS{CAFile: caCert, CertFile: cert} }, "config: tls.keyFile", "must be set"},
		{"no CA", func(c *Config) { c.TLS = TLS{CertFile: cert, KeyFile: key} }, "config: tls.caFile", "must be set"},
		{"missing cert file", func(c *Config) { c.TLS = TLS{CAFile: caCert, CertFile: missing, KeyFile: key} }, "config: tls.certFile", "cannot read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field+":") || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v does not name %s with %q", err, tc.field, tc.msg)
			}
			t.Log(err)
		})
	}
}

func TestConfigValidateClient(t *testing.T) {
	caCert, caKey := sharedCA(t)
	cert, key, err := pki.IssueCert(caCert, caKey, t.TempDir(), "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	remote := []string{"10.0.0.1:7711"}
	for _, tc := range []struct {
		name      string
		cfg       Config
		endpoints []string
		want      string // "" means valid
	}{
		{"files", Config{TLS: TLS{CAFile: caCert, CertFile: cert, KeyFile: key}}, remote, ""},
		{"auto from CA", Config{TLS: TLS{Auto: true, AutoCAFile: caCert, AutoCAKeyFile: caKey}}, remote, ""},
		{"plaintext loopback", Config{AllowPlaintext: true}, []string{"127.0.0.1:7711", "localhost:1"}, ""},
		{"nothing", Config{}, remote, "config: tls: is not set"},
		{"plaintext remote", Config{AllowPlaintext: true}, []string{"127.0.0.1:7711", "10.0.0.1:7711"}, "storage.endpoints[1]: \"10.0.0.1:7711\" is not a loopback address"},
		{"auto without CA", Config{TLS: TLS{Auto: true}}, remote, "config: tls.autoCAFile: must be set with tls.auto on a node without the flaredb role"},
		{"missing key", Config{TLS: TLS{CAFile: caCert, CertFile: cert}}, remote, "config: tls.keyFile: must be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.ValidateClient("storage.endpoints", tc.endpoints)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// A client-only node issues itself a certificate from the CA.
	dir := t.TempDir()
	files, err := ClientTLSFiles(Config{TLS: TLS{Auto: true, AutoCAFile: caCert, AutoCAKeyFile: caKey}}, dir, "web1")
	if err != nil || files.CAFile != caCert || files.CertFile != filepath.Join(dir, pki.MemberCertName) {
		t.Fatalf("client TLS files %+v %v", files, err)
	}
	if _, err := pki.ClientConfig(files.CAFile, files.CertFile, files.KeyFile); err != nil {
		t.Fatal(err)
	}
}
