package flaredb

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Status is a member's view of the cluster (what `ultracloud flaredb
// status` prints).
type Status = wire.Status

// Member is one cluster member.
type Member = wire.Member

// Stats are the server's counters.
type Stats struct {
	// Proposals counts write transactions proposed by this member as
	// leader; Entries the log entries they were packed into.
	Proposals, Entries uint64
	// Forwarded counts requests this member forwarded to the leader.
	Forwarded uint64
	// ReadRounds counts read index rounds; ReadWaiters the reads they served.
	ReadRounds, ReadWaiters uint64
	// Expired counts keys deleted because their TTL ran out.
	Expired uint64
	// Transfers counts leadership transfers done on shutdown.
	Transfers uint64
	// Restores counts snapshot restores; RefusedPeers Raft connections
	// refused for a wrong cluster ID or bad handshake.
	Restores, RefusedPeers uint64
}

// Stats returns the server's counters; only Transfers is kept when the
// server is not running.
func (s *Server) Stats() Stats {
	n := s.node.Load()
	if n == nil {
		return Stats{Transfers: s.transfers.Load()}
	}
	return Stats{
		Proposals: n.stats.proposals.Load(), Entries: n.stats.entries.Load(), Forwarded: n.stats.forwarded.Load(),
		ReadRounds: n.stats.readRounds.Load(), ReadWaiters: n.stats.readWaiters.Load(), Expired: n.stats.expired.Load(),
		Transfers: s.transfers.Load(), Restores: n.fsm.Stats().Restores, RefusedPeers: n.layer.Refused(),
	}
}

// Status returns this member's view of the cluster.
func (s *Server) Status() (Status, error) {
	n, err := s.running()
	if err != nil {
		return Status{}, err
	}
	return n.status(), nil
}

// Leading reports whether this member is the leader and has established
// its leadership in the current term (committed an entry of the term), so
// it serves linearizable reads and expires keys: the moment a fresh leader
// is of use, which Status alone does not show.
func (s *Server) Leading() bool {
	n := s.node.Load()
	if n == nil {
		return false
	}
	term, _ := n.lead.get()
	return n.raft.State() == raft.Leader && term != 0 && term == n.raft.CurrentTerm()
}

func (n *node) status() wire.Status {
	st := wire.Status{
		ID: n.cfg.ID, ClusterID: n.cfg.ClusterID, State: n.raft.State().String(),
		Term: n.raft.CurrentTerm(), LastLogIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.fsm.AppliedIndex(),
	}
	if v, err := strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = v
	}
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		st.LastSnapshotSize = metas[0].Size
		st.LastSnapshotTime = snapshotTime(metas[0].ID)
	}
	st.DBSize = dirSize(filepath.Join(n.cfg.DataDir, "fsm"))
	st.Revision, st.Compacted = n.fsm.Revision()
	laddr, lid := n.raft.LeaderWithID()
	if lid != "" {
		st.Leader = wire.Member{ID: string(lid), RaftAddress: string(laddr), APIAddress: n.apiAddrOf(string(lid)), Voter: true}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			st.Members = append(st.Members, wire.Member{
				ID: string(srv.ID), RaftAddress: string(srv.Address), APIAddress: n.apiAddrOf(string(srv.ID)),
				Voter: srv.Suffrage == raft.Voter,
			})
		}
	}
	return st
}

// snapshotTime returns when a snapshot of the file store was taken (unix
// ms) from its ID, "term-index-unixms", or 0.
func snapshotTime(id string) int64 {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return 0
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || ms < 0 {
		return 0
	}
	return ms
}

// dirSize is the total size of the regular files under dir (best effort).
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// leaderCall runs fn on this member if it leads, else sends the request to
// the leader's API.
func (n *node) leaderCall(ctx context.Context, fn func() error, path string, body []byte) error {
	if n.raft.State() == raft.Leader {
		return fn()
	}
	_, api := n.leaderAPI()
	if api == "" {
		return n.notLeader()
	}
	_, err := n.callPeer(ctx, api, path, body)
	return err
}

