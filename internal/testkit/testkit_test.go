package testkit

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var _ = RegisterUpdateFlag()

// recorder is a testing.TB whose Fatalf and Errorf record the message;
// Fatalf ends the goroutine as the real one does.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	msgs   []string
	failed bool
}

func (r *recorder) Helper()      {}
func (r *recorder) Name() string { return r.TB.Name() }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

// run calls f with a recorder on a goroutine of its own (Fatalf ends it)
// and returns what it recorded.
func run(t *testing.T, f func(tb testing.TB)) (failed bool, msg string) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.failed, strings.Join(r.msgs, "\n")
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	failed, msg := run(t, func(tb testing.TB) {
		Eventually(tb, 5*time.Second, "the third look", func() bool { n++; return n == 3 })
	})
	if failed || n != 3 {
		t.Fatalf("failed=%v (%s), looked %d times, want 3", failed, msg, n)
	}
}

func TestEventuallyFailsSayingWhatItWaitedFor(t *testing.T) {
	start := time.Now()
	failed, msg := run(t, func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, "the moon to turn blue", func() bool { return false })
	})
	if !failed || !strings.Contains(msg, "timed out after 50ms waiting for the moon to turn blue") {
		t.Fatalf("failed=%v, message %q", failed, msg)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before its deadline", d)
	}
}

func TestEventuallyErrReportsTheLastError(t *testing.T) {
	n := 0
	failed, msg := run(t, func(tb testing.TB) {
		EventuallyErr(tb, 50*time.Millisecond, "the store", func() error { n++; return fmt.Errorf("attempt %d: not yet", n) })
	})
	if !failed || !strings.Contains(msg, "waiting for the store: last: attempt "+fmt.Sprint(n)+": not yet") {
		t.Fatalf("failed=%v, message %q (after %d attempts)", failed, msg, n)
	}
	failed, msg = run(t, func(tb testing.TB) {
		m := 0
		EventuallyErr(tb, 5*time.Second, "two attempts", func() error {
			if m++; m < 2 {
				return errors.New("first")
			}
			return nil
		})
	})
	if failed {
		t.Fatalf("failed although the condition held: %s", msg)
	}
}

func setUpdate(t *testing.T, v bool) {
	t.Helper()
	if err := flag.Set(updateFlag, fmt.Sprint(v)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set(updateFlag, "false") })
}

func TestGoldenComparesAndUpdates(t *testing.T) {
	t.Chdir(t.TempDir())
	// No file yet: the failure says how to make one.
	failed, msg := run(t, func(tb testing.TB) { Golden(tb, "out", []byte("one\n")) })
	if !failed || !strings.Contains(msg, "-update to create it") {
		t.Fatalf("missing golden file: failed=%v %q", failed, msg)
	}
	setUpdate(t, true)
	if failed, msg := run(t, func(tb testing.TB) { Golden(tb, "out", []byte("one\n")) }); failed {
		t.Fatalf("-update failed: %s", msg)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "out.golden")); err != nil || string(b) != "one\n" {
		t.Fatalf("golden file = %q, %v", b, err)
	}
	setUpdate(t, false)
	if failed, msg := run(t, func(tb testing.TB) { Golden(tb, "out", []byte("one\n")) }); failed {
		t.Fatalf("same output failed: %s", msg)
	}
	failed, msg = run(t, func(tb testing.TB) { Golden(tb, "out", []byte("two\n")) })
	if !failed || !strings.Contains(msg, "--- got\ntwo\n--- want\none\n") {
		t.Fatalf("different output: failed=%v %q", failed, msg)
	}
}

func TestRegisterUpdateFlagTwiceKeepsOneFlag(t *testing.T) {
	// A second package (or this one again) asking for the flag must not
	// panic with "flag redefined".
	if !RegisterUpdateFlag() || !RegisterUpdateFlag() {
		t.Fatal("RegisterUpdateFlag returned false")
	}
	if flag.Lookup(updateFlag) == nil {
		t.Fatal("no -update flag")
	}
}

func TestFreePortsAreDistinctBindableAndOutsideTheEphemeralRange(t *testing.T) {
	low, high := portRange()
	seen := map[int]bool{}
	for _, p := range FreePorts(t, 50) {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if high != 0 && (p < low || p >= high) {
			t.Fatalf("port %d outside %d-%d", p, low, high-1)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		ln.Close()
	}
	ln := Listen(t)
	if p := ln.Addr().(*net.TCPAddr).Port; seen[p] {
		t.Fatalf("Listen took port %d, handed out before", p)
	}
}

func TestClockMovesOnlyWhenTold(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v", c.Now())
	}
	ch := c.After(time.Second)
	if c.Waiters() != 1 {
		t.Fatalf("Waiters = %d, want 1", c.Waiters())
	}
	c.Advance(999 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("After fired before its time")
	default:
	}
	c.Advance(time.Millisecond)
	select {
	case got := <-ch:
		if !got.Equal(start.Add(time.Second)) {
			t.Fatalf("After delivered %v", got)
		}
	default:
		t.Fatal("After did not fire at its time")
	}
	if c.Waiters() != 0 {
		t.Fatalf("Waiters = %d after firing", c.Waiters())
	}
	c.Set(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Set: Now = %v", c.Now())
	}
	select {
	case <-c.After(0):
	default:
		t.Fatal("After(0) did not fire at once")
	}
}
