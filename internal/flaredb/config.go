package flaredb

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

// Config is the flaredb section of node.yaml: this node's member (role
// flaredb), or, on a node without the role whose resources live in
// flaredb, how it reaches the cluster at storage.endpoints as a client
// (clusterID, tls, allowPlaintext). Field comments are the user
// documentation.
//
// With neither clusterID, initialVoters nor join set, a member bootstraps a
// one-member group of its own with clusterID = node (the single-node
// profile).
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
	// APIAddress is the host:port of the client API: HTTP/2 over TLS with
	// client certificates, or HTTP/2 without TLS (h2c) with allowPlaintext
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

	// TLS secures Raft, the client API and member-to-member calls with
	// mutual TLS 1.3: every connection, in either direction, must present a
	// certificate signed by the cluster CA. Required unless allowPlaintext.
	TLS TLS `yaml:"tls"`
	// AllowPlaintext permits running without TLS: Raft and the API then
	// carry every key and value unencrypted and accept anyone who can
	// connect. It must be set explicitly, and only a member whose every
	// address (raftAddress, raftAdvertise, apiAddress, apiAdvertise,
	// initialVoters, join) is loopback (127.0.0.0/8, ::1, localhost) is
	// accepted; `ultracloud up` sets it. It has no effect when tls is set.
	AllowPlaintext bool `yaml:"allowPlaintext"`

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

	// HeartbeatTimeout is how long a follower waits without hearing from
	// the leader before it becomes a candidate (default 1s).
	HeartbeatTimeout time.Duration `yaml:"heartbeatTimeout"`
	// ElectionTimeout is how long a candidate waits for an election to
	// succeed (default 1s, at least heartbeatTimeout).
	ElectionTimeout time.Duration `yaml:"electionTimeout"`
	// LeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a quorum (default 500ms, at most heartbeatTimeout).
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

	// What Derive learnt from the node: whether the section configures a
	// member (the zero value, also for a Config used on its own), a client
	// of the cluster at endpoints, or nothing on this node.
	use       sectionUse
	endpoints []string
}

type sectionUse uint8

const (
	useMember sectionUse = iota
	useClient
	useNone
)

var _ config.Section = (*Config)(nil)

// Derive fills the defaults that follow from the node: a member is named
// after the node, keeps its data under the node's data directory and, with
// no clusterID, initialVoters or join, forms the single-node profile's
// group of one; a node without the role that stores resources in flaredb
// is a client of storage.endpoints.
func (c *Config) Derive(core *config.Core) {
	switch {
	case core.HasRole("flaredb"):
		c.use = useMember
	case core.Storage.Backend == config.BackendFlareDB:
		c.use, c.endpoints = useClient, core.Storage.Endpoints
		return
	default:
		c.use = useNone
		return
	}
	if c.ID == "" {
		c.ID = core.Node
	}
	if c.DataDir == "" && core.DataDir != "" {
		c.DataDir = filepath.Join(core.DataDir, "flaredb")
	}
	if c.ClusterID == "" && len(c.InitialVoters) == 0 && len(c.Join) == 0 {
		c.ClusterID = core.Node
		raft, api := c.RaftAdvertise, c.APIAdvertise
		if raft == "" {
			raft = c.RaftAddress
		}
		if api == "" {
			api = c.APIAddress
		}
		c.InitialVoters = []Peer{{ID: c.ID, RaftAddress: raft, APIAddress: api}}
	}
}

// IsMember reports whether the section configures a member on this node.
func (c *Config) IsMember() bool { return c.use == useMember }

