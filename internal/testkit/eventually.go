package testkit

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually and EventuallyErr check their
// condition: short enough that a test does not wait long after the
// condition holds, long enough not to busy-loop a loaded machine.
const PollInterval = 10 * time.Millisecond

// Eventually checks cond every PollInterval until it returns true, and
// fails t if within passes first, naming what it waited for:
//
//	testkit: timed out after 10s waiting for a leader among m0, m1, m2
//
// cond runs on the test's goroutine, so it may call t.Fatal itself.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("testkit: timed out after %s waiting for %s", within, what)
		}
		time.Sleep(PollInterval)
	}
}

// EventuallyErr is Eventually for a condition that says why it does not
// hold yet: it polls until cond returns nil and on timeout reports the last
// error.
func EventuallyErr(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testkit: timed out after %s waiting for %s: last: %v", within, what, err)
		}
		time.Sleep(PollInterval)
	}
}
