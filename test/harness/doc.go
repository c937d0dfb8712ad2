// Package harness runs multi-host UltraCloud clusters on one Linux machine
// for tests and for people: every host is a network namespace running the
// real `ultracloud` binary, and the hosts are wired together by bridges that
// live in a namespace of their own.
//
// It owns, for one run: the namespaces (named with a unique per-run prefix,
// `uch-<id>-`), the links inside them, each host's node.yaml, data directory
// and log file, the server processes, the nftables table `uch_harness` and
// netem qdiscs it adds inside host namespaces to inject faults, and the run's
// state file under /run/ultracloud-harness. Close removes all of it; Sweep
// removes what crashed runs left behind.
//
// It must never touch the root network namespace: no link, address, route
// or firewall rule is added there, so test traffic cannot leave the machine
// and the host's own networking is never disturbed. Test processes reach
// the hosts by opening their sockets inside the switch namespace (see
// Cluster.HTTPClient) instead of by routing from the root namespace.
//
// Layout of a run with prefix P (for example `uch-1a2b3c4d-`):
//
//	P-net                 the switch: bridge br0 (underlay, .1 of the subnet)
//	                      and br1.. (extra networks), also the observer that
//	                      test code dials from
//	P<host>               one per host: lo, eth0 on the underlay at .10+i,
//	                      eth1.. on extra networks, the ultracloud process
//
// Chainfire: by default every host runs a one-member chainfire on its own
// loopback (plaintext). Spec.Chainfire{Members: [...]} instead makes those
// hosts one chainfire cluster on their underlay addresses (https, static
// initial cluster, tls.auto from a CA the harness generates in
// <workdir>/chainfire-ca); Cluster.ChainfireCAFile, ChainfireMembers and
// Host.ChainfireEndpoint give clients what they need, and Cluster.Dial or
// Host.Dial open their connections (e.g. as a grpc.WithContextDialer).
// ChainfireSpec.Spares are hosts planned with cluster URLs that start on
// their loopback chainfire and join the running cluster later with
// Host.ChainfireJoin (after `ultracloud chainfire member add`); see
// chainfire.go. test/chainfire uses it.
//
// Process-wide state, kept to the minimum the process model forces: Binary
// caches one build per test process, and clusters started with Start are
// registered for SIGINT/SIGTERM cleanup (signals are process-wide). Both are
// documented where they are defined.
package harness