// TLS configures a member's certificate. Either set auto, or give caFile,
// certFile and keyFile. One certificate serves for everything: the Raft
// listener and the API (as server certificate) and Raft connections,
// forwarded requests and joins to other members (as client certificate).
type TLS struct {
	// Auto makes the member issue its own certificate at every start, for
	// dev and test clusters: a certificate for its ID, valid for the hosts
	// of its raft and API addresses plus localhost, signed by the CA in
	// autoCAFile and autoCAKeyFile. A lone member (one initial voter, no
	// join) may leave those empty: it then creates a CA once in
	// dataDir/tls. Every member of a cluster must use the same CA. Keys and
	// certificates are written to dataDir/tls with mode 0600.
	Auto bool `yaml:"auto"`
	// AutoCAFile is the PEM CA certificate tls.auto issues from.
	AutoCAFile string `yaml:"autoCAFile"`
	// AutoCAKeyFile is the PEM private key of autoCAFile.
	AutoCAKeyFile string `yaml:"autoCAKeyFile"`
	// CAFile is the PEM CA bundle that verifies the other side of every
	// connection: other members (Raft and member-to-member calls) and
	// clients of the API. Only certificates it signed are accepted.
	CAFile string `yaml:"caFile"`
	// CertFile is this member's PEM certificate. It must be valid for both
	// server and client authentication and name every address others use
	// to reach the member (IP or DNS SANs of raftAdvertise and
	// apiAdvertise).
	CertFile string `yaml:"certFile"`
	// KeyFile is CertFile's PEM private key.
	KeyFile string `yaml:"keyFile"`
}

// Enabled reports whether any TLS setting is given (Validate then checks
// that they are complete).
func (t TLS) Enabled() bool {
	return t.Auto || t.AutoCAFile != "" || t.AutoCAKeyFile != "" || t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// Peer is one member of InitialVoters (fields: id, raftAddress, apiAddress).
type Peer = client.Peer

// DefaultConfig returns the defaults for a member; ID, ClusterID and
// DataDir still have to be set.
func Default() Config {
	return Config{
		RaftAddress:             client.DefaultRaftAddress,
		APIAddress:              client.DefaultAPIAddress,
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
// addresses). Each error is a config.FieldError naming the field, relative
// to the section, and the fix. After Derive, a client's section is checked
// as ValidateClient does, and a section this node does not use not at all.
func (c *Config) Validate() error {
	switch c.use {
	case useNone:
		return nil
	case useClient:
		problems := &config.Problems{}
		if c.ClusterID == "" {
			problems.Add("clusterID", "must name the flaredb cluster that storage.endpoints reach")
		}
		problems.Include("", c.ValidateClient("storage.endpoints", c.endpoints))
		return problems.Err()
	}
	problems := &config.Problems{}
	bad := problems.Add
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
		if listen {
			problems.AddErr(field, config.CheckListen(addr))
		} else {
			problems.AddErr(field, config.CheckDialable(addr))
		}
	}
	checkAddr("raftAddress", c.RaftAddress, true)
	checkAddr("apiAddress", c.APIAddress, true)
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftAddress
		if config.IsWildcard(c.RaftAddress) {
			bad("raftAdvertise", "must be set when raftAddress %q listens on every interface", c.RaftAddress)
		}
	} else {
		checkAddr("raftAdvertise", c.RaftAdvertise, false)
	}
	if c.APIAdvertise == "" {
		c.APIAdvertise = c.APIAddress
		if config.IsWildcard(c.APIAddress) {
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
	c.validateSecurity(bad)
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
	return problems.Err()
}

// validateSecurity checks tls, or, without it, that plaintext was asked for
// and every address is loopback.
func (c *Config) validateSecurity(bad func(field, format string, args ...any)) {
	if c.TLS.Enabled() {
		lone := len(c.InitialVoters) == 1 && len(c.Join) == 0
		validateTLS(c.TLS, true, lone, bad)
		return
	}
	if !c.AllowPlaintext {
		bad("tls", "is not set, so Raft and the API would be plaintext and unauthenticated (anyone who reaches the ports could read and write every key): "+
			"set tls.auto: true with the cluster CA in tls.autoCAFile and tls.autoCAKeyFile, or tls.caFile, tls.certFile and tls.keyFile; "+
			"only a member on loopback addresses may set allowPlaintext: true instead")
		return
	}
	reported := map[string]bool{} // each address once (advertise defaults repeat it)
	loopback := func(field, addr string) {
		if reported[addr] {
			return
		}
		if _, _, err := net.SplitHostPort(addr); err == nil && config.CheckLoopback(addr) != nil {
			reported[addr] = true
			bad(field, "%q is not a loopback address, and this member runs without TLS (allowPlaintext: true): "+
				"plaintext is allowed only on loopback (127.0.0.0/8, ::1, localhost); configure flaredb.tls (auto: true, or caFile, certFile and keyFile) for other addresses", addr)
		}
	}
	loopback("raftAddress", c.RaftAddress)
	loopback("raftAdvertise", c.RaftAdvertise)
	loopback("apiAddress", c.APIAddress)
	loopback("apiAdvertise", c.APIAdvertise)
	for i, p := range c.InitialVoters {
		loopback(fmt.Sprintf("initialVoters[%d].raftAddress", i), p.RaftAddress)
		loopback(fmt.Sprintf("initialVoters[%d].apiAddress", i), p.APIAddress)
	}
	for i, a := range c.Join {
		loopback(fmt.Sprintf("join[%d]", i), a)
	}
}

// validateTLS checks the tls section. member says whether it configures a
// member (else a client of storage.endpoints); lone, whether the member
// may create its own CA.
func validateTLS(t TLS, member, lone bool, bad func(field, format string, args ...any)) {
	exists := func(field, path string) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			bad(field, "cannot read %s: %v", path, err)
		}
	}
	if t.Auto {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
			bad("tls.auto", "issues the certificate itself: remove tls.caFile, tls.certFile and tls.keyFile, or set auto: false")
		}
		switch {
		case (t.AutoCAFile == "") != (t.AutoCAKeyFile == ""):
			bad("tls.autoCAFile", "autoCAFile and autoCAKeyFile go together: set both to the cluster CA's certificate and key")
		case t.AutoCAFile == "" && !member:
			bad("tls.autoCAFile", "must be set with tls.auto on a node without the flaredb role: give the cluster CA's certificate and key (tls.autoCAFile, tls.autoCAKeyFile) to issue a client certificate from, or set tls.caFile, tls.certFile and tls.keyFile")
		case t.AutoCAFile == "" && !lone:
			bad("tls.autoCAFile", "must be set on a member of a multi-member cluster: every member issues its certificate from the same CA, so give each the same tls.autoCAFile and tls.autoCAKeyFile (only a lone member, one initial voter and no join, creates its own CA in dataDir/tls)")
		}
		exists("tls.autoCAFile", t.AutoCAFile)
		exists("tls.autoCAKeyFile", t.AutoCAKeyFile)
		return
	}
	if t.AutoCAFile != "" || t.AutoCAKeyFile != "" {
		bad("tls.autoCAFile", "is used only with tls.auto: true (with caFile, certFile and keyFile, remove autoCAFile and autoCAKeyFile)")
	}
	for _, f := range []struct{ field, path string }{{"tls.caFile", t.CAFile}, {"tls.certFile", t.CertFile}, {"tls.keyFile", t.KeyFile}} {
		if f.path == "" {
			bad(f.field, "must be set: tls needs caFile (the cluster CA), certFile and keyFile together, or auto: true")
		}
		exists(f.field, f.path)
	}
}

