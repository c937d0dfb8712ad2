//go:build linux

package chainfire_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/test/harness"
)

// TestSnapshotRestoreAcrossHosts: a known data set (puts, overwrites and
// deletes) is written to one 3-host cluster; `ultracloud chainfire
// snapshot save` on one of its hosts saves it; `snapshot restore` turns it
// into the data directories of the three hosts of another cluster, which
// start from them as a new cluster holding exactly the same keys and
// values at the same revision, and accept writes.
func TestSnapshotRestoreAcrossHosts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := harness.Start(t, harness.Spec{Name: "source", Hosts: 3, LogLevel: "warn",
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}}})
	dst := harness.Start(t, harness.Spec{Name: "restored", Hosts: 3, LogLevel: "warn",
		Chainfire: &harness.ChainfireSpec{Members: []string{"host1", "host2", "host3"}}})

	// The data set: 300 keys, a third overwritten, a tenth deleted.
	scl := allClient(t, src)
	want := map[string]string{}
	for i := range 300 {
		k, v := fmt.Sprintf("data/%03d", i), fmt.Sprintf("value-%d", i)
		if _, err := scl.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := 0; i < 300; i += 3 {
		k, v := fmt.Sprintf("data/%03d", i), fmt.Sprintf("overwritten-%d", i)
		if _, err := scl.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := 0; i < 300; i += 10 {
		k := fmt.Sprintf("data/%03d", i)
		if _, err := scl.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		delete(want, k)
	}
	srcRev := linearRev(t, ctx, scl)
	srcHost := src.ChainfireMembers()[0]
	srcCl := newClient(t, src, srcHost.Dial, srcHost.ChainfireEndpoint())
	waitCaughtUp(t, ctx, srcHost, srcCl, srcRev, 10*time.Second)
	full := keyspace(t, ctx, srcCl, srcRev)
	if d := diffKeyspaces(want, filterPrefix(full, "data/")); d != "" {
		t.Fatalf("source cluster does not hold the data set: %s", d)
	}

	// Save on a source host, from its own member.
	snap := filepath.Join(t.TempDir(), "chainfire.snap")
	out, err := chainfireCLI(t, ctx, src, srcHost, []*harness.Host{srcHost}, "snapshot", "save", snap)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	m := regexp.MustCompile(`revision (\d+), (\d+) keys`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("snapshot save printed %q, want the revision and key count", out)
	}
	if rev, _ := strconv.ParseInt(m[1], 10, 64); rev != srcRev {
		t.Errorf("snapshot revision %d, want %d", rev, srcRev)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, %v", fi, err)
	}

	// Restore into every destination host's chainfire data directory, with
	// the destination cluster's members and token, and start them.
	dstHosts := dst.ChainfireMembers()
	var ic []string
	for _, h := range dstHosts {
		ic = append(ic, h.Name()+"="+h.ChainfirePeerURL())
	}
	for _, h := range dstHosts {
		if err := h.Terminate(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range dstHosts {
		if err := os.RemoveAll(h.ChainfireDataDir()); err != nil {
			t.Fatal(err)
		}
		if _, err := chainfireCLI(t, ctx, dst, h, dstHosts, "snapshot", "restore", snap,
			"--data-dir", h.ChainfireDataDir(), "--name", h.Name(),
			"--initial-cluster", strings.Join(ic, ","), "--cluster-token", dst.ChainfireClusterToken()); err != nil {
			t.Fatalf("snapshot restore on %s: %v", h.Name(), err)
		}
	}
	for _, h := range dstHosts {
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// Every restored member holds exactly the source's keyspace.
	dcls := memberClients(t, dst)
	for h, cl := range dcls {
		waitCaughtUp(t, ctx, h, cl, srcRev, 20*time.Second)
		got := keyspace(t, ctx, cl, 0)
		if d := diffKeyspaces(full, got); d != "" {
			t.Errorf("restored member %s differs from the source at revision %d: %s", h.Name(), srcRev, d)
		}
	}
	ml, err := dcls[dstHosts[0]].MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sml, err := srcCl.MemberList(ctx); err != nil {
		t.Fatal(err)
	} else if sml.Header.ClusterId == ml.Header.ClusterId {
		t.Errorf("restored cluster has the source's cluster ID %x; a restore makes a new cluster", ml.Header.ClusterId)
	}
	if len(ml.Members) != 3 {
		t.Errorf("restored cluster has %d members, want 3", len(ml.Members))
	}
	for _, mem := range ml.Members {
		for _, pu := range mem.PeerURLs {
			if !strings.Contains(strings.Join(ic, ","), mem.Name+"="+pu) {
				t.Errorf("restored member %s has peer URL %s, not one of %v", mem.Name, pu, ic)
			}
		}
	}

	// The restored cluster accepts writes, and they replicate.
	dcl := allClient(t, dst)
	resp, err := dcl.Put(ctx, "after/restore", "ok")
	if err != nil {
		t.Fatalf("write to the restored cluster: %v", err)
	}
	if resp.Header.Revision <= srcRev {
		t.Errorf("first write after restore at revision %d, want after the snapshot's %d", resp.Header.Revision, srcRev)
	}
	for h, cl := range dcls {
		waitCaughtUp(t, ctx, h, cl, resp.Header.Revision, 10*time.Second)
		checkKeys(t, ctx, h, cl, "after/", map[string]string{"after/restore": "ok"})
	}
	// The source cluster is untouched by all this.
	if got := keyspace(t, ctx, srcCl, 0); diffKeyspaces(full, got) != "" {
		t.Errorf("source cluster changed: %s", diffKeyspaces(full, got))
	}
}

// filterPrefix returns the entries of m whose key starts with prefix.
func filterPrefix(m map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}
