#!/usr/bin/env bash
# Benchmarks the resource API of a real node: builds ultracloud, starts
# `ultracloud up` (durable writes, --log-level warn) and runs
# BenchmarkCreateGet (test/bench) with 1, 16 and 64 concurrent clients, each
# creating a project and reading it back over HTTP keep-alive connections.
# Prints a markdown table for docs/benchmarks.md.
#
# Environment: BENCHTIME (default 5000x: create+get pairs per client count,
# split across the clients), COUNT (default 1: repetitions; one row each).
# The node's data directory is under $TMPDIR (default /tmp): point TMPDIR at
# the disk you mean to measure. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
BENCHTIME=${BENCHTIME:-15000x}
COUNT=${COUNT:-1}

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "==> go test ./test/bench -run '^\$' -bench 'BenchmarkCreateGet' -benchtime=$BENCHTIME -count=$COUNT" >&2
go test ./test/bench -run '^$' -bench 'BenchmarkCreateGet' -benchtime="$BENCHTIME" -count="$COUNT" -timeout 30m | tee "$raw" >&2

echo
echo "BenchmarkCreateGet, $(date -u +%Y-%m-%d), $(bench_commit), $(go env GOVERSION), $(bench_machine), $BENCHTIME pairs per row:"
echo
awk '
BEGIN {
	print "| load | creates/s | create p50 (µs) | create p99 (µs) | get p50 (µs) | get p99 (µs) | server CPU per pair (µs) |"
	print "|---|--:|--:|--:|--:|--:|--:|"
}
$1 ~ /^BenchmarkCreateGet(AtRate)?\/clients=/ {
	clients = $1
	sub(/^BenchmarkCreateGet\//, "", clients)
	sub(/^BenchmarkCreateGetAtRate\//, "", clients)
	sub(/-[0-9]+$/, "", clients)
	if ($1 ~ /AtRate/) clients = clients " (fixed rate)"; else clients = clients " (closed loop)"
	delete m
	for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
	printf "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", clients, m["creates/s"], m["create-p50-us"], m["create-p99-us"], m["get-p50-us"], m["get-p99-us"], m["server-cpu-us/pair"]
	rows++
}
END { if (rows == 0) { print "no BenchmarkCreateGet results found" > "/dev/stderr"; exit 1 } }
' "$raw"
