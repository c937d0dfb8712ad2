package chainfire_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/chainfire/chainfiretest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

func TestDefragDue(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		size, inUse, minFree int64
		percent              int
		want                 bool
	}{
		{100 * mib, 10 * mib, 64 * mib, 50, true},    // 90 MiB free, 90%
		{100 * mib, 40 * mib, 64 * mib, 50, false},   // 60 MiB free: below the bytes
		{200 * mib, 120 * mib, 64 * mib, 50, false},  // 80 MiB free but 40%: below the share
		{128 * mib, 64 * mib, 64 * mib, 50, true},    // exactly at both thresholds
		{10 * mib, 10 * mib, 0, 0, false},            // nothing free
		{0, 0, 0, 0, false},                          // no database
		{10 * mib, 9 * mib, 0, 0, true},              // thresholds off: any free space
		{10 * mib, 1, 0, 100, false},                 // 100% needs an empty file
		{3 * mib, 1 * mib, 1 * mib, 30, true},        // the tests' small thresholds
		{3 * mib, 2*mib + mib/2, 1 * mib, 30, false}, // half a MiB free
		{8 << 30, 1 << 30, 64 * mib, 50, true},       // large files do not overflow
	}
	for _, c := range cases {
		if got := chainfire.DefragDue(c.size, c.inUse, c.minFree, c.percent); got != c.want {
			t.Errorf("chainfire.DefragDue(size %d, inUse %d, minFree %d, percent %d) = %v, want %v", c.size, c.inUse, c.minFree, c.percent, got, c.want)
		}
	}
}

func TestDefaultDefragPolicy(t *testing.T) {
	d := chainfire.Default()
	if d.DefragInterval != 10*time.Minute || d.DefragMinFreeBytes != 64<<20 || d.DefragMinFreePercent != 50 {
		t.Fatalf("defaults: interval %s, min free %d, percent %d", d.DefragInterval, d.DefragMinFreeBytes, d.DefragMinFreePercent)
	}
	for range 1000 {
		if j := chainfire.Jitter(10 * time.Minute); j < 9*time.Minute || j > 11*time.Minute {
			t.Fatalf("chainfire.Jitter(10m) = %s, want within 10%%", j)
		}
	}
}

// defragConfig is a test member checking every second with small
// thresholds: 1 MiB and 30% free.
func defragConfig(t *testing.T, m chainfiretest.Spec, ic []string) chainfire.Config {
	c := chainfiretest.Config(t.TempDir(), m, ic)
	c.DefragInterval = time.Second
	c.DefragMinFreeBytes = 1 << 20
	c.DefragMinFreePercent = 30
	return c
}

