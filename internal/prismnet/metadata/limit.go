package metadata

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterSet keeps one token bucket per source address, bounded in number:
// when full, buckets that have refilled completely are dropped (they hold
// nothing worth keeping), and if none has, the set starts over, which at
// worst hands every source a fresh burst.
type limiterSet struct {
	every rate.Limit
	burst int
	max   int

	mu sync.Mutex
	m  map[netip.Addr]*rate.Limiter
}

func newLimiterSet(every rate.Limit, burst, max int) *limiterSet {
	return &limiterSet{every: every, burst: burst, max: max, m: map[netip.Addr]*rate.Limiter{}}
}

// allow takes one request for src at now, or reports how long until one is
// available.
func (s *limiterSet) allow(src netip.Addr, now time.Time) (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.m[src]
	if !ok {
		if len(s.m) >= s.max {
			for k, v := range s.m {
				if v.TokensAt(now) >= float64(s.burst) {
					delete(s.m, k)
				}
			}
			if len(s.m) >= s.max {
				clear(s.m)
			}
		}
		l = rate.NewLimiter(s.every, s.burst)
		s.m[src] = l
	}
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
