package node

import (
	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/iam"
	"github.com/ultracloud/ultracloud/internal/plasmavmc"
	"github.com/ultracloud/ultracloud/internal/prismnet"
	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

// modules is the one list of components a node can run: one line each,
// naming its role, its section of Config, its defaults and how it is
// built. Adding a component means adding its line here and its section
// field to Config.
// The order is the build order; start order comes from the units'
// dependencies.
func modules() []module {
	return []module{
		entry("chainfire", func(c *Config) *chainfire.Config { return &c.Chainfire }, chainfire.Default, chainfire.Build),
		// The member is built by the store it backs (flaredb.OpenStorage,
		// see openStore), so the line has no build; its section also
		// configures a node that reaches flaredb as a client.
		{role: "flaredb", section: func(c *Config) config.Section { return &c.FlareDB },
			defaults: func(c *Config) { c.FlareDB = flaredb.Default() }, validateWithoutRole: true},
		entry("iam", func(c *Config) *iam.Config { return &c.IAM }, iam.Default, iam.Build),
		entry("prismnet", func(c *Config) *prismnet.Config { return &c.PrismNet }, prismnet.Default, prismnet.Build),
		entry("plasmavmc", func(c *Config) *plasmavmc.Config { return &c.PlasmaVMC }, plasmavmc.Default, plasmavmc.Build),
		entry("prismnet-agent", func(c *Config) *prismnet.AgentConfig { return &c.PrismNetAgent }, prismnet.DefaultAgent, prismnet.BuildAgent),
	}
}

// module is one line of the module list.
type module struct {
	// role is the component's role name in node.yaml's roles.
	role string
	// section returns the component's section of c.
	section func(c *Config) config.Section
	// defaults sets the section of c to the component's defaults.
	defaults func(c *Config)
	// build builds the component from its validated section; nil when
	// something else builds it (flaredb's member).
	build func(c *Config, deps component.Deps) (component.Module, error)
	// validateWithoutRole: the section is checked on every node.
	validateWithoutRole bool
}

// entry makes a module line from a component's section accessor and its
// Build function, so each line stays one line.
func entry[S any, PS interface {
	*S
	config.Section
}](role string, section func(*Config) PS, defaults func() S, build func(S, component.Deps) (component.Module, error)) module {
	return module{
		role:     role,
		section:  func(c *Config) config.Section { return section(c) },
		defaults: func(c *Config) { *section(c) = defaults() },
		build:    func(c *Config, deps component.Deps) (component.Module, error) { return build(*section(c), deps) },
	}
}
