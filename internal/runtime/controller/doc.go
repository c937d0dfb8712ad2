// Package controller is the reconcile loop every UltraCloud controller and
// host agent is built on: it follows one collection (a Source: list, then
// watch from a revision), turns every change into a Key on a deduplicating
// work queue, and calls a level-based Reconciler for each key with retries,
// backoff and rate limiting, checkpointing how far it has got so a restart
// resumes instead of resyncing.
//
// It owns the queue, the watch/relist loop, retry policy and checkpoints. It
// does not own what reconciling means: a Reconciler reads the current state
// itself (the Key carries no object) and makes the world match it; a deleted
// object is reconciled too (its Get answers not found) so it can clean up. The
// package never writes resources itself. The caller runs one Controller per
// collection where it should run; a controller of which two copies would do
// harm runs in singleton mode, where a coord election decides which
// instance works.
//
// # Queue
//
// A key is queued at most once. A key is never reconciled by two workers at
// the same time: if it changes while being reconciled it is marked dirty and
// reconciled again once the running reconcile returns. A failed reconcile is
// retried after BaseDelay*2^n (n = failures so far, capped at MaxDelay),
// delayed further if needed by a QPS/Burst token bucket shared by all retries
// of the controller; a success resets the key's backoff. Result.RequeueAfter
// schedules a later reconcile of a key that succeeded. A new change to a key
// that waits for a retry reconciles it at once (the change may be the fix).
//
// # Checkpoints
//
// A saved checkpoint R means: every change with revision <= R has been
// reconciled successfully. The controller tracks, for each key with work
// outstanding, the revision of the earliest change not yet covered by a
// successful reconcile that started after it (for keys found by a full list,
// the object's own revision). The checkpoint is
//
//	min(complete, min(outstanding revisions) - 1)
//
// where complete is the highest revision the stream has reached: a list's
// revision, a bookmark's, or an event's. With nothing outstanding the
// checkpoint is simply complete. Counting an event's own revision as reached
// relies on the resource API changing one object per revision (every write
// is a single-object transaction); the server's bookmarks trail the last
// event by one revision for exactly the multi-object case, and waiting for
// them would make every restart replay the last change. A Source whose
// revisions can carry several objects of the collection must not be used
// with a checkpoint, or a restart may miss the rest of a revision. The checkpoint is
// saved every CheckpointInterval when it changed, and once more after the
// workers stop on shutdown.
//
// On start, a checkpoint R means "watch since R": no full list, and objects
// unchanged since R are not reconciled again. Without a checkpoint, when
// the history after R has been compacted, or when the API refuses R as a bad
// request (a checkpoint beyond the revision of a recreated store), the
// controller lists everything, queues every key and watches from the list's
// revision. Other list and watch errors are retried with backoff; the SDK
// already resumes broken watch connections itself.
//
// Limits: a full list after compaction cannot show objects deleted while the
// history was lost unless this process saw them alive before (it remembers
// the keys it has seen and reconciles the missing ones as deletions). After a
// restart whose checkpoint was compacted, such deletions are not reported;
// reconcilers owning external state must also garbage-collect it by
// comparing against a List.
//
// # Singleton mode
//
// With Options.Singleton, every instance (one per node) campaigns in the
// same coord election and only the leader follows the source and
// reconciles. Run campaigns; on winning it starts a term: a fresh queue, a
// full list, the watch and the workers, all under the leadership's context.
// When leadership is lost (coord ends that context: lease lost, leader key
// gone) the term stops, Run waits for the running reconciles to return,
// turns Leading false, resigns and campaigns again. When ctx ends, the
// leader stops its term the same way and only then resigns, so a standby
// takes over at once after a clean shutdown and within the election's TTL
// after a crash or partition.
//
// One key is never reconciled by two instances at once, given reconcilers
// that return promptly once their context ends: coord ends a leadership's
// context at least its safety margin (TTL/5, at least 500ms) before the
// server could expire the lease and elect another instance, measured on the
// holder's clock from before its last acknowledged keepalive was sent (see
// coord's Lease.keep), and Run treats leadership as gone only after the
// term's reconciles returned. A reconciler that may outlive that margin
// (or a host paused for longer) should fence its writes with LeadershipOf.
//
// Checkpoints: a singleton takes no CheckpointStore; each term lists
// everything, so a leader that moves to another node never resumes from a
// stale or missing per-node checkpoint and skips nothing that exists. The
// cost is one list and one reconcile of every object per change of leader.
// As with a compacted checkpoint, deletions that happen between the old
// leader's last reconcile and the new leader's list are not reported as
// deletions; reconcilers owning external state garbage-collect against a
// List.
//
// Readiness: a singleton is ready as soon as Run runs, whether it leads or
// stands by (a standby is healthy); Leading says which, and the
// ultracloud_controller_leader gauge (1 or 0) reports it per controller.
package controller
