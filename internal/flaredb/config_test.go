package flaredb

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
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
	c := validConfig()
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
		{"no id", func(c *Config) { c.ID = "" }, "flaredb.id"},
		{"no cluster", func(c *Config) { c.ClusterID = "" }, "flaredb.clusterID"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "flaredb.dataDir"},
		{"bad raft address", func(c *Config) { c.RaftAddress = "nope" }, "flaredb.raftAddress"},
		{"wildcard without advertise", func(c *Config) { c.RaftAddress = "0.0.0.0:7710" }, "flaredb.raftAdvertise"},
		{"api wildcard", func(c *Config) { c.APIAddress = ":7711" }, "flaredb.apiAdvertise"},
		{"even voters", func(c *Config) { c.InitialVoters = c.InitialVoters[:2] }, "flaredb.initialVoters"},
		{"self missing", func(c *Config) { c.ID = "n9" }, "flaredb.initialVoters"},
		{"self address differs", func(c *Config) { c.InitialVoters[0].RaftAddress = "10.0.0.9:7710" }, "flaredb.initialVoters[0].raftAddress"},
		{"duplicate voter", func(c *Config) { c.InitialVoters[2].ID = "n2" }, "flaredb.initialVoters[2].id"},
		{"voter without api", func(c *Config) { c.InitialVoters[1].APIAddress = "" }, "flaredb.initialVoters[1].apiAddress"},
		{"no voters no join", func(c *Config) { c.InitialVoters = nil }, "flaredb.initialVoters"},
		{"bad join", func(c *Config) { c.InitialVoters = nil; c.Join = []string{"x"} }, "flaredb.join[0]"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }, "flaredb.leaderLeaseTimeout"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = time.Millisecond }, "flaredb.electionTimeout"},
		{"zero threshold", func(c *Config) { c.SnapshotThreshold = 0 }, "flaredb.snapshotThreshold"},
		{"huge batch", func(c *Config) { c.MaxBatchTxns = 1 << 20 }, "flaredb.maxBatchTxns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %v does not name %s", err, tc.field)
			}
		})
	}
	// Joining needs no initial voters.
	j := validConfig()
	j.InitialVoters, j.Join = nil, []string{"10.0.0.1:7711"}
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDataDirGuard(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.startAll()
	c.stop(0)
	cfg := c.config(0, c.voters(), nil)
	cfg.ClusterID = "other"
	srv, err := New(cfg, Options{RaftListener: freeListener(t, c.members[0].raftAddr), APIListener: freeListener(t, c.members[0].apiAddr)})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(t.Context())
	if !errors.Is(err, ErrDataDirMismatch) || !strings.Contains(err.Error(), "flaredb.clusterID") {
		t.Fatalf("Run with another cluster's data dir: %v", err)
	}
}
