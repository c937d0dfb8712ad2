package harness

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Spec describes a cluster. The zero value plus Hosts is a usable spec:
// Spec{Hosts: 3} is three hosts host1..host3 on 10.99.0.0/24.
type Spec struct {
	// Name names the cluster in logs, state files and node names' context.
	// A DNS label; default "test".
	Name string `json:"name,omitempty"`
	// Hosts is the number of hosts, named host1..hostN, running every role.
	// Ignored when HostList is set.
	Hosts int `json:"hosts,omitempty"`
	// HostList names the hosts explicitly, with their roles.
	HostList []HostSpec `json:"hostList,omitempty"`
	// Subnet is the underlay network every host is on (IPv4 CIDR, at most
	// /28); default 10.99.0.0/24. The switch namespace has .1, host i
	// (1-based, in list order) has .10+i unless HostSpec.Address says
	// otherwise. Addresses exist only inside the run's namespaces, so runs
	// with the same subnet do not collide.
	Subnet string `json:"subnet,omitempty"`
	// Networks are extra networks, each a bridge of its own, for example an
	// "external" network for floating IPs and gateways.
	Networks []NetworkSpec `json:"networks,omitempty"`
	// APIPort is the port every node's API listens on; default 7700.
	APIPort int `json:"apiPort,omitempty"`
	// LogLevel is the nodes' log.level; default "info".
	LogLevel string `json:"logLevel,omitempty"`
	// ShutdownGrace is the nodes' shutdownGrace; default 5s.
	ShutdownGrace time.Duration `json:"shutdownGrace,omitempty"`
	// Chainfire, when set, makes the listed hosts one chainfire cluster
	// over the underlay (https, certificates from a CA the harness creates
	// in the work dir). Without it every host runs a one-member chainfire
	// on its own loopback.
	Chainfire *ChainfireSpec `json:"chainfire,omitempty"`
	// FlareDB, when set, makes the listed hosts one flaredb cluster over
	// the underlay (see FlareDBSpec); the other hosts store their
	// resources in it. Without it every host runs a one-member flaredb on
	// its own loopback.
	FlareDB *FlareDBSpec `json:"flaredb,omitempty"`
}

// ChainfireSpec is an opt-in chainfire cluster across hosts.
type ChainfireSpec struct {
	// Members are the hosts forming the cluster with a static initial
	// cluster; each must run the chainfire role. Other hosts keep their
	// loopback one-member chainfire.
	Members []string `json:"members,omitempty"`
	// ClientPort and PeerPort are the members' ports on their underlay
	// address; defaults 2379 and 2380.
	ClientPort int `json:"clientPort,omitempty"`
	PeerPort   int `json:"peerPort,omitempty"`
	// HeartbeatInterval and ElectionTimeout are the raft timings; zero
	// keeps chainfire's defaults (100ms, 1s).
	HeartbeatInterval time.Duration `json:"heartbeatInterval,omitempty"`
	ElectionTimeout   time.Duration `json:"electionTimeout,omitempty"`
	// Spares are hosts that may join the running cluster later
	// (Host.ChainfireJoin after `ultracloud chainfire member add`). They
	// get a client and peer URL on the underlay like members but start,
	// like non-members, with a one-member chainfire on their loopback.
	Spares []string `json:"spares,omitempty"`
}

// ChainfireCADir is the directory under the work dir where the harness
// keeps the chainfire cluster CA (ca.crt, ca.key).
const ChainfireCADir = "chainfire-ca"

// HostSpec describes one host.
type HostSpec struct {
	// Name is the host and node name: lower-case letters, digits and '-',
	// starting with a letter, at most 40 characters.
	Name string `json:"name,omitempty"`
	// Roles are the node's roles; empty means every role.
	Roles []string `json:"roles,omitempty"`
	// Address optionally fixes the host's underlay address.
	Address string `json:"address,omitempty"`
	// ControlPlane makes the host a worker of the named hosts: it runs no
	// store of its own that others use (storage.backend local), reaches
	// their APIs as node:NAME (controlPlane.endpoints), and enrolls with
	// the join token the test writes to Host.JoinTokenPath before it
	// starts the host (so such a host is Deferred).
	ControlPlane []string `json:"controlPlane,omitempty"`
	// Deferred hosts are not started by Create: the test starts them
	// (Host.Start) when it is ready for them. Waits for every host skip
	// hosts that were never started.
	Deferred bool `json:"deferred,omitempty"`
}

