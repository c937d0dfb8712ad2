// Package nodetest runs an in-process node built by the real wiring
// (internal/node: the same module list, store, API and group as
// `ultracloud up`), for tests that need the whole node but not a separate
// process. Every listener gets a free loopback port, data lives in the
// test's temporary directory, and the node is stopped (and must stop
// cleanly) when the test ends.
//
// It owns no behaviour of its own: anything a test sees here, the binary
// does too.
package nodetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/node"
	"github.com/ultracloud/ultracloud/internal/runtime/config"
	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/client"
)

// Options tune the node; the zero value is `ultracloud up`'s single-node
// profile (every role, resources in a one-member flaredb group) without
// the host agents, which program the machine's kernel (HostAgents).
type Options struct {
	// HostAgents also runs the host agent roles (<component>-agent).
	HostAgents bool
	// Tune edits the config before it is validated (roles, backend, iam
	// lifetimes...).
	Tune func(*node.Config)
	// Log receives the node's logs (discarded if nil).
	Log io.Writer
	// ReadyTimeout bounds the start (default 60s).
	ReadyTimeout time.Duration
}

// Node is a running in-process node.
type Node struct {
	*node.Node
	// Config is the validated config it runs with.
	Config node.Config
	// Admin is an SDK client authenticated with the break-glass token.
	Admin *client.Client

	cancel context.CancelFunc
	done   chan error
}

// Start builds and runs a node and waits until it is ready.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	cfg := node.SingleNodeDefault(t.TempDir())
	cfg.Node = "nodetest"
	cfg.Log.Level = "warn"
	for _, f := range node.Flags() {
		if f.Listener == "" {
			continue
		}
		port := 0 // the API listener binds port 0 and reports its address
		if f.Name != "listen" {
			port = testkit.FreePort(t)
		}
		if err := config.Set(&cfg, f.Field, fmt.Sprintf(f.Listener, port)); err != nil {
			t.Fatalf("nodetest: %v", err)
		}
	}
	if !o.HostAgents {
		for _, r := range node.KnownRoles() {
			if !strings.HasSuffix(r, "-agent") {
				cfg.Roles = append(cfg.Roles, r)
			}
		}
	}
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	var h slog.Handler = slog.DiscardHandler
	if o.Log != nil {
		h = slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	n := &Node{Node: node.New(cfg, slog.New(h)), Config: cfg, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-n.done:
		cancel()
		t.Fatalf("nodetest: the node failed to start: %v", err)
	case <-time.After(o.ReadyTimeout):
		cancel()
		<-n.done
		t.Fatalf("nodetest: the node was not ready within %s", o.ReadyTimeout)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("nodetest: the node did not stop cleanly: %v", err)
		}
	})
	admin, err := client.New(client.Config{Endpoint: n.APIURL(), Token: n.Token()})
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	n.Admin = admin
	return n
}

// Stop stops the node and returns what Run returned; later calls return
// the same.
func (n *Node) Stop() error {
	n.cancel()
	err, ok := <-n.done
	if !ok {
		return nil
	}
	close(n.done)
	return err
}
