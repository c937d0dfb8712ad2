package iam

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: Burst attempts at once, refilled at Per.
type RateLimit struct {
	Burst int
	Per   time.Duration // one attempt regained every Per
}

// limiterSet keeps one token bucket per key (a user name, an IP address),
// bounded in number: when full, buckets that have refilled completely are
// dropped (they carry no state worth keeping), and if none has, the set
// starts over.
type limiterSet struct {
	limit RateLimit
	max   int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

func newLimiterSet(l RateLimit, max int) *limiterSet {
	return &limiterSet{limit: l, max: max, m: map[string]*rate.Limiter{}}
}

// allow takes one attempt for key at now, or reports how long until one is
// available.
func (s *limiterSet) allow(key string, now time.Time) (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.m[key]
	if !ok {
		if len(s.m) >= s.max {
			for k, v := range s.m {
				if v.TokensAt(now) >= float64(s.limit.Burst) {
					delete(s.m, k)
				}
			}
			if len(s.m) >= s.max {
				s.m = map[string]*rate.Limiter{}
			}
		}
		l = rate.NewLimiter(rate.Every(s.limit.Per), s.limit.Burst)
		s.m[key] = l
	}
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// loginLimiter limits authentication attempts per principal (user name or
// access key ID) and per source IP address.
type loginLimiter struct {
	perUser, perIP *limiterSet
}

func newLoginLimiter(perUser, perIP RateLimit) *loginLimiter {
	return &loginLimiter{perUser: newLimiterSet(perUser, 100000), perIP: newLimiterSet(perIP, 100000)}
}

// allow takes one attempt for both keys; when either is exhausted it
// reports the wait.
func (l *loginLimiter) allow(user, ip string, now time.Time) (bool, time.Duration) {
	if ok, d := l.perIP.allow(ip, now); !ok {
		return false, d
	}
	return l.perUser.allow(user, now)
}
