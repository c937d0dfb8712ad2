package storetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// The crash suite: a child process writes to a store from several
// goroutines and prints "ACK <key> <revision>" after each acknowledged
// write; the test kills it with SIGKILL mid-stream, opens the store again
// from the same data and checks that every acknowledged write is there at
// its revision, and that replaying the history from revision 1 rebuilds
// exactly the state. The child is the test binary itself, re-run for the
// same test with crashEnv set, so a store's test needs one test function:
//
//	func TestCrashRecovery(t *testing.T) { storetest.RunCrash(t, storetest.Crash{...}) }

// crashEnv carries Prepare's result to the child; its presence makes
// RunCrash act as the child.
const crashEnv = "STORETEST_CRASH_CHILD"

// Crash says how to run a store for the crash suite.
type Crash struct {
	// Prepare runs in the test before the child starts and returns what
	// Open needs to find the store's data again (a directory, a cluster's
	// layout as JSON).
	Prepare func(t *testing.T) string
	// Open opens the store that Prepare set up: in the child, which writes
	// until it is killed, and in the test after the kill, which checks
	// what survived. It may start servers (a cluster's members); they must
	// stop at t's cleanup. The suite closes the store in the test.
	Open func(t testing.TB, prepared string) storage.Store
	// Recovered, if set, runs in the test after the suite's checks, with
	// the reopened store and the revision it recovered (for example to
	// check every member of a cluster replayed to it).
	Recovered func(t *testing.T, s storage.Store, rev int64)
	// KillAfter is the number of acknowledged writes after which the child
	// is killed (400 if 0).
	KillAfter int
}

// RunCrash runs the crash suite in t, which must be the store's own test
// function (the child runs it again, by name).
func RunCrash(t *testing.T, c Crash) {
	if prepared, ok := os.LookupEnv(crashEnv); ok {
		crashChild(t, c, prepared)
		return
	}
	killAfter := c.KillAfter
	if killAfter == 0 {
		killAfter = 400
	}
	prepared := c.Prepare(t)
	cmd := exec.Command(os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+prepared)
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
	// Everything printed before the kill was acknowledged, so all of it
	// counts, also lines read after the kill.
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("the writer stopped after %d acknowledged writes: %s", len(acked), stderr.String())
	}

	s := c.Open(t, prepared)
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	cur, compacted, err := s.Revision(ctx)
	if err != nil || compacted != 0 {
		t.Fatalf("Revision = %d/%d, %v", cur, compacted, err)
	}
	for key, rev := range acked {
		kv, err := s.Get(ctx, []byte(key))
		if err != nil {
			t.Fatalf("acknowledged %s (rev %d) lost: %v", key, rev, err)
		}
		if string(kv.Value) != key || kv.ModRevision != rev || kv.CreateRevision != rev {
			t.Fatalf("acknowledged %s at %d reads back %+v", key, rev, kv)
		}
		if rev > cur {
			t.Fatalf("acknowledged revision %d beyond the recovered revision %d", rev, cur)
		}
	}
	checkReplay(t, s, cur)
	if c.Recovered != nil {
		c.Recovered(t, s, cur)
	}
	t.Logf("killed after %d acknowledged writes; recovered revision %d, history consistent", len(acked), cur)
}

// checkReplay checks that replaying the history from revision 1 rebuilds
// the state at cur exactly.
func checkReplay(t *testing.T, s storage.Store, cur int64) {
	t.Helper()
	ctx := context.Background()
	state, rangeRev, err := s.Range(ctx, nil, nil, 0)
	if err != nil || rangeRev != cur {
		t.Fatalf("Range @%d (want %d): %v", rangeRev, cur, err)
	}
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A marker written after the read ends the replay: every event up to
	// rangeRev comes before it.
	marker := MustPut(t, s, "~end", "").ModRevision
	if marker != rangeRev+1 {
		t.Fatalf("marker at %d, state read at %d", marker, rangeRev)
	}
	replay := map[string]storage.KV{}
	var last int64
	for last < marker {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("replay ended at %d of %d: %v", last, marker, w.Err())
			}
			r := ev.KV.ModRevision
			if r != last && r != last+1 { // one revision per transaction
				t.Fatalf("replay jumped from revision %d to %d", last, r)
			}
			last = r
			if r == marker {
				continue
			}
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
			t.Fatalf("replay stalled at %d of %d", last, marker)
		}
	}
	if len(replay) != len(state) {
		t.Fatalf("replay has %d keys, state %d", len(replay), len(state))
	}
	for _, kv := range state {
		r, ok := replay[string(kv.Key)]
		if !ok || !bytes.Equal(r.Value, kv.Value) || r.CreateRevision != kv.CreateRevision || r.ModRevision != kv.ModRevision {
			t.Fatalf("state %+v, replay %+v (present %v)", kv, r, ok)
		}
	}
}

// crashChild opens the store and writes to it from 8 goroutines until the
// process is killed. Each transaction puts a key of its own and overwrites
// or deletes a shared scratch key, so the replay has updates and deletes
// carrying previous values.
func crashChild(t *testing.T, c Crash, prepared string) {
	s := c.Open(t, prepared)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	for g := range 8 {
		go func() { // runs until the process is killed
			for i := 0; ; i++ {
				key := fmt.Sprintf("acked/%d/%06d", g, i)
				scratch := storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "scratch/%d", i%5), Value: []byte(key)}
				if i%3 == 2 {
					scratch = storage.Op{Type: storage.OpDelete, Key: scratch.Key}
				}
				res, err := s.Txn(context.Background(), storage.Txn{Then: []storage.Op{PutOp(key, key), scratch}})
				if err != nil {
					fmt.Fprintln(os.Stderr, "storetest crash writer: txn:", err)
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

// runPattern is a -test.run pattern matching exactly the test name (a
// subtest's name has one part per level).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}
