package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// binary is the ultracloud executable built once by TestMain. It is set
// before any benchmark runs and never changed.
var binary *nodeproc.Binary

func TestMain(m *testing.M) { os.Exit(runBenchmarks(m)) }

func runBenchmarks(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := nodeproc.Build(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: building the binary:", err)
		return 1
	}
	defer func() {
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}()
	binary = b
	return m.Run()
}

// target is a running node and the one HTTP client every benchmark client
// goroutine shares.
type target struct {
	pid   int // the server process, for its CPU time
	url   string
	token string
	hc    *http.Client
	dials atomic.Int64 // TCP connections opened, to show keep-alive works
	names atomic.Int64 // source of unique project names
}

// startTarget starts a node with warn-level logs on a fresh data directory
// and stops it when b's cleanups run.
func startTarget(b *testing.B) *target {
	b.Helper()
	home, err := nodeproc.NewHome(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	n, err := binary.StartNode(b.Context(), nodeproc.NodeOptions{Home: home, DataDir: filepath.Join(home.Root, "node-data"), LogLevel: "warn"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if code, err := n.Stop(30 * time.Second); err != nil || code != 0 {
			b.Errorf("stopping the node: exit %d, %v; stderr:\n%s", code, err, n.Stderr().String())
		}
	})
	t := &target{pid: n.Pid(), url: n.URL, token: n.Token}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			t.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
	}
	b.Cleanup(tr.CloseIdleConnections)
	t.hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return t
}

// do sends one request, reads the whole body (so the connection is reused)
// and checks the status.
func (t *target) do(ctx context.Context, method, path, body string, want int) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the body: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return nil
}

// BenchmarkCreateGet measures create-then-get pairs of projects against one
// node: b.N pairs split across concurrent clients, each creating a project
// with a unique name and reading it back. It reports creates/s (pairs per
// second of wall time) and exact p50/p99 latencies of the creates and of the
// gets in microseconds, plus the TCP connections opened (conns).
func BenchmarkCreateGet(b *testing.B) {
	t := startTarget(b)
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			runCreateGet(b, t, clients)
		})
	}
}

func runCreateGet(b *testing.B, t *target, clients int) {
	createLat := make([][]time.Duration, clients)
	getLat := make([][]time.Duration, clients)
	for i := range clients {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		createLat[i] = make([]time.Duration, 0, n)
		getLat[i] = make([]time.Duration, 0, n)
	}
	dialsBefore := t.dials.Load()
	cpuBefore, cpuErr := processCPU(t.pid)
	g, ctx := errgroup.WithContext(b.Context())
	b.ResetTimer()
	start := time.Now()
	for i := range clients {
		g.Go(func() error {
			for range cap(createLat[i]) {
				name := fmt.Sprintf("bench-%d", t.names.Add(1))
				body := `{"kind":"Project","metadata":{"name":"` + name + `","labels":{"bench":"create-get"}},"spec":{"displayName":"benchmark project"}}`
				t0 := time.Now()
				if err := t.do(ctx, http.MethodPost, "/v1/projects", body, http.StatusCreated); err != nil {
					return err
				}
				t1 := time.Now()
				if err := t.do(ctx, http.MethodGet, "/v1/projects/"+name, "", http.StatusOK); err != nil {
					return err
				}
				createLat[i] = append(createLat[i], t1.Sub(t0))
				getLat[i] = append(getLat[i], time.Since(t1))
			}
			return nil
		})
	}
	err := g.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	report(b, t, slices.Concat(createLat...), slices.Concat(getLat...), elapsed, cpuBefore, cpuErr)
	b.ReportMetric(float64(t.dials.Load()-dialsBefore), "conns")
}

// report records throughput, exact latency percentiles and the server's CPU
// time per create+get pair, which says how much of the 2 cores the server
// itself needs (the rest goes to the clients in this process).
func report(b *testing.B, t *target, creates, gets []time.Duration, elapsed, cpuBefore time.Duration, cpuErr error) {
	b.ReportMetric(float64(len(creates))/elapsed.Seconds(), "creates/s")
	b.ReportMetric(percentileMicros(creates, 0.50), "create-p50-us")
	b.ReportMetric(percentileMicros(creates, 0.99), "create-p99-us")
	b.ReportMetric(percentileMicros(gets, 0.50), "get-p50-us")
	b.ReportMetric(percentileMicros(gets, 0.99), "get-p99-us")
	if cpuAfter, err := processCPU(t.pid); err == nil && cpuErr == nil && len(creates) > 0 {
		b.ReportMetric(float64((cpuAfter-cpuBefore).Microseconds())/float64(len(creates)), "server-cpu-us/pair")
	}
}

// percentileMicros returns the exact p-th percentile (nearest rank) of
// samples in microseconds. It sorts samples.
func percentileMicros(samples []time.Duration, p float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	rank := int(math.Ceil(p * float64(len(samples))))
	rank = min(max(rank, 1), len(samples))
	return float64(samples[rank-1]) / float64(time.Microsecond)
}

// processCPU returns the user+system CPU time pid has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields resume after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed %s", "/proc/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad cpu times in /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// BenchmarkCreateGetAtRate offers a fixed load, 3,000 create+get pairs per
// second from 64 clients, instead of as many as the clients can push
// (BenchmarkCreateGet saturates the 2 cores, so its latencies are mostly
// queueing). Pair i is due at start + i/rate; a create's latency is measured
// from when it was due, not from when a client got to it, so a server that
// falls behind shows up in the percentiles (no coordinated omission).
func BenchmarkCreateGetAtRate(b *testing.B) {
	t := startTarget(b)
	const clients, perSecond = 64, 3000
	b.Run(fmt.Sprintf("clients=%d/rate=%d", clients, perSecond), func(b *testing.B) {
		runAtRate(b, t, clients, perSecond)
	})
}

func runAtRate(b *testing.B, t *target, clients, perSecond int) {
	interval := time.Second / time.Duration(perSecond)
	var next atomic.Int64 // index of the next pair to send
	createLat := make([][]time.Duration, clients)
	getLat := make([][]time.Duration, clients)
	cpuBefore, cpuErr := processCPU(t.pid)
	g, ctx := errgroup.WithContext(b.Context())
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return nil
				}
				due := start.Add(time.Duration(i) * interval)
				if wait := time.Until(due); wait > 0 {
					timer := time.NewTimer(wait)
					select {
					case <-timer.C:
					case <-ctx.Done():
						timer.Stop()
						return ctx.Err()
					}
				}
				name := fmt.Sprintf("rate-%d", t.names.Add(1))
				body := `{"kind":"Project","metadata":{"name":"` + name + `"},"spec":{"displayName":"benchmark project"}}`
				if err := t.do(ctx, http.MethodPost, "/v1/projects", body, http.StatusCreated); err != nil {
					return err
				}
				t1 := time.Now()
				if err := t.do(ctx, http.MethodGet, "/v1/projects/"+name, "", http.StatusOK); err != nil {
					return err
				}
				createLat[c] = append(createLat[c], t1.Sub(due))
				getLat[c] = append(getLat[c], time.Since(t1))
			}
		})
	}
	err := g.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	report(b, t, slices.Concat(createLat...), slices.Concat(getLat...), elapsed, cpuBefore, cpuErr)
}
