package flaredb_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/cli"
	flaredbcli "github.com/ultracloud/ultracloud/internal/cli/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// runCLI runs the whole CLI in-process (the real command tree, so the
// snapshot verbs get the shell's offline tools) and returns its exit code,
// stdout and stderr.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := cli.Main(context.Background(), args, cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: getenv, LookupEnv: lookup})
	return code, out.String(), errb.String()
}

func cliOK(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	code, out, errs := runCLI(t, env, args...)
	if code != 0 {
		t.Fatalf("ultracloud %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// cliFails runs a command that must fail and checks that stderr mentions
// every want.
func cliFails(t *testing.T, env map[string]string, args []string, want ...string) string {
	t.Helper()
	code, out, errs := runCLI(t, env, args...)
	if code == 0 {
		t.Fatalf("ultracloud %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	for _, w := range want {
		if !strings.Contains(errs, w) {
			t.Fatalf("ultracloud %s: stderr %q does not mention %q", strings.Join(args, " "), errs, w)
		}
	}
	return out
}

// flaredbWrite puts the key/value pairs kv through cl, one transaction
// each, and returns the last revision.
func flaredbWrite(t *testing.T, cl *client.Client, kv ...string) int64 {
	t.Helper()
	var rev int64
	for i := 0; i+1 < len(kv); i += 2 {
		res, err := cl.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte(kv[i]), Value: []byte(kv[i+1])}}})
		if err != nil {
			t.Fatal(err)
		}
		rev = res.Revision
	}
	return rev
}

