// Package bench holds benchmarks of the real ultracloud binary: each starts
// an `ultracloud up` node as a child process (durable writes, as shipped)
// and measures the API from outside over HTTP keep-alive connections,
// reporting throughput and exact latency percentiles. scripts/bench-api.sh
// runs them and prints the table for docs/benchmarks.md.
//
// Benchmarks only observe the product from outside; they must not import
// internal/ packages and make no timed assertions.
package bench
