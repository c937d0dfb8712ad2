// Package bench holds benchmarks of the real ultracloud binary: each starts
// ultracloud processes as children (durable writes, as shipped) and
// measures them from outside, reporting throughput and exact latency
// percentiles:
//
//   - BenchmarkCreateGet*: an `ultracloud up` node's resource API over HTTP
//     keep-alive connections (scripts/bench-api.sh);
//   - BenchmarkChainfireVsEtcd: a 3-member chainfire cluster against
//     Debian's etcd with the same clientv3 driver (scripts/bench-chainfire.sh);
//   - BenchmarkFlareDBVsEtcd: a 3-member flaredb cluster against Debian's
//     etcd with the load driver of package kvdriver, which the kvload
//     command also runs by hand (scripts/bench-flaredb.sh);
//   - BenchmarkPrismnetThroughput, BenchmarkPrismnetReconcile,
//     BenchmarkPrismnetPropagation: tenant networks on a multi-host
//     harness cluster (root): iperf3 over VXLAN against plain veth and
//     bridge paths, 1,000 ports on one worker, create-to-first-packet
//     (scripts/bench-prismnet.sh).
//
// kvcluster_test.go starts the etcd peer cluster both comparisons share.
// Benchmarks observe the product from outside and make no timed
// assertions. They must not import internal/ packages, with one exception:
// kvdriver drives flaredb through its Go client (internal/flaredb/client),
// which is how every component talks to flaredb, as clientv3 is for etcd.
package bench
