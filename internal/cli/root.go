// Package cli is the ultracloud command line's shell: the command tree,
// the daemon commands (up, server) that run a node, and the generic
// resource verbs (status, get, describe, apply, delete, watch, version) that
// talk to an API through the Go SDK only.
//
// Each component's verbs live in internal/cli/<component> and the helpers
// they share in internal/cli/clikit; this package only puts them in the
// tree (and passes the components' offline data-directory tools to their
// verbs, see offline.go). Commands return errors; only main exits. Nothing
// here holds global state: every command reads its settings from flags, the
// environment and files.
package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	chainfirecli "github.com/ultracloud/ultracloud/internal/cli/chainfire"
	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	flaredbcli "github.com/ultracloud/ultracloud/internal/cli/flaredb"
	iamcli "github.com/ultracloud/ultracloud/internal/cli/iam"
	plasmavmccli "github.com/ultracloud/ultracloud/internal/cli/plasmavmc"
	prismnetcli "github.com/ultracloud/ultracloud/internal/cli/prismnet"
)

// Env is what the commands may touch of the outside world, so tests can run
// them in-process.
type Env = clikit.Env

// OSEnv is the real process environment.
func OSEnv() Env { return clikit.OSEnv() }

// ExitError carries a specific exit code.
type ExitError = clikit.ExitError

// Main runs the CLI with args and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	root := NewRoot(env)
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(env.Stderr, "Error:", err)
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// NewRoot builds the command tree.
func NewRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:           "ultracloud",
		Short:         "UltraCloud: a self-hosted cloud in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cf := clikit.NewClientFlags(env)
	cf.Register(root)
	root.AddCommand(
		newUpCmd(env),
		newServerCmd(env),
		newStatusCmd(cf),
		newGetCmd(cf),
		newDescribeCmd(cf),
		newApplyCmd(cf),
		newDeleteCmd(cf),
		newWatchCmd(cf),
		iamcli.NewLoginCmd(cf),
		iamcli.NewLogoutCmd(cf),
		iamcli.NewCmd(cf),
		newVersionCmd(env),
		chainfirecli.NewCmd(env, chainfireOffline()),
		flaredbcli.NewCmd(env, flaredbOffline()),
	)
	root.AddCommand(prismnetcli.NewCmds(cf)...)
	root.AddCommand(plasmavmccli.NewCmds(cf)...)
	return root
}