// churn writes about 12 MiB under prefix, deletes it and compacts the
// history physically, so the members' database files are mostly free
// pages. It keeps one key, keep, to check the data survives.
func churn(t *testing.T, c *clientv3.Client, prefix string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	val := strings.Repeat("x", 64<<10)
	for i := range 200 {
		if _, err := c.Put(ctx, fmt.Sprintf("%s/%04d", prefix, i), val); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	if _, err := c.Put(ctx, "keep", "kept"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Delete(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil || resp.Deleted != 200 {
		t.Fatalf("delete: %v (deleted %v)", err, resp)
	}
	if _, err := c.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	// bbolt counts pages freed by a transaction as free only once no
	// reader can see them, which takes a few more commits: write some.
	for range 10 {
		nudge(t, c)
		time.Sleep(100 * time.Millisecond)
	}
}

func nudge(t *testing.T, c *clientv3.Client) {
	t.Helper()
	if _, err := c.Put(ctxT(t, 10*time.Second), "nudge", time.Now().String()); err != nil {
		t.Fatalf("put: %v", err)
	}
}

func mustStatus(t *testing.T, m *chainfiretest.Member) chainfire.Status {
	t.Helper()
	st, err := m.Server.Status(ctxT(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDefragPolicy: once compaction leaves enough of the file free, the
// member defragments itself (the file shrinks, data stays, metrics count
// it); with thresholds the free space does not reach, or with the policy
// off, it does not.
func TestDefragPolicy(t *testing.T) {
	ms := chainfiretest.Specs(t, "http", "due", "bytes", "percent", "disabled")
	type run struct {
		name   string
		mutate func(*chainfire.Config)
		want   bool
	}
	runs := []run{
		{"due", func(*chainfire.Config) {}, true},
		// About 12 MiB free, below 1 GiB.
		{"bytes", func(c *chainfire.Config) { c.DefragMinFreeBytes = 1 << 30 }, false},
		// Never 100% free: keep and etcd's own keys stay.
		{"percent", func(c *chainfire.Config) { c.DefragMinFreePercent = 100 }, false},
		// Due, but the policy is off.
		{"disabled", func(c *chainfire.Config) { c.DefragInterval = 0 }, false},
	}
	for i, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			cfg := defragConfig(t, ms[i], []string{ms[i].Name + "=" + ms[i].PeerURL})
			r.mutate(&cfg)
			m := chainfiretest.StartReady(t, cfg)
			c := newClient(t, clientv3.Config{Endpoints: []string{ms[i].ClientURL}})
			churn(t, c, "/churn")
			if r.want {
				// The member may defragment as soon as the free pages
				// show, so do not wait to see them: the file grew past
				// 12 MiB and must end up far smaller.
				testkit.Eventually(t, 20*time.Second, "a defragmentation", func() bool { return m.Server.DefragStats().Runs >= 1 })
				after := mustStatus(t, m)
				ds := m.Server.DefragStats()
				t.Logf("db size now %d (in use %d); reclaimed %d bytes in %s", after.DBSizeBytes, after.DBSizeInUseBytes, ds.ReclaimedBytes, ds.LastDuration)
				if after.DBSizeBytes > 2<<20 {
					t.Fatalf("db size %d after the defragmentation: the free space was not given back", after.DBSizeBytes)
				}
				if ds.Failures != 0 || ds.ReclaimedBytes < 8<<20 || ds.LastDuration <= 0 {
					t.Fatalf("stats = %+v", ds)
				}
				if v, err := getFrom(t, ms[i].ClientURL, "keep"); err != nil || v != "kept" {
					t.Fatalf("keep after defragmentation = %q, %v", v, err)
				}
				// Below the thresholds now: two more checks, no second run.
				checks := ds.Checks
				testkit.Eventually(t, 20*time.Second, "two more checks of the policy", func() bool { return m.Server.DefragStats().Checks >= checks+2 })
				if ds := m.Server.DefragStats(); ds.Runs != 1 {
					t.Fatalf("runs = %d after the file shrank, want 1", ds.Runs)
				}
				checkDefragMetrics(t, m.Server)
				return
			}
			// The free pages show once the backend commits.
			var before chainfire.Status
			testkit.Eventually(t, 20*time.Second, "free pages after the compaction", func() bool {
				before = mustStatus(t, m)
				if before.DBSizeBytes-before.DBSizeInUseBytes >= 8<<20 {
					return true
				}
				nudge(t, c)
				return false
			})
			if cfg.DefragInterval > 0 {
				// Three checks of the free pages pass: nothing happens.
				checks := m.Server.DefragStats().Checks
				testkit.Eventually(t, 20*time.Second, "three checks of the policy", func() bool { return m.Server.DefragStats().Checks >= checks+3 })
			} else {
				// The policy is off: no loop runs, so there are no checks
				// to count. Give it the time three checks would take.
				time.Sleep(3500 * time.Millisecond)
			}
			after := mustStatus(t, m)
			if ds := m.Server.DefragStats(); ds.Runs != 0 || ds.Failures != 0 || (cfg.DefragInterval <= 0 && ds.Checks != 0) {
				t.Fatalf("defragmented below the thresholds: %+v", ds)
			}
			if after.DBSizeBytes < before.DBSizeBytes {
				t.Fatalf("db size %d -> %d without a defragmentation", before.DBSizeBytes, after.DBSizeBytes)
			}
		})
	}
}

// checkDefragMetrics checks the collector reports one defragmentation.
func checkDefragMetrics(t *testing.T, srv *chainfire.Server) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(srv.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			if mm.GetCounter() != nil {
				got[mf.GetName()] = mm.GetCounter().GetValue()
			} else {
				got[mf.GetName()] = mm.GetGauge().GetValue()
			}
		}
	}
	if got["chainfire_defrag_runs_total"] != 1 || got["chainfire_defrag_failures_total"] != 0 ||
		got["chainfire_defrag_reclaimed_bytes_total"] < 8<<20 || got["chainfire_defrag_last_duration_seconds"] <= 0 {
		t.Fatalf("metrics = %v", got)
	}
}

// TestDefragLockSerializesMembers: three members all find their files
// mostly free at the same moment; the cluster-wide lock lets one
// defragment at a time (the hook, run under the lock, never overlaps),
// and every member gets its turn. The leader hands its leadership over
// first.
func TestDefragLockSerializesMembers(t *testing.T) {
	ms := chainfiretest.Specs(t, "http", "a", "b", "c")
	ic := chainfiretest.InitialCluster(ms)
	var (
		active, maxActive atomic.Int32
		mu                sync.Mutex
		order             []string
		leaderAtHook      = map[string]bool{}
	)
	members := map[string]*chainfiretest.Member{}
	for _, s := range ms {
		cfg := defragConfig(t, s, ic)
		srv, err := chainfire.New(cfg, chainfiretest.Logger())
		if err != nil {
			t.Fatal(err)
		}
		chainfire.SetDefragHook(srv, func(lockCtx context.Context) {
			n := active.Add(1)
			for {
				m := maxActive.Load()
				if n <= m || maxActive.CompareAndSwap(m, n) {
					break
				}
			}
			st, _ := srv.Status(context.Background())
			mu.Lock()
			order = append(order, cfg.Name)
			leaderAtHook[cfg.Name] = st.IsLeader
			mu.Unlock()
			// Long enough that, without the lock, the others (checking
			// every second) would start meanwhile.
			select {
			case <-time.After(1500 * time.Millisecond):
			case <-lockCtx.Done():
			}
			active.Add(-1)
		})
		members[s.Name] = chainfiretest.Run(t, srv)
	}
	for _, m := range members {
		m.WaitReady(t)
	}
	var eps []string
	for _, s := range ms {
		eps = append(eps, s.ClientURL)
	}
	c := newClient(t, clientv3.Config{Endpoints: eps})
	churn(t, c, "/churn")

	var last time.Time
	testkit.Eventually(t, 60*time.Second, "every member to defragment", func() bool {
		for name, m := range members {
			if ds := m.Server.DefragStats(); ds.Runs < 1 {
				if time.Since(last) > 5*time.Second {
					last = time.Now()
					st, _ := m.Server.Status(context.Background())
					t.Logf("waiting for %s: stats %+v, db size %d, in use %d", name, ds, st.DBSizeBytes, st.DBSizeInUseBytes)
				}
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("defragmented in order %v; leader when its turn came: %v", order, leaderAtHook)
	if got := maxActive.Load(); got != 1 {
		t.Fatalf("%d members defragmented at once, want 1", got)
	}
	for name, m := range members {
		ds := m.Server.DefragStats()
		if ds.Runs != 1 || ds.Failures != 0 || ds.ReclaimedBytes <= 0 {
			t.Errorf("%s: stats %+v", name, ds)
		}
		if leaderAtHook[name] {
			t.Errorf("%s was still the leader when it defragmented; it should hand leadership over first", name)
		}
	}
	if v, err := getFrom(t, ms[0].ClientURL, "keep"); err != nil || v != "kept" {
		t.Fatalf("keep after defragmentation = %q, %v", v, err)
	}
}
