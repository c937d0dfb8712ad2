package flaredb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// crashEnv carries the cluster layout to the helper process.
const crashEnv = "FLAREDB_CRASH_HELPER"

type crashLayout struct {
	ClusterID string
	Members   []crashMember
}

type crashMember struct{ ID, Dir, Raft, API string }

func (c *testCluster) layout() crashLayout {
	l := crashLayout{ClusterID: c.clusterID}
	for _, m := range c.members {
		l.Members = append(l.Members, crashMember{ID: m.id, Dir: m.dir, Raft: m.raftAddr, API: m.apiAddr})
	}
	return l
}

func clusterFromLayout(t testing.TB, l crashLayout) *testCluster {
	c := &testCluster{t: t, clusterID: l.ClusterID}
	for _, m := range l.Members {
		c.members = append(c.members, &testMember{id: m.ID, dir: m.Dir, raftAddr: m.Raft, apiAddr: m.API})
	}
	t.Cleanup(c.stopAll)
	return c
}

// TestCrashHelperProcess is not a real test: TestCrashRecovery runs the test
// binary again with crashEnv set, and this then runs a 3-member cluster and
// writes to it until SIGKILLed, printing "ACK <key> <revision>" after every
// acknowledged write.
func TestCrashHelperProcess(t *testing.T) {
	raw := os.Getenv(crashEnv)
	if raw == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	var l crashLayout
	if err := json.Unmarshal([]byte(raw), &l); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	c := clusterFromLayout(t, l)
	c.startAll()
	cl := c.client()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("acked/%d/%06d", g, i)
				scratch := wire.Op{Type: wire.OpPut, Key: fmt.Appendf(nil, "scratch/%d", i%5), Value: []byte(key)}
				if i%3 == 2 {
					scratch = wire.Op{Type: wire.OpDelete, Key: scratch.Key}
				}
				res, err := cl.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{putOp(key, key), scratch}})
				if err != nil {
					fmt.Fprintln(os.Stderr, "helper: txn:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "ACK %s %d\n", key, res.Revision)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	select {} // until killed
}

// TestCrashRecovery kills a whole 3-member cluster (one process) with
// SIGKILL during heavy writes, restarts every member from its data, and
// checks that every acknowledged write is there and that the history
// replays to exactly the state.
func TestCrashRecovery(t *testing.T) {
	const killAfter = 500
	c := newTestCluster(t, 3, nil)
	layout, _ := json.Marshal(c.layout())
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+string(layout))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()
	acked := map[string]int64{}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ACK" {
			continue
		}
		rev, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		acked[f[1]] = rev
		if len(acked) == killAfter && !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper stopped after %d acks: %s", len(acked), stderr.String())
	}

	// Every member restarts from its own data: nothing was shut down.
	c.startAll()
	cl := c.client()
	ctx := context.Background()
	cur, _, err := cl.Revision(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for key, rev := range acked {
		kv, found, _, err := cl.Get(ctx, "", []byte(key), client.ReadOptions{})
		if err != nil || !found {
			t.Fatalf("acknowledged %s (rev %d) lost: found=%v err=%v", key, rev, found, err)
		}
		if string(kv.Value) != key || kv.ModRevision != rev || kv.CreateRevision != rev {
			t.Fatalf("acknowledged %s at %d reads back %+v", key, rev, kv)
		}
	}
	// Each member's state machine replayed the log to the same state.
	for i := range c.members {
		waitFor(t, "member to apply everything", 20*time.Second, func() bool {
			st, err := c.members[i].srv.Status()
			return err == nil && st.Revision >= cur
		})
	}
	// Replaying the history from revision 1 rebuilds exactly the state.
	state, rangeRev, err := cl.Range(ctx, "", nil, nil, client.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.NewStore(cl, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A marker written after the read ends the replay: every event up to
	// rangeRev comes before it.
	marker := mustWrite(t, cl, "~end", "").Revision
	if marker != rangeRev+1 {
		t.Fatalf("marker at %d, state read at %d", marker, rangeRev)
	}
	replay := map[string]storage.KV{}
	var last int64
	for last < marker {
		select {
		case ev := <-w.Events():
			if ev.KV.ModRevision == marker {
				last = marker
				continue
			}
			if r := ev.KV.ModRevision; r != last && r != last+1 {
				t.Fatalf("replay jumped from %d to %d", last, r)
			}
			last = ev.KV.ModRevision
			if ev.Type == storage.EventDelete {
				prev, ok := replay[string(ev.KV.Key)]
				if !ok || !bytes.Equal(prev.Value, ev.KV.Value) || prev.CreateRevision != ev.KV.CreateRevision {
					t.Fatalf("delete of %s carries %q/c%d, replay had %+v (present %v)", ev.KV.Key, ev.KV.Value, ev.KV.CreateRevision, prev, ok)
				}
				delete(replay, string(ev.KV.Key))
			} else {
				replay[string(ev.KV.Key)] = ev.KV
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("replay stalled at %d of %d", last, rangeRev)
		}
	}
	if len(replay) != len(state) {
		t.Fatalf("replay has %d keys, state %d", len(replay), len(state))
	}
	for _, kv := range state {
		r, ok := replay[string(kv.Key)]
		if !ok || !bytes.Equal(r.Value, kv.Value) || r.ModRevision != kv.ModRevision || r.CreateRevision != kv.CreateRevision {
			t.Fatalf("state %+v, replay %+v (present %v)", kv, r, ok)
		}
	}
	t.Logf("killed after %d acknowledged writes; recovered revision %d, %d keys, history consistent", len(acked), cur, len(state))
}
