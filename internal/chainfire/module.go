package chainfire

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
)

// Build builds this node's chainfire member from its validated section.
// Nothing depends on it yet, so it stops last of the components, after
// every client of it.
func Build(cfg Config, deps component.Deps) (component.Module, error) {
	s, err := New(cfg, deps.Logger)
	if err != nil {
		return component.Module{}, err
	}
	return component.Module{Units: []component.Unit{{Component: s}}}, nil
}

var (
	_ component.Reporter      = (*Server)(nil)
	_ component.MetricsSource = (*Server)(nil)
)

// Collectors implements component.MetricsSource.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{s.Collector()} }

// Report implements component.Reporter: the client URL, and the leader,
// members, revision and database size as this member sees them.
func (s *Server) Report(ctx context.Context) component.Report {
	r := component.Report{Endpoints: map[string]string{"etcd": s.cfg.ClientURL}}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		r.Details = map[string]string{"error": err.Error()}
		return r
	}
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	r.Details = map[string]string{
		"leader":   leader,
		"members":  strconv.Itoa(len(st.Members)),
		"revision": strconv.FormatInt(st.Revision, 10),
		"dbSize":   strconv.FormatInt(st.DBSizeBytes, 10),
		"dbInUse":  strconv.FormatInt(st.DBSizeInUseBytes, 10),
	}
	return r
}

// Flags implements config.Flagger: the member's two listeners.
func (c *Config) Flags() []config.Flag {
	return []config.Flag{
		{Name: "chainfire-client-url", Field: "clientURL", Usage: "chainfire client URL (etcd v3 API)", Listener: "http://127.0.0.1:%d"},
		{Name: "chainfire-peer-url", Field: "peerURL", Usage: "chainfire peer URL", Listener: "http://127.0.0.1:%d"},
	}
}
