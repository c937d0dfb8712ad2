package chainfire

import (
	"context"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
)

// coordSource hands the node's components one coordination client of this
// member (elections for singleton controllers, locks, heartbeats), made
// the first time one is asked for once the member serves, and closed when
// the member stops.
type coordSource struct {
	s    *Server
	mu   sync.Mutex
	cli  *clientv3.Client
	c    *coord.Client
	done bool
}

// Coord blocks until the member serves (or ctx ends) and returns the
// shared coordination client.
func (cs *coordSource) Coord(ctx context.Context) (*coord.Client, error) {
	select {
	case <-cs.s.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.done {
		return nil, fmt.Errorf("chainfire: member %s has stopped", cs.s.cfg.Name)
	}
	if cs.c == nil {
		cli, err := cs.s.Client()
		if err != nil {
			return nil, fmt.Errorf("chainfire: coordination client: %w", err)
		}
		cs.cli, cs.c = cli, coord.New(cli, cs.s.log)
	}
	return cs.c, nil
}

// close ends the client before the member stops, so its users see a
// closed client rather than a member gone away.
func (cs *coordSource) close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.done = true
	if cs.cli != nil {
		_ = cs.cli.Close()
		cs.cli, cs.c = nil, nil
	}
}
