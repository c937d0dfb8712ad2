#!/usr/bin/env bash
# Compares flaredb with Debian's standalone etcd (issue 5): builds
# ultracloud, starts a 3-member flaredb cluster (three `ultracloud server`
# processes with roles [flaredb]) and a 3-member /usr/bin/etcd cluster, both
# plaintext on loopback with comparable raft settings (heartbeats every
# 100ms, election timeout 1s, snapshot every 10000 entries), and runs
# BenchmarkFlareDBVsEtcd (test/bench): the same load driver (package
# test/bench/kvdriver; flaredb's Go client and clientv3) against both in the
# same run, puts of 256-byte values to fresh keys and linearizable gets of
# 1000 preloaded keys, 16 and 64 concurrent clients. Prints a markdown table
# with the flaredb/etcd ratios for docs/benchmarks.md.
#
# The same workload can be run by hand against any cluster with
#   go run ./test/bench/kvload --system flaredb|etcd --endpoints a,b,c ...
#
# Needs /usr/bin/etcd: apt-get install -y etcd-server.
# Environment: BENCHTIME (default 20000x: operations per row, split across
# the clients), ROUNDS (default 2: interleaved rounds; each system goes
# first in each case in half of them, see runKVCases). Data directories are under $TMPDIR
# (default /tmp). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
BENCHTIME=${BENCHTIME:-20000x}
ROUNDS=${ROUNDS:-2}
# The peer: Debian's standalone etcd (the package also starts a system
# etcd on 2379/2380; the benchmark uses other ports).
apt_need etcd-server

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "==> BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^\$' -bench 'BenchmarkFlareDBVsEtcd' -benchtime=$BENCHTIME" >&2
BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^$' -bench 'BenchmarkFlareDBVsEtcd' -benchtime="$BENCHTIME" -timeout 30m | tee "$raw" >&2

etcdv=$(/usr/bin/etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}')
echo
echo "BenchmarkFlareDBVsEtcd, $(date -u +%Y-%m-%d), $(bench_commit), $(go env GOVERSION), etcd $etcdv, $(bench_machine), load average $(cut -d' ' -f1-3 /proc/loadavg) after the run, $BENCHTIME operations per row, mean of $ROUNDS round(s):"
echo
awk '
$1 ~ /^BenchmarkFlareDBVsEtcd\/op=/ {
	name = $1
	sub(/^BenchmarkFlareDBVsEtcd\//, "", name)
	sub(/-[0-9]+$/, "", name)
	sub(/#[0-9]+$/, "", name)
	split(name, parts, "/")
	op = parts[1]; sub(/^op=/, "", op)
	cl = parts[2]; sub(/^clients=/, "", cl)
	sys = parts[3]; sub(/^system=/, "", sys)
	delete m
	for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
	key = op SUBSEP cl
	if (!(key in seen)) { seen[key] = 1; order[++n] = key }
	ops[key, sys] += m["ops/s"]; p50[key, sys] += m["p50-us"]; p99[key, sys] += m["p99-us"]; cpu[key, sys] += m["server-cpu-us/op"]; runs[key, sys]++
}
function avg(a, k, s) { return runs[k, s] ? a[k, s] / runs[k, s] : 0 }
function ratio(x, y) { return y ? sprintf("%.2f", x / y) : "-" }
END {
	if (n == 0) { print "no BenchmarkFlareDBVsEtcd results found" > "/dev/stderr"; exit 1 }
	print "| op | clients | flaredb ops/s | etcd ops/s | ratio | flaredb p50 (µs) | etcd p50 (µs) | flaredb p99 (µs) | etcd p99 (µs) | p99 ratio | flaredb server CPU/op (µs) | etcd server CPU/op (µs) |"
	print "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	for (i = 1; i <= n; i++) {
		k = order[i]; split(k, kk, SUBSEP)
		fo = avg(ops, k, "flaredb"); eo = avg(ops, k, "etcd")
		f99 = avg(p99, k, "flaredb"); e99 = avg(p99, k, "etcd")
		printf "| %s | %s | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.0f |\n", kk[1], kk[2], fo, eo, ratio(fo, eo), avg(p50, k, "flaredb"), avg(p50, k, "etcd"), f99, e99, ratio(f99, e99), avg(cpu, k, "flaredb"), avg(cpu, k, "etcd")
	}
}
' "$raw"
