#!/usr/bin/env bash
# Benchmarks prismnet's dataplane end to end (issue 12): builds ultracloud
# and runs the three BenchmarkPrismnet* benchmarks of test/bench, each on a
# multi-host cluster of its own in network namespaces (test/harness: a
# control-plane host cp and workers running only prismnet-agent):
#   - Throughput: iperf3 from a workload on w1 to one on w2 over VXLAN with
#     security groups on, in the same run as the same two namespaces over a
#     plain veth pair, a plain bridge and the hosts' underlay;
#   - Reconcile: 1,000 tap ports bound to an empty worker, first create to
#     all Ready in the API, then single-port changes;
#   - Propagation: port create (API call) to the first packet crossing
#     hosts, over 100 ports.
# Prints one markdown table per benchmark for docs/benchmarks.md, one row
# per run.
#
# Needs root (namespaces, nftables, VXLAN) and iperf3, iproute2, nftables
# (installed if missing). Environment: COUNT (default 2: runs of each
# benchmark), IPERF_SECONDS (default 10), REVERSE (default 1: also iperf3 -R
# on the overlay and veth paths), AGENT_DEBUG (default 0; 1: nodes log at
# debug level and the reconcile table adds the agent's dataplane Apply times
# from its log), BENCH (default all three: a -bench regexp). Run it on an
# otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
if [ "$(id -u)" -ne 0 ]; then
	echo "error: the prismnet benchmarks need root (network namespaces, nftables, VXLAN): sudo $0" >&2
	exit 1
fi
apt_need iperf3 iproute2 nftables
COUNT=${COUNT:-2}
export PRISMNET_BENCH_IPERF_SECONDS=${IPERF_SECONDS:-10}
export PRISMNET_BENCH_REVERSE=${REVERSE:-1}
export PRISMNET_BENCH_AGENT_DEBUG=${AGENT_DEBUG:-0}
BENCH=${BENCH:-'BenchmarkPrismnet(Throughput|Reconcile|Propagation)$'}

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
echo "==> PRISMNET_BENCH_IPERF_SECONDS=$PRISMNET_BENCH_IPERF_SECONDS PRISMNET_BENCH_REVERSE=$PRISMNET_BENCH_REVERSE PRISMNET_BENCH_AGENT_DEBUG=$PRISMNET_BENCH_AGENT_DEBUG go test ./test/bench -run '^\$' -bench '$BENCH' -benchtime=1x -count=$COUNT" >&2
go test ./test/bench -run '^$' -bench "$BENCH" -benchtime=1x -count="$COUNT" -timeout 60m | tee "$raw" >&2

echo
echo "BenchmarkPrismnet*, $(date -u +%Y-%m-%d), $(bench_commit), $(go env GOVERSION), kernel $(uname -r), $(iperf3 --version | head -1 | awk '{print $1, $2}'), $(nproc) CPUs ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average $(cut -d' ' -f1-3 /proc/loadavg) after the run:"
awk '
function metrics() { delete m; for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i }
function v(k, f) { return (k in m) ? sprintf(f, m[k]) : "-" }
$1 ~ /^BenchmarkPrismnetThroughput(-[0-9]+)?$/ {
	metrics()
	if (!t++) {
		print "\nThroughput (Gbit/s, iperf3 one stream, w1 -> w2):\n"
		print "| run | overlay (VXLAN + security groups) | overlay, port security off | plain veth | plain bridge | underlay | overlay/veth | overlay/bridge | overlay -R | veth -R | overlay/veth -R | bytes/packet at the receiver, overlay / veth |"
		print "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	}
	printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", t, v("overlay-Gbit/s", "%.2f"), v("overlay-nosg-Gbit/s", "%.2f"), v("veth-Gbit/s", "%.2f"), v("bridge-Gbit/s", "%.2f"), v("underlay-Gbit/s", "%.2f"), v("overlay/veth", "%.2f"), v("overlay/bridge", "%.2f"), v("overlay-rev-Gbit/s", "%.2f"), v("veth-rev-Gbit/s", "%.2f"), v("overlay-rev/veth-rev", "%.2f"), v("overlay-rx-bytes/pkt", "%.0f"), v("veth-rx-bytes/pkt", "%.0f")
}
$1 ~ /^BenchmarkPrismnetReconcile(-[0-9]+)?$/ {
	metrics()
	if (!r++) {
		print "\nReconcile (1,000 tap ports on one empty worker, 32 concurrent creates; seconds from the first create call):\n"
		print "| run | all created (s) | all devices up in the kernel (s) | all Ready in the API (s) | create p50 / p99 (ms) | cp CPU (s) | agent CPU (s) | agent Applies / their time (s) | single port: create call p50 (ms) | single port: device up p50 / max (ms) | single port: Ready p50 / max (ms) | single port: agent Apply p50 / max (ms), Applies per change |"
		print "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	}
	printf "| %d | %s | %s | %s | %s / %s | %s | %s | %s / %s | %s | %s / %s | %s / %s | %s / %s, %s |\n", r, v("all-created-s", "%.2f"), v("kernel-all-up-s", "%.2f"), v("all-ready-s", "%.2f"), v("create-p50-ms", "%.0f"), v("create-p99-ms", "%.0f"), v("cp-cpu-s", "%.1f"), v("agent-cpu-s", "%.1f"), v("bulk-applies", "%.0f"), v("bulk-apply-s", "%.2f"), v("single-create-call-p50-ms", "%.1f"), v("single-up-p50-ms", "%.0f"), v("single-up-max-ms", "%.0f"), v("single-ready-p50-ms", "%.0f"), v("single-ready-max-ms", "%.0f"), v("single-apply-p50-ms", "%.0f"), v("single-apply-max-ms", "%.0f"), v("applies/single", "%.2f")
}
$1 ~ /^BenchmarkPrismnetPropagation(-[0-9]+)?$/ {
	metrics()
	if (!p++) {
		print "\nPropagation (ms from the port create call, 100 ports, one at a time):\n"
		print "| run | first echo p50 | p99 | max | first datagram at w2 p50 / p99 | veth in namespace p50 / p99 | host end up on w1 p50 / p99 | Ready in API p50 / p99 | create call p50 |"
		print "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	}
	printf "| %d | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s |\n", p, v("echo-p50-ms", "%.0f"), v("echo-p99-ms", "%.0f"), v("echo-max-ms", "%.0f"), v("arrive-p50-ms", "%.0f"), v("arrive-p99-ms", "%.0f"), v("veth-p50-ms", "%.0f"), v("veth-p99-ms", "%.0f"), v("w1-up-p50-ms", "%.0f"), v("w1-up-p99-ms", "%.0f"), v("ready-p50-ms", "%.0f"), v("ready-p99-ms", "%.0f"), v("create-call-p50-ms", "%.1f")
}
END { if (t + r + p == 0) { print "no BenchmarkPrismnet results found" > "/dev/stderr"; exit 1 } }
' "$raw"
