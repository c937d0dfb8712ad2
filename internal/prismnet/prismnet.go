// Package prismnet is the control plane of tenant networks: the kinds
// Network, Subnet, Port and SecurityGroup (routers, floating IPs and
// external networks follow), their validation, IPAM (addresses, MACs and
// VNIs handed out once, transactionally in the store), and the checks
// that keep references whole (a network is deleted only without ports and
// subnets, a subnet only without addresses, a security group only when no
// port uses it).
//
// It never touches a host's kernel: the prismnet-agent role does, from
// what this package serves (internal/prismnet/dataplane programs the
// kernel).
package prismnet

import (
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
)

// Config is the prismnet section of node.yaml (role prismnet: the API
// kinds and their controllers, on control-plane nodes).
type Config struct {
	// DefaultMTU is the MTU of networks that do not set one (default 1450:
	// an underlay MTU of 1500 minus the 50 bytes of VXLAN over IPv4;
	// 576 to 9000).
	DefaultMTU int `yaml:"defaultMTU"`
}

var _ config.Section = (*Config)(nil)

// Default returns prismnet's defaults.
func Default() Config { return Config{DefaultMTU: defaultMTU} }

// Derive has nothing to derive from the core.
func (c *Config) Derive(*config.Core) {}

// Validate checks the section.
func (c *Config) Validate() error {
	p := &config.Problems{}
	if c.DefaultMTU < 576 || c.DefaultMTU > 9000 {
		p.Add("defaultMTU", "%d is outside 576 to 9000", c.DefaultMTU)
	}
	return p.Err()
}

// Build builds prismnet's control plane for a node: its kinds on the
// node's API, over the node's store, and the prismnet-hosts controller (a
// cluster-wide singleton when the node has coordination).
func Build(cfg Config, deps component.Deps) (component.Module, error) {
	k := &kinds{store: deps.Store, defaultMTU: cfg.DefaultMTU}
	hc := &hostsController{log: deps.Logger.With("component", HostsControllerName), endpoint: deps.Client.Endpoint,
		tokens: deps.Client.Tokens(HostsControllerName), identity: deps.Node.Name}
	if deps.Coord != nil {
		hc.elector = coord.DeferredElection(deps.Coord, HostsControllerName, 0)
	}
	return component.Module{
		Register: k.register,
		Units:    []component.Unit{{Component: hc, DependsOn: []string{"http"}}},
		SystemGrants: map[string][]string{
			"system:" + HostsControllerName: {"prismnet.*.get", "prismnet.*.list", "prismnet.*.watch",
				"prismnet.networkhosts.create", "prismnet.networkhosts.update",
				"prismnet.routers.updatestatus", "prismnet.floatingips.updatestatus"},
		},
	}, nil
}
