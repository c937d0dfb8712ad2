package chainfire

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
)

// The defragmentation policy. Compaction frees database pages but leaves
// the file as large as it was; only defragmentation (rewriting the file)
// gives the space back, and a member defragmenting answers nothing until
// it is done. So each member, on its own timer, looks at its own file and,
// when enough of it is free, defragments itself alone while holding a
// cluster-wide lock: one member at a time, so a quorum keeps serving. A
// leader first hands its leadership to another member, so the cluster
// keeps a leader that is not stalled.

// DefragLockName is the coordination lock (internal/runtime/coord, under
// coord.KeyPrefix + "lock/") a member holds while it defragments.
const DefragLockName = "chainfire-defrag"

const (
	// defragLockTTL keeps the lock's lease: generous, because the member
	// that holds it is busy; if it dies, the lock frees after this.
	defragLockTTL = 30 * time.Second
	// defragLockWait bounds the wait for another member's defragmentation.
	defragLockWait = 5 * time.Minute
	// defragTimeout bounds one defragmentation.
	defragTimeout = 10 * time.Minute
	// defragJitter varies each wait by up to this fraction either way.
	defragJitter = 0.1
)

// defragDue reports whether a database of size bytes, inUse of them in
// use, has enough reclaimable space: at least minFree bytes and at least
// percent % of size.
func defragDue(size, inUse, minFree int64, percent int) bool {
	free := size - inUse
	if size <= 0 || free <= 0 {
		return false
	}
	return free >= minFree && free*100 >= int64(percent)*size
}

// defragStats are the policy's counters, exported by the Collector.
type defragStats struct {
	mu        sync.Mutex
	checks    uint64 // times the policy looked at the file (due or not)
	runs      uint64 // defragmentations that completed
	failures  uint64 // attempts that failed (lock, leader move, defrag)
	reclaimed int64  // bytes given back, summed over runs
	lastDur   time.Duration
	lastAt    time.Time
	lastErr   string // why the latest failed attempt failed
}

// DefragStats is a copy of the policy's counters.
type DefragStats struct {
	// Checks counts the policy's looks at the member's file, whatever they
	// found; tests wait on it to see the policy run and do nothing.
	Checks         uint64
	Runs           uint64
	Failures       uint64
	ReclaimedBytes int64
	LastDuration   time.Duration
	LastAt         time.Time
	LastError      string // why the latest failed attempt failed; "" if none did
}

// DefragStats returns the defragmentation policy's counters.
func (s *Server) DefragStats() DefragStats {
	d := &s.defrag
	d.mu.Lock()
	defer d.mu.Unlock()
	return DefragStats{Checks: d.checks, Runs: d.runs, Failures: d.failures, ReclaimedBytes: d.reclaimed, LastDuration: d.lastDur, LastAt: d.lastAt, LastError: d.lastErr}
}

func (d *defragStats) checked() {
	d.mu.Lock()
	d.checks++
	d.mu.Unlock()
}

func (d *defragStats) fail(err error) {
	d.mu.Lock()
	d.failures++
	d.lastErr = err.Error()
	d.mu.Unlock()
}

func (d *defragStats) done(dur time.Duration, reclaimed int64) {
	d.mu.Lock()
	d.runs++
	d.lastDur, d.lastAt = dur, time.Now()
	if reclaimed > 0 {
		d.reclaimed += reclaimed
	}
	d.mu.Unlock()
}

