package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// TestFlareDBInUp: `ultracloud up` keeps its resources in a one-member
// flaredb group that the operator commands reach, and a snapshot saved
// from it restores, offline, into a data directory the node starts from
// with every resource back (the disaster-recovery path of docs/flaredb.md).
func TestFlareDBInUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n := h.start(nodeproc.NodeOptions{})

	var st api.NodeStatus
	if err := json.Unmarshal([]byte(h.ok("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	var apiAddr, raftAddr string
	for _, c := range st.Components {
		if c.Name == "flaredb" {
			apiAddr, raftAddr = c.Endpoints["api"], c.Endpoints["raft"]
			if c.Details["state"] != "Leader" || c.Details["members"] != "1" {
				t.Fatalf("flaredb details %v, want the only member leading", c.Details)
			}
		}
	}
	if !strings.HasPrefix(apiAddr, "127.0.0.1:") || !strings.HasPrefix(raftAddr, "127.0.0.1:") {
		t.Fatalf("flaredb endpoints api=%q raft=%q; status: %+v", apiAddr, raftAddr, st)
	}
	fdb := []string{"flaredb", "--endpoints", apiAddr, "--cluster-id", st.Node}

	// A resource created through the API lives in flaredb.
	h.ok("apply", "-f", h.writeFile("p.yaml", "kind: Project\nmetadata:\n  name: kept\nspec:\n  displayName: Kept\n"))
	if out := h.ok(append(fdb, "status")...); !strings.Contains(out, st.Node) || !strings.Contains(strings.ToLower(out), "leader") {
		t.Fatalf("flaredb status:\n%s", out)
	}
	if res := h.fails("flaredb", "--endpoints", apiAddr, "--cluster-id", "not-"+st.Node, "status"); !strings.Contains(res.Stdout+res.Stderr, "cluster") {
		t.Fatalf("wrong cluster ID: %+v", res)
	}
	snap := filepath.Join(h.home.Root, "backup.fdb")
	h.ok(append(fdb, "snapshot", "save", snap)...)
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("snapshot file: %v %v", fi, err)
	}
	// Written after the snapshot: must not come back.
	h.ok("apply", "-f", h.writeFile("q.yaml", "kind: Project\nmetadata:\n  name: lost\nspec:\n  displayName: Lost\n"))

	if code, err := n.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("stopping the node: exit %d, %v", code, err)
	}
	fdbDir := filepath.Join(h.dataDir, "flaredb")
	if err := os.Rename(fdbDir, fdbDir+".old"); err != nil {
		t.Fatal(err)
	}
	h.ok("flaredb", "snapshot", "restore", snap, "--data-dir", fdbDir, "--id", st.Node, "--cluster-id", st.Node,
		"--initial-voters", st.Node+"="+raftAddr+"="+apiAddr)

	// The node starts on the restored data (on new ports: the member
	// re-advertises them) and serves the snapshot's resources.
	h.start(nodeproc.NodeOptions{})
	var list api.List
	if err := json.Unmarshal([]byte(h.ok("get", "projects", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		names = append(names, o.Metadata.Name)
	}
	if !slices.Contains(names, "kept") || slices.Contains(names, "lost") {
		t.Fatalf("projects after restore: %v, want kept and not lost", names)
	}
	// And it takes writes.
	h.ok("apply", "-f", h.writeFile("r.yaml", "kind: Project\nmetadata:\n  name: after\nspec:\n  displayName: After\n"))
}