func TestFlaredbCommands(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{ClusterID: "clitest"})
	m := c.Members[0]
	rev := flaredbWrite(t, c.Client(), "a", "1", "b", "2", "c", "3")
	// The environment names the cluster, as an operator's shell would.
	env := map[string]string{"ULTRACLOUD_FLAREDB_ENDPOINTS": m.APIAddr, "ULTRACLOUD_FLAREDB_CLUSTER_ID": "clitest"}

	t.Run("status", func(t *testing.T) {
		out := cliOK(t, env, "flaredb", "status")
		if !strings.Contains(out, "m0") || !strings.Contains(out, "leader") || !strings.Contains(out, m.APIAddr) {
			t.Fatalf("status:\n%s", out)
		}
		var rows []flaredbcli.StatusRow
		if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "status", "-o", "json")), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].ID != "m0" || rows[0].State != "leader" || rows[0].Leader != "m0" || rows[0].Revision != rev ||
			rows[0].DBSize <= 0 || !rows[0].Voter || rows[0].Error != "" || rows[0].RaftAddress != m.RaftAddr {
			t.Fatalf("status rows %+v (revision %d)", rows, rev)
		}
		if out := cliOK(t, env, "flaredb", "status", "-o", "yaml"); !strings.Contains(out, "state: leader") {
			t.Fatalf("yaml:\n%s", out)
		}
		// One endpoint down: a row with its error, still success.
		deadAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)) // nothing listens there
		out = cliOK(t, nil, "flaredb", "status", "--endpoints", m.APIAddr+","+deadAddr, "--cluster-id", "clitest")
		if !strings.Contains(out, deadAddr) || !strings.Contains(out, "refused") {
			t.Fatalf("status with a dead endpoint:\n%s", out)
		}
		// None answering fails.
		cliFails(t, nil, []string{"flaredb", "status", "--endpoints", deadAddr, "--cluster-id", "clitest", "--timeout", "2s"}, "no flaredb member answered", deadAddr)
		// Wrong cluster ID: named, with the fix.
		out = cliFails(t, env, []string{"flaredb", "status", "--cluster-id", "other"}, "wrong cluster", `"other"`, "--cluster-id")
		if !strings.Contains(out, "clitest") {
			t.Fatalf("wrong-cluster row does not name the real cluster:\n%s", out)
		}
		cliFails(t, env, []string{"flaredb", "status", "-o", "xml"}, "-o \"xml\"")
		// Without --cluster-id the node name is the cluster ID, as in `up`.
		cliOK(t, map[string]string{"ULTRACLOUD_FLAREDB_ENDPOINTS": m.APIAddr, "ULTRACLOUD_NODE": "clitest"}, "flaredb", "status")
		cliFails(t, nil, []string{"flaredb", "status", "--endpoints", "http://" + m.APIAddr}, "--endpoints", "without a scheme")
		cliFails(t, map[string]string{"ULTRACLOUD_FLAREDB_ENDPOINTS": "localhost"}, []string{"flaredb", "status"}, "ULTRACLOUD_FLAREDB_ENDPOINTS", "not host:port")
	})

	t.Run("member", func(t *testing.T) {
		var list []flaredbcli.Member
		if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "member", "list", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0] != (flaredbcli.Member{ID: "m0", RaftAddress: m.RaftAddr, APIAddress: m.APIAddr, Voter: true, Leader: true}) {
			t.Fatalf("member list %+v", list)
		}
		if out := cliOK(t, env, "flaredb", "member", "list"); !strings.Contains(out, "RAFT ADDRESS") || !strings.Contains(out, m.RaftAddr) {
			t.Fatalf("member list:\n%s", out)
		}
		cliFails(t, env, []string{"flaredb", "member", "remove", "nosuch"}, `"nosuch" is not a member`, "member list")
		cliFails(t, env, []string{"flaredb", "member", "transfer-leader", "nosuch"}, "nosuch")
		cliFails(t, env, []string{"flaredb", "member", "add", "m1", "--raft-address", "10.0.0.1", "--api-address", "10.0.0.1:7711"}, "--raft-address", "not host:port")
		cliFails(t, env, []string{"flaredb", "member", "add", "m1", "--raft-address", "0.0.0.0:7710", "--api-address", "10.0.0.1:7711"}, "routable")
		cliFails(t, env, []string{"flaredb", "member", "add", "m1", "--raft-address", "10.0.0.1:7710"}, "--api-address is required")
		cliFails(t, env, []string{"flaredb", "member", "list", "--cluster-id", "other"}, "wrong cluster")
		// Nothing changed.
		if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "member", "list", "-o", "json")), &list); err != nil || len(list) != 1 {
			t.Fatalf("members after refused changes: %+v %v", list, err)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "fdb.snap")
		code, out, errs := runCLI(t, env, "flaredb", "snapshot", "save", file)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("revision %d", rev)) || !strings.Contains(out, "3 keys") || !strings.Contains(errs, "Saving snapshot") {
			t.Fatalf("snapshot save: %d\n%s\n%s", code, out, errs)
		}
		fi, err := os.Stat(file)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("snapshot file: %v %v", fi, err)
		}
		if _, err := os.Stat(file + ".part"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf(".part left: %v", err)
		}
		var info flaredbcli.SnapshotInfo
		if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "snapshot", "save", file, "-o", "json")), &info); err != nil {
			t.Fatal(err)
		}
		if info.Revision != rev || info.Keys != 3 || info.Bytes != fi.Size() {
			t.Fatalf("save info %+v, file %d bytes", info, fi.Size())
		}
		cliFails(t, env, []string{"flaredb", "snapshot", "save", filepath.Join(dir, "x.snap"), "--cluster-id", "other"}, "wrong cluster")
		if _, err := os.Stat(filepath.Join(dir, "x.snap.part")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("failed save left a .part file: %v", err)
		}

		// Restore into a new member and check it serves the data.
		rc := flaredbtest.FromLayout(t, flaredbtest.Layout{ClusterID: "restored", Members: []flaredbtest.LayoutMember{{
			ID: "r0", Dir: filepath.Join(dir, "restored"),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
			APIAddr:  fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		}}}, flaredbtest.Options{})
		r := rc.Members[0]
		voter := fmt.Sprintf("r0=%s=%s", r.RaftAddr, r.APIAddr)
		renv := map[string]string{"ULTRACLOUD_FLAREDB_ENDPOINTS": r.APIAddr, "ULTRACLOUD_FLAREDB_CLUSTER_ID": "restored"}

		// Bad input first: nothing may be written.
		corrupt := filepath.Join(dir, "corrupt.snap")
		b, _ := os.ReadFile(file)
		if err := os.WriteFile(corrupt, b[:len(b)-10], 0o600); err != nil {
			t.Fatal(err)
		}
		cliFails(t, renv, []string{"flaredb", "snapshot", "restore", corrupt, "--data-dir", r.Dir, "--id", "r0", "--initial-voters", voter}, "bad snapshot", corrupt)
		cliFails(t, renv, []string{"flaredb", "snapshot", "restore", file, "--id", "r0", "--initial-voters", voter}, "--data-dir is required")
		cliFails(t, renv, []string{"flaredb", "snapshot", "restore", file, "--data-dir", r.Dir, "--id", "r0", "--initial-voters", "r0=" + r.RaftAddr}, "--initial-voters", "id=raftHost:port=apiHost:port")
		cliFails(t, renv, []string{"flaredb", "snapshot", "restore", file, "--data-dir", r.Dir, "--id", "r1", "--initial-voters", voter}, `do not list this member "r1"`)
		if _, err := os.Stat(r.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("refused restores wrote %s: %v", r.Dir, err)
		}
		out = cliOK(t, renv, "flaredb", "snapshot", "restore", file, "--data-dir", r.Dir, "--id", "r0", "--initial-voters", voter)
		if !strings.Contains(out, fmt.Sprintf("revision %d", rev)) || !strings.Contains(out, "clusterID: restored") || !strings.Contains(out, r.Dir) {
			t.Fatalf("restore:\n%s", out)
		}
		cliFails(t, renv, []string{"flaredb", "snapshot", "restore", file, "--data-dir", r.Dir, "--id", "r0", "--initial-voters", voter}, "not empty")

		rc.StartAll() // r0 alone as the initial voter, as restored
		var rows []flaredbcli.StatusRow
		if err := json.Unmarshal([]byte(cliOK(t, renv, "flaredb", "status", "-o", "json")), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].ID != "r0" || rows[0].Revision != rev || rows[0].State != "leader" || rows[0].LastSnapshotIndex == 0 || rows[0].LastSnapshotTime == "" {
			t.Fatalf("restored status %+v", rows)
		}
		if got := flaredbWrite(t, rc.Client(), "d", "4"); got != rev+1 {
			t.Fatalf("write on the restored member got revision %d, want %d", got, rev+1)
		}
	})
}

