//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/ultracloud/ultracloud/pkg/api/prismnetv1"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// The prismnet benchmarks of issue 12 (scripts/bench-prismnet.sh runs
// them; docs/benchmarks.md has the figures). Each starts its own cluster
// in network namespaces (see prismnet_env_test.go), needs root, and
// reports its figures as custom metrics; ns/op means nothing here.
//
//   - BenchmarkPrismnetThroughput: iperf3 between two workloads on
//     different hosts over VXLAN with security groups on, and in the same
//     run between the same two namespaces over plain paths.
//   - BenchmarkPrismnetReconcile: 1,000 tap ports bound to an empty host,
//     from the first create to all Ready in the API; then single-port
//     changes.
//   - BenchmarkPrismnetPropagation: port create (API call) to the first
//     packet crossing hosts, over 100 ports per iteration.

// pnGroup is the security group every benchmark port is in: ports that
// share a group admit each other, so traffic between them passes the
// stateful filters (security groups on) without a rule.
const pnGroup = "bench"

// envInt reads a positive integer knob from the environment.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// millis converts a duration to fractional milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentileMillis is percentileMicros in milliseconds (exact, nearest
// rank; sorts samples).
func percentileMillis(samples []time.Duration, p float64) float64 {
	return percentileMicros(samples, p) / 1000
}

