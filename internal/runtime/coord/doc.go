// Package coord is the coordination library every UltraCloud component
// uses against chainfire (any etcd v3 endpoint, through clientv3):
//
//   - Election: singleton controllers. Campaign blocks until this candidate
//     leads and returns a Leadership whose context is cancelled the moment
//     leadership may have been lost, so a stale leader stops acting.
//   - Lease and Heartbeat: a key kept alive by a lease (node heartbeats),
//     reporting its loss.
//   - Lock: a distributed mutex whose holder learns when it lost it.
//   - Watch: a prefix watch from a revision that resumes by itself after
//     disconnects and reports compaction as ErrCompacted.
//   - Registry: the typed registry of nodes and their capacities, each
//     entry kept alive by its node's lease.
//
// It owns key layout under KeyPrefix (and the registry's prefix), lease
// keepalive and loss detection, and the resume logic of watches. It must
// not: run a store (chainfire does), decide what components do with
// leadership or locks, or start goroutines it does not stop — every
// background goroutine belongs to a Lease (stopped by Release or by the
// context it was created with) or runs in the caller's goroutine (Watch).
//
// # Loss detection and fencing
//
// A lease is lost when its keepalive stream ends (the lease expired or was
// revoked), when no keepalive sent within the last TTL minus a safety
// margin has been acknowledged (measured on the holder's clock from before
// the request was sent, so the holder gives up before the server can expire
// the lease and hand the role to someone else; Lease.keep gives the
// argument), when the client closes, or, for leadership and locks,
// when the held key is deleted or replaced. Loss cancels the holder's
// context with a cause wrapping ErrLeaseLost or ErrKeyLost. Clock-based
// detection is best effort (it assumes bounded pauses of the holder's
// process); writes to chainfire that must never come from a stale leader
// should also carry the fencing comparison Leadership.IsLeaderCmp in their
// transaction, and writes elsewhere the fencing token Leadership.Revision.
//
// Small interfaces (Elector, Locker, Heartbeater, Watcher, NodeRegistry)
// let components be tested without a cluster.
package coord
