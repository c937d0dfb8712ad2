package harness

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// FlareDBSpec is an opt-in flaredb cluster across hosts: the listed members
// bootstrap one Raft group with static initial voters on their underlay
// addresses, secured with mutual TLS from a cluster CA the harness creates
// in the work dir (FlareDBCADir; every node issues its own certificate
// from it with tls.auto, and the harness issues one for test clients in
// FlareDBClientDir). Every member keeps its resources in that cluster (storage
// backend flaredb, its own member first); every other host reaches it
// through storage.endpoints and must therefore not run the flaredb role
// itself (give it explicit roles).
type FlareDBSpec struct {
	// Members are the hosts forming the cluster: 1, 3 or 5, each running
	// the flaredb role. The order is the initial voters' order.
	Members []string `json:"members,omitempty"`
	// RaftPort and APIPort are the members' ports on their underlay
	// address; defaults 7710 and 7711.
	RaftPort int `json:"raftPort,omitempty"`
	APIPort  int `json:"apiPort,omitempty"`
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are the Raft
	// timings; zero keeps flaredb's defaults (1s, 1s, 500ms). Tests that
	// kill leaders shorten them to fail over faster.
	HeartbeatTimeout   time.Duration `json:"heartbeatTimeout,omitempty"`
	ElectionTimeout    time.Duration `json:"electionTimeout,omitempty"`
	LeaderLeaseTimeout time.Duration `json:"leaderLeaseTimeout,omitempty"`
}

// FlareDBCADir is the directory under the work dir where the harness keeps
// the flaredb cluster CA (ca.crt, ca.key); FlareDBClientDir holds the
// client certificate it issues from it for tests (member.crt, member.key).
const (
	FlareDBCADir     = "flaredb-ca"
	FlareDBClientDir = "flaredb-client"
	// IAMKeyFile is the iam encryption key every host shares when they
	// share one store: iam seals its signing keys with it in the store,
	// and a node with another key could not open them.
	IAMKeyFile = "iam-encryption-key"
)

// planFlareDB is a validated FlareDBSpec.
type planFlareDB struct {
	members            []string // host names, in spec order
	clusterID          string
	raftPort, apiPort  int
	heartbeatTimeout   time.Duration
	electionTimeout    time.Duration
	leaderLeaseTimeout time.Duration
	// caFile, caKeyFile and iamKeyFile are set by the cluster before
	// rendering.
	caFile, caKeyFile, iamKeyFile string
}

// planFlareDB validates the flaredb cluster spec against the hosts (and the
// ports the API and a chainfire cluster already use on the underlay).
func (p *plan) planFlareDB(s FlareDBSpec) (*planFlareDB, error) {
	fd := &planFlareDB{
		members:            slices.Clone(s.Members),
		clusterID:          flaredbClusterIDOf(p.name),
		raftPort:           s.RaftPort,
		apiPort:            s.APIPort,
		heartbeatTimeout:   s.HeartbeatTimeout,
		electionTimeout:    s.ElectionTimeout,
		leaderLeaseTimeout: s.LeaderLeaseTimeout,
	}
	if fd.raftPort == 0 {
		fd.raftPort = 7710
	}
	if fd.apiPort == 0 {
		fd.apiPort = 7711
	}
	taken := map[int]string{p.apiPort: "APIPort"}
	if p.chainfire != nil {
		taken[p.chainfire.clientPort] = "Chainfire.ClientPort"
		taken[p.chainfire.peerPort] = "Chainfire.PeerPort"
	}
	for _, port := range []struct {
		field string
		n     int
	}{{"FlareDB.RaftPort", fd.raftPort}, {"FlareDB.APIPort", fd.apiPort}} {
		if port.n < 1 || port.n > 65535 {
			return nil, specErr("%s %d: want 1-65535", port.field, port.n)
		}
		if other, ok := taken[port.n]; ok {
			return nil, specErr("%s %d is already %s: pick another port", port.field, port.n, other)
		}
		taken[port.n] = port.field
	}
	if fd.heartbeatTimeout < 0 || fd.electionTimeout < 0 || fd.leaderLeaseTimeout < 0 {
		return nil, specErr("FlareDB timings must not be negative")
	}
	switch len(fd.members) {
	case 1, 3, 5:
	case 0:
		return nil, specErr("FlareDB.Members: list the hosts forming the cluster (e.g. host1, host2, host3)")
	default:
		return nil, specErr("FlareDB.Members has %d hosts: a flaredb cluster bootstraps with 1, 3 or 5 voters", len(fd.members))
	}
	seen := map[string]bool{}
	for i, m := range fd.members {
		if seen[m] {
			return nil, specErr("FlareDB.Members[%d] %q listed twice", i, m)
		}
		seen[m] = true
		h, ok := p.host(m)
		if !ok {
			return nil, specErr("FlareDB.Members[%d]: no host named %q", i, m)
		}
		if len(h.roles) > 0 && !slices.Contains(h.roles, "flaredb") {
			return nil, specErr("FlareDB.Members[%d] %q does not run the flaredb role (roles %v)", i, m, h.roles)
		}
	}
	for _, h := range p.hosts {
		if seen[h.name] {
			continue
		}
		if len(h.roles) == 0 || slices.Contains(h.roles, "flaredb") {
			return nil, specErr("host %q runs the flaredb role but is not in FlareDB.Members: list it there, or give it explicit roles without flaredb (it then stores its resources in the cluster)", h.name)
		}
	}
	return fd, nil
}

