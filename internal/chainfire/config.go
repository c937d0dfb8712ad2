package chainfire

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/chainfire/client"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/pki"
)

// Config is one chainfire member's configuration: the `chainfire:` section
// of node.yaml (role chainfire). The field comments are its user
// documentation.
type Config struct {
	// Name is this member's name, unique in the cluster and stable for the
	// life of its data directory (default: the node name). Letters, digits,
	// '.', '_' and '-'.
	Name string `yaml:"name"`
	// DataDir holds the member's data: etcd's write-ahead log and database,
	// the guard file chainfire-cluster.json and, with tls.auto, the
	// generated certificates. It must belong to this cluster and member only
	// (default: <node dataDir>/chainfire).
	DataDir string `yaml:"dataDir"`
	// ClientURL is where the member listens for clients and what it
	// advertises to them, e.g. https://10.0.0.1:2379 (http only on loopback
	// with allowPlaintext). The host must be an IP address or localhost.
	// Default http://127.0.0.1:2379.
	ClientURL string `yaml:"clientURL"`
	// PeerURL is where the member listens for and is reached by the other
	// members, e.g. https://10.0.0.1:2380. The host must be an IP address or
	// localhost. Default http://127.0.0.1:2380.
	PeerURL string `yaml:"peerURL"`
	// InitialCluster lists every member of the cluster when it is first
	// formed (or, with initialState existing, the cluster this member
	// joins), as name=peerURL entries, e.g.
	// [n1=https://10.0.0.1:2380, n2=https://10.0.0.2:2380, n3=https://10.0.0.3:2380].
	// It must list this member with its peerURL. Empty means a cluster of
	// this member alone. Ignored once the data directory is initialized.
	InitialCluster []string `yaml:"initialCluster"`
	// ClusterToken distinguishes this cluster from others formed from the
	// same peer URLs; use a unique value per cluster (default
	// ultracloud-chainfire). The data directory remembers it and the member
	// refuses to start with a different one.
	ClusterToken string `yaml:"clusterToken"`
	// InitialState is new when the member forms a new cluster with the
	// other initialCluster members, or existing when it joins a running
	// cluster after `ultracloud chainfire member add` (default new).
	InitialState string `yaml:"initialState"`
	// AllowPlaintext permits http:// client and peer URLs. It must be set
	// explicitly, and plaintext URLs are accepted only on loopback
	// addresses (127.0.0.0/8, ::1, localhost); anything else needs https
	// and tls.
	AllowPlaintext bool `yaml:"allowPlaintext"`
	// TLS configures certificates for https client and peer URLs.
	TLS TLS `yaml:"tls"`
	// HeartbeatInterval is how often the raft leader heartbeats followers
	// (default 100ms; whole milliseconds).
	HeartbeatInterval time.Duration `yaml:"heartbeatInterval"`
	// ElectionTimeout is how long a follower waits without a heartbeat
	// before starting an election (default 1s; at least 5 heartbeat
	// intervals, at most 50s). Use the same value on every member.
	ElectionTimeout time.Duration `yaml:"electionTimeout"`
	// AutoCompactionRetention keeps this much revision history; older
	// history is compacted periodically (default 1h; 0 disables automatic
	// compaction). Watches cannot resume from compacted revisions.
	AutoCompactionRetention time.Duration `yaml:"autoCompactionRetention"`
	// QuotaBackendBytes is the database size limit; when it is reached the
	// cluster accepts only reads and deletes until compacted and
	// defragmented (0 = etcd's default of 2 GiB; otherwise 16 MiB to 8 GiB).
	QuotaBackendBytes int64 `yaml:"quotaBackendBytes"`
	// SnapshotCount is how many applied entries trigger a raft snapshot
	// that lets the log be truncated (default 10000).
	SnapshotCount int64 `yaml:"snapshotCount"`
	// StartTimeout bounds how long start-up may take until the member
	// serves: for a new multi-member cluster, that includes waiting for a
	// quorum of the other members to start (default 1m).
	StartTimeout time.Duration `yaml:"startTimeout"`
	// LogLevel is the lowest level of etcd's own messages passed to the
	// node log: debug, info, warn or error (default warn).
	LogLevel string `yaml:"logLevel"`
	// DefragInterval is how often the member checks whether its database
	// file has enough reclaimable space to defragment (default 10m, each
	// wait varied by up to 10% so members do not check in step; 0 disables
	// the policy; otherwise at least 1s). The member defragments only
	// itself, and only while it holds a cluster-wide lock, so at most one
	// member of the cluster defragments at a time; a leader first hands
	// leadership to another member. Compaction (autoCompactionRetention)
	// is what frees the space defragmentation gives back.
	DefragInterval time.Duration `yaml:"defragInterval"`
	// DefragMinFreeBytes is the reclaimable space (database size minus
	// the part in use) needed before the member defragments (default 64
	// MiB; 0 or more). Both this and defragMinFreePercent must be reached.
	DefragMinFreeBytes int64 `yaml:"defragMinFreeBytes"`
	// DefragMinFreePercent is the reclaimable share of the database size,
	// in percent, needed before the member defragments: 0 to 100 (default
	// 50).
	DefragMinFreePercent int `yaml:"defragMinFreePercent"`
}