// BenchmarkPrismnetThroughput measures TCP throughput (iperf3, one
// stream, PRISMNET_BENCH_IPERF_SECONDS long, default 10) from workload A
// on host w1 to workload B on host w2, over the tenant network (VXLAN
// between the hosts, both ports in one security group, so the stateful
// filters and anti-spoofing rules are on the path), and in the same
// iteration over three plain paths between the same two namespaces: a
// veth pair joining them directly, a veth to a Linux bridge in a
// namespace of its own and back, and the underlay itself (host w1 to host
// w2, the path the VXLAN packets take, without encapsulation or filters).
// PRISMNET_BENCH_REVERSE=1 adds the overlay and veth paths in the reverse
// direction (iperf3 -R). A fifth path, overlay-nosg, is the tenant path
// again on a second network whose two ports have port security off
// (second interfaces of A and B), which separates the filters' cost from
// the encapsulation's. It reports Gbit/s per path (mean of the
// iterations), the ratios of the overlay to the plain paths, and the mean
// size of the packets the receiving interface got (large: segmentation
// offload carried superpackets the whole way).
func BenchmarkPrismnetThroughput(b *testing.B) {
	requirePrismnet(b, "iperf3", "ip")
	seconds := envInt(b, "PRISMNET_BENCH_IPERF_SECONDS", 10)
	reverse := os.Getenv("PRISMNET_BENCH_REVERSE") == "1"
	e := startPrismnet(b, "info", "w1", "w2")
	e.create(prismnetv1.SecurityGroupCollection, pnProject, pnGroup, prismnetv1.SecurityGroupSpec{})
	mtu := e.network("net1", "10.80.0.0/16", "10.80.1.0/24")
	nsA, ipA := e.attachStatic("a", "net1", "w1", 24, pnGroup)
	nsB, ipB := e.attachStatic("b", "net1", "w2", 24, pnGroup)
	// The same tenant path without filters: a second network whose ports
	// have port security off, on a second interface of A and B.
	e.network("net2", "10.82.0.0/16", "10.82.1.0/24")
	ipB2 := e.plug("b-nosg", "net2", "w2", nsB, "eth1", 24, false)
	e.plug("a-nosg", "net2", "w1", nsA, "eth1", 24, false)
	w1, w2 := e.c.Host("w1"), e.c.Host("w2")
	b.Logf("overlay: A %s (w1) -> B %s (w2), MTU %d; underlay w1 %s -> w2 %s", ipA, ipB, mtu, w1.Addr(), w2.Addr())

	// The plain peers, between the same two namespaces. No filters, no
	// encapsulation, the kernel's default MTU (1500).
	e.sh(nsA, "ip link add pv0 type veth peer name pv1 netns "+nsB+" && ip addr add 192.168.251.1/30 dev pv0 && ip link set pv0 up")
	e.sh(nsB, "ip addr add 192.168.251.2/30 dev pv1 && ip link set pv1 up")
	nsBr := e.addNetns("plainbr")
	e.sh(nsBr, "ip link add br0 type bridge && ip link set br0 up"+
		" && ip link add pa type veth peer name pb0 netns "+nsA+" && ip link set pa master br0 up"+
		" && ip link add pb type veth peer name pb1 netns "+nsB+" && ip link set pb master br0 up")
	e.sh(nsA, "ip addr add 192.168.252.1/24 dev pb0 && ip link set pb0 up")
	e.sh(nsB, "ip addr add 192.168.252.2/24 dev pb1 && ip link set pb1 up")

	// iperf3 servers: one in B (all its addresses), one in host w2.
	serve := func(cmd *exec.Cmd) {
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	serve(exec.CommandContext(e.ctx, "ip", "netns", "exec", nsB, "iperf3", "-s", "-p", "5201"))
	serve(w2.Command(e.ctx, "iperf3", "-s", "-p", "5201"))

	// rxNS and rxIf name the receiving workload's interface, whose
	// counters give the mean size of the packets the receiver got: how
	// much of the path carried segmentation-offload superpackets.
	type path struct {
		name, from, to string
		reverse        bool
		rxNS, rxIf     string
	}
	paths := []path{
		{"overlay", nsA, ipB, false, nsB, "eth0"},
		{"overlay-nosg", nsA, ipB2, false, nsB, "eth1"},
		{"veth", nsA, "192.168.251.2", false, nsB, "pv1"},
		{"bridge", nsA, "192.168.252.2", false, nsB, "pb1"},
		{"underlay", w1.Namespace(), w2.Addr().String(), false, w2.Namespace(), "eth0"},
	}
	if reverse {
		paths = append(paths, path{"overlay-rev", nsA, ipB, true, nsA, "eth0"}, path{"veth-rev", nsA, "192.168.251.2", true, nsA, "pv0"})
	}
	for _, p := range paths {
		if err := waitIperfServer(e, p.from, p.to); err != nil {
			b.Fatalf("%s path: %v", p.name, err)
		}
	}

	gbps := map[string][]float64{}
	retrans := map[string][]float64{}
	pktSize := map[string][]float64{}
	b.ResetTimer()
	for range b.N {
		for _, p := range paths {
			pkts0, bytes0, err := rxCounters(p.rxNS, p.rxIf)
			if err != nil {
				b.Fatal(err)
			}
			r, err := runIperf(e.ctx, p.from, p.to, seconds, p.reverse)
			if err != nil {
				b.Fatalf("%s path: %v", p.name, err)
			}
			pkts1, bytes1, err := rxCounters(p.rxNS, p.rxIf)
			if err != nil {
				b.Fatal(err)
			}
			size := 0.0
			if pkts1 > pkts0 {
				size = float64(bytes1-bytes0) / float64(pkts1-pkts0)
			}
			b.Logf("%s: %.2f Gbit/s, %d retransmits, CPU sender %.0f%% receiver %.0f%%, receiver got %d packets of %.0f bytes on average",
				p.name, r.bps/1e9, r.retransmits, r.cpuHost, r.cpuRemote, pkts1-pkts0, size)
			pktSize[p.name] = append(pktSize[p.name], size)
			gbps[p.name] = append(gbps[p.name], r.bps/1e9)
			retrans[p.name] = append(retrans[p.name], float64(r.retransmits))
		}
	}
	b.StopTimer()
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	for _, p := range paths {
		b.ReportMetric(mean(gbps[p.name]), p.name+"-Gbit/s")
		b.ReportMetric(mean(retrans[p.name]), p.name+"-retransmits")
		b.ReportMetric(mean(pktSize[p.name]), p.name+"-rx-bytes/pkt")
	}
	b.ReportMetric(mean(gbps["overlay"])/mean(gbps["veth"]), "overlay/veth")
	b.ReportMetric(mean(gbps["overlay"])/mean(gbps["bridge"]), "overlay/bridge")
	b.ReportMetric(mean(gbps["overlay"])/mean(gbps["underlay"]), "overlay/underlay")
	b.ReportMetric(mean(gbps["overlay"])/mean(gbps["overlay-nosg"]), "overlay/overlay-nosg")
	if reverse {
		b.ReportMetric(mean(gbps["overlay-rev"])/mean(gbps["veth-rev"]), "overlay-rev/veth-rev")
	}
}

// rxCounters returns the received packets and bytes of interface ifc in
// namespace ns.
func rxCounters(ns, ifc string) (pkts, bytes uint64, err error) {
	h, nsh, err := netlinkIn(ns)
	if err != nil {
		return 0, 0, err
	}
	defer nsh.Close()
	defer h.Close()
	l, err := h.LinkByName(ifc)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %s in %s: %w", ifc, ns, err)
	}
	st := l.Attrs().Statistics
	if st == nil {
		return 0, 0, fmt.Errorf("bench: %s in %s: no statistics", ifc, ns)
	}
	return st.RxPackets, st.RxBytes, nil
}

