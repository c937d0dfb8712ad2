package chainfire

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validConfig(t *testing.T) Config {
	c := Default()
	c.Name = "n1"
	c.DataDir = t.TempDir()
	c.AllowPlaintext = true
	return c
}

func TestDefaultsNeedOnlyNameDataDirAndPlaintextOptIn(t *testing.T) {
	c := validConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if len(c.InitialCluster) != 1 || c.InitialCluster[0] != "n1=http://127.0.0.1:2380" {
		t.Fatalf("InitialCluster default = %v, want this member alone", c.InitialCluster)
	}
	// Without the opt-in, the default http URLs are refused.
	c = validConfig(t)
	c.AllowPlaintext = false
	err := c.Validate()
	if !contains(err, "clientURL:", "allowPlaintext: true") || !contains(err, "peerURL:") {
		t.Fatalf("err = %v, want clientURL and peerURL named with the allowPlaintext fix", err)
	}
}

func TestValidateNamesFieldAndFix(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.pem")
	writeTestFile(t, existing)
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error
	}{
		{"empty name", func(c *Config) { c.Name = "" }, []string{"name:", "node1"}},
		{"bad name", func(c *Config) { c.Name = "a=b" }, []string{"name:", `"a=b"`}},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, []string{"dataDir:", "must not be empty"}},
		{"plaintext non-loopback client", func(c *Config) {
			c.ClientURL = "http://10.1.2.3:2379"
		}, []string{"clientURL:", "non-loopback host 10.1.2.3", "use https"}},
		{"plaintext non-loopback peer", func(c *Config) {
			c.PeerURL = "http://192.168.1.5:2380"
			c.InitialCluster = nil
		}, []string{"peerURL:", "non-loopback"}},
		{"plaintext non-loopback other member", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "n2=http://10.0.0.2:2380"}
		}, []string{"initialCluster[1]:", "non-loopback host 10.0.0.2"}},
		{"plaintext without opt-in", func(c *Config) { c.AllowPlaintext = false }, []string{"clientURL:", "set allowPlaintext: true"}},
		{"not a URL", func(c *Config) { c.ClientURL = "::nonsense" }, []string{"clientURL:", "not a URL"}},
		{"wrong scheme", func(c *Config) { c.ClientURL = "grpc://127.0.0.1:2379" }, []string{"clientURL:", "https://"}},
		{"no port", func(c *Config) { c.ClientURL = "http://127.0.0.1" }, []string{"clientURL:", "host:port"}},
		{"bad port", func(c *Config) { c.PeerURL = "http://127.0.0.1:99999"; c.InitialCluster = nil }, []string{"peerURL:", "port"}},
		{"path", func(c *Config) { c.ClientURL = "http://127.0.0.1:2379/x" }, []string{"clientURL:", "nothing else"}},
		{"hostname cannot be bound", func(c *Config) { c.ClientURL = "https://etcd.example.com:2379" }, []string{"clientURL:", "IP address or localhost"}},
		{"unspecified address", func(c *Config) { c.ClientURL = "http://0.0.0.0:2379" }, []string{"clientURL:", "unspecified"}},
		{"initial cluster not name=url", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "http://127.0.0.1:2381"}
		}, []string{"initialCluster[1]:", "name=peerURL"}},
		{"initial cluster bad url", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "n2=127.0.0.1:2381"}
		}, []string{"initialCluster[1]:", "n2"}},
		{"initial cluster duplicate name", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "n1=http://127.0.0.1:2381"}
		}, []string{"initialCluster[1]:", "listed twice"}},
		{"initial cluster duplicate url", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "n2=http://127.0.0.1:2380"}
		}, []string{"initialCluster[1]:", "also given for member"}},
		{"member not in initial cluster", func(c *Config) {
			c.InitialCluster = []string{"a=http://127.0.0.1:2390", "b=http://127.0.0.1:2391"}
		}, []string{"initialCluster:", `does not list this member "n1"`, "add n1=http://127.0.0.1:2380"}},
		{"self listed with other url", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2999"}
		}, []string{"initialCluster[0]:", "peerURL is http://127.0.0.1:2380"}},
		{"mixed schemes", func(c *Config) {
			c.InitialCluster = []string{"n1=http://127.0.0.1:2380", "n2=https://10.0.0.2:2380"}
		}, []string{"initialCluster[1]:", "same scheme"}},
		{"initial state", func(c *Config) { c.InitialState = "join" }, []string{"initialState:", "new or existing"}},
		{"token", func(c *Config) { c.ClusterToken = "" }, []string{"clusterToken:", "unique"}},
		{"https without tls", func(c *Config) { c.ClientURL = "https://10.0.0.1:2379" }, []string{"tls.client.certFile:", "tls.auto"}},
		{"peer https without ca", func(c *Config) {
			c.PeerURL = "https://10.0.0.1:2380"
			c.InitialCluster = nil
			c.TLS.Peer = TLSFiles{CertFile: existing, KeyFile: existing}
		}, []string{"tls.peer:", "caFile"}},
		{"tls on http", func(c *Config) { c.TLS.Client = TLSFiles{CertFile: existing, KeyFile: existing} }, []string{"tls.client:", "is http"}},
		{"client cert auth on http", func(c *Config) { c.TLS.ClientCertAuth = true }, []string{"tls.clientCertAuth:", "https"}},
		{"auto with files", func(c *Config) {
			c.ClientURL = "https://127.0.0.1:2379"
			c.TLS.Auto = true
			c.TLS.Client.CertFile = existing
		}, []string{"tls.auto:", "remove tls.client"}},
		{"auto ca half", func(c *Config) {
			c.ClientURL = "https://127.0.0.1:2379"
			c.TLS.Auto = true
			c.TLS.AutoCAFile = existing
		}, []string{"tls.autoCAFile:", "go together"}},
		{"missing file", func(c *Config) {
			c.ClientURL = "https://127.0.0.1:2379"
			c.TLS.Client = TLSFiles{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: existing}
		}, []string{"tls.client.certFile:", "nope.pem"}},
		{"heartbeat", func(c *Config) { c.HeartbeatInterval = 0 }, []string{"heartbeatInterval:"}},
		{"election too short", func(c *Config) { c.ElectionTimeout = 200 * time.Millisecond }, []string{"electionTimeout:", "5 x heartbeatInterval"}},
		{"election too long", func(c *Config) { c.ElectionTimeout = time.Minute }, []string{"electionTimeout:", "at most 50s"}},
		{"compaction", func(c *Config) { c.AutoCompactionRetention = time.Millisecond }, []string{"autoCompactionRetention:"}},
		{"quota", func(c *Config) { c.QuotaBackendBytes = 1024 }, []string{"quotaBackendBytes:", "16 MiB"}},
		{"snapshot count", func(c *Config) { c.SnapshotCount = 0 }, []string{"snapshotCount:"}},
		{"start timeout", func(c *Config) { c.StartTimeout = 0 }, []string{"startTimeout:"}},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, []string{"logLevel:", "debug, info, warn or error"}},
		{"defrag interval too short", func(c *Config) { c.DefragInterval = 10 * time.Millisecond }, []string{"defragInterval:", "at least 1s"}},
		{"defrag interval negative", func(c *Config) { c.DefragInterval = -time.Minute }, []string{"defragInterval:", "0 (no automatic defragmentation)"}},
		{"defrag min free bytes", func(c *Config) { c.DefragMinFreeBytes = -1 }, []string{"defragMinFreeBytes:", "negative"}},
		{"defrag percent above 100", func(c *Config) { c.DefragMinFreePercent = 150 }, []string{"defragMinFreePercent:", "from 0 to 100"}},
		{"defrag percent negative", func(c *Config) { c.DefragMinFreePercent = -1 }, []string{"defragMinFreePercent:", "from 0 to 100"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.mutate(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if !contains(err, tc.want...) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if _, err := New(c, testLogger()); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New accepted an invalid config: %v", err)
			}
		})
	}
}

func TestValidateAcceptsTLSConfigs(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "x.pem")
	writeTestFile(t, f)
	c := validConfig(t)
	c.AllowPlaintext = false
	c.ClientURL, c.PeerURL = "https://10.0.0.1:2379", "https://10.0.0.1:2380"
	c.InitialCluster = []string{"n1=https://10.0.0.1:2380", "n2=https://node2.example:2380", "n3=https://[fd00::3]:2380"}
	c.TLS.Client = TLSFiles{CAFile: f, CertFile: f, KeyFile: f}
	c.TLS.Peer = TLSFiles{CAFile: f, CertFile: f, KeyFile: f}
	c.TLS.ClientCertAuth = true
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	// Plaintext loopback client with TLS peers is fine too.
	c = validConfig(t)
	c.ClientURL = "http://[::1]:2379"
	c.PeerURL = "https://10.0.0.1:2380"
	c.InitialCluster = nil
	c.TLS.Auto = true
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if !strings.HasPrefix(c.InitialCluster[0], "n1=https://") {
		t.Fatalf("InitialCluster = %v", c.InitialCluster)
	}
}
