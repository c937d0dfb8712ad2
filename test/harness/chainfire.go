//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ChainfireClusterToken is the clusterToken of the Spec.Chainfire cluster
// (for `ultracloud chainfire snapshot restore --cluster-token`), or ""
// without Spec.Chainfire.
func (c *Cluster) ChainfireClusterToken() string {
	if c.plan.chainfire == nil {
		return ""
	}
	return c.plan.chainfireToken()
}

// ChainfireSpares are the Spec.Chainfire spare hosts, in spec order: hosts
// that can join the running cluster with ChainfireJoin.
func (c *Cluster) ChainfireSpares() []*Host {
	if c.plan.chainfire == nil {
		return nil
	}
	var hs []*Host
	for _, name := range c.plan.chainfire.spares {
		hs = append(hs, c.byName[name])
	}
	return hs
}

// ChainfirePeerURL is the host's chainfire peer URL (https on its
// underlay address) when it is a Spec.Chainfire member or spare, else "".
func (h *Host) ChainfirePeerURL() string {
	if h.c.plan.chainfire == nil {
		return ""
	}
	return h.c.plan.chainfireURL(h.name, h.c.plan.chainfire.peerPort)
}

// ChainfireDataDir is the node's chainfire data directory (the node's
// default, DataDir()/chainfire).
func (h *Host) ChainfireDataDir() string { return filepath.Join(h.dataDir, "chainfire") }

// ChainfireJoin makes the host a member joining the running Spec.Chainfire
// cluster, after the cluster was told with `ultracloud chainfire member
// add <host> <ChainfirePeerURL>`: it stops the host's server (gracefully,
// if alive), removes its chainfire data directory, rewrites its node.yaml
// with initialState existing and initialCluster (the list member add
// prints, which must name this host with its peer URL) and starts the
// server. It does not wait for readiness (see WaitReady). The host must be
// a spare or a member of the cluster.
func (h *Host) ChainfireJoin(ctx context.Context, initialCluster []string) error {
	p := h.c.plan
	if p.chainfire == nil {
		return fmt.Errorf("harness: %s: chainfire join needs Spec.Chainfire", h.name)
	}
	if !slices.Contains(p.chainfire.spares, h.name) && !slices.Contains(p.chainfire.members, h.name) {
		return fmt.Errorf("harness: %s: chainfire join: the host is neither a Chainfire.Spares nor a Chainfire.Members host", h.name)
	}
	self := h.name + "=" + h.ChainfirePeerURL()
	found := false
	for _, e := range initialCluster {
		if strings.TrimSpace(e) == self {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("harness: %s: chainfire join: initialCluster %v does not list %s", h.name, initialCluster, self)
	}
	ph := p.hosts[h.index-1]
	cfg, err := p.renderJoinConfig(ph, h.dataDir, initialCluster)
	if err != nil {
		return err
	}
	if err := h.Terminate(ctx, 10*time.Second); err != nil {
		return err
	}
	if err := os.RemoveAll(h.ChainfireDataDir()); err != nil {
		return fmt.Errorf("harness: %s: removing the chainfire data directory: %w", h.name, err)
	}
	if err := os.WriteFile(h.configPath, cfg, 0o644); err != nil {
		return fmt.Errorf("harness: %s: writing node.yaml: %w", h.name, err)
	}
	h.c.logf("harness: %s joins the chainfire cluster as %s", h.name, self)
	return h.Start(ctx)
}