func TestFlaredbClusterCommands(t *testing.T) {
	// Members 0-2 bootstrap the cluster; member 3 joins it later.
	c := flaredbtest.New(t, 4, flaredbtest.Options{ClusterID: "cli3"})
	voters := c.Voters()[:3]
	for i := range 3 {
		c.StartWith(i, c.Config(i, voters, nil))
	}
	for i := range 3 {
		c.WaitReady(i)
	}
	ms := c.Members
	env := map[string]string{"ULTRACLOUD_FLAREDB_ENDPOINTS": ms[0].APIAddr, "ULTRACLOUD_FLAREDB_CLUSTER_ID": "cli3"}
	leaderOf := func() string {
		var list []flaredbcli.Member
		if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "member", "list", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if m.Leader {
				return m.ID
			}
		}
		return ""
	}
	// One endpoint is enough: status finds the other members.
	var rows []flaredbcli.StatusRow
	if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "status", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, r := range rows {
		if r.Error != "" {
			t.Fatalf("status row %+v", r)
		}
		if r.State == "leader" {
			leaders++
		}
	}
	if len(rows) != 3 || leaders != 1 {
		t.Fatalf("status rows %+v", rows)
	}

	leader, target := leaderOf(), ""
	for _, m := range ms[:3] {
		if m.ID != leader {
			target = m.ID
			break
		}
	}
	if out := cliOK(t, env, "flaredb", "member", "transfer-leader", target); !strings.Contains(out, "Leader is now "+target) {
		t.Fatalf("transfer-leader:\n%s", out)
	}

	// Remove a follower that is not the endpoint; stop it.
	vi := -1
	for i := 1; i < 3; i++ {
		if ms[i].ID != target {
			vi = i
		}
	}
	victim := ms[vi]
	if out := cliOK(t, env, "flaredb", "member", "remove", victim.ID); !strings.Contains(out, "removed") {
		t.Fatalf("remove:\n%s", out)
	}
	c.Stop(vi)
	var list []flaredbcli.Member
	if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "member", "list", "-o", "json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("members after remove: %+v %v", list, err)
	}
	// A stopped member still listed by the caller is shown with its error.
	code, out, _ := runCLI(t, env, "flaredb", "status", "--endpoints", ms[0].APIAddr+","+victim.APIAddr, "--timeout", "3s")
	if code != 0 || !strings.Contains(out, victim.APIAddr) || !strings.Contains(out, "refused") {
		t.Fatalf("status with a stopped member: %d\n%s", code, out)
	}

	// Add a new member, then start it as the printed config says (join).
	nm := ms[3]
	out = cliOK(t, env, "flaredb", "member", "add", nm.ID, "--raft-address", nm.RaftAddr, "--api-address", nm.APIAddr)
	if !strings.Contains(out, "3 voters and needs 2") || !strings.Contains(out, "join:") || !strings.Contains(out, ms[0].APIAddr) {
		t.Fatalf("member add:\n%s", out)
	}
	c.StartWith(3, c.Config(3, nil, []string{ms[0].APIAddr}))
	c.WaitReady(3)
	if err := json.Unmarshal([]byte(cliOK(t, env, "flaredb", "status", "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range rows {
		if r.Error != "" {
			t.Fatalf("status row %+v", r)
		}
		ids[r.ID] = true
	}
	if len(rows) != 3 || !ids["m3"] || ids[victim.ID] {
		t.Fatalf("status after add %+v", rows)
	}
}

// A member with mutual TLS answers the CLI only with --cacert/--cert/--key
// from its CA; without them the CLI says what is missing.
func TestFlaredbCommandsOverTLS(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{ClusterID: "tlsc", Tweak: func(cfg *flaredb.Config) {
		cfg.AllowPlaintext, cfg.TLS.Auto = false, true // a lone member makes its own CA
	}})
	m := c.Members[0]
	files, err := m.Server.MemberTLS()
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"flaredb", "--endpoints", m.APIAddr, "--cluster-id", "tlsc", "--timeout", "3s"}
	out := cliOK(t, nil, append(base, "status", "--cacert", files.CAFile, "--cert", files.CertFile, "--key", files.KeyFile)...)
	if !strings.Contains(out, "m0") {
		t.Fatalf("status over TLS does not list m0:\n%s", out)
	}
	env := map[string]string{"ULTRACLOUD_FLAREDB_CACERT": files.CAFile, "ULTRACLOUD_FLAREDB_CERT": files.CertFile, "ULTRACLOUD_FLAREDB_KEY": files.KeyFile}
	cliOK(t, env, append(base, "member", "list")...)
	cliFails(t, nil, append(base, "status", "--cacert", files.CAFile), "go together")
	cliFails(t, nil, append(base, "status"), "pass --cacert, --cert and --key")
}
