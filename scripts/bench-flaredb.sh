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

bench_vs_etcd BenchmarkFlareDBVsEtcd flaredb
