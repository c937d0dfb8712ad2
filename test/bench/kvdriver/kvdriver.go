// Package kvdriver is the load driver shared by the key-value benchmarks
// (BenchmarkFlareDBVsEtcd in test/bench and the kvload command): the same
// closed-loop workload against flaredb (through its Go client) and etcd
// (through clientv3), so the two systems are compared with identical keys,
// values and concurrency. Each system is a tiny adapter with a put and a
// linearizable get; everything else (key choice, preloading, timing,
// percentiles) is shared.
package kvdriver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one connection to a cluster, shared by ClientsPerConn benchmark
// clients. Get is a linearizable read of a key that must exist.
type Conn interface {
	Put(ctx context.Context, key string, value []byte) error
	Get(ctx context.Context, key string) error
	Close() error
}

// Systems are the supported systems.
var Systems = []string{"flaredb", "etcd"}

// Config selects a cluster and how to connect to it.
type Config struct {
	// System is flaredb or etcd.
	System string
	// Endpoints are the members' client addresses (host:port).
	Endpoints []string
	// ClusterID is flaredb's cluster ID (ignored for etcd).
	ClusterID string
	// CAFile, CertFile and KeyFile are flaredb's TLS files (the cluster CA
	// and a client certificate; empty: plaintext h2c). Ignored for etcd.
	CAFile, CertFile, KeyFile string
	// Conns is how many connections (clients of the system's Go client)
	// are opened; benchmark clients share them round robin.
	Conns int
}

// Target is a connected cluster.
type Target struct {
	System string
	conns  []Conn
	seq    atomic.Int64 // fresh put keys across runs
}

// Dial connects to the cluster and waits (up to wait) until a linearizable
// read succeeds on every connection.
func Dial(ctx context.Context, cfg Config, wait time.Duration) (*Target, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("kvdriver: no endpoints")
	}
	cfg.Conns = max(cfg.Conns, 1)
	t := &Target{System: cfg.System}
	for i := range cfg.Conns {
		// Rotate the endpoints so connections start on different members.
		eps := slices.Concat(cfg.Endpoints[i%len(cfg.Endpoints):], cfg.Endpoints[:i%len(cfg.Endpoints)])
		var c Conn
		var err error
		switch cfg.System {
		case "flaredb":
			c, err = dialFlareDB(eps, cfg)
		case "etcd":
			c, err = dialEtcd(eps)
		default:
			err = fmt.Errorf("unknown system %q (want one of %s)", cfg.System, strings.Join(Systems, ", "))
		}
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("kvdriver: %s: %w", cfg.System, err)
		}
		t.conns = append(t.conns, c)
	}
	deadline := time.Now().Add(wait)
	for _, c := range t.conns {
		for {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := c.Put(gctx, "ready", []byte("ready"))
			if err == nil {
				err = c.Get(gctx, "ready")
			}
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Close()
				return nil, fmt.Errorf("kvdriver: %s not serving after %s: %w", cfg.System, wait, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return t, nil
}

// Close closes every connection.
func (t *Target) Close() error {
	var errs []error
	for _, c := range t.conns {
		errs = append(errs, c.Close())
	}
	t.conns = nil
	return errors.Join(errs...)
}

// GetKey is the i-th preloaded key.
func GetKey(i int) string { return fmt.Sprintf("get/%06d", i) }

// Value returns a value of n bytes.
func Value(n int) []byte { return []byte(strings.Repeat("v", n)) }

// Preload writes keys 0..n-1 (GetKey) with value, from up to 16 goroutines.
func (t *Target) Preload(ctx context.Context, n int, value []byte) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for w := range 16 {
		c := t.conns[w%len(t.conns)]
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := c.Put(ctx, GetKey(i), value); err != nil {
					errs[w] = fmt.Errorf("kvdriver: preloading %s: %w", GetKey(i), err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Load is one measured run.
type Load struct {
	// Op is put (fresh keys) or get (linearizable, of Keys preloaded keys).
	Op string
	// Clients is the number of concurrent closed-loop clients.
	Clients int
	// Ops stops the run after this many operations (in total); Duration
	// after this long. One of them must be set.
	Ops      int
	Duration time.Duration
	// Value is the put value.
	Value []byte
	// Keys is how many preloaded keys gets choose from (uniformly).
	Keys int
	// Seed varies the get key sequence.
	Seed uint64
}

// Result is what a run measured. Latencies are exact percentiles over
// every successful operation.
type Result struct {
	System   string        `json:"system"`
	Op       string        `json:"op"`
	Clients  int           `json:"clients"`
	Ops      int           `json:"ops"`
	Errors   int           `json:"errors"`
	FirstErr string        `json:"firstError,omitempty"`
	Elapsed  time.Duration `json:"elapsedNs"`
	OpsPerS  float64       `json:"opsPerSec"`
	P50      time.Duration `json:"p50Ns"`
	P99      time.Duration `json:"p99Ns"`
	Max      time.Duration `json:"maxNs"`
}

// Run runs l against t and measures it. Failed operations are counted and
// not retried; their latency is not included.
func (t *Target) Run(ctx context.Context, l Load) (Result, error) {
	if l.Op != "put" && l.Op != "get" {
		return Result{}, fmt.Errorf("kvdriver: op %q (want put or get)", l.Op)
	}
	if l.Clients < 1 || (l.Ops < 1 && l.Duration <= 0) {
		return Result{}, errors.New("kvdriver: need at least one client and a number of operations or a duration")
	}
	if l.Op == "get" && l.Keys < 1 {
		return Result{}, errors.New("kvdriver: get needs preloaded keys")
	}
	var until time.Time
	if l.Duration > 0 {
		until = time.Now().Add(l.Duration)
	}
	var next, failed atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, l.Clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range l.Clients {
		conn := t.conns[c%len(t.conns)]
		rng := rand.New(rand.NewPCG(uint64(c), 42+l.Seed))
		wg.Go(func() {
			capacity := 1024
			if l.Ops > 0 {
				capacity = l.Ops/l.Clients + 1
			}
			mine := make([]time.Duration, 0, capacity)
			for n := int64(0); ; n++ {
				if l.Ops > 0 && next.Add(1) > int64(l.Ops) {
					break
				}
				if l.Ops <= 0 && n%16 == 0 && time.Now().After(until) {
					break
				}
				if ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				var err error
				if l.Op == "put" {
					err = conn.Put(ctx, fmt.Sprintf("put/%012d", t.seq.Add(1)), l.Value)
				} else {
					err = conn.Get(ctx, GetKey(rng.IntN(l.Keys)))
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			lats[c] = mine
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lats...)
	slices.Sort(all)
	r := Result{System: t.System, Op: l.Op, Clients: l.Clients, Ops: len(all), Errors: int(failed.Load()), Elapsed: elapsed}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstErr = s
	}
	if len(all) > 0 {
		r.OpsPerS = float64(len(all)) / elapsed.Seconds()
		r.P50 = Percentile(all, 0.50)
		r.P99 = Percentile(all, 0.99)
		r.Max = all[len(all)-1]
	}
	return r, ctx.Err()
}

// Percentile returns the p-quantile of sorted latencies.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
