package chainfire_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/chainfire/chainfiretest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

func TestSingleMemberRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ms := chainfiretest.Specs(t, "http", "solo")
	cfg := chainfiretest.Config(dir, ms[0], nil)

	m := chainfiretest.StartReady(t, cfg)
	c, err := m.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctxT(t, 5*time.Second), "/k", "v1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	st, err := m.Server.Status(ctxT(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsLeader || st.Leader != "solo" || len(st.Members) != 1 || st.Revision < 2 || st.DBSizeBytes <= 0 || st.RaftTerm < 1 {
		t.Fatalf("status = %+v", st)
	}
	if got := m.Server.Endpoints(); len(got) != 1 || got[0] != ms[0].ClientURL {
		t.Fatalf("Endpoints = %v", got)
	}

	// Metrics read the same status.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Server.Collector())
	if got := gauges(t, reg); got["chainfire_is_leader"] != 1 || got["chainfire_members"] != 1 || got["chainfire_up"] != 1 ||
		got["chainfire_revision"] < 2 || got["chainfire_db_size_bytes"] <= 0 {
		t.Fatalf("metrics = %v", got)
	}
	c.Close()

	if err := m.Stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if _, err := m.Server.Status(ctxT(t, time.Second)); !errors.Is(err, chainfire.ErrNotRunning) {
		t.Fatalf("Status after stop = %v, want ErrNotRunning", err)
	}
	if got := gauges(t, reg); len(got) != 1 || got["chainfire_up"] != 0 {
		t.Fatalf("metrics after stop = %v, want only chainfire_up 0", got)
	}

	// The guard file records cluster and member.
	b, err := os.ReadFile(filepath.Join(dir, chainfire.GuardFileName))
	if err != nil {
		t.Fatal(err)
	}
	var rec chainfire.GuardRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ClusterToken != "test-token" || rec.MemberName != "solo" || rec.ClusterID != st.ClusterID || rec.MemberID != st.ID {
		t.Fatalf("guard = %+v, status = %+v", rec, st)
	}
	if fi, _ := os.Stat(filepath.Join(dir, chainfire.GuardFileName)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("guard mode = %v", fi.Mode())
	}

	// Restart from the same directory: the data is still there.
	m2 := chainfiretest.StartReady(t, cfg)
	c2, err := m2.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	resp, err := c2.Get(ctxT(t, 5*time.Second), "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("get after restart: %v %v", resp, err)
	}
	st2, _ := m2.Server.Status(ctxT(t, time.Second))
	if st2.ClusterID != st.ClusterID || st2.ID != st.ID {
		t.Fatalf("identity changed across restart: %+v -> %+v", st, st2)
	}
}

func TestDataDirGuardRefusesOtherClusterOrMember(t *testing.T) {
	dir := t.TempDir()
	ms := chainfiretest.Specs(t, "http", "m1")
	cfg := chainfiretest.Config(dir, ms[0], nil)
	cfg.ClusterToken = "T1"
	m := chainfiretest.StartReady(t, cfg)
	if err := m.Stop(t); err != nil {
		t.Fatal(err)
	}

	other := cfg
	other.ClusterToken = "T2"
	srv, err := chainfire.New(other, chainfiretest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(ctxT(t, 10*time.Second))
	if !errors.Is(err, chainfire.ErrWrongCluster) || !chainfire.ErrorContains(err, "data directory "+dir, `belongs to cluster "T1" member "m1"`, `this config is for cluster "T2" member "m1"`) {
		t.Fatalf("other token: err = %v", err)
	}

	renamed := cfg
	renamed.Name = "m2"
	renamed.InitialCluster = nil
	srv, err = chainfire.New(renamed, chainfiretest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(ctxT(t, 10*time.Second))
	if !errors.Is(err, chainfire.ErrWrongCluster) || !chainfire.ErrorContains(err, `belongs to cluster "T1" member "m1"`, `for cluster "T1" member "m2"`) {
		t.Fatalf("other name: err = %v", err)
	}

	// The right config still starts.
	chainfiretest.StartReady(t, cfg)
}

func TestStartTimeoutNamesMissingQuorum(t *testing.T) {
	ms := chainfiretest.Specs(t, "http", "a", "b", "c")
	cfg := chainfiretest.Config(t.TempDir(), ms[0], chainfiretest.InitialCluster(ms))
	cfg.StartTimeout = 2 * time.Second
	srv, err := chainfire.New(cfg, chainfiretest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = srv.Run(ctxT(t, 20*time.Second))
	if !errors.Is(err, chainfire.ErrStartTimeout) || !chainfire.ErrorContains(err, "no raft leader elected", "quorum (2 of 3)", "b="+ms[1].PeerURL) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("start timeout took %s", d)
	}
}

func TestThreeMemberClusterSurvivesLeaderLoss(t *testing.T) {
	cluster := chainfiretest.StartCluster(t, 3, chainfiretest.Options{Names: []string{"a", "b", "c"}})
	ms := cluster.Specs
	members := map[string]*chainfiretest.Member{}
	for i, s := range ms {
		members[s.Name] = cluster.Members[i]
	}

	leaderName := func(among map[string]*chainfiretest.Member) string {
		for name, m := range among {
			st, err := m.Server.Status(ctxT(t, time.Second))
			if err == nil && st.IsLeader {
				return name
			}
		}
		return ""
	}
	var leader string
	testkit.Eventually(t, 10*time.Second, "a leader among a, b, c", func() bool { leader = leaderName(members); return leader != "" })
	st, _ := members[leader].Server.Status(ctxT(t, time.Second))
	if len(st.Members) != 3 {
		t.Fatalf("leader sees %d members: %+v", len(st.Members), st)
	}

	c := newClient(t, clientv3.Config{Endpoints: cluster.Endpoints()})
	if _, err := c.Put(ctxT(t, 5*time.Second), "/replicated", "1"); err != nil {
		t.Fatal(err)
	}
	for _, s := range ms {
		testkit.Eventually(t, 20*time.Second, "/replicated on "+s.Name, func() bool {
			v, err := getFrom(t, s.ClientURL, "/replicated")
			return err == nil && v == "1"
		})
	}

	// Close the leader; the other two elect a new one and keep writing.
	if err := members[leader].Stop(t); err != nil {
		t.Fatalf("stopping leader %s: %v", leader, err)
	}
	rest := map[string]*chainfiretest.Member{}
	for n, m := range members {
		if n != leader {
			rest[n] = m
		}
	}
	var newLeader string
	testkit.Eventually(t, 10*time.Second, "a new leader among the two survivors", func() bool {
		newLeader = leaderName(rest)
		return newLeader != ""
	})
	testkit.Eventually(t, 15*time.Second, "a write to succeed after the leader closed", func() bool {
		_, err := c.Put(ctxT(t, 2*time.Second), "/after", "2")
		return err == nil
	})
	for n, m := range rest {
		testkit.Eventually(t, 20*time.Second, "/after on "+n, func() bool {
			v, err := getFrom(t, m.Server.Config().ClientURL, "/after")
			return err == nil && v == "2"
		})
	}
	t.Logf("leader %s closed, %s leads now", leader, newLeader)
}

// gauges gathers reg and returns each gauge's value by name (the test
// collectors export one series per name).
func gauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return out
}
