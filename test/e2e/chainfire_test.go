package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/test/e2e/nodeproc"
)

// TestChainfireInUp: `ultracloud up` runs a one-member chainfire whose
// endpoint `status` reports, and the chainfire operator commands work
// against it.
func TestChainfireInUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start(nodeproc.NodeOptions{})

	var st api.NodeStatus
	if err := json.Unmarshal([]byte(h.ok("status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	var endpoint string
	for _, c := range st.Components {
		if c.Name == "chainfire" {
			if c.State != "ready" {
				t.Fatalf("chainfire state %q", c.State)
			}
			endpoint = c.Endpoints["etcd"]
		}
	}
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") {
		t.Fatalf("chainfire endpoint %q, want a loopback URL; status: %+v", endpoint, st)
	}

	var members []struct {
		Name       string   `json:"name"`
		ClientURLs []string `json:"clientURLs"`
	}
	if err := json.Unmarshal([]byte(h.ok("chainfire", "member", "list", "--endpoints", endpoint, "-o", "json")), &members); err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || len(members[0].ClientURLs) != 1 || members[0].ClientURLs[0] != endpoint {
		t.Fatalf("members %+v, want one serving %s", members, endpoint)
	}
	if out := h.ok("chainfire", "status", "--endpoints", endpoint); !strings.Contains(out, endpoint) || !strings.Contains(out, members[0].Name) {
		t.Fatalf("chainfire status:\n%s", out)
	}
	snap := filepath.Join(h.home.Root, "chainfire.snap")
	if out := h.ok("chainfire", "snapshot", "save", snap, "--endpoints", endpoint); !strings.Contains(out, "Saved") {
		t.Fatalf("snapshot save: %s", out)
	}
	fi, err := os.Stat(snap)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("snapshot file: %v %v", fi, err)
	}
	// A member name that is not in the cluster is an error naming it.
	res := h.fails("chainfire", "member", "remove", "no-such-member", "--endpoints", endpoint)
	if !strings.Contains(res.Stderr, "no-such-member") {
		t.Fatalf("remove of an unknown member: %s", res)
	}
}
