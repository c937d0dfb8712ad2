// Package flaredb is the flaredb member: UltraCloud's replicated
// transactional key-value store, the metadata store behind every component.
// A Server is one member as a component (Run, Ready): Raft
// (hashicorp/raft) over a cluster-checked TCP transport (raftnet), the state
// machine on Pebble (fsm), and the client API (HTTP/2, messages in wire).
// Raft, the API and calls between members use mutual TLS 1.3 from the
// cluster CA (tls.go); plaintext only with allowPlaintext on loopback.
// Clients use package client, which also provides a storage.Store.
//
// It owns: the member's data directory (raft/log, raft/snapshots, fsm, and
// flaredb-member.json, which pins the cluster and member ID), bootstrap and
// membership, proposal batching, linearizable reads, TTL expiry, request
// forwarding and the API listener. It must not: implement consensus (Raft
// does), interpret what components store, or hold process-wide state.
//
// # Raft log store
//
// The log and Raft's stable store are package raftlog, on Pebble. We first
// used github.com/hashicorp/raft-wal, but its latest release cannot reopen
// a log whose tail was truncated (a follower that dropped entries a new
// leader did not have panics at its next start); the multi-host
// linearizability test found it. raft-boltdb rewrites B+tree pages and
// syncs twice per append. Pebble appends a batch with one WAL record and
// one fdatasync; BenchmarkLogStoreAppend measured it level with raft-wal
// and about twice as fast as raft-boltdb on this machine (batches of 16:
// 62k, 42k and 25k entries/s). A data directory with a raft-wal log
// (raft/wal) from an earlier version is refused with the way out.
//
// # Writes and group commit
//
// Writes go to the leader (a follower forwards them once, with the leader's
// address in the answer so clients switch). There one goroutine packs every
// waiting transaction into one log entry, and only one entry is in Raft at
// a time, so everything that arrives while it commits goes into the next
// one (propose.go says why one); Raft appends it with one fsync and ships
// it in one AppendEntries; the state machine applies it in one Pebble
// batch. A writer is answered once its entry is committed (in the
// fsynced logs of a quorum) and applied. Errors say whether a write may have
// been applied: not-leader / no-leader / shutting-down mean it was not, so
// clients retry those; anything after proposing is "outcome unknown".
//
// # Reads
//
// Linearizable by default, with ReadIndex (see readindex.go for why not a
// lease): concurrent reads share one quorum round, then wait until the
// local state machine has applied the index. Followers get the index from
// the leader and serve the read themselves. A leader hands out indexes only
// after it applied an entry of its own term. Stale reads skip all of that
// and read local state. Reads at a past revision use the MVCC versions.
//
// # Watches
//
// Any member streams a watch from its own state machine's history (every
// member has the same), after a read index so the start revision is judged
// against the cluster. Clients resume from the next revision on another
// member after a failure, so a watch sees every change once, in order,
// across leader changes.
// The newest changes come from the state machine's in-memory recent log
// (fsm), the rest from its Pebble history.
//
// # Shutdown order
//
// When Run's context ends: stop taking requests and proposals (in-flight
// proposals finish), hand leadership to the most up-to-date follower if
// leading, end watch streams and drain the API server, stop the background
// loops while Raft still answers their futures, shut Raft down, then close
// the transport, the log store and the state machine. See node.stop.
package flaredb
