// Package chainfire is UltraCloud's replicated coordination store: one
// member of an etcd v3 cluster embedded in the node process
// (go.etcd.io/etcd/server/v3/embed), so etcdctl and clientv3 work against it
// unchanged.
//
// It owns: the member's configuration and its validation (plaintext only on
// loopback and only when asked for), the member's lifecycle as a component
// (start, readiness, ordered close), the data directory guard that refuses a
// data directory belonging to another cluster or member, dev certificates
// (AutoTLS: a cluster CA and member certificates issued with crypto/x509),
// member status and its Prometheus gauges, and thin helpers for the
// operations the CLI exposes (member add/remove/list, snapshot save/restore).
//
// It must not: implement consensus or storage itself (etcd does), know any
// other component, or hold process-wide state. What components store in
// chainfire and how they coordinate (elections, leases, locks, watches, the
// node registry) belongs to internal/runtime/coord, which speaks to any
// etcd v3 endpoint through clientv3.
//
// # Data directory
//
// DataDir holds etcd's member directory (member/wal, member/snap), the guard
// file chainfire-cluster.json and, with AutoTLS, tls/ (CA, member certificate
// and keys, mode 0600).
//
// # Shutdown order
//
// When Run's context ends: (1) the member stops being reported as ready
// (Status and Client answer ErrNotRunning), (2) embed.Etcd.Close stops the
// client listeners, letting in-flight requests finish within etcd's request
// timeout, (3) stops the raft server and the peer transport, (4) waits for
// etcd's serving goroutines, then Run returns.
package chainfire
