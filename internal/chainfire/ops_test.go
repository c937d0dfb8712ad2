package chainfire_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	"github.com/ultracloud/ultracloud/internal/chainfire/chainfiretest"
	"github.com/ultracloud/ultracloud/internal/chainfire/client"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestSnapshotSaveRestore: save a snapshot, restore it into a new data
// directory for a new cluster, start it: the data is identical.
func TestSnapshotSaveRestore(t *testing.T) {
	ms := chainfiretest.Specs(t, "http", "src")
	src := chainfiretest.StartReady(t, chainfiretest.Config(t.TempDir(), ms[0], nil))
	c, err := src.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := map[string]string{}
	for i := range 50 {
		k, v := fmt.Sprintf("/snap/%02d", i), fmt.Sprintf("value-%d", i)
		if _, err := c.Put(ctxT(t, 5*time.Second), k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	if _, err := c.Delete(ctxT(t, 5*time.Second), "/snap/07"); err != nil {
		t.Fatal(err)
	}
	delete(want, "/snap/07")

	path := filepath.Join(t.TempDir(), "chainfire.snapshot")
	info, err := client.SnapshotSave(ctxT(t, 10*time.Second), c, path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Keys != len(want) || info.Revision < 52 || info.SizeBytes <= 0 {
		t.Fatalf("snapshot info %+v, want %d keys", info, len(want))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*part*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	src.Stop(t)

	// Restore as member "dst" of a new one-member cluster.
	ns := chainfiretest.Specs(t, "http", "dst")
	dataDir := filepath.Join(t.TempDir(), "restored")
	ic := chainfiretest.InitialCluster(ns)
	if err := chainfire.SnapshotRestore(path, dataDir, "dst", ic, "restored-token"); err != nil {
		t.Fatal(err)
	}
	// Restoring over a used directory is refused.
	if err := chainfire.SnapshotRestore(path, dataDir, "dst", ic, "restored-token"); !errors.Is(err, chainfire.ErrSnapshot) {
		t.Fatalf("restore into non-empty dir: %v", err)
	}
	cfg := chainfiretest.Config(dataDir, ns[0], ic)
	cfg.ClusterToken = "restored-token"
	dst := chainfiretest.StartReady(t, cfg)
	c2, err := dst.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	resp, err := c2.Get(ctxT(t, 5*time.Second), "/snap/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	if len(got) != len(want) {
		t.Fatalf("restored %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("restored %s = %q, want %q", k, got[k], v)
		}
	}
	if resp.Header.Revision < info.Revision {
		t.Fatalf("restored revision %d < snapshot revision %d", resp.Header.Revision, info.Revision)
	}
	// The restored directory is guarded for its new cluster.
	rec, ok, err := chainfire.ReadGuard(dataDir)
	if err != nil || !ok || rec.ClusterToken != "restored-token" || rec.MemberName != "dst" || rec.ClusterID == "" {
		t.Fatalf("guard after restore and start: %+v %v %v", rec, ok, err)
	}
}

// TestMemberAddListRemove grows a one-member cluster to two with
// client.MemberAdd, then removes the new member again; the removed member's Run
// ends with ErrStopped.
func TestMemberAddListRemove(t *testing.T) {
	ms := chainfiretest.Specs(t, "http", "first", "second")
	first := chainfiretest.StartReady(t, chainfiretest.Config(t.TempDir(), ms[0], nil))
	c, err := first.Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := client.MemberAdd(ctxT(t, 5*time.Second), c, "first", ms[1].PeerURL); !errors.Is(err, client.ErrMemberExists) {
		t.Fatalf("adding a taken name: %v", err)
	}
	if _, err := client.MemberAdd(ctxT(t, 5*time.Second), c, "second", "not-a-url"); err == nil {
		t.Fatal("adding a bad peer URL succeeded")
	}
	added, err := client.MemberAdd(ctxT(t, 5*time.Second), c, "second", ms[1].PeerURL)
	if err != nil {
		t.Fatal(err)
	}
	wantIC := []string{"first=" + ms[0].PeerURL, "second=" + ms[1].PeerURL}
	if fmt.Sprint(added.InitialCluster) != fmt.Sprint(wantIC) || added.ID == "" {
		t.Fatalf("added = %+v, want initial cluster %v", added, wantIC)
	}

	cfg := chainfiretest.Config(t.TempDir(), ms[1], added.InitialCluster)
	cfg.InitialState = chainfire.StateExisting
	second := chainfiretest.StartReady(t, cfg)

	list, err := client.MemberList(ctxT(t, 5*time.Second), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "first" || list[1].Name != "second" || list[1].ID != added.ID {
		t.Fatalf("members = %+v", list)
	}
	if _, err := c.Put(ctxT(t, 5*time.Second), "/two", "members"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "/two on the added member", func() bool {
		v, err := getFrom(t, ms[1].ClientURL, "/two")
		return err == nil && v == "members"
	})

	if err := client.MemberRemove(ctxT(t, 5*time.Second), c, "nobody"); !errors.Is(err, client.ErrMemberNotFound) {
		t.Fatalf("removing an unknown member: %v", err)
	}
	// etcd counts a member toward quorum only after it has been connected
	// for a few seconds, so the removal may be refused at first.
	var removeErr error
	testkit.Eventually(t, 20*time.Second, "the removal of second to be accepted", func() bool {
		removeErr = client.MemberRemove(ctxT(t, 5*time.Second), c, "second")
		return removeErr == nil
	})
	if err := second.WaitExit(t, 20*time.Second); !errors.Is(err, chainfire.ErrStopped) {
		t.Fatalf("removed member's Run = %v, want ErrStopped", err)
	}
	testkit.Eventually(t, 20*time.Second, "one member left", func() bool {
		l, err := client.MemberList(ctxT(t, 2*time.Second), c)
		return err == nil && len(l) == 1
	})
	if _, err := c.Put(ctxT(t, 5*time.Second), "/one", "again"); err != nil {
		t.Fatalf("write after removal: %v", err)
	}
}