// defragLoop runs the policy until ctx ends. It does nothing when
// DefragInterval is 0.
func (s *Server) defragLoop(ctx context.Context, e *embed.Etcd) {
	if s.cfg.DefragInterval <= 0 {
		return
	}
	timer := time.NewTimer(jitter(s.cfg.DefragInterval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if err := s.maybeDefrag(ctx, e); err != nil && ctx.Err() == nil {
			s.defrag.fail(err)
			s.log.Warn("defragmentation failed; trying again at the next check", "err", err, "next_check_in", s.cfg.DefragInterval)
		}
		s.defrag.checked()
		timer.Reset(jitter(s.cfg.DefragInterval))
	}
}

func jitter(d time.Duration) time.Duration {
	f := 1 + defragJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// maybeDefrag checks the member's own database and, if enough of it is
// free, defragments it under the cluster-wide lock. It returns nil when
// nothing needed doing.
func (s *Server) maybeDefrag(ctx context.Context, e *embed.Etcd) error {
	size, inUse := dbSizes(e)
	if !defragDue(size, inUse, s.cfg.DefragMinFreeBytes, s.cfg.DefragMinFreePercent) {
		s.log.Debug("defragmentation not needed", "db_size_bytes", size, "db_size_in_use_bytes", inUse,
			"min_free_bytes", s.cfg.DefragMinFreeBytes, "min_free_percent", s.cfg.DefragMinFreePercent)
		return nil
	}
	cli, err := s.clusterClient(e)
	if err != nil {
		return err
	}
	defer cli.Close()

	// The lock's lease lives as long as the context it is taken with, so
	// bound only the wait for it, not the holding.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitTimer := time.AfterFunc(defragLockWait, cancel)
	held, err := coord.New(cli, s.log).Lock(lctx, DefragLockName, defragLockTTL)
	if !waitTimer.Stop() && err == nil {
		err = fmt.Errorf("no turn within %s", defragLockWait)
	}
	if err != nil {
		return fmt.Errorf("taking the cluster-wide lock %s: %w", DefragLockName, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := held.Unlock(uctx); err != nil {
			s.log.Debug("releasing the defragmentation lock", "err", err)
		}
	}()

	// Another member may have run meanwhile; our own file is what counts,
	// and it may have changed while we waited.
	size, inUse = dbSizes(e)
	if !defragDue(size, inUse, s.cfg.DefragMinFreeBytes, s.cfg.DefragMinFreePercent) {
		return nil
	}
	if err := s.handOffLeadership(ctx, e); err != nil {
		// Defragment anyway: reclaiming space matters more than a short
		// stall of the leader, which the cluster rides out.
		s.log.Warn("could not hand leadership to another member before defragmenting", "err", err)
	}
	if hook := s.defragHook; hook != nil {
		hook(held.Context())
	}
	if err := held.Context().Err(); err != nil {
		return fmt.Errorf("lost the cluster-wide lock %s before defragmenting: %w", DefragLockName, context.Cause(held.Context()))
	}

	s.log.Info("defragmenting", "db_size_bytes", size, "db_size_in_use_bytes", inUse, "reclaimable_bytes", size-inUse)
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, defragTimeout)
	defer cancel()
	// Through the maintenance API of our own endpoint, as etcdctl does:
	// etcd then also reports the member unhealthy while it is busy.
	if _, err := cli.Defragment(dctx, s.cfg.ClientURL); err != nil {
		return fmt.Errorf("defragmenting: %w", err)
	}
	dur := time.Since(start)
	after, afterInUse := dbSizes(e)
	s.defrag.done(dur, size-after)
	s.log.Info("defragmented", "duration", dur.Round(time.Millisecond), "db_size_before_bytes", size,
		"db_size_after_bytes", after, "db_size_in_use_bytes", afterInUse, "reclaimed_bytes", size-after)
	return nil
}

func dbSizes(e *embed.Etcd) (size, inUse int64) {
	be := e.Server.Backend()
	if be == nil {
		return 0, 0
	}
	return be.Size(), be.SizeInUse()
}

// clusterClient is a client of every member's client URLs, so the lock's
// lease is kept alive through the others while this member is busy.
func (s *Server) clusterClient(e *embed.Etcd) (*clientv3.Client, error) {
	cfg, err := s.ClientConfig()
	if err != nil {
		return nil, err
	}
	eps := []string{s.cfg.ClientURL}
	for _, m := range e.Server.Cluster().Members() {
		if m.ID == e.Server.MemberID() || m.IsLearner {
			continue
		}
		eps = append(eps, m.ClientURLs...)
	}
	cfg.Endpoints = eps
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("client of the cluster: %w", err)
	}
	return cli, nil
}

// handOffLeadership moves leadership to another voting member when this
// member leads a cluster of more than one.
func (s *Server) handOffLeadership(ctx context.Context, e *embed.Etcd) error {
	srv := e.Server
	self := srv.MemberID()
	if types.ID(srv.Lead()) != self {
		return nil
	}
	var errs []error
	for _, m := range srv.Cluster().Members() {
		if m.ID == self || m.IsLearner || m.Name == "" { // not started yet
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, 5*s.cfg.ElectionTimeout)
		err := srv.MoveLeader(mctx, uint64(self), uint64(m.ID))
		cancel()
		if err == nil {
			s.log.Info("handed leadership over before defragmenting", "new_leader", m.Name)
			return nil
		}
		errs = append(errs, fmt.Errorf("to %s: %w", m.Name, err))
	}
	return errors.Join(errs...)
}
