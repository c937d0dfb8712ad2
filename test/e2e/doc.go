// Package e2e holds the end-to-end tests: they build the real ultracloud
// binary once, run `ultracloud up` nodes as child processes in temporary
// directories on free loopback ports, and drive them the way users do, with
// the CLI, raw HTTP and the Go SDK. They also kill nodes mid-write and check
// that every acknowledged write survives.
//
// The tests only observe the product from outside; they must not import
// internal/ packages. Process handling lives in the nodeproc subpackage.
package e2e
