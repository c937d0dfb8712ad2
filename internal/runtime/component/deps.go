package component

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Deps are the explicit dependencies the node hands every component it
// builds (the one way a component learns about its surroundings: no
// globals). A field a component does not use may be zero in tests.
type Deps struct {
	// Logger is the node's logger; components add their "component"
	// attribute.
	Logger *slog.Logger
	// Metrics is the node's registry, for the controller helper, which
	// registers a controller's metrics while it runs. A component's own
	// collectors are exposed by MetricsSource instead.
	Metrics prometheus.Registerer
	// Node is who this node is.
	Node Identity
	// Store holds the node's resources (flaredb or the local store).
	Store storage.Store
	// Client reaches the node's own API as a client, for controllers.
	Client APIClient
	// Coord, if set, blocks until coordination (chainfire) is reachable
	// and returns its client, for singleton controllers, locks and
	// heartbeats. Nil on a node that reaches no chainfire: its controllers
	// then run on every node.
	Coord func(ctx context.Context) (*coord.Client, error)
}

// Identity is the node's identity as components see it.
type Identity struct {
	// Name is the node's name (node.yaml's node).
	Name string
	// DataDir is the node's data directory; a component keeps its files
	// in a directory of its own under it.
	DataDir string
	// BootstrapToken is the node's break-glass admin token; only the
	// component that authenticates API requests (iam) uses it.
	BootstrapToken string
	// Issuer returns the URL clients reach this node's API under (known
	// once the listener is bound).
	Issuer func() string
}

// APIClient is how a component's controllers reach the API: the endpoint
// once the listener is up, and tokens for the node's built-in system
// principals (iam issues them on a node that runs iam). On a node without
// iam that names a control plane (controlPlane.endpoints), both go to the
// control plane instead and every principal is the node itself
// (node:NAME, internal/runtime/nodeid).
type APIClient struct {
	// Endpoint blocks until the API listens and returns its base URL.
	Endpoint func(ctx context.Context) (string, error)
	// Tokens returns the token source of a built-in system principal of
	// this node (e.g. "iam-projects").
	Tokens func(principal string) client.TokenSource
}

// ErrNoTokens is what a token source yields on a node that has no way
// (yet) to obtain tokens for its system principals.
var ErrNoTokens = errors.New("component: this node cannot issue tokens for its system principals (it runs no iam)")

// Report is what a component says about itself in the node's status.
type Report struct {
	// Endpoints are the addresses it serves, by protocol or purpose
	// ("api", "etcd", "raft").
	Endpoints map[string]string
	// Details are a few facts worth a glance (leader, members, revision).
	Details map[string]string
}

// Reporter is implemented by components that report endpoints and details
// in /v1/status. It must be quick and never block for long: the node
// bounds it with ctx.
type Reporter interface {
	Report(ctx context.Context) Report
}

// MetricsSource is implemented by components that have Prometheus metrics:
// the node registers them with its registry when it builds the component
// (the one way components expose metrics; none registers itself).
type MetricsSource interface {
	Collectors() []prometheus.Collector
}

// Module is what building a component yields for the node: its units, and
// how it plugs into the shared API.
type Module struct {
	// Units are the component's long-running parts with their
	// dependencies. The node's own units are named "store" (the resource
	// store) and "http" (the API listener, which starts after every unit
	// in APIDependsOn).
	Units []Unit
	// Register adds the component's kinds, actions and endpoints to the
	// API (apiserver.Register, API.Handle); nil if it serves none. The API
	// is the one place routes are mounted.
	Register func(*apiserver.API) error
	// APIDependsOn names the units that must be ready before the API
	// listener serves (iam: its policy must be loaded).
	APIDependsOn []string
	// Security, if set, authenticates, authorizes and audits API requests
	// (iam). Without one the API accepts only the bootstrap token.
	Security *Security
	// Coord, if set, provides coordination to the modules built after
	// this one (chainfire); the node passes it on as Deps.Coord.
	Coord func(ctx context.Context) (*coord.Client, error)
	// Tokens, if set, issues tokens for the node's system principals;
	// the node passes it on as Deps.Client.Tokens.
	Tokens func(principal string) client.TokenSource
	// SystemGrants are the built-in system principals of the component's
	// controllers ("system:NAME", whose tokens Deps.Client.Tokens("NAME")
	// yields) and the permissions each holds cluster-wide, declared by the
	// component so no other component has to know them.
	SystemGrants map[string][]string
	// AcceptGrants, if set, receives every module's SystemGrants once all
	// modules are built (the module that issues and authorizes system
	// tokens: iam).
	AcceptGrants func(map[string][]string) error
}

// Security is the API's enforcement: who a request is, what it may do,
// and where mutations are recorded.
type Security struct {
	Authenticator apiserver.Authenticator
	Authorizer    apiserver.Authorizer
	Auditor       apiserver.Auditor
}
