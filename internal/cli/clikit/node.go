package clikit

import "github.com/ultracloud/ultracloud/internal/runtime/config"

// NodeName is the node name a command assumes when none is given, as a
// node started in the same environment would take it: the node's
// environment variable (ULTRACLOUD_NODE), else the default node name.
// Component verbs use it for identities that default to the node name
// (flaredb's cluster and member ID under `ultracloud up`).
func NodeName(env Env) string {
	if v := env.Getenv(config.EnvName("node")); v != "" {
		return v
	}
	return config.DefaultCore().Node
}
