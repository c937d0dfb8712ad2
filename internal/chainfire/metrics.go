package chainfire

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the member's Status as chainfire_* gauges, labelled
// with the member name, and the defragmentation policy's counters
// (chainfire_defrag_*, counted over the life of the Server). While the
// member is not running only chainfire_up (0) is exported. The process
// wiring registers it; etcd's own metrics register themselves on the
// default Prometheus registry.
type Collector struct {
	s                                                                 *Server
	up, isLeader, hasLeader, members, revision, dbSize, dbInUse, term *prometheus.Desc
	// The defragmentation policy's counters.
	defragRuns, defragFailures, defragReclaimed, defragLastDur *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// Collector returns the member's metrics collector.
func (s *Server) Collector() *Collector {
	labels := prometheus.Labels{"member": s.cfg.Name}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("chainfire_"+name, help, nil, labels)
	}
	return &Collector{
		s:         s,
		up:        d("up", "1 when the chainfire member is running and ready."),
		isLeader:  d("is_leader", "1 when this member is the raft leader."),
		hasLeader: d("has_leader", "1 when this member knows a raft leader."),
		members:   d("members", "Number of cluster members, learners included."),
		revision:  d("revision", "Current store revision."),
		dbSize:    d("db_size_bytes", "Size of the database file."),
		dbInUse:   d("db_size_in_use_bytes", "Part of the database file in use (the rest is reclaimed by defragmentation)."),
		term:      d("raft_term", "Current raft term."),

		defragRuns:      d("defrag_runs_total", "Defragmentations of this member's database completed by the defragmentation policy."),
		defragFailures:  d("defrag_failures_total", "Defragmentation attempts that failed (lock, leadership hand-off or the defragmentation itself)."),
		defragReclaimed: d("defrag_reclaimed_bytes_total", "Bytes of database file given back by the policy's defragmentations."),
		defragLastDur:   d("defrag_last_duration_seconds", "How long the last completed defragmentation took (0 before the first)."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.isLeader, c.hasLeader, c.members, c.revision, c.dbSize, c.dbInUse, c.term,
		c.defragRuns, c.defragFailures, c.defragReclaimed, c.defragLastDur} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It reads in-process state only.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Status(context.Background())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.up, 1)
	g(c.isLeader, b(st.IsLeader))
	g(c.hasLeader, b(st.LeaderID != ""))
	g(c.members, float64(len(st.Members)))
	g(c.revision, float64(st.Revision))
	g(c.dbSize, float64(st.DBSizeBytes))
	g(c.dbInUse, float64(st.DBSizeInUseBytes))
	g(c.term, float64(st.RaftTerm))
	ds := c.s.DefragStats()
	ch <- prometheus.MustNewConstMetric(c.defragRuns, prometheus.CounterValue, float64(ds.Runs))
	ch <- prometheus.MustNewConstMetric(c.defragFailures, prometheus.CounterValue, float64(ds.Failures))
	ch <- prometheus.MustNewConstMetric(c.defragReclaimed, prometheus.CounterValue, float64(ds.ReclaimedBytes))
	g(c.defragLastDur, ds.LastDuration.Seconds())
}
