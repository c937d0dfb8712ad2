package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// Shared by the key-value benchmarks against etcd (chainfire_test.go,
// flaredb_test.go): the etcd peer cluster and its settings.

// etcdBinary is Debian's standalone etcd (package etcd-server), the
// baseline chainfire is compared with (issue 4).
const etcdBinary = "/usr/bin/etcd"

// Raft and storage settings both clusters run with: chainfire's defaults,
// given to etcd explicitly.
const (
	kvHeartbeat    = 100 * time.Millisecond
	kvElection     = time.Second
	kvSnapshots    = 10000
	kvValueBytes   = 256
	kvRangeKeys    = 1000
	kvClientsPerCn = 4 // benchmark clients sharing one gRPC connection
)

// kvCluster is a running 3-member cluster on loopback.
type kvCluster struct {
	name      string
	endpoints []string
	pids      []int // the member processes, for their CPU time
	stop      []func()
}

// cpu is the user+system CPU time the members used so far.
func (k *kvCluster) cpu() time.Duration {
	var sum time.Duration
	for _, pid := range k.pids {
		if d, err := processCPU(pid); err == nil {
			sum += d
		}
	}
	return sum
}

// runKVCases runs every (op, clients) case on each cluster, in
// BENCH_ROUNDS interleaved rounds (default 1): a round runs every case once
// on every cluster before the next round starts, and which cluster goes
// first alternates from case to case and from round to round, so with an
// even number of rounds each goes first equally often in every case. Drift
// in the machine's speed over the run (which on a shared 2-core VM is of
// the order of the differences measured) then hits both systems alike;
// `-count` would instead repeat one sub-benchmark back to back on one
// cluster. Before each run the clusters settle. Sub-benchmarks are named
// op=OP/clients=N/system=NAME (Go appends #NN to repeats).
func runKVCases(b *testing.B, clusters []*kvCluster, ops []string, run func(b *testing.B, k *kvCluster, op string, clients int)) {
	b.Helper()
	rounds := 1
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	for round := range rounds {
		caseNo := 0
		for _, op := range ops {
			for _, clients := range []int{16, 64} {
				order := slices.Clone(clusters)
				if (round+caseNo)%2 == 1 {
					slices.Reverse(order)
				}
				caseNo++
				for _, k := range order {
					settle(b, clusters)
					b.Run(fmt.Sprintf("op=%s/clients=%d/system=%s", op, clients, k.name), func(b *testing.B) {
						run(b, k, op, clients)
					})
				}
			}
		}
	}
}

// startMember writes cfg as root/node.yaml, starts `ultracloud server` with
// it in the home at root, and adds the process to k (its PID for CPU time,
// a stop that waits up to stopWait).
func (k *kvCluster) startMember(b *testing.B, root, cfg string, stopWait time.Duration) {
	b.Helper()
	home, err := nodeproc.NewHome(root)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(root, "node.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := binary.Start(home, "server", "--config", path)
	if err != nil {
		b.Fatal(err)
	}
	k.pids = append(k.pids, p.Pid())
	k.stop = append(k.stop, func() {
		if code, err := p.Stop(stopWait); err != nil {
			b.Logf("%s %s: exit %d: %v\n%s", k.name, filepath.Base(root), code, err, p.Stderr().String())
		}
	})
}

// settle waits until the clusters are quiet: their members together used
// under 10% of one CPU over half a second (giving up after 15s). A run then
// does not pay for background work that the run before left on the
// cluster it measured (compactions, snapshots, flushes), while the other
// cluster had been idle for a whole run: with a fixed order that would
// bias every comparison against whichever system goes second in a row.
func settle(b *testing.B, clusters []*kvCluster) {
	b.Helper()
	const window, quiet = 500 * time.Millisecond, 50 * time.Millisecond
	total := func() time.Duration {
		var sum time.Duration
		for _, k := range clusters {
			sum += k.cpu()
		}
		return sum
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		before := total()
		time.Sleep(window)
		used := total() - before
		if used < quiet {
			return
		}
		if time.Now().After(deadline) {
			b.Logf("clusters not quiet after 15s (%v CPU in the last %v); running anyway", used, window)
			return
		}
	}
}

func (k *kvCluster) close() {
	for _, s := range k.stop {
		s()
	}
}

// startEtcd starts three standalone etcd members with the same settings.
func startEtcd(b *testing.B, dir string) *kvCluster {
	b.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		b.Fatalf("%s not found: install Debian's standalone etcd with `apt-get install -y etcd-server`", etcdBinary)
	}
	ports := testkit.FreePorts(b, 6)
	k := &kvCluster{name: "etcd"}
	b.Cleanup(k.close)
	var ic []string
	for i := range 3 {
		ic = append(ic, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[2*i+1]))
	}
	for i := range 3 {
		name := fmt.Sprintf("e%d", i+1)
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		cmd := exec.Command(etcdBinary,
			"--name", name,
			"--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(ic, ","),
			"--initial-cluster-token", "bench-etcd", "--initial-cluster-state", "new",
			"--heartbeat-interval", strconv.Itoa(int(kvHeartbeat/time.Millisecond)),
			"--election-timeout", strconv.Itoa(int(kvElection/time.Millisecond)),
			"--snapshot-count", strconv.Itoa(kvSnapshots),
			"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
			"--logger", "zap", "--log-level", "warn",
		)
		var out nodeproc.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		k.pids = append(k.pids, cmd.Process.Pid)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		k.stop = append(k.stop, func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		k.endpoints = append(k.endpoints, fmt.Sprintf("127.0.0.1:%d", ports[2*i]))
	}
	return k
}
