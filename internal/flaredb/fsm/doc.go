// Package fsm is flaredb's replicated state machine: the Raft FSM that
// applies committed log entries to one Pebble directory, and the reads
// served from it.
//
// What it owns: the Pebble directory (exclusively), the command format of
// Raft log entries (Command), the MVCC layout, snapshots and restore.
//
// Layout (see keys.go): current state per key; one version per (key,
// revision) until compaction, so reads at a past revision are exact; a log
// entry per revision holding every event of that write transaction (deletes
// carry the value they removed), which watches read in order; an expiry
// index for TTLs; the API address of every member; and one meta record with
// the last applied Raft index, the revision, the compacted revision and the
// leader clock.
//
// Watchers read the newest log entries from memory (recent.go): after each
// batch commits, its entries go into a bounded in-memory log (4,096
// entries, 16 MiB) before watchers are woken, so following the changes
// costs no Pebble snapshot or iterator; older revisions, and everything
// right after a start or a restore, come from Pebble.
//
// Determinism: every replica applies the same entries in the same order and
// derives everything from them: each write transaction takes the next
// revision, TTL expiry times come from the proposing leader's timestamp in
// the entry, and expiry itself is a command the leader proposes (CmdExpire),
// never a follower's clock.
//
// Durability and recovery: the entries of one ApplyBatch and the new applied
// index are written in one Pebble batch, and Pebble runs without a WAL. The
// Raft log (fsynced by the log store before any entry is acknowledged) is
// the durable record; a WAL here would write every value once more per
// member. After a crash Pebble holds the state as of its last memtable
// flush, a prefix of what was applied, and its applied index says exactly
// which prefix (state and index move in one batch, and flushes keep whole
// batches in order). The server starts Raft with NoSnapshotRestoreOnStart,
// so Raft replays the log from its last snapshot; ApplyBatch skips entries
// at or below the stored applied index, so replay is idempotent and
// continues exactly where Pebble stopped. Raft may truncate the log only
// below a snapshot, and a snapshot counts as stored only after the flush
// Snapshot started has finished, so the entries Pebble might have lost are
// always still in the log. If Pebble is behind the newest snapshot (or was
// caught in the middle of a restore, which a flushed marker records) the
// server lets Raft restore that snapshot first. Close flushes, so a clean
// restart replays nothing.
//
// What it must not do: talk to the network, look at wall clocks, interpret
// namespaces (keys arrive already prefixed), or decide anything a replica
// could decide differently. It starts no goroutines.
package fsm
