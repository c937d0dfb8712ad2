package nodeid

import (
	"context"
	"errors"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/component"
)

// ComponentName is the node-identity unit's name.
const ComponentName = "node-identity"

// Component runs a node's identity as a unit of the node: it obtains the
// credential (loading it, or enrolling), is ready once it holds one, and
// reports the principal, the endpoint and the token's expiry (never the
// key).
type Component struct {
	component.Readiness
	id *Identity
}

var (
	_ component.Component = (*Component)(nil)
	_ component.Reporter  = (*Component)(nil)
)

// NewComponent returns the unit for id.
func NewComponent(id *Identity) *Component { return &Component{id: id} }

// Name implements component.Component.
func (c *Component) Name() string { return ComponentName }

// Run obtains the credential, marks the unit ready, checks the key once
// (a refused key is logged with what to do, not fatal: the node's own
// API keeps serving), and waits for ctx.
func (c *Component) Run(ctx context.Context) error {
	if _, err := c.id.Obtain(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.MarkReady()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.id.Token(tctx)
	cancel()
	if errors.Is(err, ErrKeyRefused) {
		c.id.log.Error("the control plane refused this node's key", "node", c.id.cfg.Node, "err", err)
	} else if err != nil && ctx.Err() == nil {
		c.id.log.Warn("no access token yet; agents will retry", "node", c.id.cfg.Node, "err", err)
	}
	<-ctx.Done()
	return nil
}

// Report implements component.Reporter.
func (c *Component) Report(context.Context) component.Report {
	d := map[string]string{"principal": c.id.Principal()}
	if exp := c.id.TokenExpiry(); !exp.IsZero() {
		d["tokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
	}
	if !c.id.HasCredential() {
		d["credential"] = "none yet (enrolling)"
	}
	if err := c.id.KeyError(); err != nil {
		d["error"] = "node key refused: the node credential was deleted"
	}
	return component.Report{Endpoints: map[string]string{"controlPlane": c.id.Endpoint()}, Details: d}
}