// TLS configures the member's certificates. Either set auto, or give files.
type TLS struct {
	// Auto makes the member issue its own certificates at every start, for
	// dev and test clusters: a member certificate (for clients, peers and
	// in-process clients) signed by the cluster CA in autoCAFile and
	// autoCAKeyFile, or, if those are empty, by a CA the member creates
	// once in dataDir/tls. Every member of a cluster must use the same CA.
	// Keys and certificates are written with mode 0600.
	Auto bool `yaml:"auto"`
	// AutoCAFile is the PEM CA certificate tls.auto issues from (optional).
	AutoCAFile string `yaml:"autoCAFile"`
	// AutoCAKeyFile is the PEM private key of autoCAFile.
	AutoCAKeyFile string `yaml:"autoCAKeyFile"`
	// Client holds the certificate served on clientURL (https only).
	Client TLSFiles `yaml:"client"`
	// Peer holds the certificate for peer traffic (https only). Peers
	// always authenticate each other with certificates signed by caFile.
	Peer TLSFiles `yaml:"peer"`
	// ClientCertAuth requires clients to present a certificate signed by
	// client.caFile (or the auto CA).
	ClientCertAuth bool `yaml:"clientCertAuth"`
}

// TLSFiles are PEM files for one listener.
type TLSFiles struct {
	// CAFile is the CA bundle that verifies the other side's certificate:
	// for client, the CA of client certificates (used with clientCertAuth)
	// and the CA in-process clients verify this member with; for peer, the
	// CA of the other members' certificates.
	CAFile string `yaml:"caFile"`
	// CertFile is this member's certificate.
	CertFile string `yaml:"certFile"`
	// KeyFile is CertFile's private key.
	KeyFile string `yaml:"keyFile"`
}

func (f TLSFiles) empty() bool { return f.CAFile == "" && f.CertFile == "" && f.KeyFile == "" }

// Initial states.
const (
	StateNew      = "new"
	StateExisting = "existing"
)

// DefaultClusterToken is the cluster token when none is configured.
const DefaultClusterToken = client.DefaultClusterToken

// Default returns the defaults. They are not valid on their own: Name and
// DataDir must be set, and the default loopback http URLs need
// AllowPlaintext.
func Default() Config {
	return Config{
		ClientURL:               "http://127.0.0.1:2379",
		PeerURL:                 "http://127.0.0.1:2380",
		ClusterToken:            DefaultClusterToken,
		InitialState:            StateNew,
		HeartbeatInterval:       100 * time.Millisecond,
		ElectionTimeout:         time.Second,
		AutoCompactionRetention: time.Hour,
		SnapshotCount:           10000,
		StartTimeout:            time.Minute,
		LogLevel:                "warn",
		DefragInterval:          10 * time.Minute,
		DefragMinFreeBytes:      64 << 20,
		DefragMinFreePercent:    50,
	}
}

const (
	minQuotaBytes = 16 << 20
	maxQuotaBytes = 8 << 30
	maxElection   = 50 * time.Second
)

var _ config.Section = (*Config)(nil)

// Derive names the member after the node and keeps its data under the
// node's data directory, unless set.
func (c *Config) Derive(core *config.Core) {
	if c.Name == "" {
		c.Name = core.Node
	}
	if c.DataDir == "" && core.DataDir != "" {
		c.DataDir = filepath.Join(core.DataDir, "chainfire")
	}
}

var memberNameRE = client.MemberNameRE

