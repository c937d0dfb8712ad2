// Package pebblestore is the embedded, single-node implementation of
// storage.Store on Pebble.
//
// What it owns: one Pebble directory, exclusively (Pebble's lock file keeps a
// second Open of the same directory out). Inside it keeps three keyspaces: the
// current state of every key, a history log with one entry per revision (every
// event of that write transaction, deletes carrying the value they removed),
// and a meta record of the current and compacted revisions. State, log and meta
// for a revision are always written in the same synced Pebble batch, so a crash
// at any point leaves them consistent and never loses an acknowledged write.
//
// How it runs: every transaction that may write is evaluated by one writer
// goroutine owned by the Store. It takes up to Options.MaxBatch queued
// transactions, evaluates them in order against one indexed batch, commits the
// batch once with fsync (group commit) and only then answers the callers.
// Reads (Get, Range, transactions with no write ops) go straight to committed
// Pebble state. Each watcher has its own goroutine that reads the durable log,
// so a slow watcher never loses events and never holds the writer up.
//
// What it must not do: it keeps no global state and starts no goroutine outside
// Open/Watch (Close stops and waits for all of them); it does not expose Pebble
// types, so callers depend only on package storage; it does not interpret keys
// or values (no knowledge of resources, schemas or tenants); it never
// acknowledges a write before it is synced; and it must not be shared by two
// processes or used as a replicated store — that is a different implementation
// of the same interface.
package pebblestore
