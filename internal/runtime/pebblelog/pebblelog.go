// Package pebblelog adapts log/slog to Pebble's logger interface, for every
// Pebble database the project opens (the local store, flaredb's state
// machine and its Raft log).
package pebblelog

import (
	"context"
	"fmt"
	"log/slog"
)

// Logger is a pebble.Logger writing to slog. Pebble calls Fatalf only for
// unrecoverable internal errors; like Pebble's default logger it does not
// return: it logs, then panics so the stack is visible.
type Logger struct {
	l    *slog.Logger
	name string
}

// New returns a Pebble logger over l; name prefixes the panic message
// (e.g. "flaredb fsm").
func New(l *slog.Logger, name string) Logger {
	return Logger{l: l.With("subsystem", "pebble"), name: name}
}

// Infof logs at info, formatting only when enabled (Pebble is chatty).
func (p Logger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelInfo) {
		p.l.Info(fmt.Sprintf(format, args...))
	}
}

// Errorf logs at error.
func (p Logger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }

// Fatalf logs and panics.
func (p Logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic(p.name + ": pebble fatal error: " + msg)
}
