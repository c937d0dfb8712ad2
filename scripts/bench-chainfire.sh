#!/usr/bin/env bash
# Compares chainfire with Debian's standalone etcd (issue 4): builds
# ultracloud, starts a 3-member chainfire cluster (three `ultracloud server`
# processes with roles [chainfire]) and a 3-member /usr/bin/etcd cluster,
# both plaintext on loopback with the same raft settings (heartbeat 100ms,
# election 1s, snapshot count 10000, periodic compaction 1h, no auth), and
# runs BenchmarkChainfireVsEtcd (test/bench): the same clientv3 load driver
# against both in the same run, puts of 256-byte values and linearizable
# gets, 16 and 64 concurrent clients. Prints a markdown table with the
# chainfire/etcd ratios for docs/benchmarks.md.
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
echo "==> BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^\$' -bench 'BenchmarkChainfireVsEtcd' -benchtime=$BENCHTIME" >&2
BENCH_ROUNDS=$ROUNDS go test ./test/bench -run '^$' -bench 'BenchmarkChainfireVsEtcd' -benchtime="$BENCHTIME" -timeout 30m | tee "$raw" >&2

etcdv=$(/usr/bin/etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}')
echo
echo "BenchmarkChainfireVsEtcd, $(date -u +%Y-%m-%d), $(bench_commit), $(go env GOVERSION), etcd $etcdv, $(bench_machine), load average $(cut -d' ' -f1-3 /proc/loadavg) after the run, $BENCHTIME operations per row, mean of $ROUNDS round(s):"
echo
awk '
$1 ~ /^BenchmarkChainfireVsEtcd\/op=/ {
	name = $1
	sub(/^BenchmarkChainfireVsEtcd\//, "", name)
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
	if (n == 0) { print "no BenchmarkChainfireVsEtcd results found" > "/dev/stderr"; exit 1 }
	print "| op | clients | chainfire ops/s | etcd ops/s | ratio | chainfire p50 (µs) | etcd p50 (µs) | chainfire p99 (µs) | etcd p99 (µs) | p99 ratio | chainfire server CPU/op (µs) | etcd server CPU/op (µs) |"
	print "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	for (i = 1; i <= n; i++) {
		k = order[i]; split(k, kk, SUBSEP)
		co = avg(ops, k, "chainfire"); eo = avg(ops, k, "etcd")
		c99 = avg(p99, k, "chainfire"); e99 = avg(p99, k, "etcd")
		printf "| %s | %s | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.0f |\n", kk[1], kk[2], co, eo, ratio(co, eo), avg(p50, k, "chainfire"), avg(p50, k, "etcd"), c99, e99, ratio(c99, e99), avg(cpu, k, "chainfire"), avg(cpu, k, "etcd")
	}
}
' "$raw"
