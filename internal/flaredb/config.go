package flaredb

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Config is one flaredb member's configuration (the flaredb section of
// node.yaml). Field comments are the user documentation.
type Config struct {
	// ID is this member's name, unique and stable in the cluster (default:
	// the node name). It is stored in the data directory on first start and
	// may not change afterwards.
	ID string `yaml:"id"`
	// ClusterID names the cluster. Members refuse Raft connections and
	// client requests that carry another cluster ID, so two clusters can
	// never mix. Required; it is stored in the data directory on first start.
	ClusterID string `yaml:"clusterID"`
	// DataDir holds the Raft log, snapshots and the state machine
	// (default: <node dataDir>/flaredb).
	DataDir string `yaml:"dataDir"`
	// RaftAddress is the host:port the Raft transport listens on
	// (default 127.0.0.1:7710).
	RaftAddress string `yaml:"raftAddress"`
	// RaftAdvertise is the host:port peers dial for Raft (default:
	// RaftAddress; required when RaftAddress listens on 0.0.0.0).
	RaftAdvertise string `yaml:"raftAdvertise"`
	// APIAddress is the host:port of the client API, HTTP/2 without TLS
	// (default 127.0.0.1:7711).
	APIAddress string `yaml:"apiAddress"`
	// APIAdvertise is the host:port other members and clients use for the API
	// (default: APIAddress).
	APIAdvertise string `yaml:"apiAdvertise"`
	// InitialVoters is the cluster's first configuration: 1, 3 or 5 members
	// including this one. Every listed member bootstraps with exactly this
	// list on its first start; it is ignored once Raft state exists. Leave
	// it empty on a member that joins an existing cluster (see Join).
	InitialVoters []Peer `yaml:"initialVoters"`
	// Join lists API addresses of existing members. A member with no Raft
	// state and no InitialVoters asks them to add it as a voter, then
	// catches up (from a snapshot if the log was truncated).
	Join []string `yaml:"join"`

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (default 8192).
	SnapshotThreshold uint64 `yaml:"snapshotThreshold"`
	// SnapshotInterval is how often the threshold is checked (default 30s).
	SnapshotInterval time.Duration `yaml:"snapshotInterval"`
	// TrailingLogs is how many log entries are kept after a snapshot so a
	// briefly lagging follower catches up from the log instead of a
	// snapshot (default 10240).
	TrailingLogs uint64 `yaml:"trailingLogs"`
	// SnapshotRetain is how many snapshots are kept on disk (default 2).
	SnapshotRetain int `yaml:"snapshotRetain"`

	// HeartbeatTimeout and ElectionTimeout bound failure detection (default
	// 1s each); LeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a quorum (default 500ms, at most HeartbeatTimeout).
	HeartbeatTimeout   time.Duration `yaml:"heartbeatTimeout"`
	ElectionTimeout    time.Duration `yaml:"electionTimeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leaderLeaseTimeout"`
	// CommitTimeout is how long an idle leader waits before telling
	// followers the commit index (default 10ms).
	CommitTimeout time.Duration `yaml:"commitTimeout"`
	// MaxAppendEntries is the most log entries sent (and fsynced) at once
	// (default 256).
	MaxAppendEntries int `yaml:"maxAppendEntries"`
	// MaxBatchTxns is the most transactions coalesced into one log entry
	// (default 512).
	MaxBatchTxns int `yaml:"maxBatchTxns"`
	// RequestTimeout bounds one request inside the cluster: a proposal, a
	// read index round, a forwarded request (default 10s).
	RequestTimeout time.Duration `yaml:"requestTimeout"`
	// ExpireInterval is how often the leader deletes keys whose TTL ran out
	// (default 1s).
	ExpireInterval time.Duration `yaml:"expireInterval"`
	// ShutdownTransferTimeout bounds the leadership transfer a leader does
	// when it stops gracefully (default 5s; negative disables the transfer).
	ShutdownTransferTimeout time.Duration `yaml:"shutdownTransferTimeout"`
}

// Peer is one member of InitialVoters.
type Peer struct {
	// ID is the member's ID.
	ID string `yaml:"id"`
	// RaftAddress is where its Raft transport is reached (its RaftAdvertise).
	RaftAddress string `yaml:"raftAddress"`
	// APIAddress is where its API is reached (its APIAdvertise).
	APIAddress string `yaml:"apiAddress"`
}

// DefaultConfig returns the defaults for a member; ID, ClusterID and
// DataDir still have to be set.
func DefaultConfig() Config {
	return Config{
		RaftAddress:             "127.0.0.1:7710",
		APIAddress:              "127.0.0.1:7711",
		SnapshotThreshold:       8192,
		SnapshotInterval:        30 * time.Second,
		TrailingLogs:            10240,
		SnapshotRetain:          2,
		HeartbeatTimeout:        time.Second,
		ElectionTimeout:         time.Second,
		LeaderLeaseTimeout:      500 * time.Millisecond,
		CommitTimeout:           10 * time.Millisecond,
		MaxAppendEntries:        256,
		MaxBatchTxns:            512,
		RequestTimeout:          10 * time.Second,
		ExpireInterval:          time.Second,
		ShutdownTransferTimeout: 5 * time.Second,
	}
}

