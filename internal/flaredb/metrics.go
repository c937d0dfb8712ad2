package flaredb

import (
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the member's state and
// counters, for the node's registry. It reads the running member at scrape
// time and reports nothing while the server is not running.
func (s *Server) Collector() prometheus.Collector { return collector{s: s} }

type collector struct{ s *Server }

var (
	descLeader    = prometheus.NewDesc("flaredb_is_leader", "1 if this member is the Raft leader.", nil, nil)
	descTerm      = prometheus.NewDesc("flaredb_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("flaredb_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied   = prometheus.NewDesc("flaredb_applied_index", "Last Raft index applied to the state machine.", nil, nil)
	descRevision  = prometheus.NewDesc("flaredb_revision", "Current store revision.", nil, nil)
	descCompacted = prometheus.NewDesc("flaredb_compacted_revision", "Highest revision whose history is discarded.", nil, nil)
	descMembers   = prometheus.NewDesc("flaredb_members", "Members in the Raft configuration.", nil, nil)
	descCounters  = prometheus.NewDesc("flaredb_events_total", "Server event counters.", []string{"event"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descTerm, descCommit, descApplied, descRevision, descCompacted, descMembers, descCounters} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.s.node.Load()
	if n == nil {
		return
	}
	st := n.status()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	leader := 0.0
	if st.State == raft.Leader.String() {
		leader = 1
	}
	gauge(descLeader, leader)
	gauge(descTerm, float64(st.Term))
	gauge(descCommit, float64(st.CommitIndex))
	gauge(descApplied, float64(st.AppliedIndex))
	gauge(descRevision, float64(st.Revision))
	gauge(descCompacted, float64(st.Compacted))
	gauge(descMembers, float64(len(st.Members)))
	stats := c.s.Stats()
	for name, v := range map[string]uint64{
		"proposal": stats.Proposals, "log_entry": stats.Entries, "forwarded": stats.Forwarded,
		"read_round": stats.ReadRounds, "read": stats.ReadWaiters, "expired": stats.Expired,
		"leader_transfer": stats.Transfers, "snapshot_restore": stats.Restores, "refused_peer": stats.RefusedPeers,
	} {
		ch <- prometheus.MustNewConstMetric(descCounters, prometheus.CounterValue, float64(v), name)
	}
}
