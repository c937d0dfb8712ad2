package flaredb

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// leadership tracks whether this member is an established leader: one that
// has applied an entry of its own term, so its commit index covers every
// entry committed by earlier leaders. Only then may it answer read indexes.
//
// hashicorp/raft starts each term with a no-op entry but does not hand
// no-ops (or barriers) to the state machine, so waiting for "applied >=
// index" on one would never end. Establishing with a real command (this
// member's CmdSetMember, which also keeps the API address registry fresh)
// means every index a leader hands out is one the state machine sees.
type leadership struct {
	mu      sync.Mutex
	term    uint64 // established in this term; 0: not established
	changed chan struct{}
}

func (l *leadership) init() { l.changed = make(chan struct{}) }

func (l *leadership) set(term uint64) {
	l.mu.Lock()
	l.term = term
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *leadership) get() (uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term, l.changed
}

// waitEstablished waits until r is the leader established in its current
// term, or fails with a not-leader error when it is not the leader.
func (l *leadership) waitEstablished(ctx context.Context, r *raft.Raft) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		term, changed := l.get()
		if r.State() != raft.Leader {
			return wire.Errorf(wire.CodeNotLeader, "lost leadership")
		}
		if term != 0 && term == r.CurrentTerm() {
			return nil
		}
		select {
		case <-changed:
		case <-t.C: // the term may change without a leadership change
		case <-ctx.Done():
			return wire.Errorf(wire.CodeUnavailable, "leader not established yet: %v", ctx.Err())
		}
	}
}

// runLeadership follows Raft's leadership changes: while this member leads
// it runs a session that establishes leadership and expires TTL keys.
func (n *node) runLeadership() {
	type session struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var sess *session
	stopSession := func() {
		if sess != nil {
			sess.cancel()
			<-sess.done
			sess = nil
		}
		n.lead.set(0)
	}
	defer stopSession()
	leaderCh := n.raft.LeaderCh()
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-leaderCh:
			stopSession()
			if !isLeader {
				n.log.Info("lost leadership", "term", n.raft.CurrentTerm())
				continue
			}
			ctx, cancel := context.WithCancel(n.ctx)
			sess = &session{cancel: cancel, done: make(chan struct{})}
			done := sess.done
			n.goFunc(func() {
				defer close(done)
				n.leaderSession(ctx)
			})
		}
	}
}

func (n *node) leaderSession(ctx context.Context) {
	term := n.raft.CurrentTerm()
	n.log.Info("became leader", "term", term)
	retry := time.NewTicker(100 * time.Millisecond)
	defer retry.Stop()
	for {
		err := n.applyCommand(fsm.Command{Kind: fsm.CmdSetMember, MemberID: n.cfg.ID, APIAddr: n.cfg.APIAdvertise})
		if err == nil {
			break
		}
		if wire.CodeOf(err) == wire.CodeNotLeader || wire.CodeOf(err) == wire.CodeNoLeader {
			return // a new leadership event follows
		}
		n.log.Warn("establishing leadership failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		}
	}
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return
	}
	n.lead.set(term)
	n.log.Info("leadership established", "term", term, "commit_index", n.raft.CommitIndex())

	t := time.NewTicker(n.cfg.ExpireInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.expireOnce(ctx)
		}
	}
}

// expireOnce proposes deletes for keys whose TTL ran out, by the leader's
// clock. Followers never look at clocks: they apply the command.
func (n *node) expireOnce(ctx context.Context) {
	for ctx.Err() == nil {
		now := n.now()
		keys, err := n.fsm.ExpiredKeys(now, fsm.MaxExpireKeys)
		if err != nil {
			n.log.Warn("scanning expired keys failed", "err", err)
			return
		}
		if len(keys) == 0 {
			return
		}
		if err := n.applyCommand(fsm.Command{Kind: fsm.CmdExpire, Timestamp: now, Expire: keys}); err != nil {
			n.log.Warn("expiring keys failed", "err", err, "keys", len(keys))
			return
		}
		n.stats.expired.Add(uint64(len(keys)))
		if len(keys) < fsm.MaxExpireKeys {
			return
		}
	}
}
