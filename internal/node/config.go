package node

import (
	"errors"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/iam"
	"github.com/ultracloud/ultracloud/internal/plasmavmc"
	"github.com/ultracloud/ultracloud/internal/prismnet"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

// Config is a node's configuration (node.yaml): the core fields at the top
// level and one section per component, each owned by its component and
// keyed by its role.
// Loading (file < env < flags) is internal/runtime/config's; a module's
// section is named in the module list.
type Config struct {
	config.Core `yaml:",inline"`
	// IAM configures identity, tokens and secrets at rest (role iam).
	IAM iam.Config `yaml:"iam"`
	// Chainfire configures this node's chainfire member (role chainfire).
	Chainfire chainfire.Config `yaml:"chainfire"`
	// FlareDB configures this node's flaredb member (role flaredb) or, on
	// a node without the role whose resources are in flaredb, how it
	// reaches the cluster at storage.endpoints.
	FlareDB flaredb.Config `yaml:"flaredb"`
	// PrismNet configures tenant networks' control plane (role prismnet).
	PrismNet prismnet.Config `yaml:"prismnet"`
	// PlasmaVMC configures the VM control plane (role plasmavmc).
	PlasmaVMC plasmavmc.Config `yaml:"plasmavmc"`
	// PrismNetAgent configures the host agent that programs this host's
	// kernel for tenant networks (role prismnet-agent).
	PrismNetAgent prismnet.AgentConfig `yaml:"prismnet-agent"`
}

// Default returns the defaults of every field: the core's and each
// module's section's (its component's Default).
func Default() Config {
	c := Config{Core: config.DefaultCore()}
	for _, m := range modules() {
		m.defaults(&c)
	}
	return c
}

// KnownRoles returns the roles a node can run, in module order.
func KnownRoles() []string {
	var out []string
	for _, m := range modules() {
		out = append(out, m.role)
	}
	return out
}

// Validate checks the core fields and the sections of the components the
// node runs (flaredb's also on a node that reaches flaredb as a client),
// after deriving their defaults from the core. Every problem is reported,
// each as "config: <field path>: <problem>".
func (c *Config) Validate() error {
	errs := []error{c.Core.Validate(KnownRoles())}
	if c.Storage.Backend == config.BackendFlareDB && !c.HasRole("flaredb") && len(c.Storage.Endpoints) == 0 {
		errs = append(errs, &config.FieldError{Path: "storage.endpoints",
			Problem: "this node does not run the flaredb role: list the flaredb API addresses (e.g. [10.0.0.1:7711]), add the flaredb role, or set storage.backend: local"})
	}
	if len(c.ControlPlane.Endpoints) > 0 && c.HasRole("iam") {
		errs = append(errs, &config.FieldError{Path: "controlPlane.endpoints",
			Problem: "is for nodes that run no iam (workers): this node runs the iam role (list its roles without iam, or remove controlPlane.endpoints)"})
	}
	for _, m := range modules() {
		s := m.section(c)
		s.Derive(&c.Core)
		if c.HasRole(m.role) || m.validateWithoutRole {
			errs = append(errs, config.Within(m.role, s.Validate()))
		}
	}
	return errors.Join(errs...)
}

// Flags returns every field daemon commands accept as a flag: the core's,
// then each module's section's with its field path made absolute.
func Flags() []config.Flag {
	flags := config.CoreFlags()
	var c Config
	for _, m := range modules() {
		if f, ok := m.section(&c).(config.Flagger); ok {
			for _, fl := range f.Flags() {
				fl.Field = m.role + "." + fl.Field
				flags = append(flags, fl)
			}
		}
	}
	return flags
}

// SingleNodeDefault returns the defaults of `ultracloud up`, the
// single-node profile: data in dataDir, and chainfire and flaredb in
// plaintext on loopback, which Validate refuses anywhere else.
func SingleNodeDefault(dataDir string) Config {
	c := Default()
	c.DataDir = dataDir
	c.Chainfire.AllowPlaintext = true
	c.FlareDB.AllowPlaintext = true
	// One host: VXLAN has no peer, the tunnel endpoint is loopback.
	c.PrismNetAgent.Underlay = "127.0.0.1"
	return c
}