// Validate checks every field and fills derived values (an absolute DataDir,
// InitialCluster of this member alone when empty). Each error is a
// config.FieldError naming the field (relative to the section) and how to
// fix it, and wraps ErrInvalidConfig.
func (c *Config) Validate() error {
	problems := &config.Problems{Sentinel: ErrInvalidConfig}
	bad := problems.Add

	if !memberNameRE.MatchString(c.Name) {
		bad("name", "%q is not a member name: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. name: node1)", c.Name)
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty (e.g. dataDir: /var/lib/ultracloud/chainfire)")
	} else if abs, err := filepath.Abs(c.DataDir); err == nil {
		c.DataDir = abs
	}

	client, clientErr := parseMemberURL(c.ClientURL, true)
	if clientErr != nil {
		bad("clientURL", "%v", clientErr)
	}
	peer, peerErr := parseMemberURL(c.PeerURL, true)
	if peerErr != nil {
		bad("peerURL", "%v", peerErr)
	}

	// Initial cluster.
	if len(c.InitialCluster) == 0 && c.Name != "" && c.PeerURL != "" {
		c.InitialCluster = []string{c.Name + "=" + c.PeerURL}
	}
	type icEntry struct {
		field string
		u     *url.URL
	}
	var icURLs []icEntry
	seenName := map[string]bool{}
	seenURL := map[string]string{}
	self := false
	for i, ent := range c.InitialCluster {
		field := fmt.Sprintf("initialCluster[%d]", i)
		name, raw, ok := strings.Cut(ent, "=")
		name, raw = strings.TrimSpace(name), strings.TrimSpace(raw)
		if !ok || name == "" || raw == "" {
			bad(field, "%q is not name=peerURL (e.g. n1=https://10.0.0.1:2380)", ent)
			continue
		}
		if !memberNameRE.MatchString(name) {
			bad(field, "member name %q is not valid: use letters, digits, '.', '_' or '-'", name)
		}
		if seenName[name] {
			bad(field, "member %q is listed twice; list each member once", name)
		}
		seenName[name] = true
		u, err := parseMemberURL(raw, false)
		if err != nil {
			bad(field, "member %s: %v", name, err)
			continue
		}
		if other, dup := seenURL[u.String()]; dup {
			bad(field, "peer URL %s is also given for member %q; every member needs its own", u, other)
		}
		seenURL[u.String()] = name
		icURLs = append(icURLs, icEntry{field, u})
		if name == c.Name {
			self = true
			if peer != nil && u.String() != peer.String() {
				bad(field, "lists %s for this member %q but peerURL is %s; make them the same", u, name, peer)
			}
		} else if peer != nil && u.Scheme != peer.Scheme {
			bad(field, "member %s uses %s but peerURL uses %s; all members must use the same scheme", name, u.Scheme, peer.Scheme)
		}
	}
	if !self && c.Name != "" && len(c.InitialCluster) > 0 {
		bad("initialCluster", "does not list this member %q; add %s=%s", c.Name, c.Name, c.PeerURL)
	}
	if c.ClusterToken == "" {
		bad("clusterToken", "must not be empty (use a value unique to this cluster, e.g. clusterToken: prod-chainfire-1)")
	}
	switch c.InitialState {
	case StateNew, StateExisting:
	default:
		bad("initialState", "%q is not new or existing (new forms a cluster; existing joins one after `member add`)", c.InitialState)
	}

	// Plaintext only where asked for and only on loopback.
	plain := func(field string, u *url.URL) {
		if u == nil || u.Scheme != "http" {
			return
		}
		if !c.AllowPlaintext {
			bad(field, "%s is plaintext http: use https with tls settings, or set allowPlaintext: true (accepted only for loopback addresses)", u)
			return
		}
		if !pki.IsLoopbackHost(u.Hostname()) {
			bad(field, "%s is plaintext http on non-loopback host %s: plaintext is allowed only on loopback (127.0.0.0/8, ::1, localhost); use https with tls", u, u.Hostname())
		}
	}
	plain("clientURL", client)
	plain("peerURL", peer)
	for _, e := range icURLs {
		if peer == nil || e.u.String() != peer.String() {
			plain(e.field, e.u)
		}
	}

	c.validateTLS(client, peer, bad)

	// Timing and limits.
	if c.HeartbeatInterval < time.Millisecond || c.HeartbeatInterval%time.Millisecond != 0 {
		bad("heartbeatInterval", "%s must be a whole number of milliseconds, at least 1ms (e.g. 100ms)", c.HeartbeatInterval)
	}
	if c.ElectionTimeout%time.Millisecond != 0 || c.ElectionTimeout < 5*c.HeartbeatInterval || c.ElectionTimeout > maxElection {
		bad("electionTimeout", "%s must be whole milliseconds, at least 5 x heartbeatInterval (%s) and at most %s (e.g. 1s)", c.ElectionTimeout, 5*c.HeartbeatInterval, maxElection)
	}
	if c.AutoCompactionRetention != 0 && c.AutoCompactionRetention < time.Second {
		bad("autoCompactionRetention", "%s must be 0 (no automatic compaction) or at least 1s (e.g. 1h)", c.AutoCompactionRetention)
	}
	if c.QuotaBackendBytes != 0 && (c.QuotaBackendBytes < minQuotaBytes || c.QuotaBackendBytes > maxQuotaBytes) {
		bad("quotaBackendBytes", "%d must be 0 (default 2 GiB) or between %d (16 MiB) and %d (8 GiB)", c.QuotaBackendBytes, int64(minQuotaBytes), int64(maxQuotaBytes))
	}
	if c.SnapshotCount < 1 {
		bad("snapshotCount", "%d must be at least 1 (default 10000)", c.SnapshotCount)
	}
	if c.StartTimeout < time.Second {
		bad("startTimeout", "%s is too short: at least 1s (default 1m)", c.StartTimeout)
	}
	if _, err := zapLevel(c.LogLevel); err != nil {
		bad("logLevel", "%v", err)
	}
	if c.DefragInterval != 0 && c.DefragInterval < time.Second {
		bad("defragInterval", "%s must be 0 (no automatic defragmentation) or at least 1s (e.g. 10m)", c.DefragInterval)
	}
	if c.DefragMinFreeBytes < 0 {
		bad("defragMinFreeBytes", "%d must not be negative (e.g. 67108864 for 64 MiB)", c.DefragMinFreeBytes)
	}
	if c.DefragMinFreePercent < 0 || c.DefragMinFreePercent > 100 {
		bad("defragMinFreePercent", "%d must be a percentage from 0 to 100 (e.g. 50: defragment once half the file is free)", c.DefragMinFreePercent)
	}
	return problems.Err()
}