// Validate checks every field and fills derived defaults (advertise
// addresses). Each error names the field (as flaredb.<field>) and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: flaredb.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	checkID := func(field, id string) {
		if id == "" {
			bad(field, "must not be empty (e.g. node1)")
		} else if len(id) > wire.MaxIDLen {
			bad(field, "%q is longer than %d bytes", id, wire.MaxIDLen)
		}
	}
	checkID("id", c.ID)
	checkID("clusterID", c.ClusterID)
	if c.DataDir == "" {
		bad("dataDir", "must not be empty (e.g. /var/lib/ultracloud/flaredb)")
	} else if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}
	checkAddr := func(field, addr string, listen bool) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			bad(field, "%q is not host:port (e.g. 10.0.0.1:7710)", addr)
			return
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 || (!listen && p == 0) {
			bad(field, "port %q must be a number from 1 to 65535", port)
		}
		if !listen && (host == "" || host == "0.0.0.0" || host == "::") {
			bad(field, "%q is not an address peers can dial: give a routable host", addr)
		}
	}
	checkAddr("raftAddress", c.RaftAddress, true)
	checkAddr("apiAddress", c.APIAddress, true)
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftAddress
		if isWildcard(c.RaftAddress) {
			bad("raftAdvertise", "must be set when raftAddress %q listens on every interface", c.RaftAddress)
		}
	} else {
		checkAddr("raftAdvertise", c.RaftAdvertise, false)
	}
	if c.APIAdvertise == "" {
		c.APIAdvertise = c.APIAddress
		if isWildcard(c.APIAddress) {
			bad("apiAdvertise", "must be set when apiAddress %q listens on every interface", c.APIAddress)
		}
	} else {
		checkAddr("apiAdvertise", c.APIAdvertise, false)
	}
	switch n := len(c.InitialVoters); {
	case n == 0:
		if len(c.Join) == 0 {
			bad("initialVoters", "list the first voters (1, 3 or 5 members including %q), or set flaredb.join to join a running cluster", c.ID)
		}
	case n != 1 && n != 3 && n != 5:
		bad("initialVoters", "has %d members: bootstrap with 1, 3 or 5 voters (add more later with `ultracloud flaredb member add`)", n)
	default:
		seen := map[string]bool{}
		self := false
		for i, p := range c.InitialVoters {
			f := fmt.Sprintf("initialVoters[%d]", i)
			checkID(f+".id", p.ID)
			checkAddr(f+".raftAddress", p.RaftAddress, false)
			checkAddr(f+".apiAddress", p.APIAddress, false)
			if seen[p.ID] {
				bad(f+".id", "%q is listed twice", p.ID)
			}
			seen[p.ID] = true
			if p.ID == c.ID {
				self = true
				if p.RaftAddress != c.RaftAdvertise {
					bad(f+".raftAddress", "%q differs from this member's raft address %q", p.RaftAddress, c.RaftAdvertise)
				}
			}
		}
		if !self && len(c.Join) == 0 {
			bad("initialVoters", "does not list this member %q: add it, or set flaredb.join instead to join", c.ID)
		}
	}
	for i, a := range c.Join {
		checkAddr(fmt.Sprintf("join[%d]", i), a, false)
	}
	if c.SnapshotThreshold < 1 {
		bad("snapshotThreshold", "must be at least 1 (default 8192)")
	}
	if c.SnapshotInterval < 5*time.Millisecond {
		bad("snapshotInterval", "%s is too short (at least 5ms; default 30s)", c.SnapshotInterval)
	}
	if c.SnapshotRetain < 1 {
		bad("snapshotRetain", "must be at least 1 (default 2)")
	}
	if c.HeartbeatTimeout < 5*time.Millisecond {
		bad("heartbeatTimeout", "%s is too short (at least 5ms; default 1s)", c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("electionTimeout", "%s must be at least heartbeatTimeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("leaderLeaseTimeout", "%s must be between 5ms and heartbeatTimeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout < time.Millisecond {
		bad("commitTimeout", "%s is too short (at least 1ms; default 10ms)", c.CommitTimeout)
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		bad("maxAppendEntries", "%d must be between 1 and 1024 (default 256)", c.MaxAppendEntries)
	}
	if c.MaxBatchTxns < 1 || c.MaxBatchTxns > 1<<15 {
		bad("maxBatchTxns", "%d must be between 1 and 32768 (default 512)", c.MaxBatchTxns)
	}
	if c.RequestTimeout < 100*time.Millisecond {
		bad("requestTimeout", "%s is too short (at least 100ms; default 10s)", c.RequestTimeout)
	}
	if c.ExpireInterval < 10*time.Millisecond {
		bad("expireInterval", "%s is too short (at least 10ms; default 1s)", c.ExpireInterval)
	}
	return errors.Join(errs...)
}

func isWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && (host == "" || host == "0.0.0.0" || host == "::")
}
