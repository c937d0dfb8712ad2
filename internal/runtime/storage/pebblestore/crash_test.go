package pebblestore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// crashDirEnv tells TestHelperProcess to act as the crashing writer.
const crashDirEnv = "PEBBLESTORE_CRASH_HELPER_DIR"

// TestHelperProcess is not a real test: TestCrashRecovery runs the test
// binary again with crashDirEnv set, and then this writes to the store in that
// directory until it is SIGKILLed, printing "ACK <key> <revision>" after every
// acknowledged write.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	var mu sync.Mutex
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("acked/%d/%06d", g, i)
				// Each txn also overwrites or deletes a scratch key so the
				// replay has updates and deletes with previous values.
				scratch := storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "scratch/%d", i%5), Value: []byte(key)}
				if i%3 == 2 {
					scratch = storage.Op{Type: storage.OpDelete, Key: scratch.Key}
				}
				res, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{
					{Type: storage.OpPut, Key: []byte(key), Value: []byte(key)}, scratch,
				}})
				if err != nil {
					fmt.Fprintln(os.Stderr, "helper: txn:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ACK %s %d\n", key, res.Revision)
				mu.Unlock()
			}
		}()
	}
	select {} // until killed
}

func TestCrashRecovery(t *testing.T) {
	const killAfter = 400
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(20*time.Second, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	acked := make(map[string]int64)
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
	// Everything printed before the kill was acknowledged, so all of it counts.
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper stopped after %d acks: %s", len(acked), stderr.String())
	}
	t.Logf("helper killed after %d acknowledged writes", len(acked))

	ctx := context.Background()
	s := openStore(t, dir, Options{})
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
			t.Fatalf("acknowledged revision %d beyond recovered revision %d", rev, cur)
		}
	}

	// Replaying the whole log must rebuild exactly the state.
	state, rangeRev, err := s.Range(ctx, nil, nil, 0)
	if err != nil || rangeRev != cur {
		t.Fatalf("Range @%d (want %d): %v", rangeRev, cur, err)
	}
	w, err := s.Watch(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	replay := make(map[string]storage.KV)
	var last int64
	for done := false; !done; {
		select {
		case ev := <-w.Events():
			switch r := ev.KV.ModRevision; {
			case r == last:
			case r == last+1:
				last = r
			default:
				t.Fatalf("replay jumped from revision %d to %d", last, r)
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
		case <-time.After(200 * time.Millisecond):
			done = last == cur
			if !done && last < cur {
				t.Fatalf("replay stalled at %d of %d", last, cur)
			}
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
	t.Logf("recovered revision %d, %d keys, replay consistent", cur, len(state))
}