// waitIperfServer waits until a 1-second iperf3 test from namespace ns
// to addr succeeds: the path forwards and the server listens.
func waitIperfServer(e *pnEnv, ns, addr string) error {
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.CommandContext(e.ctx, "ip", "netns", "exec", ns, "iperf3", "-c", addr, "-p", "5201", "-t", "1", "--connect-timeout", "1000").CombinedOutput()
		if err == nil {
			return nil
		}
		last = fmt.Sprintf("%v: %s", err, out)
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: iperf3 from %s to %s does not work after 30s: %s", ns, addr, last)
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
	}
}

// iperfResult is what one iperf3 run measured.
type iperfResult struct {
	bps                float64 // received by the receiver, bits/s
	retransmits        int
	cpuHost, cpuRemote float64 // percent of one CPU, sender and receiver side
}

// runIperf runs one iperf3 client in namespace ns against addr and parses
// its JSON report.
func runIperf(ctx context.Context, ns, addr string, seconds int, reverse bool) (iperfResult, error) {
	args := []string{"netns", "exec", ns, "iperf3", "-c", addr, "-p", "5201", "-t", strconv.Itoa(seconds), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	out, err := exec.CommandContext(ctx, "ip", args...).Output()
	if err != nil {
		return iperfResult{}, fmt.Errorf("bench: iperf3 -c %s in %s: %w: %s", addr, ns, err, out)
	}
	var rep struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				HostTotal   float64 `json:"host_total"`
				RemoteTotal float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return iperfResult{}, fmt.Errorf("bench: iperf3 report: %w: %s", err, out)
	}
	if rep.Error != "" || rep.End.SumReceived.BitsPerSecond == 0 {
		return iperfResult{}, fmt.Errorf("bench: iperf3 -c %s in %s: %q (no throughput)", addr, ns, rep.Error)
	}
	return iperfResult{bps: rep.End.SumReceived.BitsPerSecond, retransmits: rep.End.SumSent.Retransmits,
		cpuHost: rep.End.CPU.HostTotal, cpuRemote: rep.End.CPU.RemoteTotal}, nil
}

