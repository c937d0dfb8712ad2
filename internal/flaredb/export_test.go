package flaredb

import (
	"context"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Internals for the tests of package flaredb_test. Those tests run
// clusters from flaredbtest, which imports this package, so they cannot be
// in it; these names exist only in the test binary.

// Proposer proposes transactions directly through s's Raft node, as the
// API does after its checks (s must be running and lead).
func Proposer(s *Server) func(ctx context.Context, txn wire.Txn, size int) (wire.TxnResult, error) {
	n := s.node.Load()
	return n.propose
}

// CheckGuard is checkGuard: whether dir may be used by member id of cluster.
var CheckGuard = checkGuard

// MemberCertRenewal is memberCertRenewal.
var MemberCertRenewal = memberCertRenewal

// ServerWithConfig is a Server that was never started, with cfg.
func ServerWithConfig(cfg Config) *Server { return &Server{cfg: cfg} }