// flaredbAddr returns member host's underlay address with port, or "" when
// host is not a member of the Spec.FlareDB cluster.
func (p *plan) flaredbAddr(host string, port int) string {
	if p.flaredb == nil || !slices.Contains(p.flaredb.members, host) {
		return ""
	}
	h, _ := p.host(host)
	return netip.AddrPortFrom(h.addrs[0], uint16(port)).String()
}

// flaredbEndpoints are the members' API addresses, in spec order.
func (p *plan) flaredbEndpoints() []string {
	if p.flaredb == nil {
		return nil
	}
	var eps []string
	for _, m := range p.flaredb.members {
		eps = append(eps, p.flaredbAddr(m, p.flaredb.apiPort))
	}
	return eps
}

// nodeConfigStorage is the storage section: written only with
// Spec.FlareDB (without it every host keeps the server's default, a
// one-member flaredb of its own on loopback).
type nodeConfigStorage struct {
	Backend   string   `yaml:"backend"`
	Endpoints []string `yaml:"endpoints,omitempty,flow"`
}

// nodeConfigFDB is the flaredb section (see internal/flaredb.Config).
type nodeConfigFDB struct {
	ID                 string              `yaml:"id,omitempty"`
	ClusterID          string              `yaml:"clusterID,omitempty"`
	RaftAddress        string              `yaml:"raftAddress,omitempty"`
	APIAddress         string              `yaml:"apiAddress,omitempty"`
	InitialVoters      []nodeConfigFDBPeer `yaml:"initialVoters,omitempty"`
	HeartbeatTimeout   string              `yaml:"heartbeatTimeout,omitempty"`
	ElectionTimeout    string              `yaml:"electionTimeout,omitempty"`
	LeaderLeaseTimeout string              `yaml:"leaderLeaseTimeout,omitempty"`
	TLS                *nodeConfigTLS      `yaml:"tls,omitempty"`
	AllowPlaintext     bool                `yaml:"allowPlaintext,omitempty"`
}

type nodeConfigFDBPeer struct {
	ID          string `yaml:"id"`
	RaftAddress string `yaml:"raftAddress"`
	APIAddress  string `yaml:"apiAddress"`
}

// nodeConfigIAM is the iam section.
type nodeConfigIAM struct {
	EncryptionKeyFile string `yaml:"encryptionKeyFile"`
}

// iamSection is every host's iam section with Spec.FlareDB (the shared
// key), nil without.
func (p *plan) iamSection() *nodeConfigIAM {
	if p.flaredb == nil {
		return nil
	}
	return &nodeConfigIAM{EncryptionKeyFile: p.flaredb.iamKeyFile}
}

// storageSection is host h's storage section: without Spec.FlareDB, nil
// (its own flaredb) or local for a host whose roles leave flaredb out.
func (p *plan) storageSection(h planHost) *nodeConfigStorage {
	fd := p.flaredb
	if fd == nil {
		if len(h.roles) > 0 && !slices.Contains(h.roles, "flaredb") {
			// No flaredb anywhere to reach: keep resources on the host.
			return &nodeConfigStorage{Backend: "local"}
		}
		return nil
	}
	if slices.Contains(fd.members, h.name) {
		return &nodeConfigStorage{Backend: "flaredb"}
	}
	return &nodeConfigStorage{Backend: "flaredb", Endpoints: p.flaredbEndpoints()}
}

// flaredbSection is host h's flaredb section, nil without Spec.FlareDB.
// Members get their addresses, the initial voters and the timings; other
// hosts only the cluster ID their storage client needs. Both issue their
// certificate (member, or client) from the cluster CA with tls.auto.
func (p *plan) flaredbSection(h planHost) *nodeConfigFDB {
	fd := p.flaredb
	if fd == nil {
		// Each host's own one-member group on its loopback, where
		// plaintext is allowed (as `ultracloud up` does).
		return &nodeConfigFDB{AllowPlaintext: true}
	}
	tls := &nodeConfigTLS{Auto: true, AutoCAFile: fd.caFile, AutoCAKeyFile: fd.caKeyFile}
	if !slices.Contains(fd.members, h.name) {
		return &nodeConfigFDB{ClusterID: fd.clusterID, TLS: tls}
	}
	sec := &nodeConfigFDB{
		ID:          h.name,
		ClusterID:   fd.clusterID,
		RaftAddress: p.flaredbAddr(h.name, fd.raftPort),
		APIAddress:  p.flaredbAddr(h.name, fd.apiPort),
		TLS:         tls,
	}
	for _, m := range fd.members {
		sec.InitialVoters = append(sec.InitialVoters, nodeConfigFDBPeer{
			ID:          m,
			RaftAddress: p.flaredbAddr(m, fd.raftPort),
			APIAddress:  p.flaredbAddr(m, fd.apiPort),
		})
	}
	if fd.heartbeatTimeout > 0 {
		sec.HeartbeatTimeout = fd.heartbeatTimeout.String()
	}
	if fd.electionTimeout > 0 {
		sec.ElectionTimeout = fd.electionTimeout.String()
	}
	if fd.leaderLeaseTimeout > 0 {
		sec.LeaderLeaseTimeout = fd.leaderLeaseTimeout.String()
	}
	return sec
}

// flaredbClusterIDOf is the cluster ID the harness gives the Spec.FlareDB
// cluster of a cluster named name.
func flaredbClusterIDOf(name string) string { return fmt.Sprintf("harness-%s", name) }