// ValidateClient checks the tls and allowPlaintext settings of a node that
// does not run a member but reaches flaredb at endpoints (named by
// endpointsField in errors, e.g. storage.endpoints): with tls, a client
// certificate (files, or auto from the cluster CA); without, allowPlaintext
// and loopback endpoints only.
func (c *Config) ValidateClient(endpointsField string, endpoints []string) error {
	problems := &config.Problems{}
	bad := problems.Add
	switch {
	case c.TLS.Enabled():
		validateTLS(c.TLS, false, false, bad)
	case !c.AllowPlaintext:
		bad("tls", "is not set, so this node would reach flaredb in plaintext without a client certificate: "+
			"set tls.caFile, tls.certFile and tls.keyFile (a certificate signed by the cluster CA), or tls.auto with the CA in tls.autoCAFile and tls.autoCAKeyFile; "+
			"only for loopback %s may allowPlaintext: true be set instead", endpointsField)
	default:
		for i, e := range endpoints {
			if _, _, err := net.SplitHostPort(e); err == nil && config.CheckLoopback(e) != nil {
				problems.AddAbsolute(fmt.Sprintf("%s[%d]", endpointsField, i), "%q is not a loopback address, and flaredb.allowPlaintext is set without flaredb.tls: "+
					"plaintext is allowed only on loopback (127.0.0.0/8, ::1, localhost); configure flaredb.tls (caFile, certFile and keyFile)", e)
			}
		}
	}
	return problems.Err()
}
