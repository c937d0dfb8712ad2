package testkit

import (
	"sync"
	"time"
)

// Clock is a fake clock for code that takes its time from a
// `Now func() time.Time` (apiserver.Options.Now, iam's Config.Now,
// flaredb's Options.Now): pass clock.Now, and move time with Advance or Set
// instead of sleeping. After serves code that waits on the clock: its
// channel fires when the clock is moved to or past the deadline. It is safe
// for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and fires the After channels that
// fall due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// Set moves the clock to t (backwards too, as a wall clock may jump) and
// fires the After channels that fall due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

func (c *Clock) setLocked(t time.Time) {
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if t.Before(w.at) {
			kept = append(kept, w)
			continue
		}
		w.ch <- t // buffered 1, sent once
	}
	c.waiters = kept
}

// After returns a channel that receives the clock's time once the clock
// has been moved d or more past now (at once if d <= 0), like time.After.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Waiters is the number of After channels not yet fired: a test can wait
// (with Eventually) until the code under test is waiting on the clock
// before it advances it.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
