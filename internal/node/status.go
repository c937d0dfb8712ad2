package node

import (
	"context"
	"strconv"
	"time"
)

// chainfireDetails summarises this node's chainfire member for /v1/status:
// leader, members, revision and database size. Nil when not running.
func (n *Node) chainfireDetails(ctx context.Context) map[string]string {
	if n.chainfire == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := n.chainfire.Status(ctx)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	return map[string]string{
		"leader":   leader,
		"members":  strconv.Itoa(len(st.Members)),
		"revision": strconv.FormatInt(st.Revision, 10),
		"dbSize":   strconv.FormatInt(st.DBSizeBytes, 10),
		"dbInUse":  strconv.FormatInt(st.DBSizeInUseBytes, 10),
	}
}

// flaredbDetails summarises this node's flaredb member: its Raft state,
// the leader, members, revision and indexes. Nil when not running.
func (n *Node) flaredbDetails() map[string]string {
	if n.flaredb == nil {
		return nil
	}
	st, err := n.flaredb.Status()
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	leader := st.Leader.ID
	if leader == "" {
		leader = "none"
	}
	return map[string]string{
		"state":    st.State,
		"leader":   leader,
		"members":  strconv.Itoa(len(st.Members)),
		"term":     strconv.FormatUint(st.Term, 10),
		"revision": strconv.FormatInt(st.Revision, 10),
		"applied":  strconv.FormatUint(st.AppliedIndex, 10),
		"dbSize":   strconv.FormatInt(st.DBSize, 10),
	}
}
