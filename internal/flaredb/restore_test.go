package flaredb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// storeContents is everything a client can observe of a store.
type storeContents struct {
	kvs                 map[string][]wire.KV // by namespace
	revision, compacted int64
	// past is the default namespace read at a past revision.
	past    []wire.KV
	pastRev int64
}

var restoreNamespaces = []string{"", "iam"}

func readContents(t *testing.T, cl *client.Client, pastRev int64) storeContents {
	t.Helper()
	ctx := context.Background()
	sc := storeContents{kvs: map[string][]wire.KV{}, pastRev: pastRev}
	var err error
	if sc.revision, sc.compacted, err = cl.Revision(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, ns := range restoreNamespaces {
		kvs, _, err := cl.Range(ctx, ns, nil, nil, client.RangeOptions{ReadOptions: client.ReadOptions{Revision: sc.revision}})
		if err != nil {
			t.Fatalf("range %q: %v", ns, err)
		}
		sc.kvs[ns] = kvs
	}
	if sc.past, _, err = cl.Range(ctx, "", nil, nil, client.RangeOptions{ReadOptions: client.ReadOptions{Revision: pastRev}}); err != nil {
		t.Fatalf("range at %d: %v", pastRev, err)
	}
	return sc
}

// fillStore writes puts, overwrites, deletes, another namespace and a
// compaction, and returns a revision after the compaction point to read
// history at.
func fillStore(t *testing.T, cl *client.Client) int64 {
	t.Helper()
	ctx := context.Background()
	writeKeys(t, cl, "a", 50)
	compactAt := mustWrite(t, cl, "a/0000", "overwritten").Revision
	past := writeKeys(t, cl, "b", 20)
	for i := range 5 {
		if _, err := cl.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpDelete, Key: fmt.Appendf(nil, "b/%04d", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, cl, "b/0010", "new")
	writeKeys(t, cl, "c", 30)
	if _, err := cl.Txn(ctx, "iam", wire.Txn{Then: []wire.Op{putOp("/r/users/alice", "{}")}}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Compact(ctx, compactAt); err != nil {
		t.Fatal(err)
	}
	return past
}

// saveSnapshot writes a snapshot of the cluster to a file.
func saveSnapshot(t *testing.T, cl *client.Client) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flaredb.snap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.SaveSnapshot(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRestoreSnapshot(t *testing.T) {
	for _, size := range []struct{ from, to int }{{1, 1}, {3, 3}} {
		t.Run(fmt.Sprintf("%dto%d", size.from, size.to), func(t *testing.T) {
			src := flaredbtest.StartCluster(t, size.from, flaredbtest.Options{})
			cl := src.Client()
			past := fillStore(t, cl)
			want := readContents(t, cl, past)
			snap := saveSnapshot(t, cl)
			info, err := flaredb.InspectSnapshot(snap)
			if err != nil {
				t.Fatal(err)
			}
			if info.Revision != want.revision || info.Compacted != want.compacted || info.Keys != uint64(len(want.kvs[""])+len(want.kvs["iam"])) {
				t.Fatalf("snapshot info %+v, store at %d/%d with %d+%d keys", info, want.revision, want.compacted, len(want.kvs[""]), len(want.kvs["iam"]))
			}
			// One more write after the snapshot: the restored cluster must
			// not have it.
			mustWrite(t, cl, "after", "snapshot")
			src.StopAll()

			dst := flaredbtest.New(t, size.to, flaredbtest.Options{})
			dst.ID += "-restored"
			for i, m := range dst.Members {
				res, err := flaredb.RestoreSnapshot(context.Background(), flaredb.RestoreOptions{
					SnapshotPath: snap, DataDir: m.Dir, ID: m.ID, ClusterID: dst.ID, InitialVoters: dst.Voters(),
				})
				if err != nil {
					t.Fatalf("restore member %d: %v", i, err)
				}
				if res.Revision != want.revision || res.Keys != info.Keys || res.DataDir != m.Dir {
					t.Fatalf("restore result %+v", res)
				}
			}
			// Restoring again into a now non-empty directory is refused.
			if _, err := flaredb.RestoreSnapshot(context.Background(), flaredb.RestoreOptions{
				SnapshotPath: snap, DataDir: dst.Members[0].Dir, ID: "m0", ClusterID: dst.ID, InitialVoters: dst.Voters(),
			}); err == nil || !strings.Contains(err.Error(), "not empty") {
				t.Fatalf("restore into a used directory: %v", err)
			}
			dst.StartAll()
			dst.WaitLeader()
			rcl := dst.Client()
			got := readContents(t, rcl, past)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("restored store differs:\n got %+v\nwant %+v", got, want)
			}
			if _, found, _, err := rcl.Get(context.Background(), "", []byte("after"), client.ReadOptions{}); err != nil || found {
				t.Fatalf("write after the snapshot: found=%v err=%v", found, err)
			}
			// Every member holds the same data.
			for i := range dst.Members {
				checkKeys(t, dst, i, "c", 30)
			}
			// The restored cluster takes writes, continuing the revisions.
			if r := mustWrite(t, rcl, "new", "write").Revision; r != want.revision+1 {
				t.Fatalf("first write after restore got revision %d, want %d", r, want.revision+1)
			}
			st, err := rcl.Status(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Members) != size.to || st.ClusterID != dst.ID {
				t.Fatalf("restored status %+v", st)
			}
			for _, m := range st.Members {
				if m.APIAddress != dst.Members[m.ID[1]-'0'].APIAddr {
					t.Fatalf("member %s API address %q, want %q", m.ID, m.APIAddress, dst.Members[m.ID[1]-'0'].APIAddr)
				}
			}
			// Restarted members keep it all (they start from their own
			// state now, not the restore).
			dst.StopAll()
			dst.StartAll()
			if r := mustWrite(t, dst.Client(), "new2", "write").Revision; r != want.revision+2 {
				t.Fatalf("write after restart got revision %d, want %d", r, want.revision+2)
			}
		})
	}
}

func TestRestoreRefusesBadInput(t *testing.T) {
	src := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	cl := src.Client()
	writeKeys(t, cl, "k", 30)
	good := saveSnapshot(t, cl)
	src.StopAll()
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x40
	voters := []flaredb.Peer{{ID: "r0", RaftAddress: "127.0.0.1:17710", APIAddress: "127.0.0.1:17711"}}
	target := filepath.Join(dir, "target", "flaredb")
	for name, c := range map[string]struct {
		file string
		opts func(*flaredb.RestoreOptions)
		want string
		bad  bool // wraps ErrBadSnapshot
	}{
		"truncated":      {file: write("truncated", data[:len(data)*2/3]), want: "truncated", bad: true},
		"no checksum":    {file: write("nocrc", data[:len(data)-2]), want: "checksum", bad: true},
		"flipped byte":   {file: write("flipped", flipped), bad: true},
		"foreign":        {file: write("foreign", []byte("SQLite format 3\x00 and more bytes")), want: "not a flaredb snapshot", bad: true},
		"empty":          {file: write("empty", nil), want: "not a flaredb snapshot", bad: true},
		"trailing":       {file: write("trailing", append(append([]byte(nil), data...), 'x')), want: "trailing", bad: true},
		"missing file":   {file: filepath.Join(dir, "nope"), want: "no such file"},
		"self not voter": {file: good, opts: func(o *flaredb.RestoreOptions) { o.ID = "other" }, want: `do not list this member "other"`},
		"two voters": {file: good, opts: func(o *flaredb.RestoreOptions) {
			o.InitialVoters = append(o.InitialVoters, flaredb.Peer{ID: "r1", RaftAddress: "127.0.0.1:1", APIAddress: "127.0.0.1:2"})
		}, want: "1, 3 or 5"},
		"bad address": {file: good, opts: func(o *flaredb.RestoreOptions) {
			o.InitialVoters = []flaredb.Peer{{ID: "r0", RaftAddress: "127.0.0.1", APIAddress: "0.0.0.0:7711"}}
		}, want: `raft address "127.0.0.1"`},
		"no cluster id": {file: good, opts: func(o *flaredb.RestoreOptions) { o.ClusterID = "" }, want: "cluster ID is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			o := flaredb.RestoreOptions{SnapshotPath: c.file, DataDir: target, ID: "r0", ClusterID: "restored", InitialVoters: voters}
			if c.opts != nil {
				c.opts(&o)
			}
			_, err := flaredb.RestoreSnapshot(context.Background(), o)
			if err == nil {
				t.Fatal("restore succeeded")
			}
			if c.bad && !errors.Is(err, flaredb.ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
			if c.bad && !strings.Contains(err.Error(), c.file) {
				t.Fatalf("error %q does not name the file", err)
			}
			// Nothing was written: neither the target nor a staging dir.
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("target exists after a failed restore: %v", err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(target)); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}

	// The good file restores into an existing empty directory.
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := flaredb.RestoreSnapshot(context.Background(), flaredb.RestoreOptions{SnapshotPath: good, DataDir: target, ID: "r0", ClusterID: "restored", InitialVoters: voters}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("restored dir: %v %v", fi.Mode(), err)
	}
	// A member of another cluster ID refuses the directory (guard).
	if err := flaredb.CheckGuard(target, "other", "r0"); !errors.Is(err, flaredb.ErrDataDirMismatch) {
		t.Fatalf("guard: %v", err)
	}
}

// TestRestoredClusterGrows: a member joining a restored cluster catches up
// from the restored Raft snapshot (the new log starts after it), and status
// reports the snapshot and the state machine's size.
func TestRestoredClusterGrows(t *testing.T) {
	src := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	writeKeys(t, src.Client(), "k", 100)
	snap := saveSnapshot(t, src.Client())
	src.StopAll()

	dst := flaredbtest.New(t, 2, flaredbtest.Options{})
	first := dst.Voters()[:1]
	if _, err := flaredb.RestoreSnapshot(context.Background(), flaredb.RestoreOptions{
		SnapshotPath: snap, DataDir: dst.Members[0].Dir, ID: "m0", ClusterID: dst.ID, InitialVoters: first,
	}); err != nil {
		t.Fatal(err)
	}
	dst.StartWith(0, dst.Config(0, first, nil))
	dst.WaitReady(0)
	st, err := dst.Members[0].Server.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSnapshotIndex == 0 || st.LastSnapshotTime == 0 || st.LastSnapshotSize == 0 || st.DBSize == 0 {
		t.Fatalf("status of the restored member lacks snapshot or size: %+v", st)
	}
	dst.StartWith(1, dst.Config(1, nil, []string{dst.Members[0].APIAddr}))
	dst.WaitReady(1)
	checkKeys(t, dst, 1, "k", 100)
	if r := dst.Members[1].Server.Stats().Restores; r < 1 {
		t.Fatalf("joined member restored %d snapshots, want >= 1", r)
	}
	mustWrite(t, dst.Client(1), "from-new", "x")
}