// NetworkSpec describes an extra network.
type NetworkSpec struct {
	// Name is a DNS label, e.g. "external".
	Name string `json:"name,omitempty"`
	// Subnet is an IPv4 CIDR of at most /28. The switch namespace gets .1,
	// host i gets .10+i, as on the underlay.
	Subnet string `json:"subnet,omitempty"`
	// Hosts lists the hosts attached to this network; empty means all.
	Hosts []string `json:"hosts,omitempty"`
}

// UnderlayNetwork is the name of the network every host is on.
const UnderlayNetwork = "underlay"

// Spec errors.
var (
	ErrInvalidSpec = errors.New("harness: invalid spec")
)

var labelRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// plan is a validated spec with every address and name worked out.
type plan struct {
	name          string
	apiPort       int
	logLevel      string
	shutdownGrace time.Duration
	networks      []planNetwork // [0] is the underlay
	hosts         []planHost
	chainfire     *planChainfire // nil: loopback one-member chainfire per host
	flaredb       *planFlareDB   // nil: loopback one-member flaredb per host
}

// planChainfire is a validated ChainfireSpec.
type planChainfire struct {
	members           []string // host names, in spec order
	spares            []string // hosts that may join later (chainfire.go)
	clientPort        int
	peerPort          int
	heartbeatInterval time.Duration
	electionTimeout   time.Duration
	// caFile and caKeyFile are set by the cluster before rendering.
	caFile, caKeyFile string
}

type planNetwork struct {
	name    string
	prefix  netip.Prefix
	gateway netip.Addr // the switch namespace's address on it
	bridge  string     // bridge name in the switch namespace
}

type planHost struct {
	name  string
	index int // 1-based
	roles []string
	// controlPlane names the hosts whose API a worker uses.
	controlPlane []string
	deferred     bool
	// addrs[j] is the address on networks[j], invalid if not attached.
	addrs []netip.Addr
}

func specErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// makePlan validates s, fills defaults and allocates addresses.
func makePlan(s Spec) (*plan, error) {
	p := &plan{name: s.Name, apiPort: s.APIPort, logLevel: s.LogLevel, shutdownGrace: s.ShutdownGrace}
	if p.name == "" {
		p.name = "test"
	}
	if !labelRE.MatchString(p.name) {
		return nil, specErr("Name %q: use lower-case letters, digits and '-', starting with a letter, at most 40 characters", p.name)
	}
	if p.apiPort == 0 {
		p.apiPort = 7700
	}
	if p.apiPort < 1 || p.apiPort > 65535 {
		return nil, specErr("APIPort %d: want 1-65535", p.apiPort)
	}
	if p.logLevel == "" {
		p.logLevel = "info"
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, p.logLevel) {
		return nil, specErr("LogLevel %q: want debug, info, warn or error", p.logLevel)
	}
	if p.shutdownGrace == 0 {
		p.shutdownGrace = 5 * time.Second
	}
	if p.shutdownGrace < 0 {
		return nil, specErr("ShutdownGrace %s: must be positive", p.shutdownGrace)
	}

	hosts := s.HostList
	if len(hosts) == 0 {
		if s.Hosts < 1 {
			return nil, specErr("Hosts %d: give at least one host (Hosts: 3) or a HostList", s.Hosts)
		}
		for i := 1; i <= s.Hosts; i++ {
			hosts = append(hosts, HostSpec{Name: fmt.Sprintf("host%d", i)})
		}
	}

	subnet := s.Subnet
	if subnet == "" {
		subnet = "10.99.0.0/24"
	}
	nets := append([]NetworkSpec{{Name: UnderlayNetwork, Subnet: subnet}}, s.Networks...)
	for j, ns := range nets {
		field := "Subnet"
		if j > 0 {
			field = fmt.Sprintf("Networks[%d]", j-1)
			if !labelRE.MatchString(ns.Name) {
				return nil, specErr("%s.Name %q: use a DNS label such as \"external\"", field, ns.Name)
			}
			field += ".Subnet"
		}
		pfx, err := netip.ParsePrefix(ns.Subnet)
		if err != nil || !pfx.Addr().Is4() {
			return nil, specErr("%s %q: want an IPv4 CIDR such as 10.99.0.0/24", field, ns.Subnet)
		}
		pfx = pfx.Masked()
		if pfx.Bits() > 28 {
			return nil, specErr("%s %s: want at most /28 (room for the switch and hosts)", field, pfx)
		}
		for _, other := range p.networks {
			if other.name == ns.Name {
				return nil, specErr("%s: network name %q used twice", field, ns.Name)
			}
			if other.prefix.Overlaps(pfx) {
				return nil, specErr("%s %s overlaps network %q (%s)", field, pfx, other.name, other.prefix)
			}
		}
		p.networks = append(p.networks, planNetwork{
			name:    ns.Name,
			prefix:  pfx,
			gateway: pfx.Addr().Next(),
			bridge:  fmt.Sprintf("br%d", j),
		})
	}

	seen := map[string]bool{}
	used := map[netip.Addr]string{}
	for i, hs := range hosts {
		if !labelRE.MatchString(hs.Name) {
			return nil, specErr("HostList[%d].Name %q: use lower-case letters, digits and '-', starting with a letter, at most 40 characters", i, hs.Name)
		}
		if seen[hs.Name] {
			return nil, specErr("HostList[%d].Name %q used twice", i, hs.Name)
		}
		seen[hs.Name] = true
		for _, r := range hs.Roles {
			if !labelRE.MatchString(r) {
				return nil, specErr("HostList[%d].Roles: %q is not a role name", i, r)
			}
		}
		ph := planHost{name: hs.Name, index: i + 1, roles: slices.Clone(hs.Roles), addrs: make([]netip.Addr, len(p.networks)),
			controlPlane: slices.Clone(hs.ControlPlane), deferred: hs.Deferred || len(hs.ControlPlane) > 0}
		if len(hs.ControlPlane) > 0 && (len(hs.Roles) == 0 || slices.Contains(hs.Roles, "iam")) {
			return nil, specErr("HostList[%d] %q: a worker (ControlPlane set) lists its roles, without iam", i, hs.Name)
		}
		for j, pn := range p.networks {
			if j > 0 && len(nets[j].Hosts) > 0 && !slices.Contains(nets[j].Hosts, hs.Name) {
				continue
			}
			a, err := hostAddr(pn.prefix, i+1)
			if err != nil {
				return nil, specErr("network %q: %v", pn.name, err)
			}
			if j == 0 && hs.Address != "" {
				a, err = netip.ParseAddr(hs.Address)
				if err != nil || !pn.prefix.Contains(a) {
					return nil, specErr("HostList[%d].Address %q: want an IPv4 address inside %s", i, hs.Address, pn.prefix)
				}
			}
			if a == pn.gateway || a == lastAddr(pn.prefix) || a == pn.prefix.Addr() {
				return nil, specErr("host %q: address %s is reserved in %s", hs.Name, a, pn.prefix)
			}
			if prev, ok := used[a]; ok {
				return nil, specErr("host %q: address %s already belongs to %s", hs.Name, a, prev)
			}
			used[a] = hs.Name
			ph.addrs[j] = a
		}
		p.hosts = append(p.hosts, ph)
	}
	for j := 1; j < len(nets); j++ {
		for _, hn := range nets[j].Hosts {
			if !seen[hn] {
				return nil, specErr("Networks[%d].Hosts: no host named %q", j-1, hn)
			}
		}
	}
	if s.Chainfire != nil {
		cf, err := p.planChainfire(*s.Chainfire)
		if err != nil {
			return nil, err
		}
		p.chainfire = cf
	}
	if s.FlareDB != nil {
		fd, err := p.planFlareDB(*s.FlareDB)
		if err != nil {
			return nil, err
		}
		p.flaredb = fd
	}
	return p, nil
}

