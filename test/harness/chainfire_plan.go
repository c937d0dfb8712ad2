package harness

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Chainfire cluster planning beyond the static initial cluster: spare hosts
// that join the running cluster later (ChainfireSpec.Spares,
// Host.ChainfireJoin).

// chainfireToken is the Spec.Chainfire cluster's clusterToken.
func (p *plan) chainfireToken() string { return "harness-" + p.name }

// checkChainfireSpares validates ChainfireSpec.Spares; members are the
// member host names.
func (p *plan) checkChainfireSpares(cf *planChainfire, members map[string]bool) error {
	seen := map[string]bool{}
	for i, name := range cf.spares {
		if members[name] {
			return specErr("Chainfire.Spares[%d] %q is also listed in Chainfire.Members", i, name)
		}
		if seen[name] {
			return specErr("Chainfire.Spares[%d] %q listed twice", i, name)
		}
		seen[name] = true
		h, ok := p.host(name)
		if !ok {
			return specErr("Chainfire.Spares[%d]: no host named %q", i, name)
		}
		if len(h.roles) > 0 && !containsString(h.roles, "chainfire") {
			return specErr("Chainfire.Spares[%d] %q does not run the chainfire role (roles %v)", i, name, h.roles)
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// chainfireJoinSection is host h's chainfire section for joining the
// running cluster whose members (the new one included) initialCluster
// lists, as `ultracloud chainfire member add` prints it.
func (p *plan) chainfireJoinSection(h planHost, initialCluster []string) nodeConfigCF {
	cf := p.chainfire
	sec := nodeConfigCF{
		ClientURL:      p.chainfireURL(h.name, cf.clientPort),
		PeerURL:        p.chainfireURL(h.name, cf.peerPort),
		InitialCluster: append([]string(nil), initialCluster...),
		InitialState:   "existing",
		ClusterToken:   p.chainfireToken(),
		TLS:            &nodeConfigTLS{Auto: true, AutoCAFile: cf.caFile, AutoCAKeyFile: cf.caKeyFile},
	}
	if cf.heartbeatInterval > 0 {
		sec.HeartbeatInterval = cf.heartbeatInterval.String()
	}
	if cf.electionTimeout > 0 {
		sec.ElectionTimeout = cf.electionTimeout.String()
	}
	return sec
}

// renderJoinConfig is host h's node.yaml with the chainfire section of a
// member joining the running cluster; every other section is what
// renderNodeConfig writes.
func (p *plan) renderJoinConfig(h planHost, dataDir string, initialCluster []string) ([]byte, error) {
	base, err := p.renderNodeConfig(h, dataDir)
	if err != nil {
		return nil, err
	}
	var cfg nodeConfig
	if err := yaml.Unmarshal(base, &cfg); err != nil {
		return nil, fmt.Errorf("harness: re-reading node.yaml of %s: %w", h.name, err)
	}
	cfg.Chainfire = p.chainfireJoinSection(h, initialCluster)
	return encodeNodeYAML(cfg, h.name, "# Written by the UltraCloud test harness (test/harness) for cluster "+p.name+": chainfire joins the running cluster.\n")
}