func (c *Config) validateTLS(client, peer *url.URL, bad func(field, format string, args ...any)) {
	t := &c.TLS
	exists := func(field, path string) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			bad(field, "cannot read %s: %v", path, err)
		}
	}
	if t.Auto {
		if !t.Client.empty() || !t.Peer.empty() {
			bad("tls.auto", "issues certificates itself: remove tls.client and tls.peer files, or set auto: false")
		}
		if (t.AutoCAFile == "") != (t.AutoCAKeyFile == "") {
			bad("tls.autoCAFile", "autoCAFile and autoCAKeyFile go together: set both to issue from a shared CA, or neither to create one in dataDir/tls")
		}
		exists("tls.autoCAFile", t.AutoCAFile)
		exists("tls.autoCAKeyFile", t.AutoCAKeyFile)
		if (client == nil || client.Scheme != "https") && (peer == nil || peer.Scheme != "https") {
			bad("tls.auto", "is set but neither clientURL nor peerURL is https; use https URLs or set auto: false")
		}
	} else if t.AutoCAFile != "" || t.AutoCAKeyFile != "" {
		bad("tls.autoCAFile", "is used only with tls.auto: true")
	}

	if client != nil {
		switch client.Scheme {
		case "https":
			if !t.Auto {
				if t.Client.CertFile == "" || t.Client.KeyFile == "" {
					bad("tls.client.certFile", "clientURL %s is https: set tls.client.certFile and tls.client.keyFile, or tls.auto: true", client)
				}
				if t.ClientCertAuth && t.Client.CAFile == "" {
					bad("tls.client.caFile", "clientCertAuth needs the CA that signs client certificates: set tls.client.caFile")
				}
			}
		case "http":
			if !t.Client.empty() {
				bad("tls.client", "is set but clientURL %s is http; use an https clientURL", client)
			}
			if t.ClientCertAuth {
				bad("tls.clientCertAuth", "needs an https clientURL (it is %s)", client)
			}
		}
	}
	if peer != nil {
		switch peer.Scheme {
		case "https":
			if !t.Auto && (t.Peer.CertFile == "" || t.Peer.KeyFile == "" || t.Peer.CAFile == "") {
				bad("tls.peer", "peerURL %s is https: set tls.peer.certFile, keyFile and caFile (peers authenticate each other), or tls.auto: true", peer)
			}
		case "http":
			if !t.Peer.empty() {
				bad("tls.peer", "is set but peerURL %s is http; use an https peerURL", peer)
			}
		}
	}
	exists("tls.client.caFile", t.Client.CAFile)
	exists("tls.client.certFile", t.Client.CertFile)
	exists("tls.client.keyFile", t.Client.KeyFile)
	exists("tls.peer.caFile", t.Peer.CAFile)
	exists("tls.peer.certFile", t.Peer.CertFile)
	exists("tls.peer.keyFile", t.Peer.KeyFile)
}

// parseMemberURL checks a client or peer URL (client.ParseMemberURL).
func parseMemberURL(raw string, bind bool) (*url.URL, error) { return client.ParseMemberURL(raw, bind) }

// members returns the initial cluster as name -> peer URL. It assumes
// Validate passed.
func (c *Config) members() map[string]string {
	out := make(map[string]string, len(c.InitialCluster))
	for _, ent := range c.InitialCluster {
		name, raw, _ := strings.Cut(ent, "=")
		out[strings.TrimSpace(name)] = strings.TrimSpace(raw)
	}
	return out
}

// initialClusterString is the etcd --initial-cluster form.
func initialClusterString(entries []string) string {
	parts := make([]string, 0, len(entries))
	for _, e := range entries {
		name, raw, _ := strings.Cut(e, "=")
		parts = append(parts, strings.TrimSpace(name)+"="+strings.TrimSpace(raw))
	}
	return strings.Join(parts, ",")
}
