package clikit

import (
	"context"
	"io"

	"github.com/spf13/cobra"
)

// Printer prints a verb's result in format f.
type Printer[T any] func(w io.Writer, f Format, v T) error

// Table is the usual Printer: JSON or YAML print v as data; the table
// format prints it with table.
func Table[T any](table func(w io.Writer, v T) error) Printer[T] {
	return func(w io.Writer, f Format, v T) error {
		if f != FormatTable {
			return PrintData(w, f, v)
		}
		return table(w, v)
	}
}

// An Opener connects for one command. It returns the connection, the
// context its calls use (the command's, or one bounded by the component's
// --timeout), and a function that releases both.
type Opener[C any] func(ctx context.Context) (C, context.Context, func(), error)

// RunWith is the shape of a verb: check the -o value in output (an empty
// one means table, for verbs without -o), connect with open, call, and
// print what the call returns to the command's stdout. A bad -o fails
// before anything is dialled.
func RunWith[C, T any](cmd *cobra.Command, output string, open Opener[C], call func(ctx context.Context, c C) (T, error), print Printer[T]) error {
	f, err := ParseOutput(output)
	if err != nil {
		return err
	}
	c, ctx, done, err := open(cmd.Context())
	if err != nil {
		return err
	}
	defer done()
	v, err := call(ctx, c)
	if err != nil {
		return err
	}
	return print(cmd.OutOrStdout(), f, v)
}

// Run is RunWith over the API connection of the client flags.
func Run[T any](cmd *cobra.Command, cf *ClientFlags, output string, call func(ctx context.Context, c *Conn) (T, error), print Printer[T]) error {
	return RunWith(cmd, output, cf.Open, call, print)
}