// BenchmarkPrismnetReconcile binds 1,000 tap ports (PRISMNET_BENCH_PORTS)
// to one empty worker: 32 concurrent creates across 4 networks, every
// port in one security group. It reports the time from the first create
// call to the moment the API showed every port Ready (the agent reported
// it), to the last create returning, and to the last port device coming
// up in the worker's kernel (the agent brings a port's device up once its
// filters are in place), the CPU the control-plane host and the worker
// (the agent) used meanwhile, and then, over 20 single-port changes (one
// more port created on the loaded host, one at a time), the time from the
// create call to the device up in the kernel and to Ready in the API.
// PRISMNET_BENCH_AGENT_DEBUG=1 runs the nodes at log level debug and adds
// the agent's own share from its log: the number and total duration of
// its dataplane Applies while the 1,000 ports converged, and per single
// change. The scenario needs an empty host, so it runs once per benchmark
// (-benchtime=1x; use -count for repetitions).
func BenchmarkPrismnetReconcile(b *testing.B) {
	if b.N != 1 {
		b.Fatalf("the reconcile scenario starts from an empty host and runs once: use -benchtime=1x (and -count=N to repeat), not b.N=%d", b.N)
	}
	requirePrismnet(b, "ip")
	ports := envInt(b, "PRISMNET_BENCH_PORTS", 1000)
	const networks, clients, singles = 4, 32, 20
	if ports > networks*1000 {
		b.Fatalf("PRISMNET_BENCH_PORTS=%d: at most %d (4 networks of a /22 each)", ports, networks*1000)
	}
	// With PRISMNET_BENCH_AGENT_DEBUG=1 the nodes log at debug level,
	// where the agent's dataplane logs every Apply with its phases: the
	// benchmark then also reports the kernel part of the agent's work.
	agentDebug := os.Getenv("PRISMNET_BENCH_AGENT_DEBUG") == "1"
	level := "info"
	if agentDebug {
		level = "debug"
	}
	e := startPrismnet(b, level, "w1")
	w1 := e.c.Host("w1")
	e.create(prismnetv1.SecurityGroupCollection, pnProject, pnGroup, prismnetv1.SecurityGroupSpec{})
	for i := range networks {
		e.network(fmt.Sprintf("rn%d", i), fmt.Sprintf("10.%d.0.0/16", 90+i), fmt.Sprintf("10.%d.0.0/22", 90+i))
	}
	rw := e.watchReady()
	lw := e.watchLinks(w1)
	portSpec := func(i int) prismnetv1.PortSpec {
		return prismnetv1.PortSpec{Network: fmt.Sprintf("rn%d", i%networks), SecurityGroups: []string{pnGroup},
			Binding: prismnetv1.PortBinding{Host: "w1", Device: prismnetv1.DeviceTap}}
	}
	names := make([]string, ports)
	for i := range names {
		names[i] = fmt.Sprintf("t%04d", i)
	}

	cpCPU0, err1 := processCPU(e.cp.PID())
	agentCPU0, err2 := processCPU(w1.PID())
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	g, ctx := errgroup.WithContext(e.ctx)
	for c := range clients {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= ports {
					return nil
				}
				t0 := time.Now()
				if _, err := e.tryCreate(ctx, prismnetv1.PortCollection, pnProject, names[i], portSpec(i)); err != nil {
					return err
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	created := time.Since(start)
	err := rw.wait(e.ctx, 5*time.Minute, fmt.Sprintf("all %d ports Ready", ports), func(m map[string]time.Time) bool {
		for _, n := range names {
			if _, ok := m[n]; !ok {
				return false
			}
		}
		return true
	})
	if err != nil {
		b.Fatal(err)
	}
	var lastReady, firstReady time.Time
	for _, n := range names {
		t, _ := rw.at(n)
		if lastReady.IsZero() || t.After(lastReady) {
			lastReady = t
		}
		if firstReady.IsZero() || t.Before(firstReady) {
			firstReady = t
		}
	}
	b.StopTimer()
	cpCPU1, err3 := processCPU(e.cp.PID())
	agentCPU1, err4 := processCPU(w1.PID())

	// Kernel side: when each port's device came up on w1.
	devs, err := e.portDevices()
	if err != nil {
		b.Fatal(err)
	}
	up, lost := lw.snapshot()
	var lastUp time.Time
	missing := 0
	for _, n := range names {
		t, ok := up[devs[n]]
		if !ok {
			missing++
			continue
		}
		if t.After(lastUp) {
			lastUp = t
		}
	}
	b.ReportMetric(lastReady.Sub(start).Seconds(), "all-ready-s")
	b.ReportMetric(created.Seconds(), "all-created-s")
	b.ReportMetric(firstReady.Sub(start).Seconds(), "first-ready-s")
	if missing == 0 {
		b.ReportMetric(lastUp.Sub(start).Seconds(), "kernel-all-up-s")
	} else {
		b.Logf("%d of %d port devices were never seen coming up on w1 (%d netlink subscription errors): no kernel-all-up-s", missing, ports, lost)
	}
	all := slices.Concat(lat...)
	b.ReportMetric(percentileMillis(all, 0.50), "create-p50-ms")
	b.ReportMetric(percentileMillis(all, 0.99), "create-p99-ms")
	if err1 == nil && err2 == nil && err3 == nil && err4 == nil {
		b.ReportMetric((cpCPU1 - cpCPU0).Seconds(), "cp-cpu-s")
		b.ReportMetric((agentCPU1 - agentCPU0).Seconds(), "agent-cpu-s")
	}
	b.Logf("%d ports: created in %.2fs (create p50 %.1f ms, p99 %.1f ms), first Ready %.2fs, devices all up %.2fs, all Ready %.2fs after the first create",
		ports, created.Seconds(), percentileMillis(all, 0.5), percentileMillis(all, 0.99), firstReady.Sub(start).Seconds(), lastUp.Sub(start).Seconds(), lastReady.Sub(start).Seconds())

	// Single-port changes on the loaded host, one at a time.
	var toReady, toUp, calls []time.Duration
	singlesStart := time.Now()
	for i := range singles {
		name := fmt.Sprintf("x%02d", i)
		t0 := time.Now()
		if _, err := e.tryCreate(e.ctx, prismnetv1.PortCollection, pnProject, name, portSpec(0)); err != nil {
			b.Fatal(err)
		}
		calls = append(calls, time.Since(t0))
		err := rw.wait(e.ctx, time.Minute, "port "+name+" Ready", func(m map[string]time.Time) bool { _, ok := m[name]; return ok })
		if err != nil {
			b.Fatal(err)
		}
		tr, _ := rw.at(name)
		toReady = append(toReady, tr.Sub(t0))
		dev, err := e.portDevice(name)
		if err != nil {
			b.Fatal(err)
		}
		tu, err := lw.waitUp(e.ctx, dev, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		toUp = append(toUp, tu.Sub(t0))
	}
	b.Logf("single port on the loaded host: create to device up %v, to Ready %v", toUp, toReady)
	b.ReportMetric(percentileMillis(toUp, 0.50), "single-up-p50-ms")
	b.ReportMetric(percentileMillis(toUp, 1), "single-up-max-ms")
	b.ReportMetric(percentileMillis(toReady, 0.50), "single-ready-p50-ms")
	b.ReportMetric(percentileMillis(toReady, 1), "single-ready-max-ms")
	b.ReportMetric(percentileMillis(calls, 0.50), "single-create-call-p50-ms")
	if !agentDebug {
		return
	}
	bulk, err := agentApplies(w1.LogPath(), start, lastReady)
	if err != nil {
		b.Fatal(err)
	}
	single, err := agentApplies(w1.LogPath(), singlesStart, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	var bulkSum time.Duration
	for _, d := range bulk {
		bulkSum += d
	}
	b.Logf("agent applies: %d during the bulk phase (%.2fs in total), %d during the %d single changes: %v", len(bulk), bulkSum.Seconds(), len(single), singles, single)
	b.ReportMetric(float64(len(bulk)), "bulk-applies")
	b.ReportMetric(bulkSum.Seconds(), "bulk-apply-s")
	b.ReportMetric(float64(len(single))/singles, "applies/single")
	b.ReportMetric(percentileMillis(single, 0.50), "single-apply-p50-ms")
	b.ReportMetric(percentileMillis(single, 1), "single-apply-max-ms")
}

// agentApplies returns the duration of every dataplane Apply the agent
// logged (debug level, message "applied", its phases' durations summed)
// between from and to, from the host's server log (slog text format).
func agentApplies(logPath string, from, to time.Time) ([]time.Duration, error) {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: agent log: %w", err)
	}
	var out []time.Duration
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.Contains(line, " msg=applied ") {
			continue
		}
		ts, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		_, ph, ok := strings.Cut(line, `phases="[`)
		if !ok {
			continue
		}
		ph, _, _ = strings.Cut(ph, "]")
		var total time.Duration
		for _, f := range strings.Fields(ph) {
			_, v, _ := strings.Cut(f, "=")
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("bench: agent log: phase %q: %w", f, err)
			}
			total += d
		}
		out = append(out, total)
	}
	return out, nil
}

// portDevices maps every port of the project to its host device name, as
// its agent reported it.
func (e *pnEnv) portDevices() (map[string]string, error) {
	items, _, err := e.cl.Resources(prismnetv1.PortCollection, pnProject).ListAll(e.ctx, client.ListOptions{Limit: 500})
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, o := range items {
		var st prismnetv1.PortStatus
		if err := json.Unmarshal(o.Status, &st); err != nil {
			return nil, fmt.Errorf("port %s: status: %w", o.Metadata.Name, err)
		}
		m[o.Metadata.Name] = st.Device
	}
	return m, nil
}

// portDevice returns the host device name the agent reported for a port.
func (e *pnEnv) portDevice(name string) (string, error) {
	o, err := e.cl.Resources(prismnetv1.PortCollection, pnProject).Get(e.ctx, name)
	if err != nil {
		return "", err
	}
	var st prismnetv1.PortStatus
	if err := json.Unmarshal(o.Status, &st); err != nil || st.Device == "" {
		return "", fmt.Errorf("bench: port %s reports no device (%v): %s", name, err, o.Status)
	}
	return st.Device, nil
}

// BenchmarkPrismnetPropagation measures, for each of 100 ports per
// iteration, the time from the port's create call to the first packet
// crossing hosts. A listener workload on w2 (already attached) runs a UDP
// echo server in this process. For each port, a fresh namespace is made
// before the clock starts; then: create a veth port bound to w1 for it
// (the clock starts before this call), wait for the agent's veth end to
// appear in the namespace (netlink, polled every millisecond), give it
// the address from the create response (static, no DHCP) and an ARP
// retransmit time of 10 ms (the kernel's default of 1 s would time ARP
// retries, not the dataplane), and send a UDP datagram to the listener
// every 10 ms until one is echoed back.
//
// It reports p50/p99/max of create -> first echo received (both
// directions crossed hosts: w1 had the port's device and filters, w2 had
// the new address in the group's members and the FDB and neighbour
// entries to answer), and p50/p99 of create -> first datagram arriving at
// the listener on w2, create -> veth in the namespace, create -> the
// host end up on w1 (its filters in place) and create -> Ready in the API.
// Every port is in one security group with the listener; ports stay, so
// later ports are created on a busier network.
func BenchmarkPrismnetPropagation(b *testing.B) {
	requirePrismnet(b, "ip")
	perIter := envInt(b, "PRISMNET_BENCH_PORTS", 100)
	if perIter*b.N > 4000 {
		b.Fatalf("%d ports: at most 4000 (a /20); lower -benchtime or PRISMNET_BENCH_PORTS", perIter*b.N)
	}
	e := startPrismnet(b, "info", "w1", "w2")
	w1 := e.c.Host("w1")
	e.create(prismnetv1.SecurityGroupCollection, pnProject, pnGroup, prismnetv1.SecurityGroupSpec{})
	e.network("net1", "10.81.0.0/16", "10.81.0.0/20")
	nsB, ipB := e.attachStatic("listener", "net1", "w2", 20, pnGroup)
	e.sh(nsB, "sysctl -qw net.ipv4.neigh.eth0.retrans_time_ms=10")
	echo, err := startEcho(e, nsB, ipB+":9000")
	if err != nil {
		b.Fatal(err)
	}
	rw := e.watchReady()
	lw := e.watchLinks(w1)
	target := &net.UDPAddr{IP: net.ParseIP(ipB), Port: 9000}

	var answer, arrive, link, hostUp, ready, createCall []time.Duration
	var probes []time.Duration // probes sent per port, as a count in a Duration slice for the percentile helper
	var first time.Duration
	b.ResetTimer()
	for i := range perIter * b.N {
		// Nothing here stops the timer: StopTimer reads memory statistics,
		// which stops the world, and would disturb the next port's clock.
		name := fmt.Sprintf("p%04d", i)
		ns := e.addNetns("wl-" + name)
		nl, nsh, err := netlinkIn(ns)
		if err != nil {
			b.Fatal(err)
		}
		r, err := propagateOne(e, name, ns, nl, target)
		nl.Close()
		nsh.Close()
		if err != nil {
			b.Fatal(err)
		}
		t0 := r.t0
		ta, ok := echo.firstFrom(r.ip)
		if !ok {
			b.Fatalf("port %s: the listener saw no datagram from %s though one was echoed", name, r.ip)
		}
		if err := rw.wait(e.ctx, 30*time.Second, "port "+name+" Ready", func(m map[string]time.Time) bool { _, ok := m[name]; return ok }); err != nil {
			b.Fatal(err)
		}
		tr, _ := rw.at(name)
		dev, err := e.portDevice(name)
		if err != nil {
			b.Fatal(err)
		}
		tu, err := lw.waitUp(e.ctx, dev, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		answer = append(answer, r.answer.Sub(t0))
		arrive = append(arrive, ta.Sub(t0))
		link = append(link, r.link.Sub(t0))
		hostUp = append(hostUp, tu.Sub(t0))
		ready = append(ready, tr.Sub(t0))
		createCall = append(createCall, r.created.Sub(t0))
		probes = append(probes, time.Duration(r.probes)*time.Microsecond)
		if i == 0 {
			first = r.answer.Sub(t0)
		}
	}
	b.StopTimer()
	b.Logf("create -> first echo (ms), in creation order: %v", roundedMillis(answer))
	b.ReportMetric(percentileMillis(answer, 0.50), "echo-p50-ms")
	b.ReportMetric(percentileMillis(answer, 0.99), "echo-p99-ms")
	b.ReportMetric(percentileMillis(answer, 1), "echo-max-ms")
	b.ReportMetric(millis(first), "first-port-echo-ms")
	b.ReportMetric(percentileMillis(arrive, 0.50), "arrive-p50-ms")
	b.ReportMetric(percentileMillis(arrive, 0.99), "arrive-p99-ms")
	b.ReportMetric(percentileMillis(link, 0.50), "veth-p50-ms")
	b.ReportMetric(percentileMillis(link, 0.99), "veth-p99-ms")
	b.ReportMetric(percentileMillis(hostUp, 0.50), "w1-up-p50-ms")
	b.ReportMetric(percentileMillis(hostUp, 0.99), "w1-up-p99-ms")
	b.ReportMetric(percentileMillis(ready, 0.50), "ready-p50-ms")
	b.ReportMetric(percentileMillis(ready, 0.99), "ready-p99-ms")
	b.ReportMetric(percentileMillis(createCall, 0.50), "create-call-p50-ms")
	b.ReportMetric(percentileMicros(probes, 0.50), "probes-p50")
}

func roundedMillis(ds []time.Duration) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond).Milliseconds()
	}
	return out
}