// AddMember adds a voter (on the leader, forwarding there if needed). The
// new member then catches up from the log or a snapshot. Adding a member
// that is already a voter at the same address is a no-op.
func (s *Server) AddMember(ctx context.Context, m Member) error {
	n, err := s.running()
	if err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	req := wire.MemberAddRequest{Member: m}
	return n.leaderCall(ctx, func() error { return n.addMember(m) }, wire.PathMemberAdd, req.Encode())
}

func (n *node) addMember(m wire.Member) error {
	// Record the API address first: once the member votes it may lead,
	// and others must be able to forward to it.
	if err := n.applyCommand(fsm.Command{Kind: fsm.CmdSetMember, MemberID: m.ID, APIAddr: m.APIAddress}); err != nil {
		return err
	}
	if err := n.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddress), 0, n.cfg.RequestTimeout).Error(); err != nil {
		return n.applyError(err)
	}
	n.log.Info("member added", "id", m.ID, "raft", m.RaftAddress, "api", m.APIAddress)
	return nil
}

// RemoveMember removes a member from the configuration (on the leader). A
// leader removing itself steps down once the change commits.
func (s *Server) RemoveMember(ctx context.Context, id string) error {
	n, err := s.running()
	if err != nil {
		return err
	}
	req := wire.MemberRemoveRequest{ID: id}
	return n.leaderCall(ctx, func() error { return n.removeMember(id) }, wire.PathMemberRemove, req.Encode())
}

func (n *node) removeMember(id string) error {
	if !n.inConfiguration(id) {
		return wire.Errorf(wire.CodeUnknownMember, "%q is not a member", id)
	}
	if err := n.applyCommand(fsm.Command{Kind: fsm.CmdRemoveMember, MemberID: id}); err != nil {
		return err
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.RequestTimeout).Error(); err != nil {
		return n.applyError(err)
	}
	n.log.Info("member removed", "id", id)
	return nil
}

func (n *node) inConfiguration(id string) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// TransferLeadership asks the leader to hand leadership to member id (""
// lets Raft pick the most up-to-date follower).
func (s *Server) TransferLeadership(ctx context.Context, id string) error {
	n, err := s.running()
	if err != nil {
		return err
	}
	req := wire.TransferLeaderRequest{ID: id}
	return n.leaderCall(ctx, func() error { return n.transferLeadership(id) }, wire.PathTransferLeader, req.Encode())
}

func (n *node) transferLeadership(id string) error {
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		var addr raft.ServerAddress
		if cf := n.raft.GetConfiguration(); cf.Error() == nil {
			for _, srv := range cf.Configuration().Servers {
				if string(srv.ID) == id {
					addr = srv.Address
				}
			}
		}
		if addr == "" {
			return wire.Errorf(wire.CodeUnknownMember, "%q is not a member", id)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	if err := f.Error(); err != nil {
		return n.applyError(err)
	}
	return nil
}

// TakeSnapshot makes Raft snapshot this member's state now and truncate its
// log (normally SnapshotThreshold decides when).
func (s *Server) TakeSnapshot() error {
	n, err := s.running()
	if err != nil {
		return err
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("flaredb: snapshot: %w", err)
	}
	return nil
}

// WriteSnapshot writes a point-in-time snapshot of the whole store to w,
// after a read index so it holds every write acknowledged before the call.
func (s *Server) WriteSnapshot(ctx context.Context, w io.Writer) error {
	n, err := s.running()
	if err != nil {
		return err
	}
	if err := n.linearize(ctx); err != nil {
		return err
	}
	return n.fsm.WriteSnapshot(w)
}

// runJoin asks the members in Config.Join to add this member until it is in
// the configuration.
func (n *node) runJoin() {
	me := wire.MemberAddRequest{Member: wire.Member{ID: n.cfg.ID, RaftAddress: n.cfg.RaftAdvertise, APIAddress: n.cfg.APIAdvertise, Voter: true}}
	body := me.Encode()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		if n.inConfiguration(n.cfg.ID) {
			return
		}
		for _, addr := range n.cfg.Join {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RequestTimeout)
			_, err := n.callMember(ctx, addr, wire.PathMemberAdd, body, false)
			cancel()
			if err == nil {
				n.log.Info("joined the cluster", "via", addr)
				return
			}
			n.log.Debug("join attempt failed", "via", addr, "err", err)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}
