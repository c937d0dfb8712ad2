package flaredb

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Group commit. Writers hand transactions to one proposer goroutine, which
// packs everything waiting into one CmdTxns log entry (up to MaxBatchTxns
// and maxEntryBytes) and hands it to Raft; the leader appends it with one
// fsync, replicates it in one AppendEntries round (one fsync per follower)
// and the FSM applies it in one Pebble batch. At most
// maxOutstandingEntries entries are in Raft at once, and the proposer takes
// its slot before it collects a batch: while an entry commits, writers
// accumulate in the proposer's queue and the next entry carries all of
// them, so batches grow with load.
//
// The limit is 1 because most of Raft's cost is per entry (encoding, the
// log write and its fsync, AppendEntries, the state machine batch, the
// futures), paid on every member, so the biggest batches win as soon as
// the members are short of CPU. With one entry in flight instead of two,
// three members on a 2-core machine under 64 clients through the API put
// about 16 transactions into each entry instead of 10 (8 instead of 5 at
// 16 clients), made about a third fewer fsyncs per write and used 15-20%
// less server CPU per write, for 10-20% more writes/s and lower latency
// (docs/benchmarks.md). Two outstanding entries overlap one entry's commit
// with the next one's log write, which wins only when CPU is idle:
// BenchmarkPropose (no API, so nothing else competes for CPU) is 10-15%
// faster with 2.

const (
	maxEntryBytes         = 4 << 20
	maxOutstandingEntries = 1
	// logCacheEntries is how many of the newest log entries the server
	// keeps in memory for replication (raft.NewLogCache).
	logCacheEntries = 128
)

type proposal struct {
	ctx  context.Context
	txn  wire.Txn // raw keys
	size int
	done chan proposalResult // buffered 1
	// next chains proposals handed over together (the writes of one client
	// batch), so they go into the same log entry.
	next *proposal
}

type proposalResult struct {
	res wire.TxnResult
	err error
}

type inflightBatch struct {
	future raft.ApplyFuture
	props  []*proposal
}

// propose runs one write transaction (raw keys) through Raft. It returns a
// *wire.Error whose code tells whether the write may have been applied.
func (n *node) propose(ctx context.Context, txn wire.Txn, size int) (wire.TxnResult, error) {
	p := &proposal{ctx: ctx, txn: txn, size: size, done: make(chan proposalResult, 1)}
	if err := n.handOver(ctx, p); err != nil {
		return wire.TxnResult{}, err
	}
	r := <-p.done
	return r.res, r.err
}

// handOver gives the proposer p and the proposals chained to it (each with
// a buffered done channel); once it returns nil, every one of them is
// answered on its done channel. On an error none was proposed.
func (n *node) handOver(ctx context.Context, p *proposal) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	select {
	case n.proposeCh <- p:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flaredb: waiting to propose: %w", ctx.Err())
	case <-n.propCtx.Done():
		return n.errStopping()
	}
}

func (n *node) runProposer() {
	defer close(n.propDone)
	defer close(n.inflight)
	batch := make([]*proposal, 0, n.cfg.MaxBatchTxns)
	var size int
	for {
		// Take a slot before collecting, so the batch holds everything
		// that arrived while the outstanding entries were being committed.
		select {
		case <-n.propCtx.Done():
			return
		case n.slots <- struct{}{}:
		}
		select {
		case <-n.propCtx.Done():
			return
		case p := <-n.proposeCh:
			batch = batch[:0]
			size = 0
			for ; p != nil; p = p.next {
				batch = append(batch, p)
				size += p.size
			}
		}
	collect:
		for len(batch) < n.cfg.MaxBatchTxns && size < maxEntryBytes {
			select {
			case p := <-n.proposeCh:
				for ; p != nil; p = p.next {
					batch = append(batch, p)
					size += p.size
				}
			default:
				break collect
			}
		}
		if !n.submit(batch) {
			<-n.slots
		}
		clear(batch)
	}
}

// submit turns a batch into one log entry and queues it for the completer,
// which releases the proposer's slot once the entry is applied. It reports
// whether it did; if not, every proposal was answered and the slot is the
// caller's to release.
func (n *node) submit(batch []*proposal) bool {
	live := make([]*proposal, 0, len(batch))
	cmd := fsm.Command{Kind: fsm.CmdTxns, Timestamp: n.now(), Txns: make([]wire.Txn, 0, len(batch))}
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- proposalResult{err: fmt.Errorf("flaredb: before proposing: %w", err)}
			continue
		}
		live = append(live, p)
		cmd.Txns = append(cmd.Txns, p.txn)
	}
	if len(live) == 0 {
		return false
	}
	if n.raft.State() != raft.Leader {
		err := n.notLeader()
		for _, p := range live {
			p.done <- proposalResult{err: err}
		}
		return false
	}
	f := n.raft.Apply(cmd.Encode(), n.cfg.RequestTimeout)
	n.stats.proposals.Add(uint64(len(live)))
	n.stats.entries.Add(1)
	// Never blocks: inflight has room for every slot.
	n.inflight <- &inflightBatch{future: f, props: live}
	return true
}

// runCompleter answers writers in log order as their entries are applied.
func (n *node) runCompleter() {
	defer close(n.compDone)
	for b := range n.inflight {
		err := b.future.Error()
		<-n.slots
		var resp any
		if err == nil {
			resp = b.future.Response()
		}
		var results []wire.TxnResult
		switch r := resp.(type) {
		case *fsm.TxnsResult:
			if len(r.Results) != len(b.props) {
				err = fmt.Errorf("%w: %d results for %d transactions", wire.ErrInternal, len(r.Results), len(b.props))
			}
			results = r.Results
		case error:
			err = r
		case nil:
			if err == nil {
				err = fmt.Errorf("%w: no response from the state machine", wire.ErrInternal)
			}
		}
		if err != nil {
			err = n.applyError(err)
		}
		for i, p := range b.props {
			if err != nil {
				p.done <- proposalResult{err: err}
			} else {
				p.done <- proposalResult{res: results[i]}
			}
		}
	}
}

// applyError maps a Raft apply failure to a wire error that says whether the
// write may have been applied.
func (n *node) applyError(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Never appended to the log.
		return n.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return wire.Errorf(wire.CodeNoLeader, "raft did not take the proposal in time")
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrAbortedByRestore):
		return wire.Errorf(wire.CodeUnknownOutcome, "%v", err)
	}
	if wire.CodeOf(err) != wire.CodeInternal {
		return err // deterministic state machine error, e.g. storage.ErrFutureRev
	}
	return wire.Errorf(wire.CodeUnknownOutcome, "%v", err)
}

// applyCommand proposes a non-transaction command (compact, expire,
// membership) and waits for it. The caller must be the leader.
func (n *node) applyCommand(cmd fsm.Command) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	// Raft answers every future while it runs (a leader without a quorum
	// steps down and fails them), and stop waits for this goroutine before
	// shutting Raft down, so waiting here is bounded.
	f := n.raft.Apply(cmd.Encode(), n.cfg.RequestTimeout)
	err := f.Error()
	if err == nil {
		if e, ok := f.Response().(error); ok {
			err = e
		}
	}
	if err != nil {
		return n.applyError(err)
	}
	return nil
}
