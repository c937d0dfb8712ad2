package flaredb

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Linearizable reads use ReadIndex, not a leader lease. A read notes the
// leader's commit index, confirms with a quorum that the leader is still the
// leader (raft.VerifyLeader: one heartbeat round), waits until the local
// state machine has applied that index, then reads local state. That is
// correct whatever the clocks do; a lease read trusts that no other leader
// can be elected within the lease, which depends on bounded clock drift and
// on pauses (GC, VM steal) never exceeding the lease, and hashicorp/raft
// exposes no lease reads anyway.
//
// The quorum round is what a read costs, so it is shared: one goroutine
// takes every read waiting, notes the commit index, runs one VerifyLeader,
// and answers them all; reads arriving meanwhile go into the next round
// (they must not reuse an index noted before they arrived). On a follower
// the round is one call to the leader's read-index endpoint (where it joins
// the leader's own round), after which the follower serves the read from its
// own state: reads scale with members.
//
// The index is only trusted once the leader has applied an entry of its own
// term (see leadership.establish): before that its commit index may lag
// entries a previous leader committed.

type readWaiter struct {
	done chan readResult // buffered 1
}

type readResult struct {
	index uint64
	err   error
}

// readIndex returns an index such that every write acknowledged before the
// call is at or below it.
func (n *node) readIndex(ctx context.Context) (uint64, error) {
	w := &readWaiter{done: make(chan readResult, 1)}
	select {
	case n.readCh <- w:
	case <-ctx.Done():
		return 0, wire.Errorf(wire.CodeUnavailable, "waiting for a read index: %v", ctx.Err())
	case <-n.ctx.Done():
		return 0, n.errStopping()
	}
	select {
	case r := <-w.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, wire.Errorf(wire.CodeUnavailable, "waiting for a read index: %v", ctx.Err())
	}
}

// linearize waits until local state reflects every write acknowledged
// before the call.
func (n *node) linearize(ctx context.Context) error {
	idx, err := n.readIndex(ctx)
	if err != nil {
		return err
	}
	if err := n.fsm.WaitApplied(ctx, idx); err != nil {
		return wire.Errorf(wire.CodeUnavailable, "member %q catching up: %v", n.cfg.ID, err)
	}
	return nil
}

func (n *node) runReadIndex() {
	var batch []*readWaiter
	for {
		select {
		case <-n.ctx.Done():
			return
		case w := <-n.readCh:
			batch = append(batch[:0], w)
		}
		// Let handlers that are already runnable queue their reads into
		// this round rather than the next (more reads per quorum round; a
		// yield, not a timer, so an idle member adds no delay).
		runtime.Gosched()
	drain:
		for {
			select {
			case w := <-n.readCh:
				batch = append(batch, w)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RequestTimeout)
		idx, err := n.readIndexRound(ctx)
		cancel()
		n.stats.readRounds.Add(1)
		n.stats.readWaiters.Add(uint64(len(batch)))
		for _, w := range batch {
			w.done <- readResult{index: idx, err: err}
		}
		clear(batch)
	}
}

func (n *node) readIndexRound(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		if err := n.lead.waitEstablished(ctx, n.raft); err != nil {
			return 0, err
		}
		idx := n.raft.CommitIndex()
		if err := n.raft.VerifyLeader().Error(); err != nil {
			return 0, n.notLeader()
		}
		return idx, nil
	}
	_, api := n.leaderAPI()
	if api == "" {
		return 0, n.notLeader()
	}
	body, err := n.callPeer(ctx, api, pathReadIndex, wire.EncodeEmpty(wire.TagReadIndexRequest))
	if err != nil {
		return 0, readIndexPeerError(err)
	}
	var resp wire.ReadIndexResponse
	if err := resp.Decode(body); err != nil {
		return 0, fmt.Errorf("%w: read index from the leader: %v", wire.ErrUnavailable, err)
	}
	return resp.Index, nil
}

// readIndexPeerError is a failed read-index request to the leader as the
// reader should see it. callPeer calls a request that broke after it was
// sent an unknown outcome, which is right for a forwarded write; a read
// index changes nothing, so it is unavailable (try again), which every
// client retries, instead of a "write outcome unknown" on a read.
func readIndexPeerError(err error) error {
	var we *wire.Error
	if errors.As(err, &we) && we.Code == wire.CodeUnknownOutcome {
		return wire.Errorf(wire.CodeUnavailable, "read index from the leader: %s", we.Message)
	}
	return err
}
