// Package cli is the ultracloud command line: daemon commands (up, server)
// that run a node, and client commands (status, get, describe, apply, delete,
// watch, login, logout, iam) that talk to an API through the Go SDK only.
//
// Commands return errors; only main exits. Nothing here holds global state:
// every command reads its settings from flags, the environment and files.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Env is what the commands may touch of the outside world, so tests can run
// them in-process.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	LookupEnv      func(string) (string, bool)
}

// OSEnv is the real process environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, LookupEnv: os.LookupEnv}
}

// ExitError carries a specific exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

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
	cf := &clientFlags{env: env}
	cf.register(root)
	root.AddCommand(
		newUpCmd(env),
		newServerCmd(env),
		newStatusCmd(cf),
		newGetCmd(cf),
		newDescribeCmd(cf),
		newApplyCmd(cf),
		newDeleteCmd(cf),
		newWatchCmd(cf),
		newLoginCmd(cf),
		newLogoutCmd(cf),
		newIAMCmd(cf),
		newVersionCmd(env),
		newChainfireCmd(env),
		newFlaredbCmd(env),
	)
	return root
}
