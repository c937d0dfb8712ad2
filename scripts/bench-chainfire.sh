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

bench_vs_etcd BenchmarkChainfireVsEtcd chainfire
