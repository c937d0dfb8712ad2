package iam

import (
	"path/filepath"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Build builds iam for a node from its validated section: the component
// (which authenticates, authorizes and audits the node's API and issues the
// tokens of its system principals) and the project controller. It reads
// (or creates) the encryption key file; nothing else is touched before Run.
func Build(cfg Config, deps component.Deps) (component.Module, error) {
	key, err := LoadOrCreateKeyFile(cfg.EncryptionKeyFile)
	if err != nil {
		return component.Module{}, err
	}
	c, err := New(cfg, deps, Options{Issuer: deps.Node.Issuer, EncryptionKey: key})
	if err != nil {
		return component.Module{}, err
	}
	tokens := func(principal string) client.TokenSource { return client.TokenFunc(c.SystemTokenSource(principal)) }
	// With coordination, one node's controller works and the others stand
	// by (two would only race for the same status writes).
	var opts []ProjectControllerOption
	if deps.Coord != nil {
		opts = append(opts, WithElector(coord.DeferredElection(deps.Coord, ProjectControllerElection, 0), deps.Node.Name))
	}
	pc := NewProjectController(deps.Client.Endpoint, tokens("iam-projects"),
		filepath.Join(deps.Node.DataDir, "controllers", "iam-projects.checkpoint"), deps.Logger, deps.Metrics, opts...)
	return component.Module{
		Units: []component.Unit{
			{Component: c, DependsOn: []string{"store"}},
			{Component: pc, DependsOn: []string{"http"}},
		},
		Register:     c.Register,
		APIDependsOn: []string{c.Name()},
		Security:     &component.Security{Authenticator: c, Authorizer: c.Authorizer(), Auditor: c.Auditor()},
		Tokens:       tokens,
		AcceptGrants: c.policy.SetSystemGrants,
	}, nil
}