// planChainfire validates the chainfire cluster spec against the hosts.
func (p *plan) planChainfire(s ChainfireSpec) (*planChainfire, error) {
	cf := &planChainfire{
		members:           slices.Clone(s.Members),
		spares:            slices.Clone(s.Spares),
		clientPort:        s.ClientPort,
		peerPort:          s.PeerPort,
		heartbeatInterval: s.HeartbeatInterval,
		electionTimeout:   s.ElectionTimeout,
	}
	if cf.clientPort == 0 {
		cf.clientPort = 2379
	}
	if cf.peerPort == 0 {
		cf.peerPort = 2380
	}
	for _, port := range []int{cf.clientPort, cf.peerPort} {
		if port < 1 || port > 65535 || port == p.apiPort {
			return nil, specErr("Chainfire ports %d/%d: want 1-65535, distinct from each other and from APIPort %d", cf.clientPort, cf.peerPort, p.apiPort)
		}
	}
	if cf.clientPort == cf.peerPort {
		return nil, specErr("Chainfire ports %d/%d: want 1-65535, distinct from each other and from APIPort %d", cf.clientPort, cf.peerPort, p.apiPort)
	}
	if cf.heartbeatInterval < 0 || cf.electionTimeout < 0 {
		return nil, specErr("Chainfire timings must not be negative")
	}
	if len(cf.members) == 0 {
		return nil, specErr("Chainfire.Members: list the hosts forming the cluster (e.g. host1, host2, host3)")
	}
	seen := map[string]bool{}
	for i, m := range cf.members {
		if seen[m] {
			return nil, specErr("Chainfire.Members[%d] %q listed twice", i, m)
		}
		seen[m] = true
		h, ok := p.host(m)
		if !ok {
			return nil, specErr("Chainfire.Members[%d]: no host named %q", i, m)
		}
		if len(h.roles) > 0 && !slices.Contains(h.roles, "chainfire") {
			return nil, specErr("Chainfire.Members[%d] %q does not run the chainfire role (roles %v)", i, m, h.roles)
		}
	}
	if err := p.checkChainfireSpares(cf, seen); err != nil {
		return nil, err
	}
	return cf, nil
}

// host returns the planned host called name.
func (p *plan) host(name string) (planHost, bool) {
	for _, h := range p.hosts {
		if h.name == name {
			return h, true
		}
	}
	return planHost{}, false
}

// chainfireURL returns the https URL on port of chainfire cluster member
// (or spare) host, or "" when host is neither (or the spec has no cluster).
func (p *plan) chainfireURL(host string, port int) string {
	if p.chainfire == nil || !slices.Contains(p.chainfire.members, host) && !slices.Contains(p.chainfire.spares, host) {
		return ""
	}
	h, _ := p.host(host)
	return "https://" + netip.AddrPortFrom(h.addrs[0], uint16(port)).String()
}

// hostAddr returns the address of host i (1-based): .10+i of pfx.
func hostAddr(pfx netip.Prefix, i int) (netip.Addr, error) {
	a := pfx.Addr()
	for k := 0; k < 10+i; k++ {
		a = a.Next()
	}
	if !pfx.Contains(a) || a == lastAddr(pfx) {
		return netip.Addr{}, fmt.Errorf("%s has no room for host %d (it would be %s)", pfx, i, a)
	}
	return a, nil
}

// lastAddr is the broadcast address of pfx.
func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Addr().As4()
	host := 32 - pfx.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// nodeConfig is the node.yaml the harness writes. It mirrors the fields of
// the server's config that the harness sets; the server rejects unknown keys,
// so a renamed field there fails every harness test loudly.
type nodeConfig struct {
	Node          string        `yaml:"node"`
	DataDir       string        `yaml:"dataDir"`
	Roles         []string      `yaml:"roles,omitempty,flow"`
	API           nodeConfigAPI `yaml:"api"`
	Log           nodeConfigLog `yaml:"log"`
	Chainfire     nodeConfigCF  `yaml:"chainfire"`
	ShutdownGrace string        `yaml:"shutdownGrace"`

	// Storage, FlareDB and IAM are written only with Spec.FlareDB
	// (flaredb.go).
	Storage *nodeConfigStorage `yaml:"storage,omitempty"`
	FlareDB *nodeConfigFDB     `yaml:"flaredb,omitempty"`
	IAM     *nodeConfigIAM     `yaml:"iam,omitempty"`

	// ControlPlane is a worker's way to the API (HostSpec.ControlPlane).
	ControlPlane *nodeConfigControlPlane `yaml:"controlPlane,omitempty"`

	// PrismNetAgent is the host agent's section: the host's first address
	// is its VXLAN endpoint, and its namespaces live under its data
	// directory so two hosts' never collide on this one kernel.
	PrismNetAgent nodeConfigPrismNetAgent `yaml:"prismnet-agent"`
}

type nodeConfigControlPlane struct {
	Endpoints     []string `yaml:"endpoints"`
	JoinTokenFile string   `yaml:"joinTokenFile"`
}

type nodeConfigPrismNetAgent struct {
	Underlay     string `yaml:"underlay"`
	NamespaceDir string `yaml:"namespaceDir"`
}

