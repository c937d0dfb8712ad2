// Package testkit holds the helpers every test package shares: Eventually
// (wait for a condition with a deadline and say what was awaited), Golden
// (compare output with testdata/<name>.golden, rewritten with -update),
// FreePort and Listen (loopback ports for servers under test) and Clock (a
// fake clock for code that takes a `Now func() time.Time`).
//
// It owns generic test mechanics only: it imports nothing but the standard
// library, knows no component, and registers nothing at import time (the
// -update flag is registered by the test packages that ask for it, see
// RegisterUpdateFlag).
package testkit