// propagation is the timeline of one port in BenchmarkPrismnetPropagation.
type propagation struct {
	ip                        string
	t0, created, link, answer time.Time
	probes                    int
}

// propagateOne creates the port for namespace ns and times it to the
// first echo from target.
func propagateOne(e *pnEnv, name, ns string, nl *netlink.Handle, target *net.UDPAddr) (propagation, error) {
	var r propagation
	r.t0 = time.Now()
	o, err := e.tryCreate(e.ctx, prismnetv1.PortCollection, pnProject, name, prismnetv1.PortSpec{Network: "net1", SecurityGroups: []string{pnGroup},
		Binding: prismnetv1.PortBinding{Host: "w1", Device: prismnetv1.DeviceVeth, Namespace: ns}})
	if err != nil {
		return r, err
	}
	r.created = time.Now()
	if r.ip, err = portIPv4(o); err != nil {
		return r, err
	}
	deadline := r.t0.Add(30 * time.Second)
	var l netlink.Link
	for {
		if l, err = nl.LinkByName("eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("bench: port %s: no eth0 in %s after 30s: %w", name, ns, err)
		}
		time.Sleep(time.Millisecond) // polling the kernel; the deadline above bounds it
	}
	r.link = time.Now()
	err = inNetns(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", []byte("10"), 0o644)
	})
	if err != nil {
		return r, fmt.Errorf("bench: port %s: ARP retransmit time: %w", name, err)
	}
	addr, err := netlink.ParseAddr(r.ip + "/20")
	if err != nil {
		return r, err
	}
	if err := nl.AddrAdd(l, addr); err != nil {
		return r, fmt.Errorf("bench: port %s: address %s: %w", name, addr, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return r, fmt.Errorf("bench: port %s: eth0 up: %w", name, err)
	}
	var conn *net.UDPConn
	err = inNetns(ns, func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, target)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("bench: port %s: udp socket: %w", name, err)
	}
	defer conn.Close()
	buf := make([]byte, 64)
	msg := []byte(name)
	for {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("bench: port %s (%s): no echo from %s within 30s of the create call (%d datagrams sent)", name, r.ip, target, r.probes)
		}
		// A send can fail while the path is not there yet (no route,
		// neighbour unresolved); the next probe tries again.
		_, _ = conn.Write(msg)
		r.probes++
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil && string(buf[:n]) == name {
			r.answer = time.Now()
			return r, nil
		}
	}
}

// echoServer is a UDP echo server in a workload namespace that records
// when the first datagram from each source address arrived.
type echoServer struct {
	mu    sync.Mutex
	first map[string]time.Time
}

func startEcho(e *pnEnv, ns, addr string) (*echoServer, error) {
	conn, err := listenUDPIn(ns, addr)
	if err != nil {
		return nil, err
	}
	s := &echoServer{first: map[string]time.Time{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return // closed by the cleanup below
			}
			now := time.Now()
			src := from.IP.String()
			s.mu.Lock()
			if _, ok := s.first[src]; !ok {
				s.first[src] = now
			}
			s.mu.Unlock()
			_, _ = conn.WriteToUDP(buf[:n], from)
		}
	})
	e.b.Cleanup(func() { conn.Close(); wg.Wait() })
	return s, nil
}

func (s *echoServer) firstFrom(ip string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.first[ip]
	return t, ok
}
