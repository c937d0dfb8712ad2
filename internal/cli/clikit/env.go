// Package clikit is what the command packages of the ultracloud CLI share:
// the process environment a command may touch (Env), exit codes, output
// formats (-o table|json|yaml), the client config file and the API
// connection (and token source) built from it, generic resource helpers
// (create, list and delete verbs over one collection), typed verbs over a
// component's own kinds (Kind: list, get, describe, delete, create) with
// the describe-block writer (Desc), terminal prompts, and Run, the one
// shape of a verb: parse -o, connect, call, print. Tests of the command
// packages run the CLI with clitest.
//
// It knows no component: component verbs live in internal/cli/<component>
// and the command tree in internal/cli. Nothing here holds global state;
// every setting comes from flags, the Env and files.
package clikit

import (
	"io"
	"os"
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
