package flaredb

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// runReadvertise brings the cluster's record of this member's addresses up
// to date when they changed since it was added (a host renumbered, a port
// moved): the Raft configuration holds its Raft address and the replicated
// registry its API address. Until both match the config, the member asks
// the leader (or, leading, does it itself) to re-add it, which updates both.
// Without this, peers would keep dialling the old addresses.
func (n *node) runReadvertise() {
	me := wire.Member{ID: n.cfg.ID, RaftAddress: n.cfg.RaftAdvertise, APIAddress: n.cfg.APIAdvertise, Voter: true}
	req := wire.MemberAddRequest{Member: me}
	body := req.Encode()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		stale, known := n.addressesStale()
		if !known {
			continue // not (yet) in the configuration, or no leader
		}
		if !stale {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RequestTimeout)
		err := n.leaderCall(ctx, func() error { return n.addMember(me) }, wire.PathMemberAdd, body)
		cancel()
		if err == nil {
			n.log.Info("re-advertised changed member addresses", "raft", me.RaftAddress, "api", me.APIAddress)
		} else {
			n.log.Debug("re-advertising member addresses failed", "err", err)
		}
	}
}

// addressesStale reports whether the cluster's record of this member's
// addresses differs from the config; known is false while that cannot be
// told (no leader yet, or this member is not in the configuration).
func (n *node) addressesStale() (stale, known bool) {
	if _, lid := n.raft.LeaderWithID(); lid == "" {
		return false, false
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false, false
	}
	var raftAddr string
	for _, srv := range f.Configuration().Servers {
		if srv.ID == raft.ServerID(n.cfg.ID) {
			raftAddr = string(srv.Address)
		}
	}
	if raftAddr == "" {
		return false, false
	}
	members, err := n.fsm.Members()
	if err != nil {
		return false, false
	}
	api, registered := members[n.cfg.ID]
	// A bootstrap voter may not be in the registry yet: it is found through
	// InitialVoters, which the config keeps right.
	apiStale := registered && api != n.cfg.APIAdvertise
	return raftAddr != n.cfg.RaftAdvertise || apiStale, true
}
