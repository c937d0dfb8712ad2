package harness

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is wrapped by every wait that ran out of time.
var ErrTimeout = errors.New("harness: timed out")

// WaitFor polls cond until it reports done, timeout passes or ctx ends.
// cond returns whether the condition holds and a short description of what
// it saw; on timeout the error names what was awaited and the last thing
// cond saw, e.g.
//
//	harness: timed out after 10s waiting for host1 /readyz: last: 503 store not ready
//
// cond receives a context that ends at the deadline, for its own probes.
// Polling starts at 20ms and backs off to 250ms.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string)) error {
	return waitFor(ctx, timeout, what, func(ctx context.Context) (bool, string, error) {
		done, state := cond(ctx)
		return done, state, nil
	})
}

// waitFor is WaitFor with a way out: a non-nil error from cond ends the wait
// at once (for example, the process being waited on has exited).
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	interval := 20 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	last := "(not checked yet)"
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w after %s waiting for %s: last: %s", ErrTimeout, timeout, what, last)
			}
			return fmt.Errorf("harness: gave up after %s waiting for %s: %w: last: %s",
				time.Since(start).Round(time.Millisecond), what, ctx.Err(), last)
		case <-timer.C:
		}
		done, state, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("harness: waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		// A probe cut short by the deadline says little; keep the one before.
		if state != "" && (ctx.Err() == nil || last == "(not checked yet)") {
			last = state
		}
		timer.Reset(interval)
		interval = min(interval*2, 250*time.Millisecond)
	}
}