// nodeConfigCF is the chainfire section. By default it keeps each host's
// chainfire member on the host's own loopback (one member per host), where
// plaintext is allowed; with Spec.Chainfire the members listen on their
// underlay address with tls.auto from the harness's CA.
type nodeConfigCF struct {
	ClientURL         string         `yaml:"clientURL,omitempty"`
	PeerURL           string         `yaml:"peerURL,omitempty"`
	InitialCluster    []string       `yaml:"initialCluster,omitempty"`
	InitialState      string         `yaml:"initialState,omitempty"`
	ClusterToken      string         `yaml:"clusterToken,omitempty"`
	AllowPlaintext    bool           `yaml:"allowPlaintext,omitempty"`
	TLS               *nodeConfigTLS `yaml:"tls,omitempty"`
	HeartbeatInterval string         `yaml:"heartbeatInterval,omitempty"`
	ElectionTimeout   string         `yaml:"electionTimeout,omitempty"`
}

type nodeConfigTLS struct {
	Auto          bool   `yaml:"auto"`
	AutoCAFile    string `yaml:"autoCAFile"`
	AutoCAKeyFile string `yaml:"autoCAKeyFile"`
}

type nodeConfigAPI struct {
	Listen string `yaml:"listen"`
}

type nodeConfigLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// renderNodeConfig returns host h's node.yaml.
func (p *plan) renderNodeConfig(h planHost, dataDir string) ([]byte, error) {
	cfg := nodeConfig{
		Node:          h.name,
		DataDir:       dataDir,
		Roles:         h.roles,
		API:           nodeConfigAPI{Listen: netip.AddrPortFrom(h.addrs[0], uint16(p.apiPort)).String()},
		Log:           nodeConfigLog{Level: p.logLevel, Format: "text"},
		Chainfire:     p.chainfireSection(h),
		Storage:       p.storageSection(h),
		FlareDB:       p.flaredbSection(h),
		IAM:           p.iamSection(),
		ShutdownGrace: p.shutdownGrace.String(),
		PrismNetAgent: nodeConfigPrismNetAgent{Underlay: h.addrs[0].String(), NamespaceDir: filepath.Join(dataDir, "netns")},
	}
	if len(h.controlPlane) > 0 {
		cp := &nodeConfigControlPlane{JoinTokenFile: joinTokenPath(dataDir)}
		for _, name := range h.controlPlane {
			other, ok := p.host(name)
			if !ok {
				return nil, specErr("host %q: ControlPlane names %q, which is not a host", h.name, name)
			}
			cp.Endpoints = append(cp.Endpoints, "http://"+netip.AddrPortFrom(other.addrs[0], uint16(p.apiPort)).String())
		}
		cfg.ControlPlane = cp
		cfg.Storage = &nodeConfigStorage{Backend: "local"}
		cfg.FlareDB = &nodeConfigFDB{AllowPlaintext: true}
	}
	return encodeNodeYAML(cfg, h.name, "# Written by the UltraCloud test harness (test/harness) for cluster "+p.name+".\n")
}

// joinTokenPath is where a worker's join token goes (under its data dir).
func joinTokenPath(dataDir string) string { return filepath.Join(dataDir, "join-token") }

// encodeNodeYAML encodes host's node.yaml under a comment header.
func encodeNodeYAML(cfg nodeConfig, host, header string) ([]byte, error) {
	var b strings.Builder
	b.WriteString(header)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("harness: encoding node.yaml for %s: %w", host, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("harness: encoding node.yaml for %s: %w", host, err)
	}
	return []byte(b.String()), nil
}

// chainfireSection is host h's chainfire section.
func (p *plan) chainfireSection(h planHost) nodeConfigCF {
	cf := p.chainfire
	if cf == nil || !slices.Contains(cf.members, h.name) {
		return nodeConfigCF{AllowPlaintext: true}
	}
	sec := nodeConfigCF{
		ClientURL:    p.chainfireURL(h.name, cf.clientPort),
		PeerURL:      p.chainfireURL(h.name, cf.peerPort),
		ClusterToken: p.chainfireToken(),
		TLS:          &nodeConfigTLS{Auto: true, AutoCAFile: cf.caFile, AutoCAKeyFile: cf.caKeyFile},
	}
	for _, m := range cf.members {
		sec.InitialCluster = append(sec.InitialCluster, m+"="+p.chainfireURL(m, cf.peerPort))
	}
	if cf.heartbeatInterval > 0 {
		sec.HeartbeatInterval = cf.heartbeatInterval.String()
	}
	if cf.electionTimeout > 0 {
		sec.ElectionTimeout = cf.electionTimeout.String()
	}
	return sec
}
